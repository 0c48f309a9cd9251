//! A template author's loop and the small things users trip on (issue 14):
//! `render`'s flags (`--peer NAME:PORT`, `--var`, `--namespace`), errors
//! that name the fix, and `HEAD` on the admin paths. Each test checks the
//! exact text a user sees.

use std::io::{Read, Write};
use std::time::Duration;

use crate::helpers::{free_port, poll_until, run, Daemon, Sandbox};

const TEMPLATE: &str = "ns={{ pod.namespace }} fqdn={{ pod.fqdn }} listen={{ vars.listen }} tls={{ vars.tls.on }}\n{% for p in peers %}{{ p.hostname }}:{{ p.port if p.port else 'none' }}\n{% endfor %}";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("t.j2", TEMPLATE);
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - {source: t.j2, destination: out.txt}\nvars: {listen: 80, tls: {on: false}}\n",
    );
    sb
}

fn render(sb: &Sandbox, extra: &[&str]) -> crate::helpers::Outcome {
    let mut args = vec!["--config", "peerplate.yaml", "render"];
    args.extend(extra);
    run(&mut sb.peerplate(args))
}

#[test]
fn render_takes_ports_vars_and_a_namespace() {
    let sb = sandbox();
    let out = render(
        &sb,
        &[
            "--peer",
            "web-0.nginx:8080",
            "--peer",
            "web-1.nginx",
            "--var",
            "listen=9000",
            "--var",
            "tls.on=true",
            "--namespace",
            "prod",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout,
        "ns=prod fqdn=web-1.nginx listen=9000 tls=True\nweb-0:8080\nweb-1:none\n"
    );
    // A quoted value is a string; vars not given keep the config's.
    let out = render(&sb, &["--peer", "web-1.nginx", "--var", "listen=\"x\""]);
    assert_eq!(
        out.stdout,
        "ns=default fqdn=web-1.nginx listen=x tls=False\nweb-1:none\n"
    );
}

#[test]
fn render_flag_errors_name_the_fix() {
    let sb = sandbox();
    let cases: [(&str, &[&str]); 6] = [
        ("bad_peer_name", &["--peer", "bad_name.nginx"]),
        ("bad_peer_port", &["--peer", "web-0.nginx:http"]),
        ("peer_port_0", &["--peer", "web-0.nginx:0"]),
        ("var_without_value", &["--var", "listen"]),
        ("var_into_a_scalar", &["--var", "listen.port=1"]),
        ("var_a_list", &["--var", "listen=[1, 2]"]),
    ];
    for (name, args) in cases {
        let out = render(&sb, args);
        assert_eq!(out.code, Some(2), "{name}: {}", out.dump());
        assert_eq!(out.stdout, "", "{name}: nothing rendered");
        insta::assert_snapshot!(format!("render_flag_{name}"), sb.redact(&out.stderr));
    }
}

#[test]
fn render_warns_when_this_pod_is_not_among_the_peers() {
    let sb = sandbox();
    let out = render(&sb, &["--peer", "web-0.nginx", "--hostname", "web-7"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stderr
            .contains("this pod is not among the --peer names")
            && out.stderr.contains("hostname=web-7"),
        "{}",
        out.dump()
    );
}

#[test]
fn render_template_not_found_names_what_was_tried() {
    let sb = Sandbox::new();
    // No config at all: the default path does not exist.
    let out = run(&mut sb.peerplate(["render", "--template", "missing.j2"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!(sb.redact(&out.stderr));
}

fn raw_request(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

#[test]
fn head_answers_on_every_admin_path() {
    let sb = sandbox();
    let port = free_port();
    sb.write(
        "peerplate.yaml",
        &format!("identity: {{hostname: web-1}}\ntemplates:\n  - {{source: t.j2, destination: out.txt}}\nvars: {{listen: 80, tls: {{on: false}}}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"),
    );
    let mut d = Daemon::spawn(sb.peerplate(["--config", "peerplate.yaml", "run"]));
    assert!(
        poll_until(Duration::from_secs(5), || sb.join("out.txt").exists()),
        "{}",
        d.logs()
    );
    for path in ["/healthz", "/readyz", "/metrics", "/leader"] {
        let reply = raw_request(
            port,
            &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            reply.starts_with("HTTP/1.1 200 OK\r\n"),
            "HEAD {path}: {reply}"
        );
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(body, "", "HEAD {path} has no body");
    }
    let reply = raw_request(
        port,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(reply.ends_with("GET or HEAD only\n"), "{reply}");
    d.terminate();
}
