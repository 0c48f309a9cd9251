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

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
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
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?.to_vec();
    let argv0 = String::from_utf8(argv0).ok()?;
    Some(
        Path::new(&argv0)
            .file_name()?
            .to_string_lossy()
            .into_owned(),
    )
}

/// As PID 1 (an init container without a shared PID namespace) peerplate
/// inherits every orphan; this reaps those that are not its own direct
/// children (tokio reaps those). Must be called inside the runtime; runs
/// until the process exits.
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
            for pid in orphan_zombies() {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
            }
        }
    });
}

/// Zombie children of this process that it did not spawn itself. Everything
/// peerplate spawns leads a process group of its own; an orphan re-parented
/// to us sits in the group of the command that started it, so it does not
/// lead its group.
fn orphan_zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    processes(Path::new("/proc"))
        .into_iter()
        .map(|(_, stat)| stat)
        .filter(|s| s.state == 'Z' && s.ppid == me && s.pgrp != s.pid)
        .map(|s| s.pid)
        .collect()
}

/// What a finished run returned.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The child's stderr, when [`Spec::capture_stderr`] asked for it.
    pub stderr: Vec<u8>,
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
    /// Capture stderr (else it is inherited).
    pub capture_stderr: bool,
    /// Discard stdout (else it is inherited).
    pub quiet: bool,
    /// The whole run, stdin included.
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

/// Runs `spec.argv` in a new process group, bounded by `spec.timeout`. At
/// the timeout, or when the returned future is dropped, the whole group gets
/// SIGKILL; a timed-out child is reaped before this returns.
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
    let mut child = command.spawn().map_err(RunError::Start)?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );
    let stdin = child.stdin.take();
    let stderr = child.stderr.take();
    let input = spec.stdin.unwrap_or_default();
    let work = async {
        let write = async {
            if let Some(mut pipe) = stdin {
                // A child that does not read its stdin is fine: ignore EPIPE.
                let _ = pipe.write_all(input).await;
            }
        };
        let read = async {
            let mut buf = Vec::new();
            if let Some(mut pipe) = stderr {
                let _ = pipe.read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), buf, status) = tokio::join!(write, read, child.wait());
        (buf, status)
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok((stderr, Ok(status))) => {
            // Finished in time: what it left running on purpose may stay.
            guard.0 = None;
            Ok(Finished { status, stderr })
        }
        Ok((_, Err(e))) => Err(RunError::Wait(e)),
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
}
