//! Shared helpers for the integration tests and the benches (which include
//! this file by `#[path]`): temp sandboxes, running the `peerplate` binary
//! to completion with a bounded wait, a kubelet-style ConfigMap volume
//! writer, a guard for long-running processes (logs on disk, SIGKILL on
//! drop, or SIGTERM first when graceful), bounded polling, peer lists, free
//! ports, a tiny HTTP client, and optional system components (a missing one
//! is a skip on a laptop, a failure under `CI=true`).

#![allow(dead_code)] // not every test module or bench uses every helper

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// No wait in this test binary is longer than this.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// The usual bound of a test's waits (all of [`MAX_WAIT`]).
pub const WAIT: Duration = MAX_WAIT;

/// The headless Service of the StatefulSet `web` the tests pretend to be in.
pub const SVC: &str = "nginx.default.svc.cluster.local";

/// Pod ordinals: `&[0, 1]` or `0..3`.
pub trait Ordinals {
    fn ordinals(self) -> Vec<usize>;
}

impl Ordinals for &[usize] {
    fn ordinals(self) -> Vec<usize> {
        self.to_vec()
    }
}

impl<const N: usize> Ordinals for &[usize; N] {
    fn ordinals(self) -> Vec<usize> {
        self.to_vec()
    }
}

impl Ordinals for std::ops::Range<usize> {
    fn ordinals(self) -> Vec<usize> {
        self.collect()
    }
}

/// One FQDN a line (`web-K.<svc>`), in the order given, trailing newline:
/// a peers file, or what a hook gets on stdin.
pub fn peers_in(svc: &str, ks: impl Ordinals) -> String {
    ks.ordinals()
        .into_iter()
        .map(|k| format!("web-{k}.{svc}\n"))
        .collect()
}

/// [`peers_in`] the Service [`SVC`]: `peers(&[0, 1])` or `peers(0..3)`.
pub fn peers(ks: impl Ordinals) -> String {
    peers_in(SVC, ks)
}

/// A port on 127.0.0.1 that nobody uses right now, for TCP and for UDP.
pub fn free_port() -> u16 {
    free_port_on(&["127.0.0.1"])
}

/// `N` distinct ports, each [`free_port`] a moment ago.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports: Vec<u16> = Vec::with_capacity(N);
    for _ in 0..100 * N {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
        if ports.len() == N {
            break;
        }
    }
    ports.try_into().expect("N distinct free ports")
}

/// A port free for TCP and UDP on every one of `ips` right now.
pub fn free_port_on(ips: &[&str]) -> u16 {
    let addr = |ip: &str, port: u16| -> SocketAddr {
        format!("{ip}:{port}").parse().expect("an IP address")
    };
    for _ in 0..100 {
        let Ok(listener) = TcpListener::bind(addr(ips[0], 0)) else {
            continue;
        };
        let port = listener.local_addr().expect("local address").port();
        let udp_free = ips.iter().all(|ip| UdpSocket::bind(addr(ip, port)).is_ok());
        let tcp_free = ips[1..]
            .iter()
            .all(|ip| TcpListener::bind(addr(ip, port)).is_ok());
        if udp_free && tcp_free {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// Writes `contents` beside `path` and renames it over `path`, so a watcher
/// never reads a half-written file.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, contents).expect("write the replacement");
    fs::rename(&tmp, path).expect("rename over");
}

/// The binary under test and what its `--version` printed.
static BIN: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// The binary under test: the one that ships.
///
/// `PEERPLATE_TEST_BIN` names it (a path, relative ones against the
/// repository); unset, `scripts/build-release.sh` builds it once per run of
/// this test binary (the release profile, static, with the image's
/// features) and every test uses that. A developer may point the variable
/// at `target/debug/peerplate` for a quicker loop; under `CI=true` anything
/// but a release build with the image's features (`--version` says which)
/// fails the run, so the suite's verdict is the shipped binary's.
pub fn bin() -> &'static str {
    BIN.get_or_init(|| {
        let bin = match std::env::var("PEERPLATE_TEST_BIN") {
            Ok(path) if !path.is_empty() => {
                let path = repo_file(&path);
                assert!(
                    path.is_file(),
                    "PEERPLATE_TEST_BIN={} is not a file",
                    path.display()
                );
                path.display().to_string()
            }
            _ => build_release(),
        };
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .expect("run the binary under test with --version");
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        if std::env::var("CI").as_deref() == Ok("true") {
            assert!(
                version.contains("(release, features: https)"),
                "CI=true tests the shipped build only, and {bin} is {version:?}: \
                 unset PEERPLATE_TEST_BIN (the tests build it with scripts/build-release.sh)"
            );
        }
        eprintln!("binary under test: {bin} ({version})");
        (bin, version)
    })
    .0
    .as_str()
}

/// Whether the binary under test is a release build (`--version` says).
pub fn release_under_test() -> bool {
    bin();
    BIN.get()
        .is_some_and(|(_, version)| version.contains("(release,"))
}

/// The debug build cargo made for this test binary: only for the test that
/// needs a fault hook compiled into debug builds alone (it says so).
pub fn debug_bin() -> &'static str {
    env!("CARGO_BIN_EXE_peerplate")
}

