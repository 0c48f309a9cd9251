//! Named reload actions (`reloads:`) through `peerplate run`, with
//! shell-free `exec` actions and an `http` action against a scripted HTTP
//! server of the test's own:
//!
//! - two templates with two actions: a change to one output runs only its
//!   action; each action runs once per cycle;
//! - an `exec` the app fails (non-zero exit) is `rejected`: the output goes
//!   back (a file that did not exist before is removed), the stderr is in
//!   the log, the same bytes are not installed again until the template
//!   changes, and a fixed template is `accepted`;
//! - `http`: 503 is tried again with backoff, a redirect on the same host is
//!   followed, 2xx accepts; a 4xx rejects at once and its body is logged; a
//!   connection refused through every retry is `no_process`, the file
//!   stays and the reload is owed (tried again with backoff);
//! - `min_interval` coalesces a burst of changes into one run at its end;
//! - SIGTERM while a `verify: children` verdict is pending exits at once,
//!   logs "verdict unknown" and leaves the new file;
//! - config errors about actions name the line and the known names (insta).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{metric, peers, run, Daemon, Sandbox, WAIT};
use crate::pod::Pod;

/// How many files `mktemp ROOT/runs/NAME.XXXXXX` made: the runs of NAME.
fn runs(pod: &Pod, name: &str) -> usize {
    std::fs::read_dir(pod.sb.join("runs"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{name}."))
                })
                .count()
        })
        .unwrap_or(0)
}

fn reloads(pod: &Pod, action: &str, result: &str) -> f64 {
    metric(
        pod.port,
        &format!("peerplate_reloads_total{{action=\"{action}\",result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn two_actions_each_runs_only_for_its_own_outputs() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "a.j2",
            "a1 {{ peers | length }}\n",
            "out/a",
            "    reload: a\n",
        )
        .template_with("b.j2", "b1\n", "out/b", "    reload: b\n")
        .http()
        .yaml("reloads:\n  a: {exec: \"mktemp ROOT/runs/a.XXXXXX\"}\n  b: {exec: \"mktemp ROOT/runs/b.XXXXXX\", timeout: 5s}\n")
        .build();
    pod.sb.mkdir("runs");
    let mut d = pod.start();
    d.wait_until(WAIT, "a and b to run once", |_| {
        runs(&pod, "a") == 1 && runs(&pod, "b") == 1
    });
    d.wait_until(WAIT, "both accepted", |_| {
        reloads(&pod, "a", "accepted") == 1.0 && reloads(&pod, "b", "accepted") == 1.0
    });
    for result in ["signalled", "rejected", "no_process", "failed"] {
        assert_eq!(reloads(&pod, "a", result), 0.0, "{result}");
    }

    // A change to a's template: only a runs.
    pod.replace("a.j2", "a2 {{ peers | length }}\n");
    pod.wait_for(&mut d, "a2 2\n");
    d.wait_until(WAIT, "a to run again", |_| runs(&pod, "a") == 2);
    // A peer change that changes only a's output: only a runs.
    pod.replace("peers", &peers(&[0, 1, 2]));
    pod.wait_for(&mut d, "a2 3\n");
    d.wait_until(WAIT, "a to run a third time", |_| runs(&pod, "a") == 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        runs(&pod, "b"),
        1,
        "b's output did not change\n{}",
        d.logs()
    );
    assert_eq!(reloads(&pod, "b", "accepted"), 1.0);
    assert_eq!(reloads(&pod, "a", "accepted"), 3.0);
}

#[test]
fn a_rejected_exec_rolls_back_and_is_not_retried_until_the_template_changes() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("app.j2", "v1\n", "out/app.conf")
        .template_with(
            "other.j2",
            "{{ peers | length }}\n",
            "out/other",
            "    reload: false\n",
        )
        .http()
        // The single `reload:` as an exec: the app accepts while ROOT/app-ok
        // exists (cat exits 0), else cat fails with its complaint.
        .yaml("reload: {exec: \"cat ROOT/app-ok\"}\n")
        .build();
    let mut d = pod.start();
    // The first install is rejected: the new file did not exist before, so
    // rolling it back removes it.
    let line = d.wait_for_line(0, &["reload rejected by the app", "action=default"], WAIT);
    assert!(
        line.contains("No such file or directory"),
        "the app's complaint: {line}"
    );
    d.wait_for_line(
        0,
        &["rolled back", "removed (it did not exist before)"],
        WAIT,
    );
    assert!(pod.read("out/app.conf").is_none(), "{}", d.logs());
    assert_eq!(reloads(&pod, "default", "rejected"), 1.0);

    // The app accepts from now on; the template changes: installed, accepted.
    pod.sb.write("app-ok", "");
    pod.replace("app.j2", "v2\n");
    pod.wait_for(&mut d, "v2\n");
    d.wait_until(WAIT, "accepted", |_| {
        reloads(&pod, "default", "accepted") == 1.0
    });

    // The app refuses again: v3 is installed, rejected, and v2 is back.
    std::fs::remove_file(pod.sb.join("app-ok")).expect("rm app-ok");
    let mark = d.mark();
    pod.replace("app.j2", "v3\n");
    d.wait_for_line(
        mark,
        &["rolled back", "restored=\"the previous file\""],
        WAIT,
    );
    assert_eq!(pod.read_or_empty("out/app.conf"), "v2\n", "{}", d.logs());
    assert_eq!(reloads(&pod, "default", "rejected"), 2.0);

    // A peer change renders v3 again: the same bytes the app refused are not
    // installed again, and the app is not asked again.
    let mark = d.mark();
    pod.replace("peers", &peers(&[0, 1, 2]));
    pod.wait_for_file(&mut d, "out/other", "3\n");
    d.wait_for_line(
        mark,
        &["not installed: the app rejected these same bytes"],
        WAIT,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pod.read_or_empty("out/app.conf"), "v2\n");
    assert_eq!(reloads(&pod, "default", "rejected"), 2.0, "{}", d.logs());

    // The template changes (a fix): installed and accepted.
    pod.sb.write("app-ok", "");
    pod.replace("app.j2", "v4\n");
    pod.wait_for(&mut d, "v4\n");
    d.wait_until(WAIT, "accepted", |_| {
        reloads(&pod, "default", "accepted") == 2.0
    });
}

