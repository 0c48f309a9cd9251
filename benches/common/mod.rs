//! Helpers shared by the `daemon`, `dns` and `reload` benches (`mod
//! common;`). The pieces the integration tests have too come from their
//! kit, included by path: `helpers` (the daemon as a guarded child process,
//! kubelet-style ConfigMap swaps, atomic file replacement, bounded polling,
//! free ports) and `procfs` (memory, CPU, threads, children). Here: the
//! bench's `main` and option pieces, the daemon's config and start, waiting
//! for its output, its log, where the resident pages are, and the
//! statistics printout. Every wait is bounded; setup errors are strings,
//! except inside the test kit, which panics.

#![allow(dead_code)] // each bench uses a different part

#[path = "../../tests/integration/helpers.rs"]
pub mod helpers;
#[path = "../../tests/integration/procfs.rs"]
pub mod procfs;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};

pub use helpers::{ConfigMapDir, Daemon};

pub type Res<T> = Result<T, String>;

pub fn e(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |err| format!("{what}: {err}")
}

// ---- main and options -------------------------------------------------------------

/// A bench's `main`: a bad option prints `<name> bench: <err>` and exits 2;
/// `body` failing prints `<name> bench failed: <err>` and exits 1.
pub fn bench_main<O>(name: &str, options: Res<O>, body: impl FnOnce(O) -> Res<()>) -> ExitCode {
    let opts = match options {
        Ok(o) => o,
        Err(err) => {
            eprintln!("{name} bench: {err}");
            return ExitCode::from(2);
        }
    };
    match body(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name} bench failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A fresh temp dir `peerplate-<name>-bench.XXXXXX` in `dir`, removed on drop.
pub fn temp_root(name: &str, dir: &Path) -> Res<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("peerplate-{name}-bench."))
        .tempdir_in(dir)
        .map_err(e("create the temp dir"))
}

/// The options every bench takes: `--bin PATH` (default: the release
/// binary `cargo bench` built), `--only PART`, `--daemon-env K=V`
/// (repeatable), and `--bench` (what `cargo bench` passes; ignored).
#[derive(Debug)]
pub struct SharedOptions {
    pub bin: PathBuf,
    pub only: Option<String>,
    pub daemon_env: Vec<(String, String)>,
}

impl SharedOptions {
    pub fn new() -> SharedOptions {
        SharedOptions {
            bin: PathBuf::from(helpers::bin()),
            only: None,
            daemon_env: Vec::new(),
        }
    }

    /// Takes `arg` (and its value from `args`) if it is one of these.
    fn take(&mut self, arg: &str, args: &mut dyn Iterator<Item = String>) -> Res<bool> {
        match arg {
            "--bench" => {}
            "--bin" => self.bin = args.next().ok_or("--bin takes a path")?.into(),
            "--only" => self.only = args.next(),
            "--daemon-env" => self.daemon_env.push(daemon_env_arg(args.next())?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether `--only` (if given) selects `part`.
    pub fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == part)
    }
}

/// Parses the command line: each argument goes to `shared`, else to `own`
/// (which takes the bench's own options, with their values from the
/// iterator, and returns `Ok(false)` for any other: an unknown argument).
pub fn parse_args(
    shared: &mut SharedOptions,
    mut own: impl FnMut(&str, &mut dyn Iterator<Item = String>) -> Res<bool>,
) -> Res<()> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if !shared.take(&arg, &mut args)? && !own(&arg, &mut args)? {
            return Err(unknown_arg(&arg));
        }
    }
    Ok(())
}

/// The value of `--daemon-env K=V`.
pub fn daemon_env_arg(value: Option<String>) -> Res<(String, String)> {
    let kv = value.ok_or("--daemon-env takes K=V")?;
    let (k, v) = kv.split_once('=').ok_or("--daemon-env takes K=V")?;
    Ok((k.to_string(), v.to_string()))
}

/// A number of seconds from 0 to `max`.
pub fn secs_arg(value: Option<String>, max: f64) -> Res<Duration> {
    value
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s >= 0.0 && *s <= max)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds between 0 and {max}"))
}

/// The error for an argument no option parser knows.
pub fn unknown_arg(other: &str) -> String {
    format!("unknown argument {other:?}; see the //! header")
}

