//! Real OCI containers for the tests, through Debian's `podman` (rootful,
//! with `runc`, no registry): the two images `scripts/test-images.sh`
//! builds, containers and pods with guards that remove them on drop.
//!
//! - `localhost/peerplate-test/peerplate:test` ([`PEERPLATE_IMAGE`]): the
//!   Dockerfile's final stage, built by podman from the Dockerfile's own
//!   lines on a stand-in for the distroless base;
//! - `localhost/peerplate-test/nginx:test` ([`NGINX_IMAGE`]): Debian
//!   bookworm with nginx-light (debootstrap).
//!
//! podman runs with `tests/podman/containers.conf` (runc, no default
//! ulimits) unless `CONTAINERS_CONF` says otherwise. A missing podman, or
//! a missing image, is a skip on a laptop and a failure under `CI=true`
//! (`.ci/run` installs podman and builds the images).

#![allow(dead_code)] // not every test uses every control

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::helpers::{repo_file, require_component, Outcome};

pub const PEERPLATE_IMAGE: &str = "localhost/peerplate-test/peerplate:test";
pub const NGINX_IMAGE: &str = "localhost/peerplate-test/nginx:test";

/// The bound of one podman command: creating a container on a busy
/// two-core machine takes seconds, not the 10 s of a test's waits.
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);

/// What every container of the tests runs as, like deploy/: uid/gid 65532,
/// read-only root filesystem, no capability, no privilege escalation.
pub const HARDENED: &[&str] = &[
    "--user",
    "65532:65532",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];

/// A `podman` command with the tests' containers.conf.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env("CONTAINERS_CONF", repo_file("tests/podman/containers.conf"));
    }
    cmd
}

/// True if podman and `images` are there. If not: a failure under
/// `CI=true`, else "skipping: ..." and false.
pub fn available(images: &[&str]) -> bool {
    if !require_component("podman") {
        return false;
    }
    for image in images {
        let out = run(&["image", "exists", image]);
        if out.code != Some(0) {
            let msg = format!("the image {image} is not built: run scripts/test-images.sh");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg} (CI=true: .ci/run builds it)");
            }
            crate::helpers::skip(&msg);
            return false;
        }
    }
    true
}

/// `podman ARGS` to completion, bounded by [`PODMAN_TIMEOUT`].
pub fn run(args: &[&str]) -> Outcome {
    run_cmd(podman().args(args), PODMAN_TIMEOUT)
}

/// `podman ARGS`, which must exit 0; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(out.code, Some(0), "podman {args:?} failed\n{}", out.dump());
    out.stdout
}

/// Runs `cmd` (stdin empty) to completion, killed after `timeout`.
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| {
        let mut s = String::new();
        let _ = fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    let outcome = Outcome {
        code: status.and_then(|s| s.code()),
        stdout: read(&out_path),
        stderr: crate::helpers::strip_ansi(&read(&err_path)),
        raw_stderr: read(&err_path),
    };
    assert!(
        status.is_some(),
        "{cmd:?} still running after {timeout:?}; killed it\n{}",
        outcome.dump()
    );
    outcome
}

/// Polls `cond` every 50 ms for at most `timeout` (which may be longer
/// than the test kit's 10 s: starting containers is slow on a busy CI).
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test run) uses: `pp-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    format!(
        "pp-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container by name, removed (with its process) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `podman run -d --name NAME ARGS`, the container started.
    pub fn run(name: &str, args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        let out = run(&all);
        let container = Container { name: name.into() };
        assert_eq!(
            out.code,
            Some(0),
            "podman {all:?} failed\n{}\n{}",
            out.dump(),
            container.logs()
        );
        container
    }

    /// Everything the container printed (stdout and stderr, interleaved).
    pub fn logs(&self) -> String {
        let out = run(&["logs", &self.name]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// `podman inspect --format FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        ok(&["inspect", "--format", format, &self.name])
            .trim()
            .to_string()
    }

    /// The container's main process as the host sees it; None when it is
    /// not running.
    pub fn host_pid(&self) -> Option<i32> {
        let pid: i32 = self.inspect("{{.State.Pid}}").parse().ok()?;
        (pid > 0).then_some(pid)
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// The exit code once it has stopped.
    pub fn exit_code(&self) -> i32 {
        self.inspect("{{.State.ExitCode}}")
            .parse()
            .expect("an exit code")
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    pub fn kill(&self) {
        ok(&["kill", &self.name]);
        let stopped = wait_for(PODMAN_TIMEOUT, || !self.running());
        assert!(stopped, "{} still runs after SIGKILL", self.name);
    }

    /// `podman start`: the same container, a new process (kubelet's
    /// restart of a container).
    pub fn start(&self) {
        ok(&["start", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// A pod, removed with its containers on drop.
pub struct PodmanPod {
    pub name: String,
}

impl PodmanPod {
    /// A pod whose containers share the network (the host's: they reach
    /// the loopback DNS server), the PID namespace (`shareProcessNamespace`),
    /// IPC and UTS; its infra container is PID 1, as the pause container is.
    pub fn create(name: &str, hostname: &str) -> PodmanPod {
        ok(&[
            "pod",
            "create",
            "--name",
            name,
            "--share",
            "net,pid,ipc,uts",
            "--network",
            "host",
            "--hostname",
            hostname,
        ]);
        PodmanPod { name: name.into() }
    }
}

impl Drop for PodmanPod {
    fn drop(&mut self) {
        let _ = run(&["pod", "rm", "-f", "-t", "0", &self.name]);
    }
}

/// A directory on the host for a volume: owned by uid/gid 65532, like an
/// `emptyDir` with `fsGroup: 65532`.
pub fn volume_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path).expect("create volume dir");
    std::os::unix::fs::chown(path, Some(65532), Some(65532))
        .expect("chown volume dir to 65532 (the container tests run as root)");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod volume dir");
}

/// `SRC:DST[:ro]` for `-v`.
pub fn mount(src: &Path, dst: &str, read_only: bool) -> String {
    format!(
        "{}:{dst}{}",
        src.display(),
        if read_only { ":ro" } else { "" }
    )
}
