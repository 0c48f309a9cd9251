//! Other processes: reading `/proc`, reaping orphans, and running a command
//! in a process group of its own with a timeout that kills the whole group.
//!
//! Hooks, `check` commands and `exec` reloads all start children the same
//! way, so they share one runner ([`run`]): the child leads its own process
//! group, its stdin is written *inside* the timeout (a child that never reads
//! a large stdin cannot hold the caller past it), at the timeout the whole
//! group is killed and the child reaped, and a run that is abandoned (its
//! future dropped, as at shutdown) kills the group too, so nothing a hook
//! started outlives peerplate. `/proc/PID/stat` is parsed here and nowhere
//! else ([`Stat`]).
//!
//! What a child can fill is bounded here too: its captured stderr keeps its
//! first and last [`CAPTURE_KEEP`] bytes and counts the rest ([`Captured`]),
//! and once the child has exited its pipes get [`PIPE_LINGER`] more, so a
//! background job holding them never holds the verdict. As PID 1, the
//! reaper ([`reap_orphans`]) takes only zombies that no run is waiting for,
//! each by its pid, so it never steals a run's exit status.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitPidFlag;
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The parts of `/proc/PID/stat` (proc(5)) that peerplate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// The command name, at most 15 bytes (the kernel's `comm`).
    pub comm: String,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl Stat {
    /// Parses the text of a stat file. The name is in parentheses and may
    /// itself hold spaces and parentheses, so it is cut at the *last* `)`.
    pub fn parse(pid: i32, text: &str) -> Option<Stat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        let mut rest = text.get(close + 1..)?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        let pgrp = rest.next()?.parse().ok()?;
        Some(Stat {
            pid,
            comm,
            state,
            ppid,
            pgrp,
        })
    }

    /// Reads `<proc>/<pid>/stat`; `None` when the process is gone.
    pub fn read(proc: &Path, pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
        Stat::parse(pid, &text)
    }
}

/// Every process under the procfs root `proc`, with its directory.
pub fn processes(proc: &Path) -> Vec<(PathBuf, Stat)> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((entry.path(), Stat::parse(pid, &text)?))
        })
        .collect()
}

/// The real uid of a process (`Uid:` in `/proc/PID/status`), `None` when gone.
pub fn uid(dir: &Path) -> Option<u32> {
    ids(dir).map(|ids| ids.real)
}

/// Who a process is, as `kill(2)` sees it (`/proc/PID/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    /// `CAP_KILL` is in its effective capability set (root has it).
    pub cap_kill: bool,
}

impl Ids {
    /// Whether a process with these ids may signal `target` (kill(2): the
    /// sender's real or effective uid is the target's real or saved uid, or
    /// the sender has `CAP_KILL`).
    pub fn may_signal(&self, target: &Ids) -> bool {
        self.cap_kill
            || [self.real, self.effective]
                .iter()
                .any(|uid| *uid == target.real || *uid == target.saved)
    }
}

/// The ids of the process whose `/proc` directory is `dir`, `None` when gone.
pub fn ids(dir: &Path) -> Option<Ids> {
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let uids: Vec<u32> = field("Uid:")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    const CAP_KILL: u32 = 5;
    let cap_kill = field("CapEff:")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_KILL) != 0);
    Some(Ids {
        real: *uids.first()?,
        effective: *uids.get(1)?,
        saved: *uids.get(2)?,
        cap_kill,
    })
}

/// The file name of argv[0] (`/proc/PID/cmdline`), for names longer than
/// the kernel's 15-byte `comm`.
pub fn argv0_name(dir: &Path) -> Option<String> {
    use std::io::Read;
    // A process's arguments may be megabytes; argv[0] is a path.
    const ARGV0_MAX: u64 = 4096;
    let mut cmdline = Vec::new();
    std::fs::File::open(dir.join("cmdline"))
        .ok()?
        .take(ARGV0_MAX)
        .read_to_end(&mut cmdline)
        .ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?.to_vec();
    let argv0 = String::from_utf8(argv0).ok()?;
    Some(
        Path::new(&argv0)
            .file_name()?
            .to_string_lossy()
            .into_owned(),
    )
}