/// Runs `scripts/build-release.sh` (cargo's own lock keeps parallel builds
/// apart; this runs once per test binary) and returns the path it prints.
fn build_release() -> String {
    let out = Command::new(repo_file("scripts/build-release.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-release.sh");
    assert!(
        out.status.success(),
        "scripts/build-release.sh failed ({}); set PEERPLATE_TEST_BIN to a built binary",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("scripts/build-release.sh prints the binary's path last")
        .to_string()
}

/// A file of the repository, e.g. `repo_file("templates/nginx.conf.j2")`.
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Remove ANSI escape sequences (CSI `ESC [ ... letter`), so assertions on
/// log text do not depend on colouring. A dedicated test checks that logs
/// written to a non-terminal carry no escapes at all.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Replace a leading RFC 3339 timestamp (as printed by tracing's text format)
/// on each line with `[TIME]`, so snapshots of stderr are stable.
pub fn redact_timestamps(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|line| {
            let first = line.split_whitespace().next().unwrap_or("");
            let b = first.as_bytes();
            let looks_like_time = b.len() >= 19
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[4] == b'-'
                && b[10] == b'T';
            if looks_like_time {
                let at = line.find(first).unwrap_or(0);
                format!("{}[TIME]{}", &line[..at], &line[at + first.len()..])
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes; true if it held.
pub fn poll_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    poll_every(Duration::from_millis(10), timeout, cond)
}

/// Poll `cond` every `step` until it holds or `timeout` passes; true if it held.
pub fn poll_every(step: Duration, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    assert!(timeout <= MAX_WAIT, "waits are bounded by {MAX_WAIT:?}");
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// A temporary directory that holds one test's files, removed on drop. It
/// always contains `resolv.conf` (`nameserver 127.0.0.1`), which every
/// command built by [`Sandbox::peerplate`] uses through
/// `PEERPLATE_RESOLV_CONF`, so nothing depends on the machine's resolver.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("peerplate-it-")
            .tempdir()
            .expect("create temp dir");
        let sb = Sandbox { dir };
        sb.write("resolv.conf", "nameserver 127.0.0.1\n");
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `contents` to `rel` (parents created); returns the absolute path.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::write(&path, contents).expect("write file");
        path
    }

    /// Replace `rel` in one step (write beside, rename over).
    pub fn replace(&self, rel: &str, contents: &str) {
        replace_file(&self.join(rel), contents);
    }

    /// The text of `rel`, None if it does not exist.
    pub fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.join(rel)).ok()
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.join(rel);
        fs::create_dir_all(&path).expect("create dir");
        path
    }

    pub fn resolv_conf(&self) -> PathBuf {
        self.join("resolv.conf")
    }

    /// Every file and directory under the sandbox, relative, sorted.
    pub fn listing(&self) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).expect("read dir") {
                let entry = entry.expect("dir entry");
                let path = entry.path();
                let rel = path.strip_prefix(root).expect("under root");
                out.push(rel.display().to_string());
                let meta = fs::symlink_metadata(&path).expect("metadata");
                if meta.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }

    /// `s` with this sandbox's path (as given and canonical) replaced by `[TMP]`.
    pub fn redact(&self, s: &str) -> String {
        let mut s = s.to_string();
        let raw = self.path().display().to_string();
        if let Ok(canon) = self.path().canonicalize() {
            let canon = canon.display().to_string();
            if canon != raw {
                s = s.replace(&canon, "[TMP]");
            }
        }
        s.replace(&raw, "[TMP]")
    }

    /// A `peerplate` command with a clean, deterministic environment (see
    /// [`Sandbox::clean_env`]).
    pub fn peerplate<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        self.clean_env(&mut cmd);
        cmd
    }

    /// Gives `cmd` (peerplate, or a wrapper that starts it: `unshare`,
    /// `setpriv`, a symlink) a clean, deterministic environment: working
    /// directory = the sandbox, the sandbox's resolv.conf, no inherited
    /// config path, namespace or log filter.
    pub fn clean_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.current_dir(self.path())
            .env("PEERPLATE_RESOLV_CONF", self.resolv_conf())
            // The pod's /etc/hosts: ROOT/hosts, absent unless a test writes it.
            .env("PEERPLATE_HOSTS", self.join("hosts"))
            .env("HOSTNAME", "peerplate-test-host")
            .env_remove("PEERPLATE_CONFIG")
            .env_remove("POD_NAMESPACE")
            .env_remove("RUST_LOG")
            .env_remove("PEERPLATE_LOG")
            .env_remove("PEERPLATE_LOG_FORMAT")
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    /// stderr with ANSI escapes removed.
    pub stderr: String,
    /// stderr as written.
    pub raw_stderr: String,
}

