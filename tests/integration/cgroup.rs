//! A real memory limit for a test's process: a cgroup v1 memory group of
//! its own (`/sys/fs/cgroup/memory/peerplate-test-*`), the way a container's
//! `resources.limits.memory` confines the sidecar. Without the controller
//! (not root, cgroup v2 only), [`MemoryCgroup::new`] fails the test under
//! `CI=true` and skips it elsewhere.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

const ROOT: &str = "/sys/fs/cgroup/memory";

/// A memory cgroup, removed on drop.
pub struct MemoryCgroup {
    path: PathBuf,
}

impl MemoryCgroup {
    /// A new group limited to `limit` bytes of memory (and of memory plus
    /// swap, where the kernel accounts swap), or `None` to skip the test.
    pub fn new(limit: u64) -> Option<MemoryCgroup> {
        let name = crate::procfs::unique_marker("peerplate-test");
        let path = PathBuf::from(ROOT).join(name);
        let made = std::fs::create_dir(&path)
            .and_then(|()| std::fs::write(path.join("memory.limit_in_bytes"), limit.to_string()));
        if let Err(e) = made {
            let _ = std::fs::remove_dir(&path);
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot make a memory cgroup under {ROOT} ({e}), and CI=true: a missing cgroup under CI is a failure");
            }
            eprintln!("skipping: no memory cgroup under {ROOT} ({e})");
            return None;
        }
        let swap = path.join("memory.memsw.limit_in_bytes");
        if swap.exists() {
            std::fs::write(&swap, limit.to_string()).expect("limit memory and swap");
        }
        Some(MemoryCgroup { path })
    }

    /// `cmd`, started inside the group: a shell moves itself in, then
    /// execs the command (its environment and folder as set on `cmd`).
    pub fn wrap(&self, cmd: &Command) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg(format!("echo $$ > {} && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path.join(file)).unwrap_or_default()
    }

    /// How many processes the kernel's OOM killer ended in the group.
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The group's anonymous memory now (`rss` of `memory.stat`), in
    /// bytes: what its processes hold, without the page cache.
    pub fn rss(&self) -> u64 {
        self.read("memory.stat")
            .lines()
            .find_map(|l| l.strip_prefix("rss "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most memory the group has used, in bytes.
    pub fn max_usage(&self) -> u64 {
        self.read("memory.max_usage_in_bytes")
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The group can go once its processes have; they are being reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
