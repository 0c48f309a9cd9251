//! Field reports, safety II (issue 11), each through the binary and asserted
//! on what a user sees, with one more case per kind:
//!
//! - templates can neither hang nor kill the daemon: fuel ends runaway
//!   loops and sizes that cannot be honoured (`indent`, `*`, `join`),
//!   `max_size` bounds the output, the 32 MiB memory cgroup of `deploy/`
//!   holds, SIGTERM ends a long render within a second, and `/healthz` and
//!   the other templates keep working;
//! - printing none is an error with the fix; `run` starts with a template
//!   that does not compile; `check` renders every template;
//! - installs recover: folders are created, failed installs retried, stale
//!   staged files removed, owners kept, symlinks never followed for a mode;
//! - watching: subfolder ConfigMap keys, no inotify left, a bind-mounted file;
//! - ordinals only for `<name>-<N>` names;
//! - bounded inputs: the peers file, the admin listener, durations, argv,
//!   `seed` into itself.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use insta::assert_snapshot;
use nix::sys::signal::Signal;

use crate::cgroup::MemoryCgroup;
use crate::helpers::{
    bin, http_status, mode_of, peers, poll_until, require_component, run, Daemon, WAIT,
};
use crate::pod::Pod;
use crate::procfs;

/// The memory limit `deploy/` gives the sidecar.
const LIMIT_32_MIB: u64 = 32 * 1024 * 1024;

/// The lines of `text` that mention `word`, with the sandbox redacted.
fn lines_with(pod: &Pod, text: &str, word: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(word)).collect();
    pod.sb.redact(&lines.join("\n"))
}

/// The error lines of a finished command (`error: ...`), redacted.
fn error_text(pod: &Pod, stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    pod.sb.redact(&lines.join("\n"))
}

/// `peerplate <command>` of `pod` under `prefix` (`unshare ... sh -c SCRIPT sh`).
fn wrapped(pod: &Pod, prefix: &[&str], command: &str) -> Command {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..]).arg(bin()).args(pod.args(command));
    pod.clean_env(&mut cmd);
    cmd
}

// ---- templates can neither hang nor kill the daemon ------------------------

#[test]
fn a_runaway_loop_runs_out_of_fuel_and_the_other_templates_render() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("good.j2", "{{ peers | length }} peers\n", "out/good")
        .template_with(
            "loop.j2",
            "{% for i in range(100000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}\n",
            "out/loop",
            "    reload: false\n",
        )
        .http()
        .build();
    let mut d = pod.start();
    pod.wait_for(&mut d, "2 peers\n");
    d.wait_for_log("loop.j2", WAIT);
    assert_eq!(http_status(pod.port, "/healthz"), 200);
    assert_eq!(
        http_status(pod.port, "/readyz"),
        503,
        "loop.j2 never rendered"
    );
    assert!(pod.read("out/loop").is_none(), "nothing installed");
    let line = lines_with(&pod, &d.stderr(), "loop.j2 line");
    assert!(
        line.contains("instruction budget (fuel 200000)") && line.contains("render failed"),
        "{line}"
    );
    let (status, took) = d.stop_with(Signal::SIGTERM, WAIT);
    assert!(
        status.success() && took < Duration::from_secs(1),
        "{status:?} {took:?}"
    );
}

#[test]
fn sigterm_abandons_a_long_render_within_a_second_and_healthz_answers_meanwhile() {
    // A budget large enough for a render of many seconds.
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "slow.j2",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done\n",
            "out/slow",
            "    fuel: 100000000\n",
        )
        .http()
        .build();
    let mut d = pod.start();
    d.wait_for_log("peer set changed", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    assert_eq!(http_status(pod.port, "/healthz"), 200);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "/healthz waited for the render"
    );
    let (status, took) = d.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success(), "{status:?}\n{}", d.logs());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    assert!(pod.read("out/slow").is_none(), "nothing installed");
}

