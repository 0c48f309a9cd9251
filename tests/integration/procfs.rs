//! Looking at processes from the outside, through the host's `/proc`: a
//! process's name, state and parent, its children, its zombies, processes
//! found by a unique marker in their command line; and PID namespaces made
//! with `unshare --pid --fork --mount-proc --kill-child` (so that killing the
//! `unshare` guard takes the whole namespace down with it).

#![allow(dead_code)] // not every test uses every helper

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};

use crate::helpers::{find_program, require_component};

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
}

/// `/proc/PID/stat` of one process, None if it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Stat {
        pid,
        comm,
        state,
        ppid,
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

/// The pids of a process in its PID namespaces, outermost first (the
/// `NSpid:` line of /proc/PID/status): `[host pid, ..., pid inside]`.
pub fn ns_pids(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|v| {
                v.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
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
    eprintln!("skipping: cannot make a PID namespace here (unshare needs root)");
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

/// A TCP port free on every one of `ips` right now.
pub fn free_port_on(ips: &[&str]) -> u16 {
    for _ in 0..100 {
        let first: SocketAddr = format!("{}:0", ips[0]).parse().expect("an IP");
        let Ok(listener) = TcpListener::bind(first) else {
            continue;
        };
        let port = listener.local_addr().expect("local address").port();
        let rest_free = ips[1..].iter().all(|ip| {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("an IP");
            TcpListener::bind(addr).is_ok()
        });
        if rest_free {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}
