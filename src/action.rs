//! Running one reload action and reading the app's verdict.
//!
//! - a signal ([`reload`]): `signalled`, or with `verify: children` the
//!   verdict of the signalled processes: each must start a new child within
//!   `verify_timeout` (nginx and HAProxy in master-worker mode replace their
//!   workers on an accepted reload and keep the old ones on a rejected one);
//! - `http`: any 2xx accepts; a connection error or a 502/503/504 is tried
//!   again with backoff up to `retries` times; any other status is the app's
//!   verdict at once, and its body (cut to a few lines) is the complaint;
//! - `exec`: the words of the command, no shell, bounded by `timeout`, reaped;
//!   exit 0 accepts, another exit rejects with the stderr as the complaint
//!   (held bounded and cut as a check's output is, see
//!   [`process::Captured`]). The verdict is the exit status: a background
//!   child still holding the pipes is given a second, then left.
//!
//! Only an answer from the app rejects: an app that never answered
//! (connection refused through every retry, a command that could not
//! start, no process to signal) is `no_process`, and what peerplate could
//! not do (a signal not allowed, a timeout) is `failed`. Every complaint
//! goes through the [`Redactor`] before it is returned, so a `file()`
//! input quoted by the app never reaches the log.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::{Action, ActionKind, HttpAction, Reload as ReloadConfig};
use crate::http_client::{self, HttpError};
use crate::metrics::Reload;
use crate::process;
use crate::redact::Redactor;
use crate::reload;
use crate::write;

/// How often `verify: children` looks for new children.
const VERIFY_POLL: Duration = Duration::from_millis(1);

/// How much of a complaint is kept for the log.
const COMPLAINT_LINES: usize = 10;
const COMPLAINT_CHARS: usize = 2000;

/// What an action's run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signal went to these pids; nothing verifies it.
    Signalled(Vec<i32>),
    /// The app took the new config; the text says how we know.
    Accepted(String),
    /// The app refused it; the text is its complaint (redacted).
    Rejected(String),
    /// Nothing answered; the text says what was missing.
    NoProcess(String),
    /// Peerplate could not run the action; the text says why.
    Failed(String),
}

impl Verdict {
    /// The `result` label of `peerplate_reloads_total`.
    pub fn metric(&self) -> Reload {
        match self {
            Verdict::Signalled(_) => Reload::Signalled,
            Verdict::Accepted(_) => Reload::Accepted,
            Verdict::Rejected(_) => Reload::Rejected,
            Verdict::NoProcess(_) => Reload::NoProcess,
            Verdict::Failed(_) => Reload::Failed,
        }
    }
}

/// Runs `action` once and returns its verdict; `redact` hides `file()`
/// inputs in whatever the app says. `patient` (`run`) waits up to
/// `catch_wait` for a starting process to catch the reload signal; without
/// it (`once`, which never waits on a retry) such a process is not
/// signalled: it is reading its files as it starts. Both wait out
/// `min_age` (bounded, 2 s by default).
pub async fn run(
    action: &Action,
    redact: &Redactor,
    installed: std::time::Instant,
    patient: bool,
) -> Verdict {
    match &action.kind {
        ActionKind::Signal { reload, verify } => {
            if let Some(verdict) = until_ready(reload, installed, patient).await {
                return verdict;
            }
            let mut before: Vec<(i32, BTreeSet<i32>)> = Vec::new();
            let outcome = reload::send_with(reload, |pids| {
                if verify.is_some() {
                    before = pids.iter().map(|p| (*p, children(*p))).collect();
                }
            });
            match (outcome, verify) {
                (reload::Outcome::Signalled(pids), None) => Verdict::Signalled(pids),
                (reload::Outcome::Signalled(pids), Some(timeout)) => {
                    before.retain(|(p, _)| pids.contains(p));
                    verify_children(&before, *timeout).await
                }
                (reload::Outcome::NoProcess(why) | reload::Outcome::Skipped(why), _) => {
                    Verdict::NoProcess(why)
                }
                (reload::Outcome::Failed(why), _) => Verdict::Failed(why),
            }
        }
        ActionKind::Http(http) => call(http, redact).await,
        ActionKind::Exec { command, timeout } => exec(command, *timeout, redact).await,
    }
}