/// `run` under the 32 MiB memory cgroup with `template`; returns the
/// daemon's log once the render failed, after checking it was not killed.
fn survives_in_32_mib(template: &str, expect: &str) -> Option<String> {
    let cg = MemoryCgroup::new(LIMIT_32_MIB)?;
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("big.j2", template, "out/big")
        .http()
        .build();
    let mut d = Daemon::spawn(cg.wrap(&pod.command("run")));
    let port = pod.port;
    d.wait_until(WAIT, "/healthz to answer", |_| {
        http_status(port, "/healthz") == 200
    });
    d.wait_for_log("render failed", WAIT);
    assert!(d.is_running(), "the daemon died:\n{}", d.logs());
    assert_eq!(cg.oom_kills(), 0, "OOM-killed");
    assert_eq!(http_status(port, "/healthz"), 200);
    assert!(pod.read("out/big").is_none(), "nothing installed");
    let line = lines_with(&pod, &d.stderr(), "render failed");
    assert!(line.contains(expect), "{line}");
    assert!(
        cg.max_usage() < LIMIT_32_MIB,
        "used {} bytes",
        cg.max_usage()
    );
    let (status, _) = d.stop_with(Signal::SIGTERM, WAIT);
    assert!(status.success());
    Some(line)
}

#[test]
fn indent_by_ten_billion_is_a_render_error_not_an_abort() {
    survives_in_32_mib("{{ 'x' | indent(10000000000) }}\n", "instruction budget");
}

#[test]
fn a_50_mb_string_is_a_render_error_under_32_mib() {
    survives_in_32_mib("{{ \"x\" * 50000000 }}\n", "instruction budget");
}

#[test]
fn a_join_with_a_huge_result_is_a_render_error_under_32_mib() {
    survives_in_32_mib(
        "{{ range(100000) | join(\"x\" * 300) }}\n",
        "instruction budget",
    );
}

#[test]
fn the_largest_string_the_default_fuel_allows_stays_under_32_mib() {
    // Just under what the default fuel (200000, about 12.8 MB) can pay for:
    // allocated (twice, as minijinja copies it into a value), then refused
    // by max_size on its way out.
    survives_in_32_mib("{{ \"x\" * 12500000 }}\n", "larger than max_size 1.0 MiB");
}

#[test]
fn ten_thousand_peers_render_with_the_default_fuel_under_32_mib() {
    let Some(cg) = MemoryCgroup::new(LIMIT_32_MIB) else {
        return;
    };
    let names: String = (0..10_000)
        .map(|k| format!("web-{k}.nginx.default.svc.cluster.local\n"))
        .collect();
    let pod = Pod::builder()
        .peers_file(&names)
        .template(
            "servers.j2",
            "{% for p in peers %}server {{ p.hostname }} {{ p.fqdn }}:{{ p.port | default(80) }} check;\n{% endfor %}",
            "out/servers",
        )
        .build();
    let out = run(&mut cg.wrap(&pod.command("once")));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(pod.read_or_empty("out/servers").lines().count(), 10_000);
    assert_eq!(cg.oom_kills(), 0);
}

#[test]
fn max_size_bounds_the_output() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("big.j2", "{{ \"x\" * 2000000 }}\n", "out/big")
        .template_with(
            "small.j2",
            "{{ \"y\" * 200 }}\n",
            "out/small",
            "    max_size: 100\n",
        )
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!(error_text(&pod, &out.stderr));
    assert!(pod.read("out/big").is_none() && pod.read("out/small").is_none());
}

// ---- none, compile errors at start, check ---------------------------------

#[test]
fn printing_none_is_a_render_error_with_the_fix() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template(
            "nginx.j2",
            "server {\n    listen {{ vars.port }};\n}\n",
            "out/nginx",
        )
        .yaml("vars:\n  port: null\n")
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!("none_in_vars", error_text(&pod, &out.stderr));
    assert!(pod.read("out/nginx").is_none());
    let check = pod.run("check");
    assert_eq!(check.code, Some(2), "{}", check.dump());
}