/// The pids of the children [`run`] started and has not yet waited for:
/// the reaper leaves them alone, so it never takes an exit status that a
/// run is waiting to read. A pid is added under this lock in the same
/// critical section as the spawn, and the reaper scans and reaps under it,
/// so a child that exits at once is never taken for an orphan.
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn spawned() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    // The set stays consistent whatever panicked while holding it.
    SPAWNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// As PID 1 (an init container without a shared PID namespace) peerplate
/// inherits every orphan; this reaps those it did not start itself, at
/// each SIGCHLD. Must be called inside the runtime; runs until the process
/// exits.
pub fn reap_orphans() {
    if std::process::id() != 1 {
        return;
    }
    let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        return;
    };
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reap_orphans_now(Path::new("/proc"));
        }
    });
}

/// Reaps, each by its own pid and without waiting, every zombie child of
/// this process (from a scan of `proc`) that [`run`] did not start: an
/// orphan re-parented to us, whatever its process group. Never
/// `waitpid(-1)`, which could take the status a run is waiting for.
/// Returns the pids reaped.
pub fn reap_orphans_now(proc: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let ours = spawned();
    let mut reaped = Vec::new();
    for pid in orphan_zombies(processes(proc).into_iter().map(|(_, s)| s), me, &ours) {
        let waited = nix::sys::wait::waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        if matches!(waited, Ok(status) if status.pid().is_some()) {
            reaped.push(pid);
        }
    }
    reaped
}

/// The zombies among `processes` whose parent is `me` and whose pid is not
/// in `ours` (the children a run waits for).
fn orphan_zombies(
    processes: impl Iterator<Item = Stat>,
    me: i32,
    ours: &BTreeSet<i32>,
) -> Vec<i32> {
    processes
        .filter(|s| s.state == 'Z' && s.ppid == me && !ours.contains(&s.pid))
        .map(|s| s.pid)
        .collect()
}

/// Removes a child's pid from [`SPAWNED`] once its run is over, waited for
/// or abandoned (an abandoned child is killed and reaped by tokio, or by the
/// reaper: its status is wanted by nobody then).
struct Registered(Option<i32>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            spawned().remove(&pid);
        }
    }
}

/// How much of the start and of the end of a captured stream is kept.
pub const CAPTURE_KEEP: usize = 8 * 1024;

/// Once a child has exited, how long its pipes are still read (and its
/// stdin written) before they are closed: a background job that inherited
/// them must not hold the verdict.
pub const PIPE_LINGER: Duration = Duration::from_secs(1);

/// A child's output, bounded: the first and the last [`CAPTURE_KEEP`]
/// bytes, and how many there were in all. Memory stays under
/// 3 × `CAPTURE_KEEP` whatever the child writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    head: Vec<u8>,
    /// The last bytes seen; between `CAPTURE_KEEP` and twice that while
    /// filling, cut to the last `CAPTURE_KEEP` when read.
    tail: Vec<u8>,
    total: u64,
}

