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
    sb.write(
        "t.j2",
        "leader={{ leader.hostname if leader else 'none' }}\n",
    );
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
        raw.contains(&format!(
            "\\n{FORGED_TIME} ERROR forged line\\x1b[2K\\u{{202e}}"
        )),
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
    assert!(
        !raw.contains('\u{1b}'),
        "no raw escape byte\n{}",
        out.dump()
    );
    assert!(
        !raw.contains('\u{202e}'),
        "no raw bidi control\n{}",
        out.dump()
    );
}

/// `peerplate.yaml` replaced under a running daemon by a FIFO (no writer),
/// a symlink to `/dev/zero` and a 45 MB file: each is an error naming what
/// it is, counted as a failed reload; the daemon keeps answering `/healthz`
/// and obeys SIGTERM. `check --config` says the same and exits 2.
#[test]
fn a_config_replaced_by_a_fifo_dev_zero_or_a_huge_file_is_an_error_not_a_hang() {
    let sb = Sandbox::new();
    sb.write("t.j2", "peers={{ peers | length }}\n");
    let port = crate::helpers::free_port();
    let good = format!(
        "identity: {{hostname: web-1}}\npeers: {{static: [web-0.nginx, web-1.nginx]}}\ntemplates:\n  - {{source: t.j2, destination: out/t}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
    );
    let config = sb.write("peerplate.yaml", &good);
    let mut d = Daemon::spawn(sb.peerplate(["--config", "peerplate.yaml", "run"]));
    d.wait_until(WAIT, "the first output", |_| {
        sb.read("out/t").as_deref() == Some("peers=2\n")
    });
    let huge = sb.join("huge.yaml");
    std::fs::write(&huge, vec![b'#'; 45 * 1024 * 1024]).expect("write 45 MB");
    let fifo = sb.join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    /// What replaces the config, how it is made at a path, what the error says.
    type Case<'a> = (&'a str, &'a dyn Fn(&std::path::Path), &'a str);
    let cases: [Case<'_>; 3] = [
        (
            "a FIFO",
            &|tmp| {
                nix::unistd::mkfifo(tmp, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .expect("mkfifo")
            },
            "it is a FIFO, not a regular file",
        ),
        (
            "/dev/zero",
            &|tmp| std::os::unix::fs::symlink("/dev/zero", tmp).expect("symlink"),
            "it is a character device, not a regular file",
        ),
        (
            "a 45 MB file",
            &|tmp| std::fs::copy(&huge, tmp).map(drop).expect("copy"),
            "it is larger than 1.0 MiB (1048576 bytes)",
        ),
    ];
    for (what, make, said) in cases {
        let mark = d.mark();
        let tmp = sb.join("peerplate.yaml.new");
        make(&tmp);
        std::fs::rename(&tmp, &config).expect("rename over the config");
        let line = d.wait_for_line(mark, &["peerplate.yaml", said], WAIT);
        assert!(
            line.contains("cannot read the config file"),
            "{what}: {line}"
        );
        let started = Instant::now();
        assert_eq!(http_status(port, "/healthz"), 200, "{what}\n{}", d.logs());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: /healthz took {:?}",
            started.elapsed()
        );
        // `check` of the same file: the same words, exit 2, at once.
        let out = crate::helpers::run_with_timeout(
            &mut sb.peerplate(["--config", "peerplate.yaml", "check"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(2), "{what}\n{}", out.dump());
        assert!(out.stderr.contains(said), "{what}\n{}", out.dump());
        // The fix for a file that is there but not a small regular file is
        // not a path.
        assert!(
            out.stderr.contains(
                "; peerplate reads its config only from a regular file of at most 1 MiB: put one there"
            ) && !out.stderr.contains("--config or $PEERPLATE_CONFIG"),
            "{what}\n{}",
            out.dump()
        );
    }
    assert_eq!(sb.read("out/t").as_deref(), Some("peers=2\n"));
    let (status, took) = d.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
    assert!(status.success(), "{status:?} after {took:?}\n{}", d.logs());
}

/// A `file()` input of 150,000 lines (900 KB, under the 1 MiB cap)
/// renders, and renders again when it changes, within 5 s each (it took
/// 61 s when the redaction was quadratic), while `/healthz` answers within
/// 1 s throughout.
#[test]
fn a_file_input_of_150000_lines_renders_within_5s_and_healthz_answers_throughout() {
    let sb = Sandbox::new();
    // 150,000 lines of 6 bytes (900 KB); the first line tells versions apart.
    let lines = |tag: &str| -> String {
        std::iter::once(format!("{tag}\n"))
            .chain((1..150_000).map(|i| format!("{i:05x}\n")))
            .collect()
    };
    sb.write("big.txt", &lines("aaaaa"));
    sb.write(
        "t.j2",
        "{% set text = file(\"big.txt\") %}first={{ text[:6] }} bytes={{ text | length }}\n",
    );
    let port = crate::helpers::free_port();
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-1}}\npeers: {{static: [web-0.nginx, web-1.nginx]}}\ntemplates:\n  - source: t.j2\n    destination: out/t\n    check: \"cat {{staged}}\"\nwait: {{min: 0s, max: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
        ),
    );
    let started = Instant::now();
    let mut d = Daemon::spawn(sb.peerplate(["--config", "peerplate.yaml", "run"]));
    let mut slowest = Duration::ZERO;
    let mut wait_for = |want: &str, d: &mut Daemon, since: Instant| {
        while sb.read("out/t").as_deref() != Some(want) {
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "not rendered within 5 s: {want}\n{}",
                d.logs()
            );
            let asked = Instant::now();
            if http_status(port, "/healthz") == 200 {
                slowest = slowest.max(asked.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        since.elapsed()
    };
    let first = wait_for("first=aaaaa\n bytes=900000\n", &mut d, started);
    let changed = Instant::now();
    sb.replace("big.txt", &lines("bbbbb"));
    let second = wait_for("first=bbbbb\n bytes=900000\n", &mut d, changed);
    eprintln!("150,000 lines: first render {first:?}, after a change {second:?}; slowest /healthz {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {slowest:?}"
    );
}

#[test]
fn render_with_no_config_and_no_template_exits_2_naming_both() {
    let sb = Sandbox::new();
    let out = run(&mut sb.peerplate(["render"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!("render_without_config", out.stderr);
    // A template file alone still renders, as documented.
    sb.write("t.j2", "n={{ peers | length }}\n");
    let out = run(&mut sb.peerplate(["render", "--template", "t.j2", "--peer", "web-0.nginx"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.stdout, "n=1\n");
}

/// Durations and numbers far out of range are refused by `check`, with the
/// file and line, for keys `run` used to take unchecked (`min_interval`
/// made `run` abort with exit 134 at the second change; `retries` near
/// u32::MAX overflowed a counter).
#[test]
fn out_of_range_durations_and_numbers_are_refused_by_check() {
    let cases = [
        ("min_interval_huge", "reloads:\n  app:\n    exec: \"true\"\n    min_interval: 18000000000000000000s\n"),
        ("exec_timeout", "reloads:\n  app:\n    exec: \"true\"\n    timeout: 2h\n"),
        ("http_timeout", "reloads:\n  app:\n    http: {url: \"http://127.0.0.1:1/\", timeout: 5h}\n"),
        ("verify_timeout", "reloads:\n  app:\n    process: nginx\n    verify: children\n    verify_timeout: 3h\n"),
        (
            "http_retries",
            "reloads:\n  app:\n    http:\n      url: \"http://127.0.0.1:1/\"\n      retries: 4294967295\n",
        ),
        (
            "dns_refresh",
            "peers:\n  dns:\n    service: nginx\n    nameservers: [\"127.0.0.1:53\"]\n    refresh: 20ms\n",
        ),
    ];
    for (name, yaml) in cases {
        let sb = Sandbox::new();
        sb.write("t.j2", "x\n");
        sb.write(
            "peerplate.yaml",
            &format!("identity: {{hostname: web-1}}\ntemplates:\n  - {{source: t.j2, destination: out/t}}\n{yaml}"),
        );
        let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "check"]));
        assert_eq!(out.code, Some(2), "{name}\n{}", out.dump());
        insta::assert_snapshot!(format!("duration_{name}"), out.stderr);
    }
}

/// An SRV target outside the Service (`web-9.evil.example.com`, and a name
/// two labels under it) is refused with one warning and never becomes a
/// peer, so never the `ordinal` leader either; `peers.dns.any_target: true`
/// (DNS outside Kubernetes) takes it.
#[test]
fn srv_targets_outside_the_service_are_refused_unless_any_target() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    dns.set_extra_targets(&[
        "web-9.evil.example.com",
        "a.web-3.nginx.default.svc.cluster.local",
    ]);
    let template =
        "leader={{ leader.hostname }} peers={% for p in peers %}{{ p.fqdn }} {% endfor %}";
    let pod = crate::pod::Pod::builder()
        .dns(&[&dns.nameserver()], "200ms")
        .dns_option("refresh: 0s")
        .template("t.j2", template, "out.txt")
        .build();
    let mut d = pod.start();
    pod.wait_for(
        &mut d,
        "leader=web-0 peers=web-0.nginx.default.svc.cluster.local web-1.nginx.default.svc.cluster.local ",
    );
    let line = d.wait_for_line(0, &["WARN", "web-9.evil.example.com"], WAIT);
    assert!(
        line.contains("refusing an SRV target outside the Service"),
        "{line}"
    );
    d.wait_for_line(
        0,
        &["WARN", "a.web-3.nginx.default.svc.cluster.local"],
        WAIT,
    );
    // Warned once each, though every poll brings them back.
    std::thread::sleep(Duration::from_millis(600));
    let logs = d.logs();
    assert_eq!(logs.matches("web-9.evil.example.com").count(), 1, "{logs}");
    drop(d);

    let pod = crate::pod::Pod::builder()
        .dns(&[&dns.nameserver()], "200ms")
        .dns_option("refresh: 0s")
        .dns_option("any_target: true")
        .template("t.j2", template, "out.txt")
        .build();
    let mut d = pod.start();
    pod.wait_for_output_where(&mut d, "the outside target taken", |o| {
        o.contains("web-9.evil.example.com")
    });
    assert!(!d.logs().contains("refusing"), "{}", d.logs());
}

/// An HTTP server on 127.0.0.1:`port` that answers every request 400 with
/// the current text of `file` as its body (an app quoting its config).
fn quoting_app(file: std::path::PathBuf) -> (u16, FixedAnswer) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    let body = std::fs::read_to_string(&file).unwrap_or_default();
                    let reply = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (
        port,
        FixedAnswer {
            stop,
            thread: Some(thread),
        },
    )
}

/// A template that prints a `file()` secret and an `env()` secret only in
/// encoded and transformed forms (base64, JSON, upper case), under a check,
/// an `exec` action and an HTTP reload that each quote the whole output on
/// failure: at `-vv` no log line holds the secrets in any of those forms,
/// only the output's size and how to see it. With `log_output: true` the
/// output is logged, the raw secret replaced by `[file PATH]`.
#[test]
fn encoded_forms_of_a_secret_never_reach_the_log() {
    use base64::Engine;
    let secret = "hunter2-Secret-Value";
    let token = "tok-Env-Secret-9";
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forms = [
        secret.to_string(),
        b64(secret),
        secret.to_uppercase(),
        token.to_string(),
        b64(token),
        token.to_uppercase(),
    ];
    let template = "pw={{ file(\"secret/pw\") | trim | b64encode }}\njson={{ file(\"secret/pw\") | trim | tojson }}\nup={{ file(\"secret/pw\") | trim | upper }}\ntok={{ env(\"DB_TOKEN\") | b64encode }} {{ env(\"DB_TOKEN\") | upper }}\n";
    let sb = Sandbox::new();
    sb.write("secret/pw", &format!("{secret}\n"));
    sb.write("app.j2", template);
    // The check exits $CHECK_EXIT, the app 1; both print the output.
    for (script, exit) in [("check.sh", "${CHECK_EXIT:-1}"), ("app.sh", "1")] {
        let path = sb.write(script, &format!("#!/bin/sh\ncat \"$1\" >&2\nexit {exit}\n"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let out = sb.join("out/app.conf");
    let (port, _app) = quoting_app(out.clone());
    let root = sb.path().display().to_string();
    // (what, the template's extra keys, the reload, the check's exit)
    let cases = [
        (
            "check",
            "",
            "reload: {exec: \"ROOT/app.sh ROOT/out/app.conf\"}",
            "1",
        ),
        (
            "exec",
            "",
            "reload: {exec: \"ROOT/app.sh ROOT/out/app.conf\"}",
            "0",
        ),
        (
            "http",
            "",
            "reload: {http: {url: \"http://127.0.0.1:PORT/reload\", retries: 0}}",
            "0",
        ),
    ];
    for (what, keys, reload, check_exit) in cases {
        let _ = std::fs::remove_file(&out);
        sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: web-1}}\ntemplates:\n  - source: app.j2\n    destination: out/app.conf\n    check: \"ROOT/check.sh {{staged}}\"\n{keys}{}\n",
                reload.replace("PORT", &port.to_string())
            )
            .replace("ROOT", &root),
        );
        let run = run(sb
            .peerplate(["-vv", "--config", "peerplate.yaml", "once"])
            .env("DB_TOKEN", token)
            .env("CHECK_EXIT", check_exit));
        let log = run.raw_stderr.clone();
        assert!(
            log.contains("bytes of output not logged: the template read file() or env() inputs"),
            "{what}: the output's size is logged instead\n{}",
            run.dump()
        );
        for form in &forms {
            assert!(
                !log.contains(form.as_str()),
                "{what}: {form} reached the log\n{}",
                run.dump()
            );
        }
    }

    // log_output: true: the check's output is logged, the raw text of the
    // file() input (here inside the JSON form) replaced.
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-1}}\ntemplates:\n  - source: app.j2\n    destination: out/app.conf\n    check: \"{root}/check.sh {{staged}}\"\n    log_output: true\n"
        ),
    );
    let run = run(sb
        .peerplate(["--config", "peerplate.yaml", "once"])
        .env("DB_TOKEN", token)
        .env("CHECK_EXIT", "1"));
    assert_eq!(run.code, Some(1), "{}", run.dump());
    // The path as the template named it, relative to the config's folder.
    assert!(
        run.raw_stderr.contains("json=\"[file secret/pw]\""),
        "{}",
        run.dump()
    );
    assert!(!run.raw_stderr.contains(secret), "{}", run.dump());
}