#[test]
fn a_peer_without_a_port_and_a_join_over_none_are_render_errors() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template(
            "port.j2",
            "{% for p in peers %}{{ p.hostname }}:{{ p.port }}\n{% endfor %}",
            "out/port",
        )
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!("none_port", error_text(&pod, &out.stderr));

    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template(
            "join.j2",
            "{{ peers | map(attribute=\"port\") | join(\",\") }}\n",
            "out/join",
        )
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!("none_join", error_text(&pod, &out.stderr));

    // The fix the message gives works.
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template(
            "port.j2",
            "{% for p in peers %}{{ p.hostname }}:{{ p.port | default(80) }}\n{% endfor %}",
            "out/port",
        )
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(pod.read_or_empty("out/port"), "web-0:80\nweb-1:80\n");
}

#[test]
fn run_starts_with_a_template_that_does_not_compile_and_renders_once_fixed() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{% for p in peers %}{{ p.fqdn }}\n", "out/app")
        .http()
        .build();
    let mut d = pod.start();
    d.wait_for_log("app.j2 line", WAIT);
    assert_eq!(http_status(pod.port, "/healthz"), 200);
    assert_eq!(http_status(pod.port, "/readyz"), 503);
    let metrics = crate::helpers::http_get(pod.port, "/metrics")
        .expect("metrics")
        .body;
    assert!(
        metrics.contains("peerplate_renders_total{template=\"app.j2\",result=\"failed\"} 1"),
        "{metrics}"
    );
    pod.replace(
        "app.j2",
        "{% for p in peers %}{{ p.hostname }}\n{% endfor %}",
    );
    pod.wait_for(&mut d, "web-0\nweb-1\n");
    let port = pod.port;
    d.wait_until(WAIT, "/readyz 200", |_| http_status(port, "/readyz") == 200);

    // once and check still refuse it; so does run with an invalid config.
    pod.replace("app.j2", "{% for p in peers %}");
    assert_eq!(pod.run("once").code, Some(2));
    assert_eq!(pod.run("check").code, Some(2));
    let bad = Pod::builder().yaml("templates: 3\n").build();
    assert_eq!(bad.run("run").code, Some(2));
}

#[test]
fn check_renders_every_template_and_catches_a_typo() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template(
            "app.j2",
            "{% for p in peers %}{{ p.fdqn }}\n{% endfor %}",
            "out/app",
        )
        .build();
    let out = pod.run("check");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!(error_text(&pod, &out.stderr));
}

#[test]
fn check_renders_with_a_sample_set_for_dns_and_placeholders_outside_the_pod() {
    let pod = Pod::builder()
        .hostname("db")
        .dns(&["127.0.0.1:1"], "1s")
        .template(
            "app.j2",
            "{% for p in peers %}{{ p.fqdn }}:{{ p.port }} {{ p.ordinal }}{% if p.is_self %} me{% endif %}\n{% endfor %}{{ env(\"PEERPLATE_IT_NOT_SET\") }}\n{{ pod.ordinal + 1 }}\n",
            "out/app",
        )
        .build();
    let out = pod.run("check");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_snapshot!(pod.sb.redact(out.stdout.trim()));
    assert!(
        out.stderr.contains("env() variable is not set here")
            && out.stderr.contains("variable=PEERPLATE_IT_NOT_SET"),
        "{}",
        out.dump()
    );
}

// ---- installs recover ---------------------------------------------------

#[test]
fn missing_destination_folders_are_created() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("a.j2", "a\n", "new/deeper/still/app.conf")
        .template("b.j2", "b\n", "one/app.conf")
        .build();
    // The builder makes the folders; a fresh volume has none.
    fs::remove_dir_all(pod.sb.join("new")).expect("rm new");
    fs::remove_dir_all(pod.sb.join("one")).expect("rm one");
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(pod.read_or_empty("new/deeper/still/app.conf"), "a\n");
    assert_eq!(pod.read_or_empty("one/app.conf"), "b\n");
    assert_eq!(mode_of(&pod.sb.join("new/deeper")), 0o755);
}