impl Captured {
    /// Adds the next bytes of the stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = CAPTURE_KEEP.saturating_sub(self.head.len());
        let first = bytes.len().min(room);
        self.head.extend_from_slice(&bytes[..first]);
        bytes = &bytes[first..];
        if bytes.len() >= CAPTURE_KEEP {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - CAPTURE_KEEP..]);
            return;
        }
        if self.tail.len() + bytes.len() > 2 * CAPTURE_KEEP {
            let drop = self.tail.len() + bytes.len() - CAPTURE_KEEP;
            self.tail.drain(..drop.min(self.tail.len()));
        }
        self.tail.extend_from_slice(bytes);
    }

    /// Every byte the stream carried, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The last bytes kept (at most `CAPTURE_KEEP`).
    fn tail(&self) -> &[u8] {
        &self.tail[self.tail.len().saturating_sub(CAPTURE_KEEP)..]
    }

    /// The bytes read but not kept, between the head and the tail.
    pub fn cut(&self) -> u64 {
        self.total - self.head.len() as u64 - self.tail().len() as u64
    }

    /// Whether nothing came.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// What a log shows of it: `map` (a redaction, a path replaced) applied
    /// to the text kept, then `keep`'s rule of [`excerpt`]. When bytes were
    /// cut, the first lines of the head and the last lines of the tail are
    /// shown with `[... N bytes cut ...]` between, N counting every byte
    /// not shown (cut in memory, or in lines left out).
    pub fn excerpt(&self, keep: Excerpt, map: impl Fn(&str) -> String) -> String {
        if self.cut() == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(self.tail());
            return excerpt(&map(&String::from_utf8_lossy(&all)), keep);
        }
        let head = map(&String::from_utf8_lossy(utf8_end(&self.head)));
        let tail = map(&String::from_utf8_lossy(utf8_start(self.tail())));
        let head = head.trim_start();
        let tail = tail.trim_end();
        let head_lines: Vec<&str> = head.lines().take(keep.head_lines).collect();
        let tail_lines: Vec<&str> = {
            let all: Vec<&str> = tail.lines().collect();
            all[all.len().saturating_sub(keep.tail_lines)..].to_vec()
        };
        let shown: u64 = head_lines
            .iter()
            .chain(&tail_lines)
            .map(|l| l.len() as u64 + 1)
            .sum();
        let hidden = self.total.saturating_sub(shown);
        head_lines
            .iter()
            .map(|l| cut_line(l, keep))
            .chain(std::iter::once(format!("[... {hidden} bytes cut ...]")))
            .chain(tail_lines.iter().map(|l| cut_line(l, keep)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `bytes` less an incomplete UTF-8 character at its end.
fn utf8_end(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => &bytes[..e.valid_up_to()],
        _ => bytes,
    }
}

/// `bytes` less the continuation bytes of a character cut at its start.
fn utf8_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
        .count();
    &bytes[skip..]
}

/// How much of a long text [`excerpt`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct Excerpt {
    pub head_lines: usize,
    pub tail_lines: usize,
    /// A longer line is cut, with `...`.
    pub line_chars: usize,
}

fn cut_line(line: &str, keep: Excerpt) -> String {
    match line.char_indices().nth(keep.line_chars) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// `text` trimmed; when longer than the head and tail together, its first
/// and last lines with a marker between saying how many were left out.
pub fn excerpt(text: &str, keep: Excerpt) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    if lines.len() <= keep.head_lines + keep.tail_lines {
        return lines
            .iter()
            .map(|l| cut_line(l, keep))
            .collect::<Vec<_>>()
            .join("\n");
    }
    let left_out = lines.len() - keep.head_lines - keep.tail_lines;
    let head = lines[..keep.head_lines].iter().map(|l| cut_line(l, keep));
    let tail = lines[lines.len() - keep.tail_lines..]
        .iter()
        .map(|l| cut_line(l, keep));
    head.chain(std::iter::once(format!(
        "[... {left_out} lines left out ...]"
    )))
    .chain(tail)
    .collect::<Vec<_>>()
    .join("\n")
}

/// What a finished run returned.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The child's stderr (bounded), when [`Spec::capture_stderr`] asked for it.
    pub stderr: Captured,
}

/// Why a run has no exit status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start: {0}")]
    Start(#[source] std::io::Error),
    #[error("killed after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("could not wait for it: {0}")]
    Wait(#[source] std::io::Error),
}

/// How to run one command.
#[derive(Debug)]
pub struct Spec<'a> {
    /// argv; the first word is the program.
    pub argv: &'a [String],
    /// Written to stdin (which is then closed); `None`: stdin is /dev/null.
    pub stdin: Option<&'a [u8]>,
    /// Capture stderr, bounded (else it is inherited).
    pub capture_stderr: bool,
    /// Discard stdout (else it is inherited).
    pub quiet: bool,
    /// The whole run, stdin included, until the child exits.
    pub timeout: Duration,
}

/// Kills a process group when dropped, unless disarmed: a run abandoned
/// halfway (shutdown) leaves nothing behind.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// Reads `pipe` to its end into `into`, a chunk at a time.
async fn read_bounded(pipe: Option<tokio::process::ChildStderr>, into: &mut Captured) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        into.push(&chunk[..n]);
    }
}

