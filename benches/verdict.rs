//! From an output installed to its reload verdict, and from a rejection to
//! the rollback (issue 12's targets), on a `peerplate run` daemon with a
//! `file:` peer source (this pod `web-1`), `wait: {min: 0s, max: 0s}`.
//!
//! The times are the daemon's own: `took=` on its `reload accepted` /
//! `reload rejected` lines is measured from the start of the action's run,
//! right after the group's outputs were renamed into place, to the verdict;
//! `rollback=` on its `rolled back` lines from the verdict to the previous
//! file back in place.
//!
//! - `nginx` (target: accepted under 50 ms; a rejection is concluded at
//!   `verify_timeout`, 1 s here): real nginx started from the output
//!   (`-c out/nginx.conf`), the daemon with `reload: {signal: HUP, pid_file:
//!   <nginx.pid>, process: nginx, verify: children, verify_timeout: 1s}`;
//!   each change toggles the peers 2 <-> 3 (a comment line per peer), 300 ms
//!   apart (nginx's master takes no SIGHUP for 100 ms after a reload), and a
//!   few rejections add a `listen` on a port the bench holds (nginx refuses
//!   the reload, keeps its workers).
//! - `http` (target: under 20 ms plus the app's own reload time; rollback
//!   within 10 ms of the verdict): a server of the bench's own on loopback
//!   answering at once, 200 or (for the rejections) 500.
//! - `prometheus` (informational): real Prometheus (`--web.enable-lifecycle`)
//!   and `POST /-/reload`; the time includes Prometheus's own reload.
//!
//! Run: `cargo bench --bench verdict -- --bin "$(scripts/build-release.sh | tail -n1)"`
//! Options after `--`: `--bin PATH`, `--only nginx|http|prometheus`,
//! `--changes N` (50), `--rejections N` (5). Every wait is bounded; the
//! daemon, nginx and Prometheus are stopped on exit.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::helpers::{find_program, free_port, http_status, replace_file, Daemon};
use common::{e, LogTail, Res};

const STEP_TIMEOUT: Duration = Duration::from_secs(8);

struct Options {
    shared: common::SharedOptions,
    changes: usize,
    rejections: usize,
}