#[test]
fn a_failed_install_is_retried_until_it_goes_through() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("a.j2", "{{ peers | length }}\n", "out/a")
        .template("b.j2", "b\n", "blocker/b.conf")
        .http()
        .build();
    // A file where the folder should be: the install fails on I/O.
    fs::remove_dir_all(pod.sb.join("blocker")).expect("rm");
    fs::write(pod.sb.join("blocker"), "a file").expect("blocker");
    let mut d = pod.start();
    d.wait_for_log("b.conf", WAIT);
    assert_eq!(http_status(pod.port, "/readyz"), 503);
    fs::remove_file(pod.sb.join("blocker")).expect("rm blocker");
    pod.wait_for_file(&mut d, "blocker/b.conf", "b\n");
    let port = pod.port;
    d.wait_until(WAIT, "/readyz 200", |_| http_status(port, "/readyz") == 200);
    assert!(d.stderr().contains("an install failed; trying again"));
}

#[test]
fn staged_files_of_a_killed_peerplate_are_removed_at_start() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "app\n", "out/app.conf")
        .build();
    pod.sb.write("out/.app.conf.Ab12Cd.peerplate", "half");
    pod.sb.write("out/.app.conf.notours", "keep");
    pod.sb.write(
        "out/.other.conf.Ab12Cd.peerplate",
        "keep: not this template's",
    );
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(pod.read("out/.app.conf.Ab12Cd.peerplate").is_none());
    assert!(pod.read("out/.app.conf.notours").is_some());
    assert!(pod.read("out/.other.conf.Ab12Cd.peerplate").is_some());
    assert!(out
        .stderr
        .contains("removed a staged file left by an earlier peerplate"));
}

#[test]
fn the_owner_of_an_existing_output_is_kept() {
    if fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        eprintln!("skipping: needs root to chown");
        return;
    }
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{{ peers | length }}\n", "out/app.conf")
        .build();
    let out_file = pod.sb.write("out/app.conf", "old\n");
    std::os::unix::fs::chown(&out_file, Some(101), Some(102)).expect("chown");
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let meta = fs::metadata(&out_file).expect("stat");
    assert_eq!(pod.read_or_empty("out/app.conf"), "2\n");
    assert_eq!((meta.uid(), meta.gid()), (101, 102));
}

#[test]
fn a_destination_symlink_is_never_followed_for_a_mode() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with("app.j2", "same\n", "out/app.conf", "    mode: \"0600\"\n")
        .build();
    let target = pod.sb.write("elsewhere/real.conf", "same\n");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::symlink(&target, pod.sb.join("out/app.conf")).expect("symlink");
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(mode_of(&target), 0o644, "the link's target kept its mode");
    assert!(fs::symlink_metadata(pod.sb.join("out/app.conf"))
        .expect("lstat")
        .file_type()
        .is_symlink());

    // A change replaces the link with a file of the template's mode.
    pod.replace("app.j2", "changed\n");
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let meta = fs::symlink_metadata(pod.sb.join("out/app.conf")).expect("lstat");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(fs::read_to_string(&target).expect("target"), "same\n");
}

// ---- watching -------------------------------------------------------------

#[test]
fn a_configmap_key_in_a_subfolder_follows_every_swap() {
    let mut pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .configmap_template("sub/a.j2", "one\n", "out/a", "")
        .build();
    let mut d = pod.start();
    pod.wait_for(&mut d, "one\n");
    for text in ["two\n", "three\n", "four\n"] {
        pod.configmap().update(&[("sub/a.j2", text)]);
        pod.wait_for(&mut d, text);
    }
}