/// Waits until the processes can take the signal (`None`: send it now), or
/// returns the verdict without a signal: no process, one started after the
/// install (it read the file), one that ignores the signal (an error naming
/// what works instead), or one that did not catch it within `catch_wait`.
/// The signal is never sent to a process that would die of it. Not
/// `patient` (`once`), a process not catching the signal yet is starting:
/// no signal, and the verdict is `no_process` at once.
async fn until_ready(
    reload: &ReloadConfig,
    installed: std::time::Instant,
    patient: bool,
) -> Option<Verdict> {
    let started = tokio::time::Instant::now();
    let mut backoff = crate::owed::Backoff::default();
    let mut logged = false;
    loop {
        match reload::readiness(reload, installed.elapsed()) {
            reload::Readiness::Send => return None,
            reload::Readiness::NoProcess(why) => {
                tracing::info!(reason = %why, "no process to reload; it reads the new file when it starts");
                return Some(Verdict::NoProcess(why));
            }
            reload::Readiness::Skipped(why) => {
                tracing::warn!(reason = %why, "reload skipped");
                return Some(Verdict::NoProcess(why));
            }
            reload::Readiness::ReadAtStart(why) => {
                tracing::info!(reason = %why, "not signalled: the process started after the file was installed");
                return Some(Verdict::NoProcess(why));
            }
            reload::Readiness::Failed(why) => return Some(Verdict::Failed(why)),
            reload::Readiness::Ignored(why) => {
                let why = format!(
                    "{why}; use an exec or http action if the app offers one (for Redis, which reads redis.conf only when it starts: reload: false, see templates/README.md)"
                );
                tracing::error!(signal = %reload.signal, reason = %why, "reload signal not sent");
                return Some(Verdict::Failed(why));
            }
            reload::Readiness::NotCaught(why) if !patient => {
                let why = format!(
                    "{why}; it is still starting and reads the new file as it starts; once does not wait for it (catch_wait is run's)"
                );
                tracing::info!(reason = %why, "not signalled: the process does not catch the signal yet");
                return Some(Verdict::NoProcess(why));
            }
            reload::Readiness::TooYoung(wait) => {
                tracing::debug!(
                    wait_ms = crate::log::ms(wait),
                    "the process is younger than min_age; waiting before the signal"
                );
                tokio::time::sleep(wait).await;
            }
            reload::Readiness::NotCaught(why) => {
                if started.elapsed() >= reload.catch_wait {
                    let why = format!(
                        "{why}; waited {} (catch_wait); the signal is never sent uncaught",
                        humantime::format_duration(reload.catch_wait)
                    );
                    tracing::error!(signal = %reload.signal, reason = %why, "reload signal not sent");
                    return Some(Verdict::Failed(why));
                }
                if !logged {
                    tracing::info!(signal = %reload.signal, reason = %why, catch_wait_ms = crate::log::ms(reload.catch_wait), "waiting for the process to catch the signal before sending it");
                    logged = true;
                }
                let left = reload.catch_wait.saturating_sub(started.elapsed());
                tokio::time::sleep(backoff.step(crate::owed::jitter()).min(left)).await;
            }
        }
    }
}

/// The children of `pid` (any state), from `/proc/PID/task/PID/children`,
/// else from a scan of `/proc`.
fn children(pid: i32) -> BTreeSet<i32> {
    let file = format!("/proc/{pid}/task/{pid}/children");
    if let Ok(text) = std::fs::read_to_string(file) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    process::processes(Path::new("/proc"))
        .into_iter()
        .filter(|(_, s)| s.ppid == pid)
        .map(|(_, s)| s.pid)
        .collect()
}

fn alive(pid: i32) -> bool {
    process::Stat::read(Path::new("/proc"), pid).is_some_and(|s| s.state != 'Z')
}