impl Outcome {
    /// Everything, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `cmd` to completion (stdin empty), bounded by `timeout`; a command that
/// outlives it is killed and the test fails with what it printed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Outcome {
    assert!(timeout <= MAX_WAIT, "waits are bounded by {MAX_WAIT:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peerplate");
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let mut status = None;
    let finished = poll_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into_owned();
    let raw_stderr =
        String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned();
    let outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr: strip_ansi(&raw_stderr),
        raw_stderr,
    };
    assert!(
        finished,
        "{cmd:?} still running after {timeout:?}; killed it\n{}",
        outcome.dump()
    );
    outcome
}

/// Run `cmd` to completion with the default bound of 10 s.
pub fn run(cmd: &mut Command) -> Outcome {
    run_with_timeout(cmd, MAX_WAIT)
}

/// A directory laid out exactly as kubelet lays out a ConfigMap volume:
///
/// ```text
/// mount/..2026_11_24_10_00_00.123456789/<key>   the real files
/// mount/..data -> ..2026_11_24_10_00_00.123456789
/// mount/<key> -> ..data/<key>
/// ```
///
/// and updated the way kubelet's atomic writer does it, in one call
/// ([`ConfigMapDir::update`]) or step by step, so a bench can time the
/// switch itself ([`ConfigMapDir::prepare`], [`ConfigMapDir::commit`],
/// [`ConfigMapDir::clean`]).
pub struct ConfigMapDir {
    mount: PathBuf,
    current: Option<String>,
    keys: Vec<String>,
    /// Written by `prepare`, not yet switched to: (timestamped dir, keys).
    pending: Option<(String, Vec<String>)>,
    /// Switched away from by `commit`, not yet removed.
    previous: Option<String>,
}

static TS_COUNTER: AtomicU32 = AtomicU32::new(0);

fn timestamp_dir_name() -> String {
    let n = TS_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = (u64::from(std::process::id()) * 7919 + u64::from(n) * 104_729) % 1_000_000_000;
    format!(
        "..2026_11_24_{:02}_{:02}_{:02}.{:09}",
        10 + (n / 3600) % 14,
        (n / 60) % 60,
        n % 60,
        nanos
    )
}

impl ConfigMapDir {
    /// Create the volume at `mount` (which must not exist yet) with `files`.
    pub fn create(mount: &Path, files: &[(&str, &str)]) -> Self {
        fs::create_dir_all(mount).expect("create ConfigMap mount dir");
        let mut cm = ConfigMapDir {
            mount: mount.to_path_buf(),
            current: None,
            keys: Vec::new(),
            pending: None,
            previous: None,
        };
        cm.update(files);
        cm
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The user-visible path of a key, e.g. `mount/nginx.conf.j2`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.mount.join(key)
    }