#[test]
fn with_no_inotify_instance_left_files_are_polled_with_one_warning() {
    if !require_component("unshare") {
        return;
    }
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{{ peers | length }}\n", "out/app")
        .build();
    // A user namespace of its own, with no inotify instance allowed.
    let script = "echo 0 > /proc/sys/user/max_inotify_instances && exec \"$@\"";
    let prefix = [
        "unshare",
        "--user",
        "--map-root-user",
        "sh",
        "-c",
        script,
        "sh",
    ];
    let once = run(&mut wrapped(&pod, &prefix, "once"));
    assert_eq!(once.code, Some(0), "{}", once.dump());
    let mut d = Daemon::spawn(wrapped(&pod, &prefix, "run"));
    pod.wait_for(&mut d, "2\n");
    pod.replace("peers", &peers(&[0, 1, 2]));
    pod.wait_for(&mut d, "3\n");
    pod.replace("app.j2", "{{ peers | length }} peers\n");
    pod.wait_for(&mut d, "3 peers\n");
    let warnings = lines_with(&pod, &d.stderr(), "fs.inotify.max_user_instances");
    assert_eq!(warnings.lines().count(), 1, "{}", d.logs());
}

#[test]
fn an_in_place_edit_of_a_bind_mounted_template_is_rendered() {
    if !require_component("unshare") {
        return;
    }
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("mounted/app.j2", "placeholder\n", "out/app")
        .build();
    let source = pod.sb.write("outside/app.j2", "one\n");
    let script = format!(
        "mount --bind {} {} && exec \"$@\"",
        source.display(),
        pod.sb.join("mounted/app.j2").display()
    );
    let prefix = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ];
    let mut d = Daemon::spawn(wrapped(&pod, &prefix, "run"));
    pod.wait_for(&mut d, "one\n");
    // In place, as an editor that keeps the inode writes.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&source)
        .expect("open");
    f.write_all(b"two\n").expect("write");
    drop(f);
    pod.wait_for(&mut d, "two\n");
}

// ---- ordinals ---------------------------------------------------------------

#[test]
fn only_statefulset_names_have_ordinals() {
    let pod = Pod::builder()
        .peers_file("10-244-1-6.nginx.default.svc.cluster.local\n3339386563373339.nginx.default.svc.cluster.local\n10.0.0.5\nweb-0.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\nmy-db-2.x\nweb7.x\n")
        .template(
            "o.j2",
            "{% for p in peers %}{{ p.hostname }} {{ p.ordinal | default(\"-\") }}\n{% endfor %}",
            "out/o",
        )
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_snapshot!(pod.read_or_empty("out/o"));
}

#[test]
fn zoo_cfg_fails_on_a_shared_ordinal_and_myid_without_one() {
    let zoo = crate::helpers::repo_file("templates/zoo.cfg.j2");
    let myid = crate::helpers::repo_file("templates/myid.j2");
    let pod = Pod::builder()
        .peers_file("web-1.nginx.default.svc.cluster.local\ndb-1.mysql.default.svc.cluster.local\n10-244-1-6.nginx.default.svc.cluster.local\n")
        .template("zoo.cfg.j2", &fs::read_to_string(&zoo).expect("zoo"), "out/zoo.cfg")
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!("zoo_shared_ordinal", error_text(&pod, &out.stderr));

    let pod = Pod::builder()
        .hostname("3339386563373339")
        .peers_file("3339386563373339.nginx.default.svc.cluster.local\n")
        .template(
            "myid.j2",
            &fs::read_to_string(&myid).expect("myid"),
            "out/myid",
        )
        .build();
    let out = pod.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!("myid_no_ordinal", error_text(&pod, &out.stderr));
}

// ---- bounded inputs -----------------------------------------------------------

#[test]
fn a_fifo_as_the_peers_file_is_a_source_error_and_sigterm_still_works() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{{ peers | length }}\n", "out/app")
        .build();
    let mut d = pod.start();
    pod.wait_for(&mut d, "2\n");
    let fifo = pod.sb.join("peers.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    fs::rename(&fifo, &pod.peers).expect("swap in the FIFO");
    d.wait_for_log("a FIFO, not a regular file", WAIT);
    // A special file of another kind: a directory.
    fs::remove_file(&pod.peers).expect("rm fifo");
    fs::create_dir(&pod.peers).expect("dir");
    d.wait_for_log("a directory, not a regular file", WAIT);
    assert_eq!(pod.output().as_deref(), Some("2\n"), "the last set stays");
    let (status, took) = d.stop_with(Signal::SIGTERM, WAIT);
    assert!(
        status.success() && took < Duration::from_secs(1),
        "{status:?} {took:?}"
    );
}

