//! Telling the application to reload: find its process, send the signal.
//!
//! In a pod with `shareProcessNamespace: true`, PID 1 is the pause
//! container and the app is a sibling, not a child, so the process is found
//! in `/proc`. `process: nginx` means the *top-most* process with that name
//! (one whose parent has another name): the nginx master, never its workers,
//! never PID 1, never peerplate itself. No such process is not an error: the
//! app reads the file when it starts.

use std::collections::HashMap;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::config::{Reload as ReloadConfig, ReloadTarget};
use crate::metrics::Reload;
use crate::process;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// These processes got the signal.
    Signalled(Vec<i32>),
    /// No process to signal (not started yet, or gone).
    NoProcess(String),
    /// The signal could not be sent; the message says how to fix it.
    Failed(String),
}

impl Outcome {
    /// The `result` label of `peerplate_reloads_total`.
    pub fn metric(&self) -> Reload {
        match self {
            Outcome::Signalled(_) => Reload::Signalled,
            Outcome::NoProcess(_) => Reload::NoProcess,
            Outcome::Failed(_) => Reload::Failed,
        }
    }
}

/// Sends the reload signal to the configured target and logs what happened.
pub fn send(reload: &ReloadConfig) -> Outcome {
    let outcome = signal_target(reload);
    match &outcome {
        Outcome::Signalled(pids) => {
            for pid in pids {
                tracing::info!(pid, signal = %reload.signal, "reload signal sent");
            }
        }
        Outcome::NoProcess(why) => {
            tracing::info!("no process to reload ({why}); it reads the new file when it starts")
        }
        Outcome::Failed(why) => tracing::warn!("reload failed: {why}"),
    }
    outcome
}

fn signal_target(reload: &ReloadConfig) -> Outcome {
    let pids = match &reload.target {
        ReloadTarget::Process(name) => {
            let pids = find_top_most(Path::new("/proc"), name);
            if pids.is_empty() {
                return Outcome::NoProcess(format!("no process named {name}"));
            }
            pids
        }
        ReloadTarget::PidFile(path) => match std::fs::read_to_string(path) {
            Ok(text) => match text.trim().parse::<i32>() {
                Ok(pid) if pid > 1 => vec![pid],
                _ => {
                    return Outcome::Failed(format!(
                        "{} does not hold a process id above 1: {:?}",
                        path.display(),
                        text.trim()
                    ))
                }
            },
            Err(e) => return Outcome::NoProcess(format!("cannot read {}: {e}", path.display())),
        },
    };
    let mut sent = Vec::new();
    for pid in pids {
        match kill(Pid::from_raw(pid), reload.signal) {
            Ok(()) => sent.push(pid),
            Err(Errno::ESRCH) => {}
            Err(Errno::EPERM) => {
                return Outcome::Failed(format!(
                    "not allowed to send {} to pid {pid}: run peerplate and the app as the same user, or give peerplate the CAP_KILL capability",
                    reload.signal
                ))
            }
            Err(e) => return Outcome::Failed(format!("sending {} to pid {pid}: {e}", reload.signal)),
        }
    }
    if sent.is_empty() {
        return Outcome::NoProcess("the process exited before the signal".into());
    }
    Outcome::Signalled(sent)
}

/// The pids of processes named `name` whose parent is not also named `name`,
/// excluding PID 1 and this process. `proc` is the procfs root.
pub fn find_top_most(proc: &Path, name: &str) -> Vec<i32> {
    // pid -> (is it named `name`, parent pid)
    let table: HashMap<i32, (bool, i32)> = process::processes(proc)
        .into_iter()
        .map(|(dir, stat)| (stat.pid, (is_named(&dir, &stat.comm, name), stat.ppid)))
        .collect();
    let me = std::process::id() as i32;
    let candidate =
        |pid: i32| pid != 1 && pid != me && table.get(&pid).is_some_and(|(named, _)| *named);
    let mut pids: Vec<i32> = table
        .iter()
        .filter(|(pid, (_, ppid))| candidate(**pid) && !candidate(*ppid))
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// The kernel keeps only 15 bytes of a command name; a longer `name` is
/// compared with the file name of argv[0] instead.
fn is_named(dir: &Path, comm: &str, name: &str) -> bool {
    if name.len() <= 15 {
        return comm == name;
    }
    name.starts_with(comm) && process::argv0_name(dir).is_some_and(|argv0| argv0 == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(entries: &[(i32, &str, i32)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, comm, ppid) in entries {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("stat"), format!("{pid} ({comm}) S {ppid} 1 1 0 -1")).unwrap();
        }
        dir
    }

    #[test]
    fn finds_the_master_not_the_workers_nor_pid_1() {
        let proc = fake_proc(&[
            (1, "nginx", 0), // a pause stand-in that happens to share the name
            (7, "nginx", 1),
            (8, "nginx", 7),
            (9, "nginx", 7),
            (20, "sh", 1),
            (21, "weird) name", 20),
        ]);
        assert_eq!(find_top_most(proc.path(), "nginx"), [7]);
        assert_eq!(find_top_most(proc.path(), "weird) name"), [21]);
        assert!(find_top_most(proc.path(), "redis").is_empty());
    }
}
