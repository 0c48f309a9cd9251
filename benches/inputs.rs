//! A large `file()` input through the `run` daemon: how long a render of a
//! template that reads it takes, first and after the input changes, and how
//! slowly `/healthz` answers meanwhile (issue 18: 148,571 lines took 61 s
//! when the redaction of inputs was quadratic, and `/healthz` was dead).
//!
//! For 10,000, 70,000 and 150,000 lines of 6 bytes (60 KB, 420 KB, 900 KB;
//! the cap is 1 MiB), the daemon renders `{{ file("big.txt") | length }}`
//! under a check that prints the staged output (`cat {staged}`), with
//! `wait: {min: 0s, max: 0s}`, a static peer set and `http.listen` on
//! 127.0.0.1. The input is then replaced 5 times (write beside, rename
//! over); each time runs from the rename until the output holds the new
//! length. Meanwhile `/healthz` is asked every 20 ms; its slowest answer is
//! printed. Also the daemon's own `elapsed_ms` of its last render.
//!
//! Run: `cargo bench --bench inputs` (seconds), or on the shipped build:
//! `cargo bench --bench inputs -- --bin "$(scripts/build-release.sh | tail -n1)"`.
//! Numbers are informational; the integration test `untrusted::` holds
//! the 150,000-line case to 5 s and `/healthz` to 1 s.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{e, helpers, Res};

const SIZES: [usize; 3] = [10_000, 70_000, 150_000];
const CHANGES: usize = 5;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `lines + extra` lines of 6 bytes: each version of the input differs in
/// length, so the output (the length) tells which one was rendered.
fn input(lines: usize, extra: usize) -> String {
    (0..lines + extra)
        .map(|i| format!("{:05x}\n", i % 0x100000))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn one_size(root: &Path, bin: &Path, lines: usize) -> Res<()> {
    let dir = root.join(format!("lines-{lines}"));
    std::fs::create_dir_all(dir.join("out")).map_err(e("create the dir"))?;
    let big = dir.join("big.txt");
    std::fs::write(&big, input(lines, 0)).map_err(e("write the input"))?;
    std::fs::write(dir.join("t.j2"), "{{ file(\"big.txt\") | length }}\n")
        .map_err(e("write the template"))?;
    let port = helpers::free_port();
    let config = dir.join("peerplate.yaml");
    std::fs::write(
        &config,
        format!(
            "identity: {{hostname: web-1}}\npeers: {{static: [web-0.nginx, web-1.nginx]}}\ntemplates:\n  - source: t.j2\n    destination: out/t\n    check: \"cat {{staged}}\"\nwait: {{min: 0s, max: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
        ),
    )
    .map_err(e("write the config"))?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .current_dir(&dir);
    let daemon = helpers::Daemon::spawn_in(cmd, &dir);
    let out = dir.join("out/t");
    let mut slowest = Duration::ZERO;
    let mut wait_for = |want: &str| -> Res<Duration> {
        let started = Instant::now();
        let mut last_ask = Instant::now() - Duration::from_secs(1);
        loop {
            if std::fs::read_to_string(&out).ok().as_deref() == Some(want) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > STEP_TIMEOUT {
                return Err(format!("no output {want:?} within {STEP_TIMEOUT:?}"));
            }
            if last_ask.elapsed() >= Duration::from_millis(20) {
                last_ask = Instant::now();
                if helpers::http_status(port, "/healthz") == 200 {
                    slowest = slowest.max(last_ask.elapsed());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let first = wait_for(&format!("{}\n", lines * 6))?;
    let mut changes = Vec::new();
    for k in 1..=CHANGES {
        helpers::replace_file(&big, input(lines, k));
        changes.push(wait_for(&format!("{}\n", (lines + k) * 6))?);
    }
    let log = daemon.stderr();
    let elapsed = log
        .lines()
        .filter(|l| l.contains(" rendered ") && l.contains("changed=true"))
        .filter_map(|l| l.split("elapsed_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .next_back()
        .unwrap_or("?")
        .to_string();
    println!(
        "{lines:>7} lines ({:>4} KB): first render {:>9.1?}, after a change median {:>9.1?} (max {:>9.1?}, {CHANGES} changes); daemon's last elapsed_ms={elapsed}; slowest /healthz {slowest:.1?}",
        lines * 6 / 1000,
        first,
        median(changes.clone()),
        changes.iter().max().copied().unwrap_or_default(),
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut shared = common::SharedOptions::new();
    let parsed = common::parse_args(&mut shared, |_, _| Ok(false)).map(|()| shared);
    common::bench_main("inputs", parsed, |opts| {
        let root = common::temp_root("inputs", Path::new(env!("CARGO_TARGET_TMPDIR")))?;
        println!("binary: {}", opts.bin.display());
        for lines in SIZES {
            one_size(root.path(), &opts.bin, lines)?;
        }
        Ok(())
    })
}