#[test]
fn dev_zero_as_the_peers_file_is_a_source_error_under_32_mib() {
    let Some(cg) = MemoryCgroup::new(LIMIT_32_MIB) else {
        return;
    };
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{{ peers | length }}\n", "out/app")
        .build();
    let mut d = Daemon::spawn(cg.wrap(&pod.command("run")));
    pod.wait_for(&mut d, "2\n");
    let link = pod.sb.join("peers.new");
    std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
    fs::rename(&link, &pod.peers).expect("swap in /dev/zero");
    d.wait_for_log("a character device, not a regular file", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.is_running(), "{}", d.logs());
    assert_eq!(cg.oom_kills(), 0);
    assert_eq!(pod.output().as_deref(), Some("2\n"));
}

#[test]
fn a_peers_file_over_its_limits_keeps_the_last_set_and_bad_names_are_warned_once() {
    let pod = Pod::builder()
        .peers_file(&format!("{}bad_name\n", peers(&[0, 1])))
        .template("app.j2", "{{ peers | length }}\n", "out/app")
        .build();
    let mut d = pod.start();
    pod.wait_for(&mut d, "2\n");
    pod.replace("peers", &format!("{}bad_name\n", peers(&[0, 1, 2])));
    pod.wait_for(&mut d, "3\n");
    let warned = lines_with(&pod, &d.stderr(), "bad_name");
    assert_eq!(warned.lines().count(), 1, "{warned}");
    let many: String = (0..10_001).map(|k| format!("web-{k}.x\n")).collect();
    pod.replace("peers", &many);
    d.wait_for_log("lists 10001 names, more than 10000", WAIT);
    // Over 1 MiB.
    pod.replace("peers", &"#".repeat(2 * 1024 * 1024));
    d.wait_for_log("larger than 1.0 MiB", WAIT);
    assert_eq!(pod.output().as_deref(), Some("3\n"));
}

#[test]
fn three_thousand_idle_connections_neither_kill_nor_block_the_admin_listener() {
    let Some(cg) = MemoryCgroup::new(LIMIT_32_MIB) else {
        return;
    };
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{{ peers | length }}\n", "out/app")
        .http()
        .build();
    let mut d = Daemon::spawn(cg.wrap(&pod.command("run")));
    let port = pod.port;
    d.wait_until(WAIT, "/healthz", |_| http_status(port, "/healthz") == 200);
    let mut idle = Vec::new();
    for _ in 0..3000 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            idle.push(s);
        }
    }
    assert!(idle.len() > 2500, "{} connections", idle.len());
    let answered = poll_until(Duration::from_secs(3), || {
        http_status(port, "/healthz") == 200
    });
    assert!(
        answered,
        "/healthz did not answer during the flood\n{}",
        d.logs()
    );
    pod.replace("peers", &peers(&[0, 1, 2]));
    pod.wait_for(&mut d, "3\n");
    assert!(d.is_running());
    assert_eq!(cg.oom_kills(), 0);
    drop(idle);
}

