//! Convergence through `peerplate run`: what was not done is owed and tried
//! again with backoff (0.5 s doubling to 30 s) until it is done, never
//! dropped after N tries:
//!
//! - an `http` reload answered 503 for 10 s, then 200, ends up reloaded with
//!   the latest bytes (new bytes in between wait for the next try);
//! - a failing `on_leader_change` runs again until it succeeds, for the
//!   latest leader only;
//! - a rollback that failed on a full disk (a tmpfs the test mounts) is
//!   tried again until the refused bytes are gone;
//! - a config that names a template arriving 2 s later converges when it
//!   arrives, without SIGHUP;
//! - `once` never waits on the backoff: nobody listening is done at once;
//! - `/status` and `peerplate status` show what is pending;
//! - a removed template's output is named; `prune: true` removes it only
//!   when it is still the file peerplate installed.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{
    metric, peers, poll_until, run_with_timeout, ConfigMapDir, Daemon, Sandbox, WAIT,
};
use crate::pod::Pod;
use crate::reloads::{answer, Scripted};

fn reloads(pod: &Pod, action: &str, result: &str) -> f64 {
    metric(
        pod.port,
        &format!("peerplate_reloads_total{{action=\"{action}\",result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn an_http_reload_answered_503_for_10s_then_200_ends_reloaded_with_the_latest_bytes() {
    let app = Scripted::start();
    app.answers(&[answer("503 Service Unavailable", "", "starting")]);
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "p.j2",
            "{% for p in peers %}{{ p }}\n{% endfor %}",
            "out/p",
            "    reload: app\n",
        )
        .http()
        .yaml(&format!(
            "reloads:\n  app: {{http: {{url: \"http://127.0.0.1:{}/-/reload\", retries: 0, timeout: 2s}}}}\n",
            app.port
        ))
        .build();
    let started = Instant::now();
    let mut d = pod.start();
    d.wait_for_line(
        0,
        &["reload not answered; trying again", "action=app"],
        WAIT,
    );
    // New bytes while the reload is owed: installed at the next try, never
    // the old ones replayed.
    pod.replace("peers", &peers(&[0, 1, 2]));
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let tries = app.requests().len();
    // 0.5 s doubling from the first try: at most 6 tries in 10 s, not a flood.
    assert!(
        (3..=7).contains(&tries),
        "{tries} tries in 10 s\n{}",
        d.logs()
    );
    assert_eq!(reloads(&pod, "app", "accepted"), 0.0);
    let pending = "peerplate_pending_items{kind=\"reload\"}";
    assert_eq!(metric(pod.port, pending), Some(1.0));
    let status = status_json(pod.port);
    let owed = &status["templates"][0]["pending"];
    assert_eq!(owed["what"], "reload app", "{status}");
    assert!(
        owed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 503")),
        "{status}"
    );
    app.answers(&[answer("200 OK", "", "")]);
    // Within one backoff step (at most 8 s +20 % here) of the app answering.
    d.wait_until(WAIT, "accepted", |_| {
        reloads(&pod, "app", "accepted") == 1.0
    });
    assert_eq!(pod.read_or_empty("out/p"), peers(&[0, 1, 2]));
    let line = d.wait_for_line(
        0,
        &["reload answered after trying again", "action=app"],
        WAIT,
    );
    assert!(line.contains("tries="), "{line}");
    // Converged: nothing more is owed, nothing more is sent.
    let after = app.requests().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(app.requests().len(), after, "{}", d.logs());
    assert_eq!(metric(pod.port, pending), Some(0.0));
    assert_eq!(status_json(pod.port)["converged"], true);
    assert!(d.is_running());
}

#[test]
fn a_failed_on_leader_change_runs_again_until_it_succeeds_for_the_latest_leader_only() {
    // Fails while `fail` exists; every run appends the leader it got.
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("t.j2", "{{ leader }}\n", "out/t")
        .yaml("hooks:\n  on_leader_change: \"cat >> leaders.txt; test ! -e fail\"\n  timeout: 5s\n")
        .http()
        .build();
    pod.sb.write("fail", "");
    let mut d = pod.start();
    d.wait_for_line(
        0,
        &["hook failed; running it again", "on_leader_change"],
        WAIT,
    );
    d.wait_until(WAIT, "a second failed run", |d| {
        d.stderr()
            .matches("hook failed; running it again after the pause, for the leader latest then")
            .count()
            >= 2
    });
    // /status lists the hook owed.
    let status = status_json(pod.port);
    let owed = &status["hooks"][0];
    assert!(
        owed["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("on_leader_change for web-0.")),
        "{status}"
    );
    assert!(owed["tries"].as_u64() >= Some(2), "{status}");
    // The leader changes while the hook is owed; then the hook can succeed.
    pod.replace("peers", &peers(&[1, 2]));
    pod.wait_for_file(&mut d, "out/t", &peers(&[1]));
    std::fs::remove_file(pod.sb.join("fail")).expect("rm fail");
    d.wait_for_line(0, &["hook ran", "on_leader_change", "exit status: 0"], WAIT);
    let runs = pod.read_or_empty("leaders.txt");
    let last = runs.lines().last().unwrap_or_default().to_string();
    assert_eq!(
        format!("{last}\n"),
        peers(&[1]),
        "ends on the latest leader: {runs}"
    );
    // Converged: no more runs, and none for the old leader after the change.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        status_json(pod.port)["hooks"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(pod.read_or_empty("leaders.txt"), runs);
    let old = peers(&[0]);
    let first_new = runs.find(&peers(&[1])).expect("the new leader ran");
    assert!(
        !runs[first_new..].contains(&old),
        "a stale leader ran again: {runs}"
    );
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_rollback_that_failed_on_a_full_disk_is_tried_again_until_the_refused_bytes_are_gone() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with("p.j2", "v1 {{ peers | length }}\n", "out/p", "    reload: app\n")
        // Rejects only when `reject` exists, after filling the disk: the
        // rollback then has no room to write the previous file.
        .yaml("reloads:\n  app: {exec: \"sh -c 'test -e reject || exit 0; dd if=/dev/zero of=out/fill bs=4k count=1000 2>/dev/null; echo refused >&2; exit 1'\"}\n")
        .http()
        .build();
    let Some(_tmpfs) = Tmpfs::mount(&pod.sb.join("out"), "256k") else {
        crate::helpers::skip("cannot mount a tmpfs here");
        return;
    };
    let mut d = pod.start();
    pod.wait_for_file(&mut d, "out/p", "v1 2\n");
    pod.sb.write("reject", "");
    let mark = d.mark();
    pod.sb.replace("p.j2", "v2 {{ peers | length }}\n");
    d.wait_for_line(
        mark,
        &[
            "could not roll back",
            "trying again until the refused bytes are gone",
        ],
        WAIT,
    );
    assert_eq!(
        pod.read_or_empty("out/p"),
        "v2 2\n",
        "the refused bytes, for now"
    );
    // Still full: tried again, still failing, and said so.
    d.wait_for_line(mark, &["could not roll back yet; trying again"], WAIT);
    // /status says so meanwhile, and so does `peerplate status`.
    let status = status_json(pod.port);
    assert_eq!(status["converged"], false, "{status}");
    let rollback = &status["rollbacks"][0];
    assert_eq!(
        rollback["what"].as_str(),
        Some(format!("roll back {}", pod.sb.join("out/p").display()).as_str()),
        "{status}"
    );
    assert!(rollback["tries"].as_u64() >= Some(1), "{status}");
    assert!(
        rollback["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "{status}"
    );
    let t = &status["templates"][0];
    assert_eq!(
        t["verdict"].as_str().map(|v| v.starts_with("rejected: ")),
        Some(true),
        "{status}"
    );
    assert_eq!(t["pending"]["what"], rollback["what"], "{status}");
    let shown = run_with_timeout(&mut pod.command("status"), WAIT);
    assert_eq!(shown.code, Some(0), "{}", shown.dump());
    assert!(
        shown.stdout.starts_with("NOT converged"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("rollbacks owed:\n  roll back "),
        "{}",
        shown.stdout
    );

    // Room again: the next try puts the previous file back.
    std::fs::remove_file(pod.sb.join("out/fill")).expect("rm fill");
    d.wait_for_line(
        mark,
        &[
            "rolled back: the file on disk is again what the app runs",
            "tries=",
        ],
        WAIT,
    );
    assert_eq!(pod.read_or_empty("out/p"), "v1 2\n");
    let status = status_json(pod.port);
    assert_eq!(
        status["rollbacks"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    assert_eq!(
        metric(pod.port, "peerplate_pending_items{kind=\"rollback\"}"),
        Some(0.0)
    );
    assert!(d.is_running());
}

/// `GET /status`, parsed.
fn status_json(port: u16) -> serde_json::Value {
    let reply = crate::helpers::http_get(port, "/status").expect("GET /status");
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

#[test]
fn status_prints_convergence_for_a_person_and_says_when_there_is_no_listener() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("p.j2", "{{ peers | length }}\n", "out/p")
        .http()
        .build();
    let mut d = pod.start();
    pod.wait_for(&mut d, "2\n");
    let hash = "53c234e5e847"; // sha256("2\n"), cut to 12
    let shown = run_with_timeout(&mut pod.command("status"), WAIT);
    assert_eq!(shown.code, Some(0), "{}", shown.dump());
    let root = pod.sb.path().display().to_string();
    let text = shown.stdout.replace(&root, "ROOT");
    insta::assert_snapshot!("status_converged", text);
    assert!(
        text.contains(&format!("desired {hash}  installed {hash} (same)")),
        "{text}"
    );
    // The rest of the config broken: status reads only http.listen.
    let config = std::fs::read_to_string(&pod.config).expect("config");
    std::fs::write(&pod.config, format!("{config}\nbogus: 1\n")).expect("break it");
    assert_eq!(pod.run("check").code, Some(2), "the config is broken");
    let shown = run_with_timeout(&mut pod.command("status"), WAIT);
    assert_eq!(shown.code, Some(0), "{}", shown.dump());
    assert!(shown.stdout.starts_with("converged"), "{}", shown.stdout);
    // --url and --json.
    let shown = run_with_timeout(
        pod.command("status").args([
            "--json",
            "--url",
            &format!("http://127.0.0.1:{}/status", pod.port),
        ]),
        WAIT,
    );
    let json: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(json["converged"], true);
    drop(d);

    // No listener in the config: said so, with the fix.
    let bare = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("p.j2", "x\n", "out/p")
        .build();
    let shown = run_with_timeout(&mut bare.command("status"), WAIT);
    assert_eq!(shown.code, Some(2), "{}", shown.dump());
    assert!(
        shown.stderr.contains("no http.listen, so peerplate serves no /status; set http.listen (like 0.0.0.0:9090) or pass --url"),
        "{}",
        shown.stderr
    );
}

#[test]
fn a_config_that_arrives_before_its_template_converges_when_the_template_arrives() {
    let sb = Sandbox::new();
    sb.write("peers", &peers(&[0, 1]));
    sb.write("a.j2", "a {{ peers | length }}\n");
    sb.mkdir("out");
    let root = sb.path().display().to_string();
    let config = |with_b: bool| {
        let b = if with_b {
            format!("  - {{source: {root}/b.j2, destination: {root}/out/b}}\n")
        } else {
            String::new()
        };
        format!("identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\ntemplates:\n  - {{source: {root}/a.j2, destination: {root}/out/a}}\n{b}wait: {{min: 0s, max: 0s}}\n")
    };
    let mut cm = ConfigMapDir::create(&sb.join("cfg"), &[("peerplate.yaml", &config(false))]);
    let path = cm.path("peerplate.yaml");
    let cmd = sb.peerplate(["--config", &path.display().to_string(), "run"]);
    let mut d = Daemon::spawn(cmd);
    d.wait_until(WAIT, "out/a", |_| {
        sb.read("out/a").as_deref() == Some("a 2\n")
    });
    let mark = d.mark();
    cm.update(&[("peerplate.yaml", &config(true))]);
    d.wait_for_line(
        mark,
        &[
            "ERROR",
            "running config stays",
            "reading it again with backoff",
        ],
        WAIT,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sb.read("out/b"), None);
    // The template arrives (another ConfigMap, a moment later).
    sb.write("b.j2", "b {{ peers | length }}\n");
    let arrived = Instant::now();
    let converged = poll_until(WAIT, || sb.read("out/b").as_deref() == Some("b 2\n"));
    assert!(converged, "never converged\n{}", d.logs());
    // Within one backoff step (the step at 2 s is 2 s, +20 %), bounded generously.
    assert!(
        arrived.elapsed() < Duration::from_secs(6),
        "{:?}",
        arrived.elapsed()
    );
    d.wait_for_line(mark, &["the config file loads now"], WAIT);
    let errors = d
        .lines_since(mark)
        .iter()
        .filter(|l| l.contains("ERROR"))
        .count();
    assert_eq!(errors, 1, "one ERROR, not one per try\n{}", d.logs());
}

#[test]
fn once_with_nobody_listening_is_done_at_once_and_never_waits_on_the_backoff() {
    let port = crate::helpers::free_port();
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "p.j2",
            "{{ peers | length }}\n",
            "out/p",
            "    reload: app\n",
        )
        .yaml(&format!(
            "reloads:\n  app: {{http: {{url: \"http://127.0.0.1:{port}/-/reload\", retries: 0}}}}\n"
        ))
        .build();
    let started = Instant::now();
    let out = run_with_timeout(&mut pod.command("once"), Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("no process to reload"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("trying again"), "{}", out.stderr);
    assert_eq!(pod.output().as_deref(), Some("2\n"));
}

#[test]
fn a_removed_templates_output_is_named_and_prune_removes_only_the_file_peerplate_installed() {
    let sb = Sandbox::new();
    sb.write("peers", &peers(&[0, 1]));
    for name in ["a", "b", "c"] {
        sb.write(
            &format!("{name}.j2"),
            &format!("{name} {{{{ peers | length }}}}\n"),
        );
    }
    sb.mkdir("out");
    let root = sb.path().display().to_string();
    let config = |templates: &[&str], prune: bool| {
        let list: String = templates
            .iter()
            .map(|t| format!("  - {{source: {root}/{t}.j2, destination: {root}/out/{t}.conf}}\n"))
            .collect();
        format!("identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\ntemplates:\n{list}wait: {{min: 0s, max: 0s}}\nprune: {prune}\n")
    };
    let mut cm = ConfigMapDir::create(
        &sb.join("cfg"),
        &[("peerplate.yaml", &config(&["a", "b", "c"], true))],
    );
    let path = cm.path("peerplate.yaml");
    let mut d = Daemon::spawn(sb.peerplate(["--config", &path.display().to_string(), "run"]));
    d.wait_until(WAIT, "three outputs", |_| {
        ["a", "b", "c"]
            .iter()
            .all(|t| sb.read(&format!("out/{t}.conf")).is_some())
    });
    // The install records are in the state file beside the first output.
    d.wait_until(WAIT, "the install records", |_| {
        sb.read("out/.peerplate-state.json")
            .is_some_and(|s| s.contains(&format!("{root}/out/c.conf")))
    });
    // Someone edits c.conf: no longer the file peerplate installed.
    std::fs::write(sb.join("out/c.conf"), "edited by hand\n").expect("edit");

    let mark = d.mark();
    cm.update(&[("peerplate.yaml", &config(&["a"], true))]);
    let line = d.wait_for_line(mark, &["pruned", "b.conf"], WAIT);
    assert!(
        line.contains("an output peerplate installed that no template produces any more"),
        "{line}"
    );
    let kept = d.wait_for_line(mark, &["output left behind, not pruned", "c.conf"], WAIT);
    assert!(
        kept.contains("its content changed since peerplate installed it"),
        "{kept}"
    );
    assert_eq!(sb.read("out/b.conf"), None, "pruned");
    assert_eq!(
        sb.read("out/c.conf").as_deref(),
        Some("edited by hand\n"),
        "kept"
    );
    assert_eq!(sb.read("out/a.conf").as_deref(), Some("a 2\n"));
    drop(d);

    // Without prune: a warning names each output left behind, nothing is removed.
    let mut cm2 = ConfigMapDir::create(
        &sb.join("cfg2"),
        &[("peerplate.yaml", &config(&["a", "b"], false))],
    );
    let path = cm2.path("peerplate.yaml");
    let mut d = Daemon::spawn(sb.peerplate(["--config", &path.display().to_string(), "run"]));
    d.wait_until(WAIT, "b again", |_| {
        sb.read("out/b.conf").as_deref() == Some("b 2\n")
    });
    let mark = d.mark();
    cm2.update(&[("peerplate.yaml", &config(&["a"], false))]);
    let line = d.wait_for_line(mark, &["output left behind", "b.conf"], WAIT);
    assert!(line.contains("remove it, or set prune: true"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sb.read("out/b.conf").as_deref(),
        Some("b 2\n"),
        "not removed"
    );
}

#[test]
fn a_destination_someone_else_changed_is_reported_once_and_left_until_its_render_changes() {
    // a.j2 does not depend on the peers; b.j2 does: a peer change is a pass
    // in which a's render stays the same.
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("a.j2", "a static\n", "out/a")
        .template("b.j2", "b {{ peers | length }}\n", "out/b")
        .http()
        .build();
    let mut d = pod.start();
    pod.wait_for_file(&mut d, "out/a", "a static\n");
    pod.wait_for_file(&mut d, "out/b", "b 2\n");
    // The app rewrites its own config (Redis's CONFIG REWRITE).
    std::fs::write(pod.sb.join("out/a"), "rewritten by the app\n").expect("rewrite");
    for (k, ks) in [(3, &[0, 1, 2][..]), (4, &[0, 1, 2, 3][..])] {
        pod.replace("peers", &peers(ks));
        pod.wait_for_file(&mut d, "out/b", &format!("b {k}\n"));
    }
    assert_eq!(
        pod.read("out/a").as_deref(),
        Some("rewritten by the app\n"),
        "left alone"
    );
    let said: Vec<String> = d
        .lines_since(0)
        .into_iter()
        .filter(|l| l.contains("changed on disk by someone else"))
        .collect();
    assert_eq!(said.len(), 1, "reported once: {said:?}");
    assert!(said[0].contains("template=a.j2"), "{}", said[0]);
    let status = status_json(pod.port);
    assert!(
        status["templates"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("changed on disk by someone else")),
        "{status}"
    );
    // Its render changes: installed again.
    pod.sb.replace("a.j2", "a new\n");
    pod.wait_for_file(&mut d, "out/a", "a new\n");
}

/// `once` never waits on a starting app: a process that does not catch the
/// reload signal yet (here `sleep`, which never will: SIGHUP would kill it)
/// is not signalled once `min_age` has passed, and `once` exits then
/// instead of waiting out `catch_wait` (30 s). The process lives.
#[test]
fn once_never_waits_for_a_starting_process_to_catch_the_signal() {
    for min_age in ["0s", "2s"] {
        let pod = Pod::builder()
            .peers_file(&peers(&[0, 1]))
            .template_with("p.j2", "{{ peers | length }}\n", "out/p", "")
            .yaml(&format!(
                "reload: {{signal: HUP, pid_file: ROOT/app.pid, min_age: {min_age}}}\n"
            ))
            .build();
        let mut app = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        pod.sb.write("app.pid", &format!("{}\n", app.id()));
        // Started clearly before the install (start times have 10 ms ticks).
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let out = run_with_timeout(&mut pod.command("once"), Duration::from_secs(10));
        let took = started.elapsed();
        let alive = app.try_wait().expect("try_wait").is_none();
        let _ = app.kill();
        let _ = app.wait();
        assert_eq!(out.code, Some(0), "min_age {min_age}: {}", out.stderr);
        assert!(
            alive,
            "min_age {min_age}: the app died of the signal\n{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("not signalled: the process does not catch the signal yet")
                && out
                    .stderr
                    .contains("once does not wait for it (catch_wait is run's)"),
            "min_age {min_age}: {}",
            out.stderr
        );
        assert!(
            took < Duration::from_secs(10),
            "min_age {min_age}: {took:?}"
        );
        assert_eq!(pod.output().as_deref(), Some("2\n"));
    }
}