/// Prints the `--daemon-env` pairs, if any.
pub fn print_daemon_env(daemon_env: &[(String, String)]) {
    if !daemon_env.is_empty() {
        println!("daemon env: {daemon_env:?}");
    }
}

/// The size of `bin` in bytes.
pub fn binary_size(bin: &Path) -> Res<u64> {
    Ok(std::fs::metadata(bin).map_err(e("stat the binary"))?.len())
}

/// The binary `cargo bench` built (`CARGO_BIN_EXE_peerplate`) unless
/// `--bin PATH` names another; prints its size and linkage.
pub fn describe_binary(bin: &Path) -> Res<()> {
    let size = binary_size(bin)?;
    let ldd = Command::new("ldd")
        .arg(bin)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|err| format!("ldd failed: {err}"));
    println!(
        "binary: {}: {size} bytes ({:.2} MiB); ldd: {ldd}",
        bin.display(),
        size as f64 / 1048576.0
    );
    Ok(())
}

pub fn machine_line(root: &Path) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, loadavg {}; temp dir {} on {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        root.display(),
        filesystem_of(root)
    );
}

// ---- the daemon -------------------------------------------------------------------

/// `peerplate --config <config> run` with `env` on top of this process's
/// environment, logs in `dir`; on drop, SIGTERM, then SIGKILL after 2 s.
pub fn spawn_daemon(bin: &Path, config: &Path, dir: &Path, env: &[(String, String)]) -> Daemon {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .envs(env.iter().map(|(k, v)| (k, v)));
    Daemon::spawn_in(cmd, dir).graceful()
}

/// The config of a daemon with a `file:` peer source (this pod `web-1`),
/// `wait: 0s/0s`, no `http:` and one template; `template_extra` goes in the
/// template's entry (e.g. `    reload: true\n`), `extra` at the end.
pub fn file_source_config(
    peers: &Path,
    source: &Path,
    destination: &Path,
    template_extra: &str,
    extra: &str,
) -> String {
    format!(
        "identity: {{hostname: web-1, namespace: default}}\n\
         peers:\n  file: {}\n\
         wait: {{min: 0s, max: 0s}}\n\
         templates:\n  - source: {}\n    destination: {}\n{template_extra}{extra}",
        peers.display(),
        source.display(),
        destination.display()
    )
}

/// Writes `<dir>/resolv.conf` (`nameserver <nameserver>`) and
/// `<dir>/peerplate.yaml` (`yaml`), then starts the daemon on them with
/// `PEERPLATE_RESOLV_CONF` pointing at the former, `--daemon-env` on top
/// and its logs under `<dir>`; returns it with the path of its stderr.
pub fn start_daemon(
    opts: &SharedOptions,
    dir: &Path,
    nameserver: &str,
    yaml: &str,
) -> Res<(Daemon, PathBuf)> {
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {nameserver}\n"))
        .map_err(e("write resolv.conf"))?;
    let config = dir.join("peerplate.yaml");
    std::fs::write(&config, yaml).map_err(e("write the config"))?;
    let mut env = vec![(
        "PEERPLATE_RESOLV_CONF".to_string(),
        resolv.display().to_string(),
    )];
    env.extend(opts.daemon_env.iter().cloned());
    let daemon = spawn_daemon(&opts.bin, &config, dir, &env);
    let log = daemon.stderr_path();
    Ok((daemon, log))
}

/// `<dir>/out`, created: the daemon's output dir.
pub fn output_dir(dir: &Path) -> Res<PathBuf> {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).map_err(e("create the output dir"))?;
    Ok(out)
}

// ---- waiting for the output -----------------------------------------------------

/// A `notify` watcher that sends `()` on every event, watching the dir of
/// `destination` (non-recursively) if `watch`.
pub fn watch_output(
    destination: &Path,
    watch: bool,
) -> Res<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let out_dir = destination
        .parent()
        .ok_or("the destination has a dir")?
        .to_path_buf();
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    })
    .map_err(|err| format!("start the watcher: {err}"))?;
    if watch {
        watcher
            .watch(&out_dir, RecursiveMode::NonRecursive)
            .map_err(|err| format!("watch the output dir: {err}"))?;
    }
    Ok((watcher, rx))
}

