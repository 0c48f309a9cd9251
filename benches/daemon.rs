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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use notify::{RecursiveMode, Watcher};

/// The release binary `cargo bench` built; `--bin PATH` measures another.
const BIN: &str = env!("CARGO_BIN_EXE_peerplate");
const TEMPLATE: &str = include_str!("../templates/nginx.conf.j2");
const PEERS: &str =
    "web-0.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\n";
/// The longest any single wait may take before the bench gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

type Res<T> = Result<T, String>;

#[derive(Debug)]
struct Options {
    only: Option<String>,
    swaps: usize,
    poll: bool,
    idle_wait: Duration,
    cpu_window: Duration,
    daemon_env: Vec<(String, String)>,
    bin: PathBuf,
}

fn options() -> Res<Options> {
    let mut o = Options {
        only: None,
        swaps: 200,
        poll: false,
        idle_wait: Duration::from_secs(10),
        cpu_window: Duration::from_secs(30),
        daemon_env: Vec::new(),
        bin: PathBuf::from(BIN),
    };
    let mut args = std::env::args().skip(1);
    let secs = |v: Option<String>| -> Res<Duration> {
        v.and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s >= 0.0 && *s <= 120.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| "expected seconds between 0 and 120".to_string())
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            "--only" => o.only = args.next(),
            "--swaps" => {
                o.swaps = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=2000).contains(n))
                    .ok_or("--swaps takes a number from 1 to 2000")?
            }
            "--poll" => o.poll = true,
            "--bin" => o.bin = args.next().ok_or("--bin takes a path")?.into(),
            "--idle-wait" => o.idle_wait = secs(args.next())?,
            "--cpu-window" => o.cpu_window = secs(args.next())?,
            "--daemon-env" => {
                let kv = args.next().ok_or("--daemon-env takes K=V")?;
                let (k, v) = kv.split_once('=').ok_or("--daemon-env takes K=V")?;
                o.daemon_env.push((k.to_string(), v.to_string()));
            }
            other => return Err(format!("unknown argument {other:?}; see the //! header")),
        }
    }
    Ok(o)
}

/// A ConfigMap-style volume holding one template, swapped like kubelet does.
struct ConfigMap {
    mount: PathBuf,
    generation: u64,
}

impl ConfigMap {
    const KEY: &'static str = "nginx.conf.j2";

    fn ts_dir(generation: u64) -> String {
        format!("..2026_11_24_10_00_00.{:09}", generation + 1)
    }

    fn template(generation: u64) -> String {
        format!("{TEMPLATE}# swap {generation}\n")
    }

    fn create(mount: &Path) -> Res<ConfigMap> {
        let ts = Self::ts_dir(0);
        std::fs::create_dir_all(mount.join(&ts)).map_err(e("create the ConfigMap dir"))?;
        std::fs::write(mount.join(&ts).join(Self::KEY), Self::template(0))
            .map_err(e("write the template"))?;
        std::os::unix::fs::symlink(&ts, mount.join("..data")).map_err(e("symlink ..data"))?;
        std::os::unix::fs::symlink(Path::new("..data").join(Self::KEY), mount.join(Self::KEY))
            .map_err(e("symlink the key"))?;
        Ok(ConfigMap {
            mount: mount.to_path_buf(),
            generation: 0,
        })
    }

    fn path(&self) -> PathBuf {
        self.mount.join(Self::KEY)
    }

    /// Writes the next generation and links `..data_tmp` to it; the swap is
    /// then one rename ([`ConfigMap::commit`]).
    fn prepare(&mut self) -> Res<u64> {
        let next = self.generation + 1;
        let ts = Self::ts_dir(next);
        std::fs::create_dir(self.mount.join(&ts)).map_err(e("create the new dir"))?;
        std::fs::write(self.mount.join(&ts).join(Self::KEY), Self::template(next))
            .map_err(e("write the new template"))?;
        std::os::unix::fs::symlink(&ts, self.mount.join("..data_tmp"))
            .map_err(e("symlink ..data_tmp"))?;
        Ok(next)
    }

    /// Renames `..data_tmp` over `..data`, then removes the old dir.
    fn commit(&mut self) -> Res<()> {
        std::fs::rename(self.mount.join("..data_tmp"), self.mount.join("..data"))
            .map_err(e("rename ..data_tmp"))?;
        std::fs::remove_dir_all(self.mount.join(Self::ts_dir(self.generation)))
            .map_err(e("remove the old dir"))?;
        self.generation += 1;
        Ok(())
    }
}

fn e(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |err| format!("{what}: {err}")
}