    /// Replace the volume's contents with `files`, as kubelet does: write a
    /// new timestamped dir, point `..data_tmp` at it, rename `..data_tmp`
    /// over `..data` (the atomic switch), add symlinks for new keys, remove
    /// symlinks of keys that are gone, then remove the old timestamped dir.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.prepare(files);
        self.commit();
        self.clean();
    }

    /// kubelet's steps before the switch: a new timestamped dir holding
    /// `files`, and `..data_tmp` pointing at it.
    pub fn prepare(&mut self, files: &[(&str, &str)]) {
        assert!(self.pending.is_none(), "an update is already prepared");
        let ts = timestamp_dir_name();
        let ts_path = self.mount.join(&ts);
        assert!(!ts_path.exists(), "timestamped dir {ts} already exists");
        fs::create_dir(&ts_path).expect("create timestamped dir");
        for (key, contents) in files {
            // A key in a subfolder (`items: [{key: a, path: sub/a.j2}]`):
            // kubelet links the subfolder, `sub -> ..data/sub`.
            let file = ts_path.join(key);
            fs::create_dir_all(file.parent().expect("a dir")).expect("create ConfigMap subfolder");
            fs::write(file, contents).expect("write ConfigMap file");
        }
        symlink(&ts, self.mount.join("..data_tmp")).expect("symlink ..data_tmp");
        let mut keys: Vec<String> = files
            .iter()
            .map(|(k, _)| k.split('/').next().unwrap_or(k).to_string())
            .collect();
        keys.dedup();
        self.pending = Some((ts, keys));
    }

    /// The switch: rename `..data_tmp` over `..data`, then add symlinks for
    /// new keys and remove those of keys that are gone.
    pub fn commit(&mut self) {
        let (ts, new_keys) = self.pending.take().expect("an update was prepared");
        fs::rename(self.mount.join("..data_tmp"), self.mount.join("..data"))
            .expect("rename ..data_tmp to ..data");
        for key in &new_keys {
            let link = self.mount.join(key);
            if fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(key), &link).expect("symlink key");
            }
        }
        for old in &self.keys {
            if !new_keys.contains(old) {
                fs::remove_file(self.mount.join(old)).expect("remove stale key symlink");
            }
        }
        self.keys = new_keys;
        if let Some(old_ts) = self.current.replace(ts) {
            assert!(self.previous.is_none(), "clean the previous update first");
            self.previous = Some(old_ts);
        }
    }

    /// Remove the timestamped dir the last commit switched away from.
    pub fn clean(&mut self) {
        if let Some(old_ts) = self.previous.take() {
            fs::remove_dir_all(self.mount.join(old_ts)).expect("remove old timestamped dir");
        }
    }
}

/// The running `peerplate run` (or any long-running) process. Its stdout and
/// stderr go to files, so the logs can be read at any time; dropping the
/// guard SIGKILLs the process if it still runs (a [`Daemon::graceful`] one
/// gets SIGTERM and up to its grace period first) and reaps it.
pub struct Daemon {
    child: Child,
    logs: tempfile::TempDir,
    exited: Option<ExitStatus>,
    grace: Duration,
}

