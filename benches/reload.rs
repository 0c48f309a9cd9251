//! Reloading and hooks from the outside (issue 4's targets), measured on a
//! `peerplate run` daemon with a `file:` peer source (this pod `web-1`),
//! `wait: {min: 0s, max: 0s}`, no `http:`, and one template mounted the way
//! kubelet mounts a ConfigMap (see `benches/daemon.rs`): the shipped nginx
//! template, then one `# peer <fqdn>` line per peer, then `# swap N`, so both
//! a ConfigMap swap and a peers-file change change the output.
//!
//! - `signal` (target: output changed -> signal delivered, median under
//!   2 ms): the reload target is a tiny process, this bench binary
//!   re-executed with `PEERPLATE_BENCH_SIGHUP_WAITER=<pid file>`, which
//!   blocks SIGHUP, writes its pid to the pid file, and loops on
//!   `sigwait` (`nix`'s `SigSet::wait`), printing the wall-clock time (ns)
//!   each SIGHUP arrives; the daemon has `reload: {signal: HUP, pid_file:
//!   <pid file>}`. Per change it times, on the same clock (CLOCK_REALTIME,
//!   shared by both processes):
//!   1. trigger -> signal: from just before the `..data` rename (`--trigger
//!      configmap`) or the rename of a new peers file (`--trigger peers`,
//!      2 <-> 3 peers) to the signal's arrival;
//!   2. output rename -> signal: from the moment an inotify watch on the
//!      output dir (the `notify` crate's thread, which timestamps each
//!      event as it gets it) sees the destination renamed into place to the
//!      signal's arrival; the inotify wake-up makes this a slight
//!      underestimate;
//!   3. "rendered" log line -> signal: from the daemon's own log stamp
//!      (written after the install, before the signal) to the arrival.
//!
//!   It checks that exactly one SIGHUP arrives per change and none while
//!   nothing changes.
//! - `hooks` (target: RSS after 1,000 hook runs within 10% of before):
//!   `hooks.on_change: "cat > /dev/null"` (no reload), the peers file
//!   toggled between 2 and 3 peers `--hook-runs` (1000) times, each time
//!   waiting (bounded) for the daemon's `hook ran` log line. Memory is read
//!   after the first hook and 2 s of rest, after 10 hooks (warm-up), and
//!   after all of them plus 2 s; also zombies among the daemon's children.
//!
//! Run: `cargo bench --bench reload -- --bin "$(scripts/build-release.sh | tail -n1)"`
//! (about a minute). Options after `--`: `--bin PATH`, `--only
//! signal|hooks`, `--trigger configmap|peers|both`, `--changes N` (200),
//! `--hook-runs N` (1000), `--daemon-env K=V`, `--dir DIR` (where the temp
//! dir, so the output dir, goes: e.g. /dev/shm to take the disk's fsync
//! out; default cargo's target/tmp). Every wait is bounded; the
//! daemon and the waiter are stopped on exit (the waiter also dies with
//! this process: PR_SET_PDEATHSIG). Numbers are informational.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use notify::{RecursiveMode, Watcher};

use common::{e, ConfigMap, Res};

const TEMPLATE: &str = include_str!("../templates/nginx.conf.j2");
const WAITER_ENV: &str = "PEERPLATE_BENCH_SIGHUP_WAITER";
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Options {
    shared: common::SharedOptions,
    triggers: Vec<String>,
    changes: usize,
    hook_runs: usize,
    dir: PathBuf,
}

