//! The `run` daemon from the outside: template-swap latency, idle memory and
//! idle CPU, measured on the release binary against real files.
//!
//! Both parts start `peerplate --config <cfg> run` with a `file:` peer source
//! (2 peers, this pod `web-1`), `wait: {min: 0s, max: 0s}`, no `http:` (so no
//! network at all) and the shipped `templates/nginx.conf.j2` mounted the way
//! kubelet mounts a ConfigMap: `<mount>/..<timestamp>/nginx.conf.j2`, the
//! relative symlink `..data -> ..<timestamp>` and `nginx.conf.j2 ->
//! ..data/nginx.conf.j2`. Everything lives in a temp dir under
//! `target/tmp` (the normal disk; the filesystem is printed).
//!
//! - `idle`: after the first render, wait 10 s, then read VmRSS, RssAnon,
//!   RssFile, Threads from `/proc/<pid>/status`, `/proc/<pid>/smaps_rollup`,
//!   and a per-mapping breakdown of `/proc/<pid>/smaps`; then the CPU used
//!   over 30 s idle (utime+stime from `/proc/<pid>/stat`, 10 ms ticks, and
//!   the scheduler's ns from `/proc/<pid>/task/*/schedstat`).
//! - `latency`: 200 ConfigMap swaps the way kubelet's AtomicWriter makes
//!   them (new timestamped dir, `..data_tmp -> newdir`, rename `..data_tmp`
//!   over `..data`, remove the old dir); each swap appends `# swap N` to the
//!   template, and the time runs from just before the rename until the
//!   destination holds bytes ending in that line. Detection is an inotify
//!   watch (the `notify` crate) on the output's directory that re-reads the
//!   destination on every event, or with `--poll` a 100 µs read loop.
//!   Median, p90, p99 and max, then the same split in three with the
//!   daemon's log timestamps: until the loop hears of the swap, until the
//!   render starts, and the daemon's own `elapsed` (render + stage + fsync +
//!   rename + dir fsync).
//!
//! Run: `cargo bench --bench daemon` (about a minute; it builds the release
//! binary). Options after `--`: `--only idle|latency`, `--swaps N`,
//! `--poll`, `--idle-wait SECS`, `--cpu-window SECS`, `--daemon-env K=V`
//! (repeatable) to try e.g. `MALLOC_ARENA_MAX=1` on the daemon, and `--bin
//! PATH` to measure another build of peerplate (say one built with
//! `CARGO_PROFILE_RELEASE_OPT_LEVEL=s cargo build --release --target-dir
//! DIR`). Every wait is bounded; the daemon is stopped (SIGTERM, then
//! SIGKILL) on exit.
//! Numbers are informational; no test asserts them.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::{e, ConfigMap, Res};

const TEMPLATE: &str = include_str!("../templates/nginx.conf.j2");
const PEERS: &str =
    "web-0.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\n";
/// The longest any single wait may take before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Options {
    shared: common::SharedOptions,
    swaps: usize,
    poll: bool,
    idle_wait: Duration,
    cpu_window: Duration,
}

fn options() -> Res<Options> {
    let mut o = Options {
        shared: common::SharedOptions::new(),
        swaps: 200,
        poll: false,
        idle_wait: Duration::from_secs(10),
        cpu_window: Duration::from_secs(30),
    };
    common::parse_args(&mut o.shared, |arg, args| {
        match arg {
            "--swaps" => {
                o.swaps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=2000).contains(n))
                    .ok_or("--swaps takes a number from 1 to 2000")?
            }
            "--poll" => o.poll = true,
            "--idle-wait" => o.idle_wait = common::secs_arg(args.next(), 120.0)?,
            "--cpu-window" => o.cpu_window = common::secs_arg(args.next(), 120.0)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(o)
}

/// The running daemon; stopped however the bench ends.
struct Daemon {
    guard: common::Daemon,
    destination: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, opts: &Options) -> Res<(Daemon, ConfigMap)> {
        std::fs::create_dir_all(dir).map_err(e("create the run dir"))?;
        let configmap =
            ConfigMap::create_with_key(&dir.join("configmap"), "nginx.conf.j2", TEMPLATE)?;
        let out = common::output_dir(dir)?;
        let peers = dir.join("peers");
        std::fs::write(&peers, PEERS).map_err(e("write the peers file"))?;
        let destination = out.join("nginx.conf");
        let yaml = common::file_source_config(&peers, &configmap.path(), &destination, "", "");
        let (guard, _log) = common::start_daemon(&opts.shared, dir, "10.96.0.10", &yaml)?;
        let daemon = Daemon { guard, destination };
        let marker = marker(0);
        let started = Instant::now();
        if !common::helpers::poll_every(Duration::from_millis(1), STEP_TIMEOUT, || {
            daemon.holds(&marker)
        }) {
            return Err(format!(
                "no first render within {STEP_TIMEOUT:?}; log:\n{}",
                daemon.guard.raw_stderr()
            ));
        }
        eprintln!(
            "daemon pid {} rendered its first output {:?} after spawn",
            daemon.guard.pid(),
            started.elapsed()
        );
        Ok((daemon, configmap))
    }

    fn holds(&self, marker: &[u8]) -> bool {
        std::fs::read(&self.destination).is_ok_and(|b| b.ends_with(marker))
    }
}

