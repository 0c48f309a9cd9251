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
use std::time::Duration;

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
    let targets = match targets(proc, reload, me.as_ref()) {
        Ok(targets) => targets,
        Err(outcome) => return outcome,
    };
    kill_all(reload, targets, me.as_ref(), before)
}

/// The processes the reload signal is for (or why there are none).
fn targets(proc: &Path, reload: &ReloadConfig, me: Option<&Ids>) -> Result<Vec<Target>, Outcome> {
    Ok(match &reload.target {
        ReloadTarget::Process(name) => {
            let pids = find_top_most(proc, name);
            if pids.is_empty() {
                return Err(Outcome::NoProcess(format!("no process named {name}")));
            }
            prefer_signallable(proc, name, pids, me)
        }
        ReloadTarget::PidFile { path, process } => {
            // Anyone who can write the pid file's folder can put a FIFO or
            // /dev/zero there: read only a small regular file.
            let text = match crate::limits::read_regular(path, PID_FILE_MAX_BYTES) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    return Err(Outcome::NoProcess(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )))
                }
            };
            let pid = match text.trim().parse::<i32>() {
                Ok(pid) if pid > 0 => pid,
                _ => {
                    return Err(Outcome::Failed(format!(
                        "{} does not hold a process id: {:?}",
                        path.display(),
                        text.trim()
                    )))
                }
            };
            vec![check_pid_file(proc, path, pid, process.as_deref())?]
        }
    })
}

/// Sends the signal to each target, `before` called with their pids first.
fn kill_all(
    reload: &ReloadConfig,
    targets: Vec<Target>,
    me: Option<&Ids>,
    before: impl FnOnce(&[i32]),
) -> Outcome {
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
                let why = not_allowed(reload.signal, &target, me);
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

/// Whether the processes the signal is for can take it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Send it: each process catches the signal, or blocks it in every
    /// thread (reads it through signalfd or sigwait).
    Send,
    /// No process to signal (not started yet, or gone).
    NoProcess(String),
    /// A process was found but must not be signalled; the text says why.
    Skipped(String),
    /// Every process started after the bytes were installed: it read them
    /// when it started; no signal.
    ReadAtStart(String),
    /// Wait this long: a process is younger than `min_age`.
    TooYoung(Duration),
    /// A process neither catches nor blocks the signal yet (its default
    /// action would apply: for HUP, to end it); look again later.
    NotCaught(String),
    /// A process ignores the signal: it would be a silent no-op.
    Ignored(String),
    /// Something else keeps the signal from being sent (the text says what).
    Failed(String),
}

/// A process's signal masks and age, from `/proc/PID/status`,
/// `/proc/PID/task/*/status` and `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Masks {
    /// `SigCgt`: signals with a handler.
    pub caught: u64,
    /// `SigIgn`: signals ignored.
    pub ignored: u64,
    /// `SigBlk` of every thread, and-ed: signals blocked in all of them.
    pub blocked_in_all: u64,
}

/// The bit of `signal` in a `/proc` mask (signal N is bit N-1).
fn bit(signal: Signal) -> u64 {
    1u64 << ((signal as i32 - 1) & 63)
}

/// How far off a process's age read from `/proc` may be: its start time and
/// the uptime are each in 10 ms clock ticks (USER_HZ 100).
pub const AGE_RESOLUTION: Duration = Duration::from_millis(20);

