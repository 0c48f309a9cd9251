//! The loop supervises its workers: a worker that ends early is logged,
//! counted and turns `/healthz` to 503 (readiness stays apart); shutdown
//! waits for the workers and still exits within a second, even with the DNS
//! worker blocked in a socket call; `check` rejects what `run` would,
//! DNS settings included, naming the file and the line.

use std::net::UdpSocket;
use std::time::Duration;

use nix::sys::signal::Signal;

use std::process::Command;

use crate::helpers::{
    debug_bin, free_port, http_get, poll_until, redact_timestamps, run, Daemon, Sandbox,
};

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get(port, path).ok().map(|r| (r.status, r.body))
}

#[test]
fn a_worker_that_ends_early_fails_healthz_is_logged_and_counted() {
    let sb = Sandbox::new();
    sb.write(
        "peers",
        "web-0.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\n",
    );
    sb.write("t.j2", "{{ peers|length }}\n");
    let port = free_port();
    let config = sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-1}}\npeers: {{file: peers}}\ntemplates:\n  - {{source: t.j2, destination: out.txt}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
        ),
    );
    // The fault hook is compiled into debug builds only, so this one test
    // runs the debug binary cargo built, not the shipped one.
    let mut cmd = Command::new(debug_bin());
    cmd.args(["--config", &config.display().to_string(), "run"]);
    sb.clean_env(&mut cmd);
    // The `file` worker returns after its first event.
    cmd.env("PEERPLATE_TEST_END_WORKER", "file");
    let mut d = Daemon::spawn(cmd);
    d.wait_for_line(
        0,
        &["a worker stopped", "worker=\"file\""],
        Duration::from_secs(5),
    );
    let (code, body) = get(port, "/healthz").expect("GET /healthz");
    assert_eq!(code, 503, "{body}\n{}", d.logs());
    assert_eq!(
        body,
        "not healthy: the file worker stopped: fault injected for a test\n"
    );
    // Readiness is apart: the template rendered before the worker ended.
    assert!(
        poll_until(Duration::from_secs(5), || get(port, "/readyz")
            .is_some_and(|(c, _)| c == 200)),
        "{}",
        d.logs()
    );
    let (_, metrics) = get(port, "/metrics").expect("GET /metrics");
    assert!(
        metrics.contains("peerplate_workers_ended_total{worker=\"file\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("peerplate_workers_ended_total{worker=\"dns\"} 0"),
        "{metrics}"
    );
    assert!(
        d.is_running(),
        "the process stays up for kubelet to restart"
    );
    d.terminate();
}

#[test]
fn without_the_fault_healthz_stays_200() {
    let sb = Sandbox::new();
    sb.write("peers", "web-1.nginx.default.svc.cluster.local\n");
    sb.write("t.j2", "{{ peers|length }}\n");
    let port = free_port();
    let config = sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-1}}\npeers: {{file: peers}}\ntemplates:\n  - {{source: t.j2, destination: out.txt}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
        ),
    );
    let mut d = Daemon::spawn(sb.peerplate(["--config", &config.display().to_string(), "run"]));
    assert!(poll_until(Duration::from_secs(5), || sb
        .join("out.txt")
        .exists()));
    sb.write(
        "peers",
        "web-0.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\n",
    );
    assert!(poll_until(Duration::from_secs(5), || {
        std::fs::read_to_string(sb.join("out.txt")).is_ok_and(|t| t == "2\n")
    }));
    assert_eq!(
        get(port, "/healthz").map(|r| r.0),
        Some(200),
        "{}",
        d.logs()
    );
    d.terminate();
}

