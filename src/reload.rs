//! Telling the application to reload: find its process, send the signal.
//!
//! In a pod with `shareProcessNamespace: true`, PID 1 is the pause
//! container and the app is a sibling, not a child, so the process is found
//! in `/proc`. `process: nginx` means the *top-most* process with that name
//! (one whose parent has another name): the nginx master, never its workers.
//! No such process is not an error: the app reads the file when it starts.
//!
//! Who is never signalled, whatever the config says:
//! - peerplate itself;
//! - PID 1, unless `process:` names it exactly and that name is not `pause`
//!   or `catatonit` (an app is PID 1 when a runtime shares the PID
//!   namespace without an infra container);
//! - with `pid_file:`, a pid that is not running, or (with `process:` set
//!   too) one whose name is not `process:`: a stale pid file names whatever
//!   now has that pid. Each skip is logged with its reason.
//!
//! Among same-named candidates, those peerplate may signal (same uid, or any
//! with `CAP_KILL`, as root has) are preferred: a root-owned process of the
//! same name must not hide the app. Every signal sent is logged with its pid.

use std::collections::HashMap;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::{Reload as ReloadConfig, ReloadTarget};
use crate::process::{self, Ids};

/// Names that are an infra container's, never an app's: PID 1 with one of
/// these names is never signalled.
const INFRA: [&str; 2] = ["pause", "catatonit"];

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// These processes got the signal.
    Signalled(Vec<i32>),
    /// No process to signal (not started yet, or gone).
    NoProcess(String),
    /// A process was found but must not be signalled; the message says why.
    Skipped(String),
    /// The signal could not be sent; the message says how to fix it.
    Failed(String),
}

/// A process that is to get the signal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    pid: i32,
    name: String,
    uid: Option<u32>,
}

/// Sends the reload signal to the configured target and logs what happened,
/// calling `before` with the pids about to be signalled, just before the
/// signal (`verify: children` notes their children there).
pub fn send_with(reload: &ReloadConfig, before: impl FnOnce(&[i32])) -> Outcome {
    let outcome = signal_target(Path::new("/proc"), reload, before);
    match &outcome {
        Outcome::Signalled(_) => {}
        Outcome::NoProcess(why) => {
            tracing::info!(reason = %why, "no process to reload; it reads the new file when it starts")
        }
        Outcome::Skipped(why) => tracing::warn!(reason = %why, "reload skipped"),
        Outcome::Failed(why) => tracing::warn!(reason = %why, "reload failed"),
    }
    outcome
}

/// The largest pid file read: a pid is a few digits.
const PID_FILE_MAX_BYTES: u64 = 4096;

fn signal_target(proc: &Path, reload: &ReloadConfig, before: impl FnOnce(&[i32])) -> Outcome {
    let me = process::ids(&proc.join("self"));
    let targets = match &reload.target {
        ReloadTarget::Process(name) => {
            let pids = find_top_most(proc, name);
            if pids.is_empty() {
                return Outcome::NoProcess(format!("no process named {name}"));
            }
            prefer_signallable(proc, name, pids, me.as_ref())
        }
        ReloadTarget::PidFile { path, process } => {
            // Anyone who can write the pid file's folder can put a FIFO or
            // /dev/zero there: read only a small regular file.
            let text = match crate::limits::read_regular(path, PID_FILE_MAX_BYTES) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    return Outcome::NoProcess(format!("cannot read {}: {e}", path.display()))
                }
            };
            let pid = match text.trim().parse::<i32>() {
                Ok(pid) if pid > 0 => pid,
                _ => {
                    return Outcome::Failed(format!(
                        "{} does not hold a process id: {:?}",
                        path.display(),
                        text.trim()
                    ))
                }
            };
            match check_pid_file(proc, path, pid, process.as_deref()) {
                Ok(target) => vec![target],
                Err(outcome) => return outcome,
            }
        }
    };
    let pids: Vec<i32> = targets.iter().map(|t| t.pid).collect();
    before(&pids);
    let mut sent = Vec::new();
    let mut refused = None;
    for target in targets {
        match kill(Pid::from_raw(target.pid), reload.signal) {
            Ok(()) => {
                tracing::info!(pid = target.pid, signal = %reload.signal, process = %target.name, uid = target.uid, "reload signal sent");
                sent.push(target.pid);
            }
            Err(Errno::ESRCH) => {}
            Err(Errno::EPERM) => {
                let why = not_allowed(reload.signal, &target, me.as_ref());
                if refused.is_none() {
                    refused = Some(why);
                } else {
                    tracing::warn!(reason = %why, "reload failed");
                }
            }
            Err(e) => {
                refused.get_or_insert(format!(
                    "sending {} to pid {}: {e}",
                    reload.signal, target.pid
                ));
            }
        }
    }
    match (sent.is_empty(), refused) {
        (false, refused) => {
            if let Some(why) = refused {
                tracing::warn!(reason = %why, "reload failed");
            }
            Outcome::Signalled(sent)
        }
        (true, Some(why)) => Outcome::Failed(why),
        (true, None) => Outcome::NoProcess("the process exited before the signal".into()),
    }
}