fn marker(generation: u64) -> Vec<u8> {
    format!("# swap {generation}\n").into_bytes()
}

/// The anonymous mappings one by one (size and rss in kB), to tell thread
/// stacks (2 MiB + guard) from malloc arenas (up to 64 MiB reserved).
fn anon_mappings(pid: u32) -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut anon = false;
    let mut size = 0;
    for line in text.lines() {
        if common::is_mapping_header(line) {
            anon = line.split_whitespace().nth(5).is_none();
        } else if anon {
            let value = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("Size:") {
                size = value();
            } else if line.starts_with("Rss:") {
                out.push((size, value()));
            }
        }
    }
    out
}

// ---- the two measurements ---------------------------------------------------------

fn idle(root: &Path, opts: &Options) -> Res<()> {
    println!("\n== idle: `run`, file source with 2 peers, the nginx template ==");
    let (mut daemon, _configmap) = Daemon::start(&root.join("idle"), opts)?;
    let pid = daemon.guard.pid();
    std::thread::sleep(opts.idle_wait);
    let status = common::status(pid)?;
    let get = |k: &str| status.get(k).cloned().unwrap_or_else(|| "?".into());
    println!(
        "after {:?} idle: VmRSS {}  RssAnon {}  RssFile {}  RssShmem {}  VmHWM {}  VmSize {}  Threads {}",
        opts.idle_wait,
        get("VmRSS"),
        get("RssAnon"),
        get("RssFile"),
        get("RssShmem"),
        get("VmHWM"),
        get("VmSize"),
        get("Threads")
    );
    println!(
        "threads: {:?}",
        common::procfs::thread_names(common::pid_i32(pid))
    );
    common::print_mappings_indented(pid, "")?;
    let anon: Vec<String> = anon_mappings(pid)
        .into_iter()
        .filter(|(_, rss)| *rss > 0)
        .map(|(size, rss)| format!("{rss}/{size}"))
        .collect();
    println!(
        "anonymous mappings with resident pages (rss/size kB): {}",
        anon.join(" ")
    );

    let ((t0, n0), w0) = (common::cpu(pid)?, Instant::now());
    std::thread::sleep(opts.cpu_window);
    let ((t1, n1), wall) = (common::cpu(pid)?, w0.elapsed());
    let per_min = |v: f64| v * 60.0 / wall.as_secs_f64();
    let tick_ms = (t1 - t0) as f64 * 10.0;
    let sched_ms = (n1 - n0) as f64 / 1e6;
    println!(
        "idle CPU over {:.1} s: utime+stime {} ticks = {:.0} ms ({:.1} ms/min); scheduler {:.3} ms ({:.3} ms/min)",
        wall.as_secs_f64(),
        t1 - t0,
        tick_ms,
        per_min(tick_ms),
        sched_ms,
        per_min(sched_ms)
    );
    println!(
        "total CPU since start: {} ticks, {:.3} ms by the scheduler; VmRSS now {}",
        t1,
        n1 as f64 / 1e6,
        common::status(pid)?
            .get("VmRSS")
            .cloned()
            .unwrap_or_else(|| "?".into())
    );
    if let Some((took, status)) = daemon.guard.stop() {
        println!("SIGTERM: exited {status} after {took:?}");
    }
    Ok(())
}