fn options() -> Res<Options> {
    let mut o = Options {
        shared: common::SharedOptions::new(),
        triggers: vec!["configmap".into(), "peers".into()],
        changes: 200,
        hook_runs: 1000,
        dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    let count = |v: Option<String>, what: &str| -> Res<usize> {
        v.and_then(|v| v.parse().ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| format!("{what} takes a number from 1 to 10000"))
    };
    common::parse_args(&mut o.shared, |arg, args| {
        match arg {
            "--dir" => o.dir = args.next().ok_or("--dir takes a path")?.into(),
            "--trigger" => {
                o.triggers = match args.next().as_deref() {
                    Some("both") => vec!["configmap".into(), "peers".into()],
                    Some(t @ ("configmap" | "peers")) => vec![t.to_string()],
                    _ => return Err("--trigger takes configmap, peers or both".into()),
                }
            }
            "--changes" => o.changes = count(args.next(), "--changes")?,
            "--hook-runs" => o.hook_runs = count(args.next(), "--hook-runs")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(o)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn ns_between(from: u128, to: u128) -> Duration {
    Duration::from_nanos(u64::try_from(to.saturating_sub(from)).unwrap_or(u64::MAX))
}

// ---- the SIGHUP waiter (this binary, re-executed) ------------------------------------

/// Blocks SIGHUP, publishes its pid, then prints the arrival time (ns since
/// the epoch) of every SIGHUP, one a line. Ends with its parent.
fn waiter(pid_file: &Path) -> Res<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|err| format!("set_pdeathsig: {err}"))?;
    let mut set = SigSet::empty();
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|err| format!("block SIGHUP: {err}"))?;
    let tmp = pid_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id())).map_err(e("write the pid"))?;
    std::fs::rename(&tmp, pid_file).map_err(e("publish the pid"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").map_err(e("write"))?;
    out.flush().map_err(e("flush"))?;
    loop {
        let signal = set.wait().map_err(|err| format!("sigwait: {err}"))?;
        let at = now_ns();
        writeln!(out, "{at} {signal}").map_err(e("write"))?;
        out.flush().map_err(e("flush"))?;
    }
}

/// The waiter as a child: each SIGHUP's arrival time comes out of `arrivals`.
struct Waiter {
    _guard: common::Daemon,
    arrivals: mpsc::Receiver<u128>,
}

impl Waiter {
    fn start(pid_file: &Path) -> Res<Waiter> {
        let exe = std::env::current_exe().map_err(e("find this bench binary"))?;
        let mut cmd = Command::new(exe);
        cmd.env(WAITER_ENV, pid_file);
        let dir = pid_file.parent().ok_or("the pid file has a dir")?;
        let (guard, stdout) = common::Daemon::spawn_piped(cmd, dir);
        let guard = guard.graceful();
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if let Some(ns) = line.split_whitespace().next().and_then(|n| n.parse().ok())
                {
                    if tx.send(ns).is_err() {
                        return;
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(STEP_TIMEOUT)
            .map_err(|_| "the SIGHUP waiter did not get ready".to_string())?;
        println!(
            "SIGHUP waiter pid {} (SIGHUP blocked, sigwait loop)",
            guard.pid()
        );
        Ok(Waiter {
            _guard: guard,
            arrivals: rx,
        })
    }
}

// ---- the daemon -----------------------------------------------------------------------

const PEERS: [&str; 3] = [
    "web-0.nginx.default.svc.cluster.local",
    "web-1.nginx.default.svc.cluster.local",
    "web-2.nginx.default.svc.cluster.local",
];

fn peers_text(n: usize) -> String {
    PEERS[..n].iter().map(|p| format!("{p}\n")).collect()
}

fn template_body() -> String {
    format!("{TEMPLATE}{{% for p in peers %}}# peer {{{{ p }}}}\n{{% endfor %}}")
}

struct Daemon {
    guard: common::Daemon,
    log: PathBuf,
    destination: PathBuf,
    peers: PathBuf,
    configmap: ConfigMap,
}

impl Daemon {
    /// `extra` is appended to the config (reload:, hooks:).
    fn start(dir: &Path, extra: &str, opts: &Options) -> Res<Daemon> {
        std::fs::create_dir_all(dir).map_err(e("create the run dir"))?;
        let configmap = ConfigMap::create(&dir.join("configmap"), &template_body())?;
        let out = common::output_dir(dir)?;
        let peers_dir = dir.join("peers");
        std::fs::create_dir_all(&peers_dir).map_err(e("create the peers dir"))?;
        let peers = peers_dir.join("list");
        std::fs::write(&peers, peers_text(2)).map_err(e("write the peers file"))?;
        let destination = out.join("nginx.conf");
        let yaml = common::file_source_config(
            &peers,
            &configmap.path(),
            &destination,
            "    reload: true\n",
            extra,
        );
        let (guard, log) = common::start_daemon(&opts.shared, dir, "10.96.0.10", &yaml)?;
        let daemon = Daemon {
            guard,
            log,
            destination,
            peers,
            configmap,
        };
        if !common::helpers::poll_every(Duration::from_millis(1), STEP_TIMEOUT, || {
            daemon.holds(0, 2)
        }) {
            return Err(format!(
                "no first render within {STEP_TIMEOUT:?}; log tail:\n{}",
                common::log_tail(&daemon.log, 20)
            ));
        }
        println!(
            "daemon pid {} rendered its first output",
            daemon.guard.pid()
        );
        Ok(daemon)
    }

    /// Whether the output is generation `generation` with `peers` peers.
    fn holds(&self, generation: u64, peers: usize) -> bool {
        let marker = format!("# swap {generation}\n");
        std::fs::read(&self.destination).is_ok_and(|b| {
            let text = String::from_utf8_lossy(&b);
            text.ends_with(&marker) && text.matches("# peer ").count() == peers
        })
    }
}

// ---- signal latency -----------------------------------------------------------------

fn signal(root: &Path, trigger: &str, opts: &Options) -> Res<Option<f64>> {
    println!(
        "\n== signal: {} {trigger} changes, reload: {{signal: HUP, pid_file}}, wait 0s/0s ==",
        opts.changes
    );
    let dir = root.join(format!("signal-{trigger}"));
    std::fs::create_dir_all(&dir).map_err(e("create the run dir"))?;
    let pid_file = dir.join("app.pid");
    let waiter = Waiter::start(&pid_file)?;
    let extra = format!(
        "reload: {{signal: HUP, pid_file: {}}}\n",
        pid_file.display()
    );
    let mut daemon = Daemon::start(&dir, &extra, opts)?;
    // The first render signals too (the output was installed).
    let first = waiter.arrivals.recv_timeout(STEP_TIMEOUT).ok();
    println!(
        "first render's SIGHUP: {}",
        if first.is_some() { "arrived" } else { "none" }
    );
    std::thread::sleep(Duration::from_millis(200));
    while waiter.arrivals.try_recv().is_ok() {}

    // inotify on the output dir; the callback stamps the destination's rename.
    let out_dir = daemon
        .destination
        .parent()
        .ok_or("the destination has a dir")?
        .to_path_buf();
    let dest_name = daemon
        .destination
        .file_name()
        .ok_or("the destination has a name")?
        .to_os_string();
    let (tx, renames) = mpsc::channel::<u128>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let at = now_ns();
        if let Ok(event) = event {
            let renamed = matches!(
                event.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                    | notify::EventKind::Create(_)
            );
            if renamed
                && event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(dest_name.as_os_str()))
            {
                let _ = tx.send(at);
            }
        }
    })
    .map_err(|err| format!("start the watcher: {err}"))?;
    watcher
        .watch(&out_dir, RecursiveMode::NonRecursive)
        .map_err(|err| format!("watch the output dir: {err}"))?;

    let mut from_trigger = Vec::new();
    let mut from_rename = Vec::new();
    let mut triggered_at = Vec::new();
    let mut signalled_at = Vec::new();
    let mut extra_signals = 0;
    let mut peers = 2;
    let mut missing = 0;
    for _ in 0..opts.changes {
        let mut generation = daemon.configmap.generation;
        if trigger == "configmap" {
            generation = daemon.configmap.prepare()?;
        } else {
            peers = 5 - peers; // 2 <-> 3
            std::fs::write(daemon.peers.with_extension("next"), peers_text(peers))
                .map_err(e("write the next peers file"))?;
        }
        std::thread::sleep(Duration::from_millis(20));
        while renames.try_recv().is_ok() {}
        let t0 = now_ns();
        if trigger == "configmap" {
            daemon.configmap.commit()?;
        } else {
            std::fs::rename(daemon.peers.with_extension("next"), &daemon.peers)
                .map_err(e("rename the peers file"))?;
        }
        let Ok(t_signal) = waiter.arrivals.recv_timeout(STEP_TIMEOUT) else {
            missing += 1;
            eprintln!("no SIGHUP within {STEP_TIMEOUT:?}");
            if missing >= 3 {
                return Err(format!(
                    "3 changes without a signal; log tail:\n{}",
                    common::log_tail(&daemon.log, 20)
                ));
            }
            continue;
        };
        from_trigger.push(ns_between(t0, t_signal));
        triggered_at.push(t0);
        signalled_at.push(t_signal);
        // The rename event may be stamped after the signal; give it a moment.
        if let Ok(t_rename) = renames.recv_timeout(Duration::from_millis(500)) {
            if t_rename <= t_signal {
                from_rename.push(ns_between(t_rename, t_signal));
            } else {
                from_rename.push(Duration::ZERO);
                eprintln!(
                    "(the rename event came {:?} after the signal)",
                    ns_between(t_signal, t_rename)
                );
            }
        }
        if !daemon.holds(generation, peers) {
            return Err("the signal came but the output is not the new one".into());
        }
        if trigger == "configmap" {
            daemon.configmap.clean()?;
        }
        // A second signal for the same change would be a bug.
        if waiter
            .arrivals
            .recv_timeout(Duration::from_millis(30))
            .is_ok()
        {
            extra_signals += 1;
        }
    }
    drop(watcher);
    // Quiet time: nothing changes, nothing may be signalled.
    let quiet = waiter.arrivals.recv_timeout(Duration::from_secs(1)).is_ok();
    println!(
        "{} changes, {} signals, {missing} missing, {extra_signals} extra; a signal with nothing changed: {}",
        opts.changes,
        from_trigger.len(),
        if quiet { "YES (bug)" } else { "no" }
    );
    let what = if trigger == "configmap" {
        "..data rename -> SIGHUP arrives"
    } else {
        "peers file rename -> SIGHUP arrives"
    };
    common::print_stats(&format!("  {what}"), &mut from_trigger);
    let median = common::print_stats(
        "  output renamed (inotify) -> SIGHUP arrives",
        &mut from_rename,
    )
    .map(|(m, _)| m);

    // The same, from the daemon's log.
    daemon.guard.stop();
    let log = daemon.guard.raw_stderr();
    let rendered: Vec<f64> = log
        .lines()
        .filter(|l| l.contains(" rendered ") && l.contains("changed=true"))
        .filter_map(common::log_second_of_day)
        .collect();
    let sent: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("reload signal sent"))
        .filter_map(common::log_second_of_day)
        .collect();
    // Skip the first render (before the bench started changing things).
    let sod = |ns: u128| {
        common::second_of_day(UNIX_EPOCH + Duration::from_nanos(ns.try_into().unwrap_or(0)))
    };
    if rendered.len() == signalled_at.len() + 1 && sent.len() == rendered.len() {
        let d = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let mut heard = Vec::new();
        let mut log_to_signal = Vec::new();
        let mut signal_to_logged = Vec::new();
        for (i, at) in signalled_at.iter().enumerate() {
            let (r, s) = (rendered[i + 1], sent[i + 1]);
            heard.push(d(r - sod(triggered_at[i])));
            log_to_signal.push(d(sod(*at) - r));
            signal_to_logged.push(d(s - sod(*at)));
        }
        println!("  from the daemon's log (µs stamps):");
        common::print_stats(
            "    trigger -> `rendered` logged (watch, render, install)",
            &mut heard,
        );
        common::print_stats(
            "    `rendered` logged -> SIGHUP arrives (pid file, kill, delivery)",
            &mut log_to_signal,
        );
        common::print_stats(
            "    SIGHUP arrives -> `reload signal sent` logged",
            &mut signal_to_logged,
        );
    } else {
        println!(
            "  (no log breakdown: {} signals, {} renders, {} `reload signal sent` lines)",
            signalled_at.len(),
            rendered.len(),
            sent.len()
        );
    }
    if let Some(m) = median {
        println!(
            "  target (d): median output -> signal {m:.3} ms < 2 ms: {}",
            common::verdict(m < 2.0)
        );
    }
    Ok(median)
}

