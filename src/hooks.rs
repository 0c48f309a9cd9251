//! Running `on_start` / `on_change` hooks the way peer-finder does.
//!
//! A hook is a shell command (`sh -c`), and it reads the peer list on stdin,
//! one FQDN per line with a trailing newline, in `peers` order. Peer names
//! never appear in a command line, so a hostile DNS name cannot become shell
//! code. A hook runs in a process group of its own, so at its timeout the
//! whole group (the shell and whatever it started) is killed, and the hook
//! is always waited for: no zombies (see [`crate::process`], which also
//! reaps the orphans hooks leave behind when peerplate is PID 1).

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::State;
use crate::config::Hooks;
use crate::metrics::Hook;
use crate::owed::{self, Backoff};
use crate::peers::PeerSet;
use crate::process;
use crate::status::{self, Owing};

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("could not start `{shell} -c {command}`: {source}")]
    Start {
        /// `sh`, or `bash` for the peer-finder drop-in where bash exists.
        shell: &'static str,
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
/// inherited, in a process group of its own that is killed after `timeout`
/// (which covers writing stdin too) or when the returned future is dropped.
pub async fn run(
    which: &str,
    command: &str,
    peers: &PeerSet,
    timeout: Duration,
) -> Result<(), HookError> {
    run_with_stdin(which, command, stdin_text(peers), timeout).await
}

/// Runs `command` with `shell -c` (`sh` or `bash`), the peers on stdin, as
/// [`run`] does.
pub async fn run_in(
    shell: &'static str,
    which: &str,
    command: &str,
    peers: &PeerSet,
    timeout: Duration,
) -> Result<(), HookError> {
    run_shell(shell, which, command, stdin_text(peers), timeout).await
}

/// Runs `command` with `sh -c` and `stdin`, as [`run`] does.
pub async fn run_with_stdin(
    which: &str,
    command: &str,
    stdin: String,
    timeout: Duration,
) -> Result<(), HookError> {
    run_shell("sh", which, command, stdin, timeout).await
}

/// Runs `command` with `shell -c` and `stdin`.
async fn run_shell(
    shell: &'static str,
    which: &str,
    command: &str,
    stdin: String,
    timeout: Duration,
) -> Result<(), HookError> {
    let started = std::time::Instant::now();
    let argv = [shell.to_string(), "-c".to_string(), command.to_string()];
    let finished = process::run(process::Spec {
        argv: &argv,
        stdin: Some(stdin.as_bytes()),
        capture_stderr: false,
        quiet: false,
        timeout,
    })
    .await;
    let status = match finished {
        Ok(finished) => finished.status,
        Err(process::RunError::Timeout(_)) => {
            tracing::warn!(
                hook = which,
                command,
                timeout_ms = crate::log::ms(timeout),
                "hook killed at its timeout"
            );
            return Err(HookError::Timeout {
                command: command.to_string(),
                timeout,
            });
        }
        Err(process::RunError::Start(source) | process::RunError::Wait(source)) => {
            return Err(HookError::Start {
                shell,
                command: command.to_string(),
                source,
            })
        }
    };
    tracing::info!(hook = which, command, status = %status, exit_code = status.code(), elapsed_ms = crate::log::ms(started.elapsed()), "hook ran");
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            command: command.to_string(),
            status,
        })
    }
}

impl HookError {
    /// The `result` label of `peerplate_hook_runs_total`.
    pub fn metric(&self) -> Hook {
        match self {
            HookError::Timeout { .. } => Hook::Timeout,
            HookError::Start { .. } | HookError::Failed { .. } => Hook::Failed,
        }
    }
}

/// The hook queue of `run`: hooks run beside the render path, never in
/// front of it. The loop publishes every peer set that holds this pod on the
/// returned sender and goes on at once; this worker runs `on_start` for the
/// first (`on_change` stands in when there is no `on_start`, as in
/// peer-finder), then `on_change` for each later set that differs from the
/// one the hooks last ran for with success. A set published while a hook
/// runs replaces any set still waiting: the hook always gets the latest
/// set, once. A failed hook is owed: it runs again after a backoff step
/// ([`crate::owed`]: 0.5 s doubling to 30 s, +-20 %), with the latest set
/// then, until it succeeds; no `on_change` runs before `on_start` did.
pub fn queue(
    hooks: Hooks,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> (
    watch::Sender<Option<PeerSet>>,
    impl std::future::Future<Output = ()>,
) {
    let (tx, mut rx) = watch::channel::<Option<PeerSet>>(None);
    let body = async move {
        let metrics = Arc::clone(&state.metrics);
        let mut seen: Option<PeerSet> = None;
        let mut retry = Backoff::default();
        let mut owed = Failures::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let Some(set) = rx.borrow_and_update().clone() else {
                continue;
            };
            let (which, command) = match (&seen, &hooks.on_start, &hooks.on_change) {
                (None, Some(c), _) => ("on_start", c),
                (None, None, Some(c)) => ("on_change", c),
                (Some(last), _, _) if *last == set => {
                    // Back to the set the hooks last ran for: nothing owed.
                    retry = Backoff::default();
                    owed.clear(&state, "on_change");
                    continue;
                }
                (Some(_), _, Some(c)) => ("on_change", c),
                _ => {
                    seen = Some(set);
                    continue;
                }
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = run(which, command, &set, hooks.timeout) => result,
            };
            metrics.hook(
                which,
                result
                    .as_ref()
                    .map_or_else(HookError::metric, |()| Hook::Ok),
            );
            match result {
                Ok(()) => {
                    seen = Some(set);
                    retry = Backoff::default();
                    owed.done(&state, "on_change", which);
                }
                Err(e) => {
                    let wait = retry.step(owed::jitter());
                    owed.failed(
                        &state,
                        "on_change",
                        format!("{which} for a set of {} peer(s)", set.len()),
                        &e,
                        wait,
                    );
                    tracing::warn!(hook = which, error = %e, retry_in_ms = crate::log::ms(wait), "hook failed; running it again after the pause, with the latest peer set");
                    if !owe(&mut rx, wait, &shutdown).await {
                        return;
                    }
                }
            }
        }
    };
    (tx, body)
}