#[test]
fn at_the_file_descriptor_limit_the_listener_backs_off_and_healthz_recovers() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "{{ peers | length }}\n", "out/app")
        .http()
        .build();
    let prefix = ["sh", "-c", "ulimit -n 40 && exec \"$@\"", "sh"];
    let mut d = Daemon::spawn(wrapped(&pod, &prefix, "run"));
    let port = pod.port;
    d.wait_until(WAIT, "/healthz", |_| http_status(port, "/healthz") == 200);
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            idle.push(s);
        }
    }
    let pid = i32::try_from(d.pid()).expect("pid");
    let before = procfs::cpu_ns(pid).expect("cpu");
    std::thread::sleep(Duration::from_secs(2));
    let used = procfs::cpu_ns(pid).expect("cpu") - before;
    assert!(used < 500_000_000, "{used} ns of CPU in 2 s: spinning");
    let answered = poll_until(Duration::from_secs(5), || {
        http_status(port, "/healthz") == 200
    });
    assert!(answered, "{}", d.logs());
    drop(idle);
}

#[test]
fn config_values_out_of_range_are_errors_with_file_line_and_range() {
    let cases = [
        ("wait_min", "wait:\n  min: 18000000000000000000s\n"),
        ("wait_max", "wait:\n  max: 18000000000000000000s\n"),
        ("peers_timeout", "peers:\n  static: [web-1]\n  timeout: 18000000000000000000s\n"),
        ("dns_interval", "peers:\n  dns:\n    service: nginx\n    nameservers: [\"127.0.0.1\"]\n    interval: 1ns\n"),
        ("hooks_timeout", "hooks:\n  on_change: \"true\"\n  timeout: 18000000000000000000s\n"),
        ("empty", "\n# nothing here\n"),
        ("destination_is_source", "templates:\n  - {source: a.j2, destination: a.j2}\n"),
        ("fuel", "templates:\n  - {source: a.j2, destination: b, fuel: 10}\n"),
        ("max_size", "templates:\n  - {source: a.j2, destination: b, max_size: 1GiB}\n"),
    ];
    let mut all = String::new();
    for (name, yaml) in cases {
        let pod = Pod::builder().build();
        fs::write(&pod.config, yaml).expect("config");
        for command in ["check", "once", "run"] {
            let out = pod.run(command);
            assert_eq!(out.code, Some(2), "{name} {command}: {}", out.dump());
            assert!(!out.stderr.contains("panicked"), "{}", out.dump());
        }
        let out = pod.run("check");
        all.push_str(&format!("{name}: {}\n", error_text(&pod, &out.stderr)));
    }
    assert_snapshot!(all);
}

#[test]
fn a_non_utf8_argument_is_a_message_never_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"-service=\xff\xfe");
    let sb = crate::helpers::Sandbox::new();
    let link = sb.join("peer-finder");
    std::os::unix::fs::symlink(bin(), &link).expect("symlink");
    let mut as_drop_in = Command::new(&link);
    as_drop_in.arg(bad);
    sb.clean_env(&mut as_drop_in);
    let out = run(&mut as_drop_in);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr
            .starts_with("invalid argument \"-service=\u{fffd}\u{fffd}\": not UTF-8 text"),
        "{}",
        out.dump()
    );
    for args in [vec![std::ffi::OsStr::new("peer-finder"), bad], vec![bad]] {
        let out = run(&mut sb.peerplate(args));
        assert_eq!(out.code, Some(2), "{}", out.dump());
        assert!(!out.stderr.contains("panicked"), "{}", out.dump());
    }
}

#[test]
fn seed_into_its_own_subfolder_is_refused() {
    let pod = Pod::builder()
        .yaml("seed:\n  - {from: ROOT/a, to: ROOT/a/sub}\n")
        .build();
    pod.sb.write("a/file", "x");
    let out = pod.run("check");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_snapshot!("seed_lexical", error_text(&pod, &out.stderr));
    // Through a symlink, which only the real paths show.
    std::os::unix::fs::symlink(pod.sb.join("a"), pod.sb.join("link")).expect("symlink");
    let pod2 = Pod::builder()
        .yaml(&format!(
            "seed:\n  - {{from: {}, to: {}}}\n",
            pod.sb.join("link").display(),
            pod.sb.join("a/sub").display()
        ))
        .build();
    let out = pod2.run("once");
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(out.stderr.contains("is inside from"), "{}", out.dump());
    assert!(!pod.sb.join("a/sub").exists());
}
