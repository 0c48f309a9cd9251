//! Live configuration through `peerplate run`: `peerplate.yaml` mounted the
//! way kubelet mounts a ConfigMap. Swapped for a valid one (a new template
//! added), it takes effect without a restart; swapped for an invalid one,
//! the error names the file and line, it is counted, and the old config
//! keeps running; SIGHUP re-reads it; what needs a restart (http.listen) is
//! logged and otherwise ignored.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::{http_status, metric, peers, ConfigMapDir, Daemon, Sandbox, WAIT};

fn config(root: &Sandbox, port: u16, extra_template: bool) -> String {
    let root = root.path().display();
    let b = if extra_template {
        format!("  - {{source: {root}/b.j2, destination: {root}/out/b}}\n")
    } else {
        String::new()
    };
    format!(
        "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\ntemplates:\n  - {{source: {root}/a.j2, destination: {root}/out/a}}\n{b}wait: {{min: 0s, max: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
    )
}

fn config_reloads(port: u16, result: &str) -> f64 {
    metric(
        port,
        &format!("peerplate_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn a_swapped_config_takes_effect_without_a_restart_and_a_bad_one_is_refused() {
    let sb = Sandbox::new();
    sb.write("peers", &peers(&[0, 1]));
    sb.write("a.j2", "a {{ peers | length }}\n");
    sb.write("b.j2", "b {{ peers | length }}\n");
    sb.mkdir("out");
    let port = crate::helpers::free_port();
    let mut cm = ConfigMapDir::create(
        &sb.join("cfg"),
        &[("peerplate.yaml", &config(&sb, port, false))],
    );
    let path = cm.path("peerplate.yaml");
    let mut d = Daemon::spawn(sb.peerplate(["--config", &path.display().to_string(), "run"]));
    d.wait_until(WAIT, "out/a", |_| {
        sb.read("out/a").as_deref() == Some("a 2\n")
    });
    d.wait_until(WAIT, "/healthz", |_| http_status(port, "/healthz") == 200);
    let pid = d.pid();

    // A valid config with one more template: rendered, no restart.
    cm.update(&[("peerplate.yaml", &config(&sb, port, true))]);
    d.wait_until(WAIT, "out/b", |_| {
        sb.read("out/b").as_deref() == Some("b 2\n")
    });
    d.wait_for_line(0, &["config reloaded", "templates=2"], WAIT);
    assert_eq!(d.pid(), pid);
    assert!(d.is_running());
    assert_eq!(config_reloads(port, "applied"), 1.0);

    // An invalid one (a misspelt key on line 4): logged with file and line,
    // counted; the running config stays and goes on rendering.
    let mark = d.mark();
    let bad =
        config(&sb, port, true).replace("templates:", "templates:\n  - {source: x, destinaton: y}");
    cm.update(&[("peerplate.yaml", &bad)]);
    let line = d.wait_for_line(mark, &["the new config is invalid"], WAIT);
    assert!(
        line.contains(&format!("{}:5:", path.display())),
        "names the file and line: {line}"
    );
    assert!(line.contains("did you mean `destination`"), "{line}");
    insta::assert_snapshot!(
        "invalid_config_at_runtime",
        sb.redact(&crate::helpers::redact_timestamps(
            &crate::helpers::strip_ansi(&line)
        ))
    );
    assert_eq!(config_reloads(port, "invalid"), 1.0);
    sb.replace("peers", &peers(&[0, 1, 2]));
    d.wait_until(WAIT, "both outputs follow the peers", |_| {
        sb.read("out/a").as_deref() == Some("a 3\n") && sb.read("out/b").as_deref() == Some("b 3\n")
    });

    // SIGHUP re-reads it (still invalid: counted again).
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP");
    d.wait_until(WAIT, "a second invalid re-read", |_| {
        config_reloads(port, "invalid") == 2.0
    });

    // Fixed, with another admin port: that needs a restart, said so; the
    // admin server stays where it was.
    let mark = d.mark();
    let moved = config(&sb, port, true).replace(&format!(":{port}"), ":1");
    cm.update(&[("peerplate.yaml", &moved)]);
    d.wait_for_line(mark, &["http.listen changed", "needs a restart"], WAIT);
    assert_eq!(http_status(port, "/healthz"), 200);
    // The same config again on SIGHUP: unchanged.
    let before = config_reloads(port, "unchanged");
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).expect("SIGHUP");
    d.wait_until(WAIT, "an unchanged re-read", |_| {
        config_reloads(port, "unchanged") == before + 1.0
    });
    assert!(d.is_running(), "{}", d.logs());
}