/// A hook's failures since its last success, published for `/status`.
#[derive(Debug, Default)]
struct Failures {
    since: Option<std::time::SystemTime>,
    tries: u32,
}

impl Failures {
    fn failed(
        &mut self,
        state: &State,
        key: &'static str,
        what: String,
        error: &HookError,
        wait: Duration,
    ) {
        let since = *self.since.get_or_insert_with(std::time::SystemTime::now);
        self.tries += 1;
        state.set_hook_owed(
            key,
            Some(Owing {
                what,
                since: status::rfc3339(since),
                tries: self.tries,
                last_error: Some(error.to_string()),
                next_try_in_ms: Some(wait.as_millis() as u64),
            }),
        );
    }

    /// Nothing owed any more, without a run (back to what last succeeded).
    fn clear(&mut self, state: &State, key: &'static str) {
        self.since = None;
        self.tries = 0;
        state.set_hook_owed(key, None);
    }

    fn done(&mut self, state: &State, key: &'static str, which: &str) {
        if let Some(since) = self.since.take() {
            let owed_ms = since.elapsed().map(crate::log::ms).unwrap_or_default();
            tracing::info!(
                hook = which,
                tries = self.tries + 1,
                owed_ms,
                "hook succeeded after running again"
            );
        }
        self.tries = 0;
        state.set_hook_owed(key, None);
    }
}

/// A failed hook: waits `wait` (unless shut down: false), then marks the
/// queue changed so the hook runs again with whatever is latest then.
async fn owe<T>(rx: &mut watch::Receiver<T>, wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => return false,
        _ = tokio::time::sleep(wait) => {}
    }
    rx.mark_changed();
    true
}

/// The queue of `on_leader_change`: each new leader (its FQDN; empty when
/// there is none) is run with that one line on stdin; a leader published
/// while the hook runs replaces any still waiting, so the hook always ends
/// on the latest. A failed run is owed: it runs again after a backoff step
/// (0.5 s doubling to 30 s, +-20 %), for the leader latest then (never a
/// stale one), until it succeeds. Never merged with `on_change`.
pub fn leader_queue(
    command: String,
    timeout: Duration,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> (
    watch::Sender<Option<String>>,
    impl std::future::Future<Output = ()>,
) {
    let (tx, mut rx) = watch::channel::<Option<String>>(None);
    let body = async move {
        let metrics = Arc::clone(&state.metrics);
        let mut retry = Backoff::default();
        let mut owed = Failures::default();
        // The leader the hook last ran for with success.
        let mut done: Option<String> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let Some(leader) = rx.borrow_and_update().clone() else {
                continue;
            };
            if retry != Backoff::default() && done.as_ref() == Some(&leader) {
                // Back to the leader it ran for: nothing owed any more.
                retry = Backoff::default();
                owed.clear(&state, "on_leader_change");
                continue;
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = run_with_stdin("on_leader_change", &command, format!("{leader}\n"), timeout) => result,
            };
            metrics.hook(
                "on_leader_change",
                result
                    .as_ref()
                    .map_or_else(HookError::metric, |()| Hook::Ok),
            );
            match result {
                Ok(()) => {
                    done = Some(leader);
                    retry = Backoff::default();
                    owed.done(&state, "on_leader_change", "on_leader_change");
                }
                Err(e) => {
                    let wait = retry.step(owed::jitter());
                    owed.failed(
                        &state,
                        "on_leader_change",
                        format!(
                            "on_leader_change for {}",
                            if leader.is_empty() {
                                "no leader"
                            } else {
                                &leader
                            }
                        ),
                        &e,
                        wait,
                    );
                    tracing::warn!(hook = "on_leader_change", error = %e, retry_in_ms = crate::log::ms(wait), "hook failed; running it again after the pause, for the leader latest then");
                    if !owe(&mut rx, wait, &shutdown).await {
                        return;
                    }
                }
            }
        }
    };
    (tx, body)
}