/// A scripted HTTP/1.1 server on 127.0.0.1: each connection gets the next
/// answer of the script (the last one repeats); the request lines are kept.
pub struct Scripted {
    pub port: u16,
    script: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    pub fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script: Arc<Mutex<Vec<String>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, r) = (Arc::clone(&script), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                r.lock().expect("lock").push(first.trim().to_string());
                let answer = {
                    let mut script = s.lock().expect("lock");
                    if script.len() > 1 {
                        script.remove(0)
                    } else {
                        script.first().cloned().unwrap_or_default()
                    }
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Scripted {
            port,
            script,
            requests,
        }
    }

    pub fn answers(&self, answers: &[String]) {
        *self.script.lock().expect("lock") = answers.to_vec();
        self.requests.lock().expect("lock").clear();
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

pub fn answer(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

#[test]
fn http_retries_503_follows_same_host_redirects_and_takes_a_4xx_as_the_verdict() {
    let app = Scripted::start();
    app.answers(&[
        answer("503 Service Unavailable", "", "starting"),
        answer("503 Service Unavailable", "", "starting"),
        answer(
            "307 Temporary Redirect",
            &format!("location: http://127.0.0.1:{}/-/reload2\r\n", app.port),
            "",
        ),
        answer("200 OK", "", ""),
    ]);
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
            "reloads:\n  app: {{http: {{url: \"http://127.0.0.1:{}/-/reload\", retries: 3, timeout: 2s}}}}\n",
            app.port
        ))
        .build();
    let mut d = pod.start();
    d.wait_until(WAIT, "accepted", |_| {
        reloads(&pod, "app", "accepted") == 1.0
    });
    assert_eq!(
        app.requests(),
        [
            "POST /-/reload HTTP/1.1",
            "POST /-/reload HTTP/1.1",
            "POST /-/reload HTTP/1.1",
            "POST /-/reload2 HTTP/1.1"
        ]
    );
    let line = d.wait_for_line(0, &["reload accepted", "action=app"], WAIT);
    assert!(line.contains("HTTP 200"), "{line}");

    // A 400: the app's verdict at once, no retry; the body is logged, cut.
    let body: String = (1..=30)
        .map(|n| format!("line {n} of the reason\n"))
        .collect();
    app.answers(&[answer("400 Bad Request", "", &body)]);
    let mark = d.mark();
    pod.replace("peers", &peers(&[0, 1, 2]));
    let line = d.wait_for_line(mark, &["reload rejected by the app", "HTTP 400"], WAIT);
    let said = d.stderr()[mark..].to_string();
    assert!(said.contains("line 1 of the reason"), "{said}");
    assert!(said.contains("[... 20 more lines]"), "{said}");
    assert!(!said.contains("line 11 of the reason"), "{line}");
    assert_eq!(app.requests().len(), 1, "no retry after a 400");
    d.wait_for_line(mark, &["rolled back"], WAIT);
    assert_eq!(pod.read_or_empty("out/p"), peers(&[0, 1]), "rolled back");

    // A redirect to another host is not followed: failed, the file stays.
    app.answers(&[answer(
        "302 Found",
        "location: http://127.0.0.2:1/elsewhere\r\n",
        "",
    )]);
    let mark = d.mark();
    pod.replace("peers", &peers(&[0, 1, 2, 3]));
    let line = d.wait_for_line(mark, &["reload failed", "another host"], WAIT);
    assert!(line.contains("only redirects on the same host"), "{line}");
    // Not an answer from the app: owed, and tried again with backoff.
    assert!(reloads(&pod, "app", "failed") >= 1.0);
    d.wait_for_line(
        mark,
        &["reload not answered; trying again", "action=app"],
        WAIT,
    );
    assert_eq!(pod.read_or_empty("out/p"), peers(&[0, 1, 2, 3]));
}

#[test]
fn http_with_nobody_listening_is_no_process_and_the_file_stays() {
    let port = crate::helpers::free_port();
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("p.j2", "{{ peers | length }}\n", "out/p")
        .http()
        .yaml(&format!(
            "reloads:\n  app: {{http: {{url: \"http://127.0.0.1:{port}/-/reload\", retries: 1}}}}\n"
        ))
        .build();
    let mut d = pod.start();
    let line = d.wait_for_line(0, &["no process to reload", "action=app"], WAIT);
    assert!(line.contains("after 2 attempt(s)"), "{line}");
    assert!(reloads(&pod, "app", "no_process") >= 1.0);
    // A starting app: the reload is owed and tried again (`run`).
    d.wait_for_line(
        0,
        &["reload not answered; trying again", "action=app"],
        WAIT,
    );
    assert_eq!(pod.output().as_deref(), Some("2\n"));
}

#[test]
fn min_interval_coalesces_a_burst_into_one_run_at_its_end() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("p.j2", "{{ peers | length }}\n", "out/p")
        .http()
        .yaml("reloads:\n  app: {exec: \"mktemp ROOT/runs/app.XXXXXX\", min_interval: 1500ms}\n")
        .build();
    pod.sb.mkdir("runs");
    let mut d = pod.start();
    d.wait_until(WAIT, "the first run", |_| runs(&pod, "app") == 1);
    let first = Instant::now();
    for k in 3..=5 {
        pod.replace("peers", &peers(0..k));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing is installed in between: the file still matches what the app
    // was last reloaded with.
    assert_eq!(pod.output().as_deref(), Some("2\n"), "{}", d.logs());
    d.wait_until(WAIT, "one more run", |_| runs(&pod, "app") == 2);
    assert!(
        first.elapsed() >= Duration::from_millis(1300),
        "not before min_interval: {:?}",
        first.elapsed()
    );
    assert_eq!(pod.output().as_deref(), Some("5\n"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs(&pod, "app"), 2, "one run for the burst\n{}", d.logs());
}

#[test]
fn sigterm_while_a_verdict_is_pending_exits_at_once_and_leaves_the_file() {
    // A process that takes SIGHUP and never starts a child (a shell loop
    // would: each `sleep` is one).
    let sb = Sandbox::new();
    let python = crate::helpers::find_program("python3").expect("python3");
    let app = Daemon::spawn({
        let mut c = Command::new(python);
        c.args([
            "-c",
            "import signal, time\nsignal.signal(signal.SIGHUP, lambda *a: None)\nwhile True: time.sleep(1)\n",
        ]);
        c
    });
    let pid_file = sb.write("app.pid", &format!("{}\n", app.pid()));
    std::thread::sleep(Duration::from_millis(200));
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("p.j2", "{{ peers | length }}\n", "out/p")
        .yaml(&format!(
            "reloads:\n  app: {{signal: HUP, pid_file: {}, verify: children, verify_timeout: 30s}}\n",
            pid_file.display()
        ))
        .build();
    let mut d = pod.start().graceful();
    d.wait_for_line(0, &["reload signal sent"], WAIT);
    std::thread::sleep(Duration::from_millis(100));
    let (status, took) = d.stop_with(nix::sys::signal::Signal::SIGTERM, WAIT);
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(took < Duration::from_secs(1), "exited in {took:?}");
    let logs = d.logs();
    assert!(
        logs.contains("verdict unknown") && logs.contains("action=app"),
        "{logs}"
    );
    assert_eq!(pod.output().as_deref(), Some("2\n"), "the file stays");
    drop(app);
}

#[test]
fn action_config_errors_name_the_line_and_the_known_names() {
    let sb = Sandbox::new();
    sb.write("a.j2", "a\n");
    let cases = [
        (
            "unknown_action",
            "templates:\n  - source: a.j2\n    destination: out/a\n    reload: ngnix\nreloads:\n  nginx: {signal: HUP, process: nginx, verify: children}\n  prometheus: {http: {url: \"http://127.0.0.1:9090/-/reload\"}}\n",
        ),
        (
            "several_actions_and_reload_true",
            "templates:\n  - {source: a.j2, destination: out/a}\nreloads:\n  nginx: {process: nginx}\n  app: {exec: \"/usr/local/bin/app reload\", timeout: 10s}\n",
        ),
        (
            "two_kinds_in_one_action",
            "reloads:\n  nginx: {process: nginx, http: {url: \"http://127.0.0.1/\"}}\n",
        ),
    ];
    for (name, text) in cases {
        let config = sb.write("peerplate.yaml", text);
        let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "check"]));
        assert_eq!(out.code, Some(2), "{}", out.dump());
        insta::assert_snapshot!(name, sb.redact(&out.stderr));
    }
}