/// Runs `spec.argv` in a new process group, bounded by `spec.timeout`. At
/// the timeout, or when the returned future is dropped, the whole group gets
/// SIGKILL; a timed-out child is reaped before this returns. The verdict is
/// the child's exit: once it has exited, its pipes get [`PIPE_LINGER`] more
/// and are then closed, whatever still holds them. Every child peerplate
/// starts comes through here, recorded in [`SPAWNED`] while it is waited for.
pub async fn run(spec: Spec<'_>) -> Result<Finished, RunError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(RunError::Start(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        )));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if spec.quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .stderr(if spec.capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .process_group(0)
        .kill_on_drop(true);
    let (mut child, _registered) = {
        let mut ours = spawned();
        let child = command.spawn().map_err(RunError::Start)?;
        let pid = child.id().and_then(|id| i32::try_from(id).ok());
        if let Some(pid) = pid {
            ours.insert(pid);
        }
        (child, Registered(pid))
    };
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let input = spec.stdin.unwrap_or_default();
    let mut captured = Captured::default();
    let waited = {
        let write = async {
            if let Some(mut pipe) = stdin {
                // A child that does not read its stdin is fine: ignore EPIPE.
                let _ = pipe.write_all(input).await;
            }
        };
        let pipes = async { tokio::join!(write, read_bounded(stderr, &mut captured)) };
        tokio::pin!(pipes);
        let mut pipes_done = false;
        let until_exit = async {
            loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = &mut pipes, if !pipes_done => pipes_done = true,
                }
            }
        };
        match tokio::time::timeout(spec.timeout, until_exit).await {
            Ok(Ok(status)) => {
                if !pipes_done {
                    // Whatever holds the pipes now is not the child.
                    let _ = tokio::time::timeout(PIPE_LINGER, &mut pipes).await;
                }
                Ok(Ok(status))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(elapsed) => Err(elapsed),
        }
    };
    match waited {
        Ok(Ok(status)) => {
            // Finished in time: what it left running on purpose may stay.
            guard.0 = None;
            Ok(Finished {
                status,
                stderr: captured,
            })
        }
        Ok(Err(e)) => Err(RunError::Wait(e)),
        Err(_) => {
            if let Some(group) = guard.0.take() {
                let _ = killpg(group, Signal::SIGKILL);
            }
            // Reap it now, so no zombie outlives the timeout.
            let _ = child.wait().await;
            Err(RunError::Timeout(spec.timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_parentheses() {
        let s = Stat::parse(42, "42 (a) b (c)) S 7 42 42 0 -1").unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.state, s.ppid, s.pgrp), ('S', 7, 42));
    }

    const KEEP: Excerpt = Excerpt {
        head_lines: 10,
        tail_lines: 20,
        line_chars: 300,
    };

    fn captured(chunks: &[&[u8]]) -> Captured {
        let mut c = Captured::default();
        for chunk in chunks {
            c.push(chunk);
        }
        c
    }

    #[test]
    fn a_short_stream_is_kept_whole_and_cut_by_lines_as_before() {
        let text: String = (1..=40).map(|n| format!("line {n}\n")).collect();
        let c = captured(&[text.as_bytes()]);
        assert_eq!(c.cut(), 0);
        assert_eq!(c.total(), text.len() as u64);
        let shown = c.excerpt(KEEP, str::to_string);
        assert_eq!(shown, excerpt(&text, KEEP));
        assert!(shown.contains("[... 10 lines left out ...]"), "{shown}");
    }

    #[test]
    fn a_long_stream_keeps_its_first_and_last_8_kib_and_counts_the_rest() {
        let mut c = Captured::default();
        c.push(b"first line\n");
        // 100 MB in chunks of every size, all counted, little kept.
        let block = vec![b'x'; 65536];
        let mut sent = 11u64;
        for size in [1usize, 7, 8191, 8192, 8193, 65536]
            .iter()
            .cycle()
            .take(3000)
        {
            c.push(&block[..*size]);
            sent += *size as u64;
            assert!(c.head.len() + c.tail.len() <= 3 * CAPTURE_KEEP);
        }
        c.push(b"\nlast line\n");
        sent += 11;
        assert_eq!(c.total(), sent);
        assert_eq!(c.head.len(), CAPTURE_KEEP);
        assert_eq!(c.tail().len(), CAPTURE_KEEP);
        assert_eq!(c.cut(), sent - 2 * CAPTURE_KEEP as u64);
        let shown = c.excerpt(KEEP, str::to_string);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 5, "{shown}");
        assert_eq!(lines[0], "first line");
        assert_eq!(lines[1], format!("{}...", "x".repeat(300)));
        // Shown: "first line", the head's x line, the tail's x line, "last line".
        let hidden = sent - (11 + (CAPTURE_KEEP as u64 - 11 + 1) + (CAPTURE_KEEP as u64 - 10) + 10);
        assert_eq!(lines[2], format!("[... {hidden} bytes cut ...]"));
        assert_eq!(lines[3], format!("{}...", "x".repeat(300)));
        assert_eq!(lines[4], "last line");
    }

    #[test]
    fn the_tail_keeps_its_last_lines_and_characters_cut_at_the_edges_are_dropped() {
        let mut c = Captured::default();
        c.push(&vec![b'a'; CAPTURE_KEEP - 1]);
        c.push("é".as_bytes()); // split across the head's end
        c.push(&vec![b'b'; 20_000]);
        let lines: String = (1..=30).map(|n| format!("tail {n}\n")).collect();
        c.push(lines.as_bytes());
        let shown = c.excerpt(KEEP, |t| t.replace("tail", "end"));
        assert!(!shown.contains('\u{fffd}'), "{shown}");
        let kept: Vec<&str> = shown.lines().collect();
        assert!(
            kept[1].starts_with("[... ") && kept[1].ends_with(" bytes cut ...]"),
            "{shown}"
        );
        assert_eq!(kept[2], "end 11");
        assert_eq!(kept.last(), Some(&"end 30"));
        assert_eq!(kept.len(), 22);
    }

    /// Runs `script` with `sh -c`, as an `exec` action or a hook would.
    async fn sh(script: &str, stdin: Option<&[u8]>) -> (Result<Finished, RunError>, Duration) {
        let argv = ["sh".to_string(), "-c".to_string(), script.to_string()];
        let started = std::time::Instant::now();
        let result = run(Spec {
            argv: &argv,
            stdin,
            capture_stderr: true,
            quiet: true,
            timeout: Duration::from_secs(20),
        })
        .await;
        (result, started.elapsed())
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_hold_the_verdict() {
        let marker = format!("3{}", std::process::id());
        // stderr held by the background sleep; stdin too, with more than a
        // pipe holds, never read.
        let big = vec![b'p'; 1024 * 1024];
        let (result, took) = sh(
            &format!("sleep {marker} >&2 & echo started >&2; exit 4"),
            Some(&big),
        )
        .await;
        let done = result.expect("a status, not a timeout");
        assert_eq!(done.status.code(), Some(4));
        assert_eq!(done.stderr.excerpt(KEEP, str::to_string), "started");
        assert!(took < Duration::from_secs(10), "{took:?}");
        // What it left running may stay; the test cleans up.
        for (_, s) in processes(Path::new("/proc")) {
            let name = argv0_name(&PathBuf::from(format!("/proc/{}", s.pid)));
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.pid)).unwrap_or_default();
            if name.as_deref() == Some("sleep")
                && String::from_utf8_lossy(&cmdline).contains(&marker)
            {
                let _ = nix::sys::signal::kill(Pid::from_raw(s.pid), Signal::SIGKILL);
            }
        }
    }

    #[tokio::test]
    async fn every_run_is_recorded_until_it_is_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pid");
        let script = format!("echo $$ > {}; sleep 0.5", file.display());
        let running = tokio::spawn(async move { sh(&script, None).await.0 });
        let mut pid = None;
        for _ in 0..200 {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                pid = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = pid.expect("the child wrote its pid");
        assert!(spawned().contains(&pid), "recorded while it runs");
        let done = running.await.expect("join").expect("ran");
        assert!(done.status.success());
        assert!(!spawned().contains(&pid), "removed once waited for");
    }

    #[test]
    fn only_zombie_children_that_no_run_waits_for_are_orphans() {
        let stat = |pid, state, ppid| Stat {
            pid,
            comm: "sh".into(),
            state,
            ppid,
            pgrp: pid, // leads its own group (setsid): an orphan still
        };
        let all = vec![
            stat(10, 'Z', 1), // an orphan that called setsid
            stat(11, 'Z', 1), // a run's child: its status is the run's
            stat(12, 'S', 1), // alive
            stat(13, 'Z', 7), // another's child
        ];
        let ours = BTreeSet::from([11]);
        assert_eq!(orphan_zombies(all.into_iter(), 1, &ours), vec![10]);
    }
}