impl Daemon {
    /// Spawn `cmd` (args, env and cwd already set), logs in the temp dir.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_in(cmd, &std::env::temp_dir())
    }

    /// [`Daemon::spawn`] with the log files in a new dir under `dir`.
    pub fn spawn_in(mut cmd: Command, dir: &Path) -> Self {
        let logs = Self::log_dir(dir);
        let stdout = File::create(logs.path().join("stdout")).expect("create stdout log");
        cmd.stdout(stdout);
        Self::start(cmd, logs)
    }

    /// [`Daemon::spawn_in`], but stdout is a pipe, returned for the caller to read.
    pub fn spawn_piped(mut cmd: Command, dir: &Path) -> (Self, ChildStdout) {
        let logs = Self::log_dir(dir);
        cmd.stdout(Stdio::piped());
        let mut daemon = Self::start(cmd, logs);
        let stdout = daemon.child.stdout.take().expect("stdout pipe");
        (daemon, stdout)
    }

    fn log_dir(dir: &Path) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("peerplate-logs-")
            .tempdir_in(dir)
            .expect("create log dir")
    }

    fn start(mut cmd: Command, logs: tempfile::TempDir) -> Self {
        let stderr = File::create(logs.path().join("stderr")).expect("create stderr log");
        let child = cmd
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {cmd:?}: {err}"));
        Daemon {
            child,
            logs,
            exited: None,
            grace: Duration::ZERO,
        }
    }

    /// On drop, SIGTERM and up to 2 s to exit before SIGKILL.
    pub fn graceful(mut self) -> Self {
        self.grace = Duration::from_secs(2);
        self
    }

    /// The file stderr goes to.
    pub fn stderr_path(&self) -> PathBuf {
        self.logs.path().join("stderr")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stderr as written (escapes included).
    pub fn raw_stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.logs.path().join("stderr")).unwrap_or_default())
            .into_owned()
    }

    /// stderr, ANSI escapes removed.
    pub fn stderr(&self) -> String {
        strip_ansi(&self.raw_stderr())
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.logs.path().join("stdout")).unwrap_or_default())
            .into_owned()
    }

    /// Everything the process printed so far, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- daemon stderr ---\n{}--- daemon stdout ---\n{}",
            self.stderr(),
            self.stdout()
        )
    }

    /// A position in stderr: later waits can look only at what comes after it.
    pub fn mark(&self) -> usize {
        self.stderr().len()
    }

    /// Complete stderr lines written after `mark`.
    pub fn lines_since(&self, mark: usize) -> Vec<String> {
        let all = self.stderr();
        let tail = all.get(mark..).unwrap_or("");
        let complete = match tail.rfind('\n') {
            Some(i) => &tail[..=i],
            None => "",
        };
        complete.lines().map(str::to_string).collect()
    }

    /// Wait until `substr` appears anywhere in stderr.
    pub fn wait_for_log(&mut self, substr: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("log containing {substr:?}"), |d| {
            d.stderr().contains(substr)
        });
    }

    /// Wait until one stderr line written after `mark` contains every one of
    /// `parts`; returns that line.
    pub fn wait_for_line(&mut self, mark: usize, parts: &[&str], timeout: Duration) -> String {
        let mut found = String::new();
        self.wait_until(
            timeout,
            &format!("a log line containing all of {parts:?}"),
            |d| match d
                .lines_since(mark)
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                Some(line) => {
                    found = line;
                    true
                }
                None => false,
            },
        );
        found
    }

    /// Poll `cond` until it holds; on timeout, panic with `what` and the logs.
    /// Also fails early, with the logs, if the process exits meanwhile.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Self) -> bool,
    ) {
        let mut died = None;
        let ok = poll_until(timeout, || {
            if cond(self) {
                return true;
            }
            if let Some(status) = self.try_status() {
                died = Some(status);
                return true;
            }
            false
        });
        if let Some(status) = died {
            if !cond(self) {
                panic!(
                    "waiting for {what}: the daemon exited ({status}) instead\n{}",
                    self.logs()
                );
            }
        }
        assert!(
            ok,
            "timed out after {timeout:?} waiting for {what}\n{}",
            self.logs()
        );
    }

    /// The exit status, None while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits at most `timeout` for the process to exit on its own; its exit
    /// status, `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_until(timeout, || {
            status = self.try_status();
            status.is_some()
        });
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Send `sig` and wait at most `timeout` for the exit; returns the status
    /// and how long the exit took. Panics (with the logs) if it does not exit.
    pub fn stop_with(&mut self, sig: Signal, timeout: Duration) -> (ExitStatus, Duration) {
        assert!(self.is_running(), "daemon already exited\n{}", self.logs());
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid fits i32"));
        let sent = Instant::now();
        kill(pid, sig).expect("send signal");
        let mut status = None;
        let exited = poll_until(timeout, || {
            status = self.try_status();
            status.is_some()
        });
        let took = sent.elapsed();
        assert!(
            exited,
            "daemon still running {timeout:?} after {sig}\n{}",
            self.logs()
        );
        (status.expect("exited"), took)
    }

    /// SIGTERM, waiting at most 2 s.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(Signal::SIGTERM, Duration::from_secs(2)).0
    }

    /// SIGTERM, then SIGKILL if it has not exited within 2 s; never panics.
    /// Returns how long it took to exit after SIGTERM, with its status
    /// (None if it had exited already or needed SIGKILL).
    pub fn stop(&mut self) -> Option<(Duration, ExitStatus)> {
        self.stop_within(Duration::from_secs(2))
    }

    fn stop_within(&mut self, grace: Duration) -> Option<(Duration, ExitStatus)> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        if self.exited.is_some() {
            return None;
        }
        let pid = Pid::from_raw(i32::try_from(self.pid()).ok()?);
        let asked = Instant::now();
        if !grace.is_zero() && kill(pid, Signal::SIGTERM).is_ok() {
            let mut status = None;
            poll_every(Duration::from_millis(2), grace, || {
                status = self.child.try_wait().ok().flatten();
                status.is_some()
            });
            self.exited = status;
            if let Some(status) = status {
                return Some((asked.elapsed(), status));
            }
        }
        let _ = self.child.kill(); // SIGKILL
        self.exited = self.child.wait().ok();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_within(self.grace);
    }
}