fn not_allowed(signal: Signal, target: &Target, me: Option<&Ids>) -> String {
    let theirs = target
        .uid
        .map_or_else(|| "the app's user".to_string(), |uid| format!("uid {uid}"));
    let mine = me.map_or_else(String::new, |me| {
        format!(" (peerplate runs as uid {})", me.real)
    });
    format!(
        "not allowed to send {signal} to pid {} ({}, {theirs}){mine}: run peerplate as the same user as the app ({theirs})",
        target.pid, target.name
    )
}

/// The pid of a `pid_file`, unless it must not be signalled: peerplate
/// itself, PID 1 (unless `process` names it), a pid that is not running, or
/// one whose name is not `process`.
fn check_pid_file(
    proc: &Path,
    path: &Path,
    pid: i32,
    process: Option<&str>,
) -> Result<Target, Outcome> {
    let file = path.display();
    if pid == std::process::id() as i32 {
        return Err(Outcome::Skipped(format!(
            "{file} holds pid {pid}, which is peerplate itself (a stale pid file); peerplate never signals itself"
        )));
    }
    let dir = proc.join(pid.to_string());
    let stat = match process::Stat::read(proc, pid) {
        Some(stat) if stat.state != 'Z' => stat,
        _ => {
            return Err(Outcome::NoProcess(format!(
                "{file} holds pid {pid}, which is not running"
            )))
        }
    };
    let named = process.is_some_and(|name| is_named(&dir, &stat.comm, name));
    if pid == 1 && !(named && process.is_some_and(|name| !INFRA.contains(&name))) {
        return Err(Outcome::Skipped(format!(
            "{file} holds pid 1 ({}), the pod's first process; PID 1 is signalled only when reload.process names it",
            stat.comm
        )));
    }
    if let Some(name) = process {
        if !named {
            return Err(Outcome::Skipped(format!(
                "{file} holds pid {pid}, which is {}, not {name} (a stale pid file); not signalled",
                stat.comm
            )));
        }
    }
    tracing::debug!(pid_file = %file, pid, comm = %stat.comm, process, "reload target from the pid file");
    Ok(Target {
        pid,
        name: process.map_or(stat.comm, str::to_string),
        uid: process::uid(&dir),
    })
}

/// Of the same-named `pids`, those peerplate may signal; if it may signal
/// none, all of them (the refusal then names the fix). The others are
/// logged with the reason they were passed over.
fn prefer_signallable(proc: &Path, name: &str, pids: Vec<i32>, me: Option<&Ids>) -> Vec<Target> {
    let targets: Vec<(Target, bool)> = pids
        .into_iter()
        .map(|pid| {
            let ids = process::ids(&proc.join(pid.to_string()));
            let allowed = match (me, &ids) {
                (Some(me), Some(theirs)) => me.may_signal(theirs),
                _ => true,
            };
            let target = Target {
                pid,
                name: name.to_string(),
                uid: ids.map(|ids| ids.real),
            };
            (target, allowed)
        })
        .collect();
    if !targets.iter().any(|(_, allowed)| *allowed) {
        return targets.into_iter().map(|(t, _)| t).collect();
    }
    let mut chosen = Vec::new();
    for (target, allowed) in targets {
        if allowed {
            chosen.push(target);
        } else {
            tracing::info!(
                pid = target.pid,
                process = %target.name,
                uid = target.uid,
                "passed over: a process of another user, which peerplate may not signal; the same-named process of peerplate's own user gets the signal"
            );
        }
    }
    chosen
}