fn options() -> Res<Options> {
    let mut o = Options {
        shared: common::SharedOptions::new(),
        changes: 50,
        rejections: 5,
    };
    let (mut changes, mut rejections) = (None, None);
    common::parse_args(&mut o.shared, |arg, args| {
        match arg {
            "--changes" => changes = args.next().and_then(|v| v.parse().ok()),
            "--rejections" => rejections = args.next().and_then(|v| v.parse().ok()),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    o.changes = changes.unwrap_or(o.changes);
    o.rejections = rejections.unwrap_or(o.rejections);
    Ok(o)
}

fn main() -> std::process::ExitCode {
    common::bench_main("verdict", options(), |o| {
        common::describe_binary(&o.shared.bin)?;
        if o.shared.runs("nginx") {
            match find_program("nginx") {
                Some(nginx) => nginx_part(&o, &nginx)?,
                None => println!("nginx: not installed, skipped"),
            }
        }
        if o.shared.runs("http") {
            http_part(&o)?;
        }
        if o.shared.runs("prometheus") {
            match find_program("prometheus") {
                Some(prometheus) => prometheus_part(&o, &prometheus)?,
                None => println!("prometheus: not installed, skipped"),
            }
        }
        Ok(())
    })
}

/// `1.5ms`, `850µs`, `2.1s`, `35ns` (a `Duration`'s Debug form) in a log field.
fn field(line: &str, name: &str) -> Option<Duration> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let text = line[at..].split_whitespace().next()?;
    let (number, unit) = text.split_at(text.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "µs" | "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// The daemon's log, read as it grows; lines not yet waited for are kept.
struct Log {
    tail: LogTail,
    path: std::path::PathBuf,
    pending: std::collections::VecDeque<String>,
}

impl Log {
    /// Waits for the next log line holding every one of `parts` (the lines
    /// before it are dropped); returns it.
    fn wait(&mut self, parts: &[&str]) -> Res<String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            while let Some(line) = self.pending.pop_front() {
                if parts.iter().all(|p| line.contains(p)) {
                    return Ok(line);
                }
            }
            self.pending.extend(self.tail.new_lines());
            if self.pending.is_empty() {
                if Instant::now() > deadline {
                    return Err(format!(
                        "no log line with {parts:?} within {STEP_TIMEOUT:?}:\n{}",
                        common::log_tail(&self.path, 20)
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn peers(n: usize) -> String {
    (0..n)
        .map(|k| format!("web-{k}.nginx.default.svc.cluster.local\n"))
        .collect()
}

/// A daemon on `template` (in `dir`), with `reload` as its reload section.
fn start(o: &Options, dir: &Path, template: &str, reload: &str) -> Res<(Daemon, Log)> {
    let out = common::output_dir(dir)?;
    let source = dir.join("t.j2");
    std::fs::write(&source, template).map_err(e("write the template"))?;
    let peers_file = dir.join("peers");
    std::fs::write(&peers_file, peers(2)).map_err(e("write the peers"))?;
    let yaml = common::file_source_config(&peers_file, &source, &out.join("out.conf"), "", reload);
    let (daemon, path) = common::start_daemon(&o.shared, dir, "127.0.0.1", &yaml)?;
    Ok((
        daemon,
        Log {
            tail: LogTail::new(&path),
            path,
            pending: Default::default(),
        },
    ))
}

fn report(what: &str, samples: &mut [Duration]) {
    common::print_stats(what, samples);
}

fn nginx_part(o: &Options, nginx: &Path) -> Res<()> {
    let root = common::temp_root("verdict", Path::new(env!("CARGO_TARGET_TMPDIR")))?;
    let dir = root.path();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).map_err(e("nginx prefix"))?;
    let port = free_port();
    let taken = TcpListener::bind("127.0.0.1:0").map_err(e("bind"))?;
    let taken_port = taken.local_addr().map_err(e("addr"))?.port();
    let template = format!(
        "worker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n{{% for p in peers %}}    # {{{{ p }}}}\n{{% endfor %}}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    );
    let pid_file = prefix.join("nginx.pid");
    let (daemon, mut log) = start(
        o,
        dir,
        &template,
        &format!(
            "reload: {{signal: HUP, pid_file: {}, process: nginx, verify: children, verify_timeout: 1s}}\n",
            pid_file.display()
        ),
    )?;
    log.wait(&["rendered"])?;
    let conf = dir.join("out/out.conf");
    let status = Command::new(nginx)
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-g")
        .arg(format!(
            "pid {}; error_log {};",
            pid_file.display(),
            prefix.join("error.log").display()
        ))
        .status()
        .map_err(e("start nginx"))?;
    if !status.success() {
        return Err(format!("nginx did not start: {status}"));
    }
    let stop_nginx = StopNginx(pid_file.clone());
    std::thread::sleep(Duration::from_millis(300));

    let peers_file = dir.join("peers");
    let mut accepted = Vec::new();
    for i in 0..o.changes {
        replace_file(&peers_file, peers(if i % 2 == 0 { 3 } else { 2 }));
        let line = log.wait(&["reload accepted"])?;
        accepted.push(field(&line, "took").ok_or(format!("no took= in {line}"))?);
        // nginx's master sleeps 100 ms after starting new workers (before it
        // tells the old ones to quit) and takes the next SIGHUP after that.
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut rejected = Vec::new();
    let mut rollback = Vec::new();
    let source = dir.join("t.j2");
    for _ in 0..o.rejections {
        let bad = template.replace(
            "    location",
            &format!("    listen 127.0.0.1:{taken_port};\n    location"),
        );
        replace_file(&source, &bad);
        let line = log.wait(&["reload rejected"])?;
        rejected.push(field(&line, "took").ok_or(format!("no took= in {line}"))?);
        let line = log.wait(&["rolled back"])?;
        rollback.push(field(&line, "rollback").ok_or(format!("no rollback= in {line}"))?);
        replace_file(&source, &template);
        // Back to the running config: the same bytes, nothing to do.
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "nginx, signal + verify: children ({} accepted, {} rejected):",
        accepted.len(),
        rejected.len()
    );
    report("  installed -> accepted", &mut accepted);
    report("  installed -> rejected (verify_timeout 1s)", &mut rejected);
    report("  rejected -> rolled back", &mut rollback);
    drop(stop_nginx);
    drop(daemon);
    drop(taken);
    Ok(())
}

/// Stops nginx (`QUIT` to the pid in its pid file) on drop.
struct StopNginx(std::path::PathBuf);

impl Drop for StopNginx {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
    }
}

/// A loopback HTTP server answering every request at once with `status`.
fn serve(status: Arc<AtomicU16>) -> Res<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(e("bind"))?;
    let port = listener.local_addr().map_err(e("addr"))?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let code = status.load(Ordering::Relaxed);
            let body = if code == 200 {
                ""
            } else {
                "bad config: the reason\n"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(port)
}

fn http_part(o: &Options) -> Res<()> {
    let root = common::temp_root("verdict", Path::new(env!("CARGO_TARGET_TMPDIR")))?;
    let dir = root.path();
    let status = Arc::new(AtomicU16::new(200));
    let port = serve(Arc::clone(&status))?;
    let template = "{% for p in peers %}{{ p }}\n{% endfor %}";
    let (daemon, mut log) = start(
        o,
        dir,
        template,
        &format!("reload: {{http: {{url: \"http://127.0.0.1:{port}/-/reload\"}}}}\n"),
    )?;
    log.wait(&["reload accepted"])?;
    let peers_file = dir.join("peers");
    let mut accepted = Vec::new();
    let mut n = 2;
    for _ in 0..o.changes {
        n = if n == 2 { 3 } else { 2 };
        replace_file(&peers_file, peers(n));
        let line = log.wait(&["reload accepted"])?;
        accepted.push(field(&line, "took").ok_or(format!("no took= in {line}"))?);
    }
    status.store(500, Ordering::Relaxed);
    let mut rejected = Vec::new();
    let mut rollback = Vec::new();
    for k in 0..o.rejections {
        replace_file(&peers_file, peers(4 + k));
        let line = log.wait(&["reload rejected"])?;
        rejected.push(field(&line, "took").ok_or(format!("no took= in {line}"))?);
        let line = log.wait(&["rolled back"])?;
        rollback.push(field(&line, "rollback").ok_or(format!("no rollback= in {line}"))?);
    }
    println!(
        "http, a loopback app answering at once ({} accepted, {} rejected):",
        accepted.len(),
        rejected.len()
    );
    report("  installed -> accepted (200)", &mut accepted);
    report("  installed -> rejected (500)", &mut rejected);
    report("  rejected -> rolled back", &mut rollback);
    drop(daemon);
    Ok(())
}

fn prometheus_part(o: &Options, prometheus: &Path) -> Res<()> {
    let root = common::temp_root("verdict", Path::new(env!("CARGO_TARGET_TMPDIR")))?;
    let dir = root.path();
    let port = free_port();
    let template = "global:\n  scrape_interval: 30s\nscrape_configs:\n  - job_name: peers\n    static_configs:\n      - targets:\n{% for p in peers %}          - \"{{ p.fqdn }}:9100\"\n{% endfor %}";
    let (daemon, mut log) = start(
        o,
        dir,
        template,
        &format!("reload: {{http: {{url: \"http://127.0.0.1:{port}/-/reload\", retries: 0}}}}\n"),
    )?;
    log.wait(&["rendered"])?;
    let mut prom = Daemon::spawn({
        let mut c = Command::new(prometheus);
        c.arg(format!(
            "--config.file={}",
            dir.join("out/out.conf").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-lifecycle")
        .arg("--log.level=warn");
        c
    });
    prom.wait_until(STEP_TIMEOUT, "Prometheus ready", |_| {
        http_status(port, "/-/ready") == 200
    });
    let peers_file = dir.join("peers");
    let mut accepted = Vec::new();
    let changes = o.changes.min(20);
    for i in 0..changes {
        replace_file(&peers_file, peers(if i % 2 == 0 { 3 } else { 2 }));
        let line = log.wait(&["reload accepted"])?;
        accepted.push(field(&line, "took").ok_or(format!("no took= in {line}"))?);
    }
    println!("prometheus, POST /-/reload ({} accepted):", accepted.len());
    report(
        "  installed -> accepted (Prometheus's own reload included)",
        &mut accepted,
    );
    drop(daemon);
    Ok(())
}