#[test]
fn sigterm_exits_within_a_second_while_the_dns_worker_waits_on_a_silent_server() {
    // A DNS server that never answers: the poller sits in a 5 s socket wait.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let ns = silent.local_addr().expect("addr");
    let sb = Sandbox::new();
    sb.write("t.j2", "{{ peers|length }}\n");
    let config = sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-0}}\npeers:\n  dns: {{service: nginx, nameservers: [\"{ns}\"], interval: 5s}}\ntemplates:\n  - {{source: t.j2, destination: out.txt}}\n"
        ),
    );
    let mut d = Daemon::spawn(sb.peerplate(["--config", &config.display().to_string(), "run"]));
    // Let the first query go out, so the poller is inside its wait.
    let mut buf = [0u8; 512];
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    silent
        .recv_from(&mut buf)
        .expect("the poller's first query");
    let (status, took) = d.stop_with(Signal::SIGTERM, Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(
        took < Duration::from_secs(1),
        "exit took {took:?}\n{}",
        d.logs()
    );
}

#[test]
fn check_rejects_an_invalid_dns_name_with_file_and_line() {
    let sb = Sandbox::new();
    sb.write("t.j2", "x\n");
    let config = sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-0}\npeers:\n  dns:\n    name: \"bad..name\"\n    nameservers: [\"127.0.0.1:53\"]\ntemplates:\n  - {source: t.j2, destination: out.txt}\n",
    );
    let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "check"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!(sb.redact(&out.stderr));
    // `run` says the same, before doing anything.
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "run"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr
            .contains("peerplate.yaml:4: peers.dns: \"bad..name\" is not a DNS name"),
        "{}",
        out.dump()
    );
    assert!(!sb.join("out.txt").exists());
}

/// No DNS server to ask (no `nameservers`, and the resolv.conf is missing
/// or has no nameserver line, as in a CI container without a network):
/// `check` warns naming the file and line and exits 0, `check --strict`
/// exits 2, `render --peer` renders without asking anyone, and `run` and
/// `once` refuse to start.
#[test]
fn no_dns_server_is_a_warning_for_check_and_render_and_an_error_for_run() {
    let sb = Sandbox::new();
    sb.write(
        "t.j2",
        "{% for p in peers %}{{ p.hostname }} {% endfor %}\n",
    );
    sb.write("peerplate.yaml", "identity: {hostname: web-0}\npeers:\n  dns:\n    service: nginx\ntemplates:\n  - {source: t.j2, destination: out.txt}\n");
    let empty = sb.write("empty-resolv.conf", "search svc.cluster.local\n");
    let missing = sb.join("no-such-resolv.conf");
    for resolv in [&empty, &missing] {
        let check = run(sb
            .peerplate(["--config", "peerplate.yaml", "check"])
            .env("PEERPLATE_RESOLV_CONF", resolv));
        assert_eq!(check.code, Some(0), "{}", check.dump());
        insta::assert_snapshot!(
            "check_warns_dns_with_no_server_to_ask",
            redact_timestamps(&sb.redact(&check.stderr))
        );
        let strict = run(sb
            .peerplate(["--config", "peerplate.yaml", "check", "--strict"])
            .env("PEERPLATE_RESOLV_CONF", resolv));
        assert_eq!(strict.code, Some(2), "{}", strict.dump());
        insta::assert_snapshot!(
            "check_strict_refuses_dns_with_no_server_to_ask",
            redact_timestamps(&sb.redact(&strict.stderr))
        );
        let render = run(sb
            .peerplate([
                "--config",
                "peerplate.yaml",
                "render",
                "--peer",
                "web-0.nginx.default.svc.cluster.local",
                "--peer",
                "web-1.nginx.default.svc.cluster.local",
            ])
            .env("PEERPLATE_RESOLV_CONF", resolv));
        assert_eq!(render.code, Some(0), "{}", render.dump());
        assert_eq!(render.stdout, "web-0 web-1 ");
        // Without --peer, render would need DNS: a usage error naming the
        // file, the line and both fixes.
        let render = run(sb
            .peerplate(["--config", "peerplate.yaml", "render"])
            .env("PEERPLATE_RESOLV_CONF", resolv));
        assert_eq!(render.code, Some(2), "{}", render.dump());
        insta::assert_snapshot!(
            "render_without_peers_needs_a_dns_server",
            sb.redact(&render.stderr)
        );
        for command in ["run", "once"] {
            let out = run(sb
                .peerplate(["--config", "peerplate.yaml", command])
                .env("PEERPLATE_RESOLV_CONF", resolv));
            assert_eq!(out.code, Some(2), "{command}: {}", out.dump());
            insta::assert_snapshot!(
                "run_refuses_dns_with_no_server_to_ask",
                sb.redact(&out.stderr)
            );
        }
    }
    assert!(!sb.join("out.txt").exists());
}