/// Accepted once every signalled pid has a child it did not have before the
/// signal; rejected when one has none by `timeout`.
async fn verify_children(before: &[(i32, BTreeSet<i32>)], timeout: Duration) -> Verdict {
    let started = tokio::time::Instant::now();
    let mut waiting: Vec<&(i32, BTreeSet<i32>)> = before.iter().collect();
    let mut new_children = Vec::new();
    loop {
        let mut still = Vec::new();
        for entry in waiting {
            let (pid, old) = entry;
            let now = children(*pid);
            match now.difference(old).find(|c| alive(**c)) {
                Some(child) => new_children.push(format!("{pid} -> {child}")),
                None if !alive(*pid) => {
                    return Verdict::NoProcess(format!(
                        "pid {pid} exited after the signal, before starting a new child"
                    ))
                }
                None => still.push(entry),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            return Verdict::Accepted(format!("new children: {}", new_children.join(", ")));
        }
        if started.elapsed() >= timeout {
            let pids: Vec<String> = waiting.iter().map(|(p, _)| p.to_string()).collect();
            return Verdict::Rejected(format!(
                "no new child of pid {} within {} (verify: children): the app kept its old workers, so it did not load the new file; its own log says why",
                pids.join(", "),
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(VERIFY_POLL).await;
    }
}

/// The `http` action, with retries on connection errors and 502/503/504.
async fn call(http: &HttpAction, redact: &Redactor) -> Verdict {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(http.retries as usize)
        .build();
    let what = format!("{} {}", http.method, http.url);
    loop {
        let result = http_client::request(&http.method, &http.url, http.timeout).await;
        let retry = match &result {
            Err(HttpError::Connect(_) | HttpError::Exchange(_)) => true,
            Ok(r) => matches!(r.status, 502..=504),
            Err(_) => false,
        };
        if retry {
            if let Some(delay) = backoff.next() {
                tracing::debug!(request = %what, answer = %describe(&result), retry_in_ms = crate::log::ms(delay), "reload request: trying again");
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        return match result {
            Ok(r) if (200..300).contains(&r.status) => {
                Verdict::Accepted(format!("{what}: HTTP {}", r.status))
            }
            Ok(r) if retry => Verdict::Failed(format!(
                "{what}: HTTP {} after {} attempt(s): {}",
                r.status,
                http.retries.saturating_add(1),
                complaint(&String::from_utf8_lossy(&r.body), redact)
            )),
            Ok(r) => Verdict::Rejected(format!(
                "{what}: HTTP {}: {}",
                r.status,
                complaint(&String::from_utf8_lossy(&r.body), redact)
            )),
            Err(HttpError::Connect(why)) => Verdict::NoProcess(format!(
                "{what}: {why} (after {} attempt(s))",
                http.retries.saturating_add(1)
            )),
            Err(e) => Verdict::Failed(format!("{what}: {e}")),
        };
    }
}

fn describe(result: &Result<http_client::Response, HttpError>) -> String {
    match result {
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => e.to_string(),
    }
}

/// The `exec` action.
async fn exec(command: &[String], timeout: Duration, redact: &Redactor) -> Verdict {
    let shown = command.join(" ");
    let result = process::run(process::Spec {
        argv: command,
        stdin: None,
        capture_stderr: true,
        quiet: true,
        timeout,
    })
    .await;
    match result {
        Ok(done) if done.status.success() => Verdict::Accepted(format!("`{shown}` exited 0")),
        Ok(done) => Verdict::Rejected(format!(
            "`{shown}` {}: {}",
            done.status,
            exec_complaint(&done.stderr, redact)
        )),
        Err(process::RunError::Start(e)) => {
            Verdict::NoProcess(format!("`{shown}` could not start: {e}"))
        }
        Err(e) => Verdict::Failed(format!("`{shown}`: {e}")),
    }
}

/// What an `exec` action wrote to stderr, redacted, cut by the rule of a
/// check's output (its first and last lines, [`write::CHECK_OUTPUT`]).
fn exec_complaint(stderr: &process::Captured, redact: &Redactor) -> String {
    if stderr.total() > 0 {
        if let Some(line) = redact.withheld(stderr.total()) {
            return line;
        }
    }
    let text = stderr.excerpt(write::CHECK_OUTPUT, |text| redact.apply(text));
    if text.is_empty() {
        return "(no output)".into();
    }
    text
}

/// What the app said, redacted (or withheld, see [`Redactor::shown`]) and
/// cut to a few lines.
pub fn complaint(text: &str, redact: &Redactor) -> String {
    let text = redact.shown(text);
    if text.is_empty() {
        return "(no output)".into();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines[..lines.len().min(COMPLAINT_LINES)].join("\n");
    if cut.chars().count() > COMPLAINT_CHARS {
        cut = cut.chars().take(COMPLAINT_CHARS).collect();
        cut.push_str(" [...]");
    } else if lines.len() > COMPLAINT_LINES {
        cut.push_str(&format!(
            "\n[... {} more lines]",
            lines.len() - COMPLAINT_LINES
        ));
    }
    cut
}