fn latency(root: &Path, opts: &Options) -> Res<()> {
    let how = if opts.poll {
        "100 µs poll of the destination"
    } else {
        "inotify on the output dir"
    };
    println!(
        "\n== latency: {} ConfigMap swaps, wait 0s/0s, detection: {how} ==",
        opts.swaps
    );
    let (mut daemon, mut configmap) = Daemon::start(&root.join("latency"), opts)?;
    let (watcher, rx) = common::watch_output(&daemon.destination, !opts.poll)?;

    let mut samples = Vec::with_capacity(opts.swaps);
    // Wall-clock second of the day (UTC) of each rename, to line up with
    // the daemon's log timestamps.
    let mut renamed_at = Vec::with_capacity(opts.swaps);
    let mut timeouts = 0;
    let bench_started = Instant::now();
    for _ in 0..opts.swaps {
        let next = configmap.prepare()?;
        let want = marker(next);
        // Let the previous swap's trailing events (the old dir's removal,
        // our own reads) settle before the clock starts.
        std::thread::sleep(Duration::from_millis(20));
        while rx.try_recv().is_ok() {}
        let start = Instant::now();
        renamed_at.push(common::second_of_day(SystemTime::now()));
        configmap.commit()?;
        configmap.clean()?;
        let done = common::wait_output(start, start + STEP_TIMEOUT, &rx, opts.poll, || {
            daemon.holds(&want)
        });
        match done {
            Some(took) => samples.push(took),
            None => {
                timeouts += 1;
                eprintln!("swap {next}: no new output within {STEP_TIMEOUT:?}");
                if timeouts >= 3 {
                    return Err(format!(
                        "3 swaps timed out; log tail:\n{}",
                        daemon.guard.raw_stderr()
                    ));
                }
            }
        }
    }
    drop(watcher);
    println!(
        "{} swaps in {:.1} s, {} timed out",
        samples.len(),
        bench_started.elapsed().as_secs_f64(),
        timeouts
    );
    common::print_stats("swap -> new output in place", &mut samples);

    let status = common::status(daemon.guard.pid())?;
    println!(
        "daemon after the swaps: VmRSS {}  VmHWM {}  Threads {}",
        status.get("VmRSS").map_or("?", String::as_str),
        status.get("VmHWM").map_or("?", String::as_str),
        status.get("Threads").map_or("?", String::as_str)
    );
    let stopped = daemon.guard.stop();
    breakdown(&daemon.guard.raw_stderr(), &renamed_at);
    if let Some((took, status)) = stopped {
        println!("SIGTERM: exited {status} after {took:?}");
    }
    Ok(())
}

/// Splits each swap's latency with the daemon's log: `template sources
/// changed` (logged when the watcher's event reaches the loop) and the next
/// `rendered ... changed=true elapsed=...` (logged after the rename; elapsed
/// covers render + stage + fsync + rename + dir fsync, not template loading).
fn breakdown(log: &str, renamed_at: &[f64]) {
    let mut noticed = Vec::new();
    let mut rendered = Vec::new();
    for line in log.lines() {
        let Some(at) = common::log_second_of_day(line) else {
            continue;
        };
        if line.contains("template sources changed") {
            noticed.push(at);
        } else if line.contains(" rendered ")
            && line.contains("changed=true")
            && !noticed.is_empty()
        {
            let elapsed = line
                .split("elapsed=")
                .nth(1)
                .and_then(|v| parse_debug_duration(v.split_whitespace().next().unwrap_or("")));
            if let Some(elapsed) = elapsed {
                rendered.push((at, elapsed.as_secs_f64()));
            }
        }
    }
    if noticed.len() != renamed_at.len() || rendered.len() != renamed_at.len() {
        println!(
            "(no breakdown: {} swaps, {} change notices, {} renders in the log)",
            renamed_at.len(),
            noticed.len(),
            rendered.len()
        );
        return;
    }
    let d = |secs: f64| Duration::from_secs_f64(secs.max(0.0));
    let mut notice = Vec::new();
    let mut queue = Vec::new();
    let mut install = Vec::new();
    for ((rename, seen), (done, elapsed)) in renamed_at.iter().zip(&noticed).zip(&rendered) {
        notice.push(d(seen - rename));
        queue.push(d(done - elapsed - seen));
        install.push(d(*elapsed));
    }
    println!("breakdown from the daemon's log (µs timestamps):");
    common::print_stats(
        "  rename -> loop hears of it (inotify, notify thread, re-read)",
        &mut notice,
    );
    common::print_stats(
        "  heard -> render starts (timer, template reload, context)",
        &mut queue,
    );
    common::print_stats(
        "  render + stage + fsync + rename (`elapsed`)",
        &mut install,
    );
}

/// `1.234ms`, `812.5µs`, `3s`, `900ns`: `Duration`'s Debug form.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let ns = match unit {
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(Duration::from_nanos((value * ns) as u64))
}

fn main() -> std::process::ExitCode {
    common::bench_main("daemon", options(), |opts| {
        let root = common::temp_root("daemon", Path::new(env!("CARGO_TARGET_TMPDIR")))?;
        let size = common::binary_size(&opts.shared.bin)?;
        println!(
            "binary: {}: {size} bytes ({:.2} MiB)",
            opts.shared.bin.display(),
            size as f64 / 1048576.0
        );
        println!(
            "machine: {} cores; temp dir {} on {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            root.path().display(),
            common::filesystem_of(root.path())
        );
        common::print_daemon_env(&opts.shared.daemon_env);
        if opts.shared.runs("idle") {
            idle(root.path(), &opts)?;
        }
        if opts.shared.runs("latency") {
            latency(root.path(), &opts)?;
        }
        Ok(())
    })
}