// ---- hooks and memory ------------------------------------------------------------------

fn hooks(root: &Path, opts: &Options) -> Res<()> {
    println!(
        "\n== hooks: {} on_change runs (`cat > /dev/null`), peers file toggled 2 <-> 3 ==",
        opts.hook_runs
    );
    let dir = root.join("hooks");
    let extra = "hooks:\n  on_change: \"cat > /dev/null\"\n  timeout: 10s\n";
    let daemon = Daemon::start(&dir, extra, opts)?;
    let pid = daemon.guard.pid();
    let mut tail = common::LogTail::new(&daemon.log);
    let mut ran = 0usize;
    let wait_hook = |tail: &mut common::LogTail, ran: &mut usize| -> Res<()> {
        let target = *ran + 1;
        let ok = common::helpers::poll_every(Duration::from_micros(500), STEP_TIMEOUT, || {
            *ran += tail
                .new_lines()
                .iter()
                .filter(|l| l.contains("hook ran"))
                .count();
            *ran >= target
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "hook run {target} not logged within {STEP_TIMEOUT:?}; log tail:\n{}",
                common::log_tail(&daemon.log, 10)
            ))
        }
    };
    // The first set that includes this pod runs on_change as on_start.
    wait_hook(&mut tail, &mut ran)?;
    std::thread::sleep(Duration::from_secs(2));
    let before = common::memory(pid)?;
    println!("after the first hook + 2 s: {before}");
    common::print_mappings(pid)?;

    let mut peers = 2;
    let started = Instant::now();
    let mut after_warmup = None;
    for i in 0..opts.hook_runs {
        peers = 5 - peers;
        common::helpers::replace_file(&daemon.peers, peers_text(peers));
        wait_hook(&mut tail, &mut ran)?;
        if i + 1 == 10 {
            after_warmup = Some(common::memory(pid)?);
        }
    }
    let took = started.elapsed();
    let just_after = common::memory(pid)?;
    std::thread::sleep(Duration::from_secs(2));
    let after = common::memory(pid)?;
    let zombies = common::procfs::zombie_children(common::pid_i32(pid)).len();
    println!(
        "{} hook runs in {:.1} s ({:.2} ms each, render + install + sh + cat)",
        opts.hook_runs,
        took.as_secs_f64(),
        common::ms(took) / opts.hook_runs as f64
    );
    if let Some(m) = after_warmup {
        println!("after 10 hooks:          {m}");
    }
    println!("right after the last:    {just_after}");
    println!("after the last + 2 s:    {after}");
    common::print_mappings(pid)?;
    let failed = daemon
        .guard
        .raw_stderr()
        .lines()
        .filter(|l| l.contains("WARN"))
        .count();
    println!("zombie children: {zombies}; warnings in the log: {failed}");
    let growth = |a: u64, b: u64| (b as f64 - a as f64) * 100.0 / a as f64;
    let vs_first = growth(before.rss, after.rss);
    println!(
        "  target (e): VmRSS {} -> {} kB ({vs_first:+.1}%) within 10%: {}; RssAnon {} -> {} kB ({:+.1}%)",
        before.rss,
        after.rss,
        common::verdict(vs_first.abs() <= 10.0),
        before.anon,
        after.anon,
        growth(before.anon, after.anon)
    );
    if let Some(m) = after_warmup {
        println!(
            "  from after 10 hooks: VmRSS {:+.1}%, RssAnon {:+.1}%",
            growth(m.rss, after.rss),
            growth(m.anon, after.anon)
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    if let Some(pid_file) = std::env::var_os(WAITER_ENV) {
        return match waiter(Path::new(&pid_file)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("sighup waiter: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    common::bench_main("reload", options(), |opts| {
        let root = common::temp_root("reload", &opts.dir)?;
        common::describe_binary(&opts.shared.bin)?;
        common::machine_line(root.path());
        common::print_daemon_env(&opts.shared.daemon_env);
        if opts.shared.runs("signal") {
            for trigger in &opts.triggers {
                signal(root.path(), trigger, &opts)?;
            }
        }
        if opts.shared.runs("hooks") {
            hooks(root.path(), &opts)?;
        }
        Ok(())
    })
}