/// Where `name` is installed: on PATH, or in /usr/sbin or /sbin (Debian puts
/// nginx and named there, often outside a non-root PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// True if the system component `name` is installed. If not: under `CI=true`
/// the test fails (CI installs everything, so a missing piece is a broken
/// CI); elsewhere it prints "skipping: <name> not installed" and returns
/// false, and the test returns early.
pub fn require_component(name: &str) -> bool {
    if find_program(name).is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{name} is not installed, and CI=true: a missing component under CI is a failure");
    }
    skip(&format!("{name} not installed"));
    false
}

/// Where skipped tests are recorded, one `test<TAB>reason` line each, so
/// `scripts/test.sh` can list them after a run that libtest calls green
/// (libtest cannot mark a test ignored at run time).
pub fn skip_record() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt")
}

/// Says why the calling test is skipped (it then returns early): on stderr,
/// and in [`skip_record`].
pub fn skip(reason: &str) {
    eprintln!("skipping: {reason}");
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_record())
    {
        use std::io::Write as _;
        let _ = writeln!(f, "{test}\t{reason}");
    }
}

/// The inode and modification time of a file: equal before and after means
/// the file was not touched.
pub fn inode_and_mtime(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).expect("stat file");
    (meta.ino(), meta.modified().expect("mtime"))
}

/// The permission bits of a file, e.g. 0o644.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("stat file").permissions().mode() & 0o7777
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` over HTTP/1.1 to 127.0.0.1:port, one connection per request,
/// every step bounded by 2 s; a chunked body is decoded.
pub fn http_get(port: u16, path: &str) -> std::io::Result<Reply> {
    http_get_at(Ipv4Addr::LOCALHOST, port, path)
}

/// [`http_get`] to another loopback address (a test "pod" IP).
pub fn http_get_at(ip: Ipv4Addr, port: u16, path: &str) -> std::io::Result<Reply> {
    let addr = SocketAddrV4::new(ip, port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: peerplate-tests\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = |what: &str| std::io::Error::other(format!("{what} in {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut content_type = String::new();
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.to_string(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-length" => length = value.parse::<usize>().ok(),
            _ => {}
        }
    }
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else {
        match length {
            Some(n) if body.len() >= n => body[..n].to_string(),
            Some(_) => return Err(bad("short body")),
            None => body.to_string(),
        }
    };
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        s = rest.get(size + 2..)?;
    }
}

/// The status of `GET path`, or 0 when nothing answers.
pub fn http_status(port: u16, path: &str) -> u16 {
    http_get(port, path).map(|r| r.status).unwrap_or(0)
}

/// The value of one sample in `/metrics` on 127.0.0.1:`port`, written as in
/// the exposition (`peerplate_reloads_total{action="a",result="accepted"}`);
/// `None` when the sample is not there or the scrape failed.
pub fn metric(port: u16, sample: &str) -> Option<f64> {
    let reply = http_get(port, "/metrics").ok()?;
    reply.body.lines().find_map(|line| {
        let rest = line.strip_prefix(sample)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