/// Checks `done` until it holds (the time since `start`) or `deadline`
/// passes (`None`), waking on each of the watcher's `events` or, with
/// `poll`, every 100 µs.
pub fn wait_output(
    start: Instant,
    deadline: Instant,
    events: &mpsc::Receiver<()>,
    poll: bool,
    mut done: impl FnMut() -> bool,
) -> Option<Duration> {
    loop {
        if done() {
            break Some(start.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        if poll {
            std::thread::sleep(Duration::from_micros(100));
        } else {
            let _ = events.recv_timeout(deadline - now);
        }
    }
}

// ---- the daemon's log -----------------------------------------------------------

/// Reads a growing log file incrementally.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    pub fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// Complete lines written since the last call.
    pub fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_string).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }
}

pub fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last `n` lines of a log, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = log_text(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Seconds since midnight UTC, the unit of the log's timestamps.
pub fn second_of_day(t: SystemTime) -> f64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (since.as_secs() % 86_400) as f64 + f64::from(since.subsec_nanos()) / 1e9
}

/// `2026-11-25T13:08:40.485702Z ...` -> seconds since midnight UTC.
pub fn log_second_of_day(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

// ---- a ConfigMap volume, swapped like kubelet does ------------------------------

/// One template key in a kubelet-style ConfigMap volume (the tests'
/// [`ConfigMapDir`]): the template of generation N is `body` followed by
/// `# swap N`.
pub struct ConfigMap {
    pub volume: ConfigMapDir,
    pub generation: u64,
    key: &'static str,
    body: String,
}

impl ConfigMap {
    /// The key [`ConfigMap::create`] uses.
    pub const KEY: &'static str = "template.j2";

    pub fn template(&self, generation: u64) -> String {
        format!("{}# swap {generation}\n", self.body)
    }

    pub fn create(mount: &Path, body: &str) -> Res<ConfigMap> {
        Self::create_with_key(mount, Self::KEY, body)
    }

    /// [`ConfigMap::create`] with the template under `key`.
    pub fn create_with_key(mount: &Path, key: &'static str, body: &str) -> Res<ConfigMap> {
        let text = format!("{body}# swap 0\n");
        Ok(ConfigMap {
            volume: ConfigMapDir::create(mount, &[(key, &text)]),
            generation: 0,
            key,
            body: body.to_string(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.volume.path(self.key)
    }

    /// Writes the next generation and links `..data_tmp` to it; the swap is
    /// then one rename ([`ConfigMap::commit`]).
    pub fn prepare(&mut self) -> Res<u64> {
        let next = self.generation + 1;
        let text = self.template(next);
        self.volume.prepare(&[(self.key, &text)]);
        Ok(next)
    }

    /// Renames `..data_tmp` over `..data` (the swap itself).
    pub fn commit(&mut self) -> Res<()> {
        self.volume.commit();
        self.generation += 1;
        Ok(())
    }

    /// Removes the previous generation's dir, as kubelet does after a swap.
    pub fn clean(&mut self) -> Res<()> {
        self.volume.clean();
        Ok(())
    }
}

// ---- /proc ------------------------------------------------------------------------

/// `pid` as `procfs` takes it.
pub fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

/// [`procfs::status`], or an error naming the process.
pub fn status(pid: u32) -> Res<BTreeMap<String, String>> {
    procfs::status(pid_i32(pid)).ok_or_else(|| format!("no /proc/{pid}/status"))
}

/// [`procfs::memory`], or an error naming the process.
pub fn memory(pid: u32) -> Res<procfs::Memory> {
    procfs::memory(pid_i32(pid)).ok_or_else(|| format!("no memory figures in /proc/{pid}/status"))
}

/// [`procfs::cpu_ticks`] and [`procfs::cpu_ns`], or an error naming the process.
pub fn cpu(pid: u32) -> Res<(u64, u64)> {
    let pid = pid_i32(pid);
    let ticks = procfs::cpu_ticks(pid).ok_or_else(|| format!("no /proc/{pid}/stat"))?;
    let ns = procfs::cpu_ns(pid).ok_or_else(|| format!("no /proc/{pid}/task"))?;
    Ok((ticks, ns))
}

/// CPU used by `pid` (and, for information, by `others`) over `window`:
/// returns the scheduler's ms per minute for `pid` and prints the details.
pub fn idle_cpu(pid: u32, window: Duration, others: &[(&str, u32)]) -> Res<f64> {
    idle_cpu_all(pid, window, others).map(|(own, _)| own)
}

/// [`idle_cpu`], also returning the others' ms per minute (same order,
/// measured over the same window).
pub fn idle_cpu_all(pid: u32, window: Duration, others: &[(&str, u32)]) -> Res<(f64, Vec<f64>)> {
    let (t0, n0) = cpu(pid)?;
    let o0: Vec<u64> = others
        .iter()
        .map(|(_, p)| procfs::cpu_ns(pid_i32(*p)).unwrap_or(0))
        .collect();
    let w0 = Instant::now();
    std::thread::sleep(window);
    let ((t1, n1), wall) = (cpu(pid)?, w0.elapsed());
    let per_min = |v: f64| v * 60.0 / wall.as_secs_f64();
    let sched_ms = (n1 - n0) as f64 / 1e6;
    println!(
        "idle CPU over {:.1} s: scheduler {:.3} ms = {:.2} ms/min; utime+stime {} ticks = {:.0} ms/min",
        wall.as_secs_f64(),
        sched_ms,
        per_min(sched_ms),
        t1 - t0,
        per_min((t1 - t0) as f64 * 10.0)
    );
    let mut theirs = Vec::with_capacity(others.len());
    for ((name, p), before) in others.iter().zip(o0) {
        let after = procfs::cpu_ns(pid_i32(*p)).unwrap_or(before);
        let used = per_min(after.saturating_sub(before) as f64 / 1e6);
        println!("  ({name} pid {p} used {used:.2} ms/min over the same window)");
        theirs.push(used);
    }
    Ok((per_min(sched_ms), theirs))
}

/// Prints `/proc/<pid>/smaps_rollup` highlights and resident kB per mapping
/// group (the binary's segments, [heap], [stack], anonymous mappings).
pub fn print_mappings(pid: u32) -> Res<()> {
    print_mappings_indented(pid, "  ")
}

/// Whether a line of `/proc/<pid>/smaps` starts a mapping (`start-end ...`).
pub fn is_mapping_header(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// [`print_mappings`] with each line indented by `indent`.
pub fn print_mappings_indented(pid: u32, indent: &str) -> Res<()> {
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
        println!("{indent}smaps_rollup: {}", lines.join(", "));
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(e("read /proc/<pid>/smaps"))?;
    // group -> (rss kB, size kB, mappings)
    let mut groups: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if is_mapping_header(line) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let perms = f.get(1).copied().unwrap_or("");
            let name = f.get(5..).map(|p| p.join(" ")).unwrap_or_default();
            current = Some(if name.is_empty() {
                format!("anonymous {perms}")
            } else if name.starts_with('[') {
                name
            } else {
                let file = Path::new(&name)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(name);
                format!("{file} {perms}")
            });
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
    let mut out: Vec<(String, (u64, u64, usize))> = groups.into_iter().collect();
    out.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    println!("{indent}resident by mapping (kB rss / kB size / mappings):");
    for (group, (rss, size, n)) in out {
        if rss > 0 {
            println!("{indent}  {rss:>6} / {size:>7} / {n:>2}  {group}");
        }
    }
    Ok(())
}

pub fn filesystem_of(path: &Path) -> String {
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

// ---- numbers ----------------------------------------------------------------------

/// Sorts `samples` and prints min, median, p90, p99, max, mean; returns
/// (median, p90) in ms.
pub fn print_stats(what: &str, samples: &mut [Duration]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        println!("{what}: no samples");
        return None;
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
    Some((ms(at(0.5)), ms(at(0.9))))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A tiny xorshift generator: spread for random pauses, not secrecy.
pub struct XorShift(u64);

impl XorShift {
    pub fn new() -> XorShift {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        XorShift((u64::from(nanos) << 32) ^ u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// "met" / "MISSED" for a target line.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