/// The running daemon; stopped however the bench ends.
struct Daemon {
    child: Child,
    log: PathBuf,
    destination: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, opts: &Options) -> Res<(Daemon, ConfigMap)> {
        std::fs::create_dir_all(dir).map_err(e("create the run dir"))?;
        let configmap = ConfigMap::create(&dir.join("configmap"))?;
        let out = dir.join("out");
        std::fs::create_dir_all(&out).map_err(e("create the output dir"))?;
        let peers = dir.join("peers");
        std::fs::write(&peers, PEERS).map_err(e("write the peers file"))?;
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.96.0.10\n").map_err(e("write resolv.conf"))?;
        let destination = out.join("nginx.conf");
        let config = dir.join("peerplate.yaml");
        let yaml = format!(
            "identity: {{hostname: web-1, namespace: default}}\n\
             peers:\n  file: {}\n\
             wait: {{min: 0s, max: 0s}}\n\
             templates:\n  - source: {}\n    destination: {}\n",
            peers.display(),
            configmap.path().display(),
            destination.display()
        );
        std::fs::write(&config, yaml).map_err(e("write the config"))?;
        let log = dir.join("peerplate.log");
        let stderr = std::fs::File::create(&log).map_err(e("create the log"))?;
        let child = Command::new(&opts.bin)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("PEERPLATE_RESOLV_CONF", &resolv)
            .envs(opts.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(e("start peerplate"))?;
        let daemon = Daemon {
            child,
            log,
            destination,
        };
        let marker = marker(0);
        let started = Instant::now();
        while !daemon.holds(&marker) {
            if started.elapsed() > STEP_TIMEOUT {
                return Err(format!(
                    "no first render within {STEP_TIMEOUT:?}; log:\n{}",
                    daemon.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!(
            "daemon pid {} rendered its first output {:?} after spawn",
            daemon.child.id(),
            started.elapsed()
        );
        Ok((daemon, configmap))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn holds(&self, marker: &[u8]) -> bool {
        std::fs::read(&self.destination).is_ok_and(|b| b.ends_with(marker))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it has not exited within 2 s.
    fn stop(&mut self) -> Option<(Duration, std::process::ExitStatus)> {
        if let Ok(Some(_)) = self.child.try_wait() {
            return None;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).ok()?);
        let asked = Instant::now();
        let _ = kill(pid, Signal::SIGTERM);
        while asked.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((asked.elapsed(), status));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn marker(generation: u64) -> Vec<u8> {
    format!("# swap {generation}\n").into_bytes()
}

// ---- /proc --------------------------------------------------------------------

fn status_kib(pid: u32) -> Res<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(e("read /proc/<pid>/status"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// utime + stime in clock ticks (USER_HZ, 100 a second on Linux).
fn cpu_ticks(pid: u32) -> Res<u64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(e("read /proc/<pid>/stat"))?;
    // The command name is in parentheses and may hold spaces; fields after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("odd /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let num = |i: usize| -> Res<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {i} in /proc/<pid>/stat"))
    };
    Ok(num(11)? + num(12)?)
}

/// Nanoseconds on CPU, summed over every thread, from the scheduler.
fn cpu_ns(pid: u32) -> Res<u64> {
    let mut total = 0;
    let tasks =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(e("read /proc/<pid>/task"))?;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    names.sort();
    names
}

/// Resident kB per mapping group: the binary's segments, each library,
/// [heap], [stack], and anonymous mappings (thread stacks, malloc arenas).
fn smaps_breakdown(pid: u32) -> Res<Vec<(String, u64, u64, usize)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(e("read /proc/<pid>/smaps"))?;
    // group -> (rss kB, size kB, mappings)
    let mut groups: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    let is_header = |l: &str| {
        l.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
    };
    for line in text.lines() {
        if is_header(line) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let perms = f.get(1).copied().unwrap_or("");
            let name = f.get(5..).map(|p| p.join(" ")).unwrap_or_default();
            let group = if name.is_empty() {
                format!("anonymous {perms}")
            } else if name.starts_with('[') {
                name
            } else {
                let file = Path::new(&name)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(name);
                format!("{file} {perms}")
            };
            current = Some(group);
            continue;
        }
        let Some(group) = &current else { continue };
        let kb = |prefix: &str| -> Option<u64> {
            line.strip_prefix(prefix)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        let entry = groups.entry(group.clone()).or_default();
        if let Some(size) = kb("Size:") {
            entry.1 += size;
            entry.2 += 1;
        } else if let Some(rss) = kb("Rss:") {
            entry.0 += rss;
        }
    }
    let mut out: Vec<(String, u64, u64, usize)> = groups
        .into_iter()
        .map(|(g, (rss, size, n))| (g, rss, size, n))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(out)
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
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
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

fn filesystem_of(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "unknown".into();
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(mount), Some(dash)) = (f.get(4), f.iter().position(|x| *x == "-")) else {
            continue;
        };
        if path.starts_with(mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            let fstype = f.get(dash + 1).copied().unwrap_or("?");
            let source = f.get(dash + 2).copied().unwrap_or("?");
            best = Some((
                mount.len(),
                format!("{fstype} ({source} mounted on {mount})"),
            ));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "unknown".into())
}

// ---- the two measurements ---------------------------------------------------------

fn idle(root: &Path, opts: &Options) -> Res<()> {
    println!("\n== idle: `run`, file source with 2 peers, the nginx template ==");
    let (mut daemon, _configmap) = Daemon::start(&root.join("idle"), opts)?;
    let pid = daemon.pid();
    std::thread::sleep(opts.idle_wait);
    let status = status_kib(pid)?;
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
    println!("threads: {:?}", thread_names(pid));
    if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        let keep = [
            "Rss:",
            "Pss:",
            "Pss_Anon:",
            "Pss_File:",
            "Shared_Clean:",
            "Private_Clean:",
            "Private_Dirty:",
            "Anonymous:",
        ];
        let lines: Vec<String> = rollup
            .lines()
            .filter(|l| keep.iter().any(|k| l.starts_with(k)))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        println!("smaps_rollup: {}", lines.join(", "));
    }
    println!("resident by mapping (kB rss / kB size / mappings):");
    for (group, rss, size, n) in smaps_breakdown(pid)? {
        if rss > 0 {
            println!("  {rss:>6} / {size:>7} / {n:>2}  {group}");
        }
    }
    let anon: Vec<String> = anon_mappings(pid)
        .into_iter()
        .filter(|(_, rss)| *rss > 0)
        .map(|(size, rss)| format!("{rss}/{size}"))
        .collect();
    println!(
        "anonymous mappings with resident pages (rss/size kB): {}",
        anon.join(" ")
    );

    let (t0, n0, w0) = (cpu_ticks(pid)?, cpu_ns(pid)?, Instant::now());
    std::thread::sleep(opts.cpu_window);
    let (t1, n1, wall) = (cpu_ticks(pid)?, cpu_ns(pid)?, w0.elapsed());
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
        status_kib(pid)?
            .get("VmRSS")
            .cloned()
            .unwrap_or_else(|| "?".into())
    );
    if let Some((took, status)) = daemon.stop() {
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
    let out_dir = daemon
        .destination
        .parent()
        .ok_or("the destination has a dir")?
        .to_path_buf();
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    })
    .map_err(|err| format!("start the watcher: {err}"))?;
    if !opts.poll {
        watcher
            .watch(&out_dir, RecursiveMode::NonRecursive)
            .map_err(|err| format!("watch the output dir: {err}"))?;
    }

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
        renamed_at.push(second_of_day(std::time::SystemTime::now()));
        configmap.commit()?;
        let deadline = start + STEP_TIMEOUT;
        let done = loop {
            if daemon.holds(&want) {
                break Some(start.elapsed());
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            if opts.poll {
                std::thread::sleep(Duration::from_micros(100));
            } else {
                let _ = rx.recv_timeout(deadline - now);
            }
        };
        match done {
            Some(took) => samples.push(took),
            None => {
                timeouts += 1;
                eprintln!("swap {next}: no new output within {STEP_TIMEOUT:?}");
                if timeouts >= 3 {
                    return Err(format!(
                        "3 swaps timed out; log tail:\n{}",
                        daemon.log_text()
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
    print_stats("swap -> new output in place", &mut samples);

    let status = status_kib(daemon.pid())?;
    println!(
        "daemon after the swaps: VmRSS {}  VmHWM {}  Threads {}",
        status.get("VmRSS").map_or("?", String::as_str),
        status.get("VmHWM").map_or("?", String::as_str),
        status.get("Threads").map_or("?", String::as_str)
    );
    let stopped = daemon.stop();
    breakdown(&daemon.log_text(), &renamed_at);
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
        let Some(at) = line.split_whitespace().next().and_then(log_second_of_day) else {
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
    print_stats(
        "  rename -> loop hears of it (inotify, notify thread, re-read)",
        &mut notice,
    );
    print_stats(
        "  heard -> render starts (timer, template reload, context)",
        &mut queue,
    );
    print_stats(
        "  render + stage + fsync + rename (`elapsed`)",
        &mut install,
    );
}

fn second_of_day(t: std::time::SystemTime) -> f64 {
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    (since.as_secs() % 86_400) as f64 + f64::from(since.subsec_nanos()) / 1e9
}

/// `2026-11-25T13:08:40.485702Z` -> seconds since midnight UTC.
fn log_second_of_day(stamp: &str) -> Option<f64> {
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
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

fn print_stats(what: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        println!("{what}: no samples");
        return;
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{what} (n={}): min {:.3} ms  median {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms",
        samples.len(),
        ms(samples[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1]),
        ms(mean)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> std::process::ExitCode {
    let opts = match options() {
        Ok(o) => o,
        Err(err) => {
            eprintln!("daemon bench: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = (|| -> Res<()> {
        let root = tempfile::Builder::new()
            .prefix("peerplate-daemon-bench.")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(e("create the temp dir"))?;
        let size = std::fs::metadata(&opts.bin)
            .map_err(e("stat the binary"))?
            .len();
        println!(
            "binary: {}: {size} bytes ({:.2} MiB)",
            opts.bin.display(),
            size as f64 / 1048576.0
        );
        println!(
            "machine: {} cores; temp dir {} on {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            root.path().display(),
            filesystem_of(root.path())
        );
        if !opts.daemon_env.is_empty() {
            println!("daemon env: {:?}", opts.daemon_env);
        }
        let run = |part: &str| opts.only.as_deref().is_none_or(|o| o == part);
        if run("idle") {
            idle(root.path(), &opts)?;
        }
        if run("latency") {
            latency(root.path(), &opts)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("daemon bench failed: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