/// Decides for one process: `age` is how long it has run, `since_install`
/// how long ago the bytes were installed.
pub fn decide(
    signal: Signal,
    masks: Masks,
    age: Duration,
    since_install: Duration,
    min_age: Duration,
) -> Readiness {
    // `age` comes from two clocks of 10 ms ticks (the start time and
    // /proc/uptime): only a start later than the install by more than both
    // ticks is known to be after it. A tie is a process that may have read
    // the old bytes, so it is treated as started before (and signalled, if
    // it can take the signal).
    if age + AGE_RESOLUTION < since_install {
        return Readiness::ReadAtStart(format!(
            "it started {} after the file was installed, so it read it",
            humantime::format_duration(round_ms(since_install - age))
        ));
    }
    if age < min_age {
        return Readiness::TooYoung(min_age - age);
    }
    let b = bit(signal);
    if masks.ignored & b != 0 {
        return Readiness::Ignored(format!(
            "it ignores {signal} (SigIgn in /proc), so the signal would do nothing"
        ));
    }
    if masks.caught & b != 0 || masks.blocked_in_all & b != 0 {
        return Readiness::Send;
    }
    Readiness::NotCaught(format!(
        "it neither catches nor blocks {signal} yet (SigCgt, SigBlk in /proc): its default action would apply"
    ))
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The hex mask after `key` in a `/proc/PID/status` text.
fn mask(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    u64::from_str_radix(line[key.len()..].trim(), 16).ok()
}

/// Reads the masks of `pid` (none if it is gone).
fn masks(proc: &Path, pid: i32) -> Option<Masks> {
    let dir = proc.join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let mut blocked_in_all = u64::MAX;
    let mut threads = 0;
    if let Ok(tasks) = std::fs::read_dir(dir.join("task")) {
        for task in tasks.flatten() {
            if let Some(m) = std::fs::read_to_string(task.path().join("status"))
                .ok()
                .and_then(|t| mask(&t, "SigBlk:"))
            {
                blocked_in_all &= m;
                threads += 1;
            }
        }
    }
    if threads == 0 {
        blocked_in_all = mask(&status, "SigBlk:").unwrap_or(0);
    }
    Some(Masks {
        caught: mask(&status, "SigCgt:")?,
        ignored: mask(&status, "SigIgn:")?,
        blocked_in_all,
    })
}

/// How long `pid` has run: the system's uptime less its start time (field
/// 22 of `/proc/PID/stat`, in clock ticks; USER_HZ is 100 on Linux).
fn age(proc: &Path, pid: i32) -> Option<Duration> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string(proc.join("uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64((uptime - start / USER_HZ).max(0.0)))
}

/// Whether the processes the signal of `reload` is for can take it now;
/// `since_install` is how long ago the bytes were installed.
pub fn readiness(reload: &ReloadConfig, since_install: Duration) -> Readiness {
    let proc = Path::new("/proc");
    let me = process::ids(&proc.join("self"));
    let targets = match targets(proc, reload, me.as_ref()) {
        Ok(t) => t,
        Err(Outcome::NoProcess(why)) => return Readiness::NoProcess(why),
        Err(Outcome::Skipped(why)) => return Readiness::Skipped(why),
        Err(Outcome::Failed(why)) => return Readiness::Failed(why),
        Err(Outcome::Signalled(_)) => return Readiness::Send,
    };
    let mut all_fresh = true;
    let mut wait = Duration::ZERO;
    let mut fresh_why = String::new();
    for t in &targets {
        let (Some(masks), Some(age)) = (masks(proc, t.pid), age(proc, t.pid)) else {
            continue;
        };
        match decide(reload.signal, masks, age, since_install, reload.min_age) {
            Readiness::ReadAtStart(why) => {
                fresh_why = format!("pid {} ({}): {why}", t.pid, t.name);
                continue;
            }
            Readiness::TooYoung(w) => wait = wait.max(w),
            Readiness::Send => {}
            Readiness::Ignored(why) => {
                return Readiness::Ignored(format!("pid {} ({}): {why}", t.pid, t.name))
            }
            Readiness::NotCaught(why) => {
                return Readiness::NotCaught(format!("pid {} ({}): {why}", t.pid, t.name))
            }
            other => return other,
        }
        all_fresh = false;
    }
    if all_fresh && !targets.is_empty() && !fresh_why.is_empty() {
        return Readiness::ReadAtStart(fresh_why);
    }
    if !wait.is_zero() {
        return Readiness::TooYoung(wait);
    }
    Readiness::Send
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_signal_goes_only_to_a_process_that_can_take_it() {
        let hup = Signal::SIGHUP;
        let caught = Masks {
            caught: 1 << 0, // SIGHUP is signal 1: bit 0
            ..Masks::default()
        };
        let two_s = Duration::from_secs(2);
        // Old enough, catches it: sent.
        assert_eq!(
            decide(hup, caught, ms(5000), ms(10), two_s),
            Readiness::Send
        );
        // Started after the install: it read the file; no signal.
        assert!(matches!(
            decide(hup, caught, ms(5), ms(30), two_s),
            Readiness::ReadAtStart(why) if why.contains("started 25ms after the file was installed")
        ));
        // Within the clock ticks of the install: maybe before it, so not
        // taken as having read the file (it waits for min_age instead).
        assert_eq!(
            decide(hup, caught, ms(0), ms(15), two_s),
            Readiness::TooYoung(two_s)
        );
        // Younger than min_age: wait the rest (Go catches everything in the
        // runtime within ms, but exits on HUP for the first ~30 ms).
        assert_eq!(
            decide(hup, caught, ms(40), ms(10), two_s),
            Readiness::TooYoung(ms(1960))
        );
        assert_eq!(decide(hup, caught, ms(40), ms(10), ms(0)), Readiness::Send);
        // Ignored: an error, never a silent no-op.
        let ignored = Masks {
            ignored: 1,
            ..Masks::default()
        };
        assert!(matches!(
            decide(hup, ignored, ms(5000), ms(10), two_s),
            Readiness::Ignored(why) if why.contains("ignores SIGHUP")
        ));
        // Blocked in every thread (signalfd, sigwait): it reads it.
        let blocked = Masks {
            blocked_in_all: 1,
            ..Masks::default()
        };
        assert_eq!(
            decide(hup, blocked, ms(5000), ms(10), two_s),
            Readiness::Send
        );
        // Neither: its default action (the end of it) would apply.
        assert!(matches!(
            decide(hup, Masks::default(), ms(5000), ms(10), two_s),
            Readiness::NotCaught(_)
        ));
        // Another signal's bit says nothing about this one.
        let usr1 = Masks {
            caught: 1 << 9,
            ..Masks::default()
        };
        assert!(matches!(
            decide(hup, usr1, ms(5000), ms(10), two_s),
            Readiness::NotCaught(_)
        ));
        assert_eq!(
            decide(Signal::SIGUSR1, usr1, ms(5000), ms(10), two_s),
            Readiness::Send
        );
    }

    #[test]
    fn masks_are_read_from_status_and_every_thread() {
        let proc = fake_proc(&[(7, "app", 1)]);
        let dir = proc.path().join("7");
        std::fs::write(
            dir.join("status"),
            "Name:\tapp\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180004a03\n",
        )
        .unwrap();
        for (tid, blk) in [(7, "0000000000000001"), (8, "0000000000000003")] {
            let t = dir.join("task").join(tid.to_string());
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("status"), format!("SigBlk:\t{blk}\n")).unwrap();
        }
        assert_eq!(
            masks(proc.path(), 7),
            Some(Masks {
                caught: 0x1_8000_4a03,
                ignored: 0x1000,
                blocked_in_all: 1,
            })
        );
        assert_eq!(masks(proc.path(), 8), None, "gone");
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
