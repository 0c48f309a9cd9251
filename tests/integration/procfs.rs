//! Looking at processes from the outside, through the host's `/proc`: a
//! process's name, state, parent and CPU time, its children, its zombies,
//! processes found by a unique marker in their command line, its memory and
//! threads (for the benches, which include this file by `#[path]`); and PID
//! namespaces made with `unshare --pid --fork --mount-proc --kill-child` (so
//! that killing the `unshare` guard takes the whole namespace down with it).

#![allow(dead_code)] // not every test uses every helper

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};

use super::helpers::{find_program, require_component};

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// CPU time in user and kernel mode, in clock ticks (USER_HZ, 100 a
    /// second on Linux).
    pub utime: u64,
    pub stime: u64,
}

/// `/proc/PID/stat` of one process, None if it is gone. The only parser of
/// that file in the tests and benches.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After the `)`: state is field 3, ppid 4, utime 14 and stime 15.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let utime = rest.get(11)?.parse().ok()?;
    let stime = rest.get(12)?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
        utime,
        stime,
    })
}

/// Every process visible in the host's /proc.
pub fn all() -> Vec<Stat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// The direct children of `pid`, sorted by pid.
pub fn children(pid: i32) -> Vec<Stat> {
    let mut kids: Vec<Stat> = all().into_iter().filter(|s| s.ppid == pid).collect();
    kids.sort_by_key(|s| s.pid);
    kids
}

/// Children of `pid` that are zombies (state Z): exited, never reaped.
pub fn zombie_children(pid: i32) -> Vec<Stat> {
    children(pid)
        .into_iter()
        .filter(|s| s.state == 'Z')
        .collect()
}

/// A process's command line, NULs turned into spaces ("" for a zombie).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default()
}

/// Processes whose command line contains `marker`.
pub fn with_marker(marker: &str) -> Vec<Stat> {
    all()
        .into_iter()
        .filter(|s| cmdline(s.pid).contains(marker))
        .collect()
}

/// `/proc/PID/status` as key -> value (values keep their unit), None if the
/// process is gone.
pub fn status(pid: i32) -> Option<BTreeMap<String, String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// A `kB` field of `/proc/PID/status` as a number.
pub fn status_kb(pid: i32, key: &str) -> Option<u64> {
    status(pid)?
        .get(key)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The pids of a process in its PID namespaces, outermost first (the
/// `NSpid:` line of /proc/PID/status): `[host pid, ..., pid inside]`.
pub fn ns_pids(pid: i32) -> Vec<i32> {
    status(pid)
        .and_then(|s| {
            s.get("NSpid").map(|v| {
                v.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// VmRSS, RssAnon, RssFile, VmHWM in kB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub hwm: u64,
}

/// The memory of a process, None if it is gone.
pub fn memory(pid: i32) -> Option<Memory> {
    Some(Memory {
        rss: status_kb(pid, "VmRSS")?,
        anon: status_kb(pid, "RssAnon")?,
        file: status_kb(pid, "RssFile")?,
        hwm: status_kb(pid, "VmHWM")?,
    })
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {} kB  RssAnon {} kB  RssFile {} kB  VmHWM {} kB",
            self.rss, self.anon, self.file, self.hwm
        )
    }
}

/// utime + stime in clock ticks, None if the process is gone.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.utime + s.stime)
}

/// Nanoseconds on CPU, summed over every thread, from the scheduler
/// (first field of `/proc/PID/task/*/schedstat`); None if the process is gone.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// The names of a process's threads, sorted.
pub fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    names.sort();
    names
}

/// A string no other process on the machine has in its command line.
pub fn unique_marker(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "pp{tag}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether this machine lets us make a PID namespace with a private /proc
/// (`unshare --pid --fork --mount-proc`, which needs root). A missing
/// `unshare` or a refusal is a skip on a laptop and a failure under CI=true.
pub fn pid_namespaces_work() -> bool {
    if !require_component("unshare") {
        return false;
    }
    let ok = Command::new(find_program("unshare").expect("unshare found"))
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("unshare --pid --fork --mount-proc fails, and CI=true (CI runs as root)");
    }
    super::helpers::skip("cannot make a PID namespace here (unshare needs root)");
    false
}

/// `unshare --pid --fork --mount-proc --kill-child`: the rest of the command
/// is PID 1 of a new PID namespace with its own /proc, and dies (with the
/// whole namespace) when the `unshare` process does.
pub fn unshare() -> Command {
    let mut cmd = Command::new(find_program("unshare").expect("unshare found"));
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
    cmd
}

/// The process `unshare` forked: PID 1 of its namespace, seen from the host.
pub fn namespace_init(unshare_pid: u32) -> Option<i32> {
    let pid = i32::try_from(unshare_pid).ok()?;
    children(pid).first().map(|s| s.pid)
}
