//! Running `on_start` / `on_change` hooks the way peer-finder does.
//!
//! A hook is a shell command (`sh -c`), and it reads the peer list on stdin,
//! one FQDN per line with a trailing newline, in `peers` order. Peer names
//! never appear in a command line, so a hostile DNS name cannot become shell
//! code. A hook runs in a process group of its own, so at its timeout the
//! whole group (the shell and whatever it started) is killed, and the hook
//! is always waited for: no zombies. When peerplate is PID 1, it also reaps
//! orphans that hooks leave behind ([`reap_orphans`]).

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

use crate::peers::PeerSet;

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("could not start `sh -c {command}`: {source}")]
    Start {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` was killed after {} (hooks.timeout)", humantime::format_duration(*timeout))]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed: {status}")]
    Failed { command: String, status: ExitStatus },
}

/// The peer list as hooks read it: one name a line, trailing newline.
pub fn stdin_text(peers: &PeerSet) -> String {
    let mut text = String::new();
    for name in peers.names() {
        text.push_str(name);
        text.push('\n');
    }
    text
}

/// Runs `command` with `sh -c`, the peers on stdin, stdout and stderr
/// inherited, killed (with its process group) after `timeout`.
pub async fn run(
    which: &str,
    command: &str,
    peers: &PeerSet,
    timeout: Duration,
) -> Result<(), HookError> {
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Start {
            command: command.to_string(),
            source,
        })?;
    let group = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(stdin_text(peers).as_bytes()).await;
    }
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(HookError::Start {
                command: command.to_string(),
                source,
            })
        }
        Err(_) => {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            // Reap it now, so no zombie outlives the timeout.
            let _ = child.wait().await;
            tracing::warn!(hook = which, command, timeout = ?timeout, "hook killed at its timeout");
            return Err(HookError::Timeout {
                command: command.to_string(),
                timeout,
            });
        }
    };
    tracing::info!(hook = which, command, status = %status, elapsed = ?started.elapsed(), peers = peers.len(), "hook ran");
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            command: command.to_string(),
            status,
        })
    }
}

/// As PID 1 (an init container without a shared PID namespace) peerplate
/// inherits every orphan; reap those that are not its own direct children,
/// which tokio reaps itself. Runs until the process exits.
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

/// Zombie children of this process that it did not spawn itself, found in
/// /proc. Everything peerplate spawns (hooks, checks) leads a process group
/// of its own; an orphan re-parented to us sits in the group of the hook or
/// check that started it, so it does not lead its group. tokio reaps our own
/// children; this takes only the others.
fn orphan_zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = stat.get(stat.rfind(')')? + 1..)?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            let pgrp: i32 = fields.next()?.parse().ok()?;
            (state == "Z" && ppid == me && pgrp != pid).then_some(pid)
        })
        .collect()
}
