//! What comes from outside peerplate, through the binary (issue 18): a
//! peer's `/leader` answer, SRV targets, the config file replaced by a FIFO,
//! `/dev/zero` or a huge file, a `file()` input of 150,000 lines, secrets
//! quoted by an app in encoded forms. Each must end in a clear message, a
//! live daemon and a log that neither forges lines nor leaks the secret.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dns_server::DnsServer;
use crate::helpers::{free_port_on, http_status, run, Daemon, Sandbox, WAIT};

/// An HTTP server on `ip:port` that answers every request with `body`
/// (200, JSON) until dropped.
struct FixedAnswer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixedAnswer {
    fn start(ip: Ipv4Addr, port: u16, body: &str) -> FixedAnswer {
        let listener = TcpListener::bind((ip, port)).expect("bind the fake peer");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FixedAnswer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FixedAnswer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fake timestamp a forged line would start with.
const FORGED_TIME: &str = "2020-01-01T00:00:00.000000Z";

#[test]
fn a_forged_newline_in_a_peers_leader_answer_is_escaped_in_the_text_log() {
    // web-0 (127.0.0.40) and web-2 (.42) are fake peers: web-0 names
    // itself, web-2 answers with a newline, a fake timestamp, an ANSI
    // escape and a bidi control; web-1 (.41) is peerplate's `once` with
    // `sticky`, which asks both before rendering and logs their answers.
    let dns = DnsServer::start("cluster.local");
    let ip = |k: u8| Ipv4Addr::new(127, 0, 0, 40 + k);
    let me = ip(1);
    dns.set_pod_ips(&[("web-0", ip(0)), ("web-1", me), ("web-2", ip(2))]);
    let port = free_port_on(&["127.0.0.40", "127.0.0.41", "127.0.0.42"]);
    let web0 = "web-0.nginx.default.svc.cluster.local";
    let forged = format!("{web0}\n{FORGED_TIME} ERROR forged line\u{1b}[2K\u{202e}");
    let _honest = FixedAnswer::start(
        ip(0),
        port,
        &serde_json::json!({ "leader": web0 }).to_string(),
    );
    let _forger = FixedAnswer::start(
        ip(2),
        port,
        &serde_json::json!({ "leader": forged }).to_string(),
    );
    let sb = Sandbox::new();
    sb.write("t.j2", "leader={{ leader.hostname if leader else 'none' }}\n");
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-1, namespace: default}}\npeers:\n  dns:\n    service: nginx\n    cluster_domain: cluster.local\n    nameservers: [\"{}\"]\n    interval: 100ms\ntemplates:\n  - {{source: t.j2, destination: out.txt}}\nhttp: {{listen: \"{me}:{port}\"}}\nleader:\n  policy: sticky\n",
            dns.nameserver()
        ),
    );
    let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "once"]));
    let raw = out.raw_stderr.clone();
    assert!(
        raw.contains(&format!("\\n{FORGED_TIME} ERROR forged line\\x1b[2K\\u{{202e}}")),
        "the answer is in the log, escaped\n{}",
        out.dump()
    );
    for line in raw.lines() {
        assert!(
            !line.starts_with(FORGED_TIME),
            "a forged line: {line:?}\n{}",
            out.dump()
        );
    }
    assert!(!raw.contains('\u{1b}'), "no raw escape byte\n{}", out.dump());
    assert!(!raw.contains('\u{202e}'), "no raw bidi control\n{}", out.dump());
}