/// The pids of processes named `name` whose parent is not also a candidate,
/// never this process, and PID 1 only when `name` is not an infra
/// container's (`pause`, `catatonit`). `proc` is the procfs root.
pub fn find_top_most(proc: &Path, name: &str) -> Vec<i32> {
    // pid -> (is it named `name`, parent pid)
    let table: HashMap<i32, (bool, i32)> = process::processes(proc)
        .into_iter()
        .map(|(dir, stat)| (stat.pid, (is_named(&dir, &stat.comm, name), stat.ppid)))
        .collect();
    let me = std::process::id() as i32;
    let pid_1_allowed = !INFRA.contains(&name);
    let candidate = |pid: i32| {
        pid != me && (pid != 1 || pid_1_allowed) && table.get(&pid).is_some_and(|(named, _)| *named)
    };
    let mut pids: Vec<i32> = table
        .iter()
        .filter(|(pid, (_, ppid))| candidate(**pid) && !candidate(*ppid))
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    if tracing::enabled!(tracing::Level::DEBUG) {
        // Why each other process of that name is not the target.
        let mut skipped: Vec<(i32, String)> = table
            .iter()
            .filter(|(pid, (named, _))| *named && !pids.contains(pid))
            .map(|(&pid, &(_, ppid))| {
                let why = if pid == me {
                    "peerplate itself".to_string()
                } else if pid == 1 && !pid_1_allowed {
                    "PID 1 of the infra container".to_string()
                } else {
                    format!("a child of {name} pid {ppid}")
                };
                (pid, why)
            })
            .collect();
        skipped.sort_unstable();
        let skipped: Vec<_> = skipped
            .into_iter()
            .map(|(pid, why)| serde_json::json!({"pid": pid, "reason": why}))
            .collect();
        tracing::debug!(
            process = name,
            pids = %crate::log::list(&pids),
            skipped = %crate::log::list(skipped),
            "reload target search by process name"
        );
    }
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
    fn finds_the_master_not_the_workers() {
        let proc = fake_proc(&[
            (1, "pause", 0),
            (7, "nginx", 1),
            (8, "nginx", 7),
            (9, "nginx", 7),
            (20, "sh", 1),
            (21, "weird) name", 20),
        ]);
        assert_eq!(find_top_most(proc.path(), "nginx"), [7]);
        assert_eq!(find_top_most(proc.path(), "weird) name"), [21]);
        assert!(find_top_most(proc.path(), "redis").is_empty());
        assert!(
            find_top_most(proc.path(), "pause").is_empty(),
            "never the infra container"
        );
    }

    #[test]
    fn pid_1_only_when_named_exactly_and_not_an_infra_container() {
        let proc = fake_proc(&[(1, "nginx", 0), (7, "nginx", 1), (8, "catatonit", 1)]);
        assert_eq!(
            find_top_most(proc.path(), "nginx"),
            [1],
            "the master is PID 1"
        );
        let proc = fake_proc(&[(1, "catatonit", 0), (8, "catatonit", 1)]);
        assert_eq!(find_top_most(proc.path(), "catatonit"), [8]);
    }

    #[test]
    fn may_signal_same_uid_or_with_cap_kill() {
        let ids = |real, cap_kill| Ids {
            real,
            effective: real,
            saved: real,
            cap_kill,
        };
        assert!(ids(65534, false).may_signal(&ids(65534, false)));
        assert!(!ids(65534, false).may_signal(&ids(0, false)));
        assert!(ids(0, true).may_signal(&ids(65534, false)));
        assert!(
            !ids(0, false).may_signal(&ids(65534, false)),
            "root without CAP_KILL"
        );
    }
}
