//! The reload actions of the loop: one group of outputs per action, run
//! beside the loop so that an action waiting for its verdict holds back
//! only its own outputs.
//!
//! A pass installs an action's changed outputs (all of them or none) only
//! when the action is free: no verdict pending ([`ActionState::busy`]) and
//! `min_interval` passed since its last run. Otherwise the outputs wait
//! (the staged files are dropped, the old files stay) and the loop renders
//! again when the verdict arrives or the interval ends, so the changes in
//! between are coalesced into one run. An installed group is handed to
//! [`run_group`], a task that runs the action and, when the app rejects it,
//! puts every output of the group back the way it was (the previous bytes,
//! or no file), right after the verdict. The report comes back to the loop,
//! which counts and logs it and remembers the rejected bytes, so the same
//! render is not installed again until an input changes.
//!
//! In `run` a reload the app did not answer (a timeout, a 502/503/504, a
//! refused connection, a signal that could not be sent) stays owed for the
//! bytes installed ([`ActionState::owed`]) and is tried again with backoff
//! ([`crate::owed`]) until the app answers; new bytes for the same action
//! wait for the next try and replace the owed ones ([`merge`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::action::{self, Verdict};
use crate::config::Action;
use crate::owed::Owed;
use crate::redact::Redactor;
use crate::write::{self, Previous};

/// The actions' side of the loop.
#[derive(Default)]
pub(super) struct Actions {
    /// Each action's state, by name (a run may outlive a config change).
    pub states: HashMap<String, ActionState>,
    /// The runs of actions whose verdict is pending.
    pub verdicts: JoinSet<GroupReport>,
    /// Bytes an app rejected, by destination: not installed again until an
    /// input (a template, a `file()`, the config) changes.
    pub rejected: HashMap<PathBuf, Vec<u8>>,
    /// Rollbacks that failed (`run`): tried again with backoff until the
    /// refused bytes are gone from disk.
    pub rollbacks: Vec<Owed<InstalledOutput>>,
}

/// The loop's view of one action.
#[derive(Debug, Default, Clone)]
pub struct ActionState {
    /// A run is in progress (its verdict pending): the action's outputs wait.
    pub busy: bool,
    /// Outputs waited while busy: render again after the verdict.
    pub wanted: bool,
    /// When the last run started (for `min_interval`).
    pub last_run: Option<Instant>,
    /// Outputs wait for `min_interval` until then.
    pub retry_at: Option<Instant>,
    /// A reload the app has not answered yet (`run`): the outputs it is
    /// owed for (empty while a try runs) and when to try again.
    pub owed: Option<Owed<Vec<InstalledOutput>>>,
    /// The last verdict, as `/status` shows it (`accepted: HTTP 200`).
    pub last_verdict: Option<String>,
}

impl ActionState {
    /// When the owed reload is to be tried again, unless a try runs.
    pub fn owed_due(&self) -> Option<Instant> {
        self.owed.as_ref().filter(|_| !self.busy).map(|o| o.due)
    }
}

/// What a verdict means for the reload owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Done: the app took the bytes, or has no process to tell (a signal
    /// action with nothing to signal; in `once`, anything unanswered: the
    /// app reads the file when it starts).
    Done,
    /// The app refused these bytes: rolled back, never retried for them.
    Rejected,
    /// Not answered (`run`): tried again with backoff; the text says why.
    Pending(String),
}

/// Decides what `verdict` means: `signal` says the action is a signal,
/// `run` whether peerplate keeps running (`once` never waits on a retry).
pub fn settle(verdict: &Verdict, signal: bool, run: bool) -> Settled {
    match verdict {
        Verdict::Signalled(_) | Verdict::Accepted(_) => Settled::Done,
        Verdict::Rejected(_) => Settled::Rejected,
        Verdict::NoProcess(_) if signal || !run => Settled::Done,
        Verdict::Failed(_) if !run => Settled::Done,
        Verdict::NoProcess(why) | Verdict::Failed(why) => Settled::Pending(why.clone()),
    }
}

/// The outputs of a try: the ones still owed from earlier tries and the
/// ones installed now. An output installed again keeps the earlier
/// `previous` (what the app last ran, the one a rejection puts back) and
/// takes the new bytes: old bytes are never replayed.
pub fn merge(owed: Vec<InstalledOutput>, new: Vec<InstalledOutput>) -> Vec<InstalledOutput> {
    let mut all = owed;
    for mut out in new {
        if let Some(k) = all.iter().position(|o| o.destination == out.destination) {
            out.previous = all.remove(k).previous;
        }
        all.push(out);
    }
    all
}

/// One output of a group, installed this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledOutput {
    pub template: String,
    pub destination: PathBuf,
    /// What the destination held before.
    pub previous: Previous,
    /// What was installed.
    pub bytes: Vec<u8>,
    /// When it was installed (a process started later read it already).
    pub installed: Instant,
}

/// What a group's run came to.
#[derive(Debug)]
pub struct GroupReport {
    pub action: String,
    pub verdict: Verdict,
    /// From the start of the run (the outputs were in place) to the verdict.
    pub took: Duration,
    /// The outputs, and for each whether it was put back (`Some(Ok)`), could
    /// not be (`Some(Err)`), or stays (`None`).
    pub outputs: Vec<(InstalledOutput, Option<Result<(), String>>)>,
    /// From the verdict to the last output put back.
    pub rollback: Option<Duration>,
}

/// Runs `action` for the outputs just installed (`patient`: `run`, which
/// waits for a starting process to take a signal; see [`action::run`]), and
/// on a rejection puts
/// each back (retrying I/O failures with a short backoff).
pub async fn run_group(
    action: Action,
    outputs: Vec<InstalledOutput>,
    redact: Redactor,
    patient: bool,
) -> GroupReport {
    let started = Instant::now();
    let installed = outputs.iter().map(|o| o.installed).max().unwrap_or(started);
    let verdict = action::run(&action, &redact, installed.into_std(), patient).await;
    let took = started.elapsed();
    let decided = Instant::now();
    let rejected = matches!(verdict, Verdict::Rejected(_));
    let mut undone = Vec::with_capacity(outputs.len());
    for out in outputs {
        let result = if rejected {
            Some(put_back(&out).await)
        } else {
            None
        };
        undone.push((out, result));
    }
    let outputs = undone;
    GroupReport {
        action: action.name,
        verdict,
        took,
        outputs,
        rollback: rejected.then(|| decided.elapsed()),
    }
}

/// Puts one output back, trying again on I/O failures (a full disk for a
/// moment) within about a second.
async fn put_back(out: &InstalledOutput) -> Result<(), String> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(200))
        .with_max_times(6)
        .build();
    loop {
        match write::restore(&out.destination, &out.previous) {
            Ok(()) => return Ok(()),
            Err(e) => match (&out.previous, backoff.next()) {
                (Previous::Unreadable(_), _) | (_, None) => return Err(e.to_string()),
                (_, Some(delay)) => {
                    tracing::debug!(destination = %out.destination.display(), error = %e, "rollback: trying again");
                    tokio::time::sleep(delay).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::action::Verdict;
    use crate::cycle::actions::{merge, settle, InstalledOutput, Settled};
    use crate::write::Previous;

    #[test]
    fn only_an_answer_settles_a_reload_in_run() {
        let pending = |why: &str| Settled::Pending(why.to_string());
        let no = Verdict::NoProcess("refused".into());
        let failed = Verdict::Failed("HTTP 503 after 1 attempt(s)".into());
        // run, http or exec
        assert_eq!(settle(&no, false, true), pending("refused"));
        assert_eq!(
            settle(&failed, false, true),
            pending("HTTP 503 after 1 attempt(s)")
        );
        assert_eq!(
            settle(&Verdict::Accepted("200".into()), false, true),
            Settled::Done
        );
        assert_eq!(
            settle(&Verdict::Rejected("500".into()), false, true),
            Settled::Rejected
        );
        // run, a signal with no process: converged
        assert_eq!(settle(&no, true, true), Settled::Done);
        assert_eq!(
            settle(&Verdict::Signalled(vec![7]), true, true),
            Settled::Done
        );
        assert_eq!(
            settle(&failed, true, true),
            pending("HTTP 503 after 1 attempt(s)")
        );
        // once never waits
        assert_eq!(settle(&no, false, false), Settled::Done);
        assert_eq!(settle(&failed, false, false), Settled::Done);
        assert_eq!(
            settle(&Verdict::Rejected("500".into()), false, false),
            Settled::Rejected
        );
    }

    fn out(dest: &str, previous: &[u8], bytes: &[u8], at: tokio::time::Instant) -> InstalledOutput {
        InstalledOutput {
            template: dest.to_string(),
            destination: PathBuf::from(dest),
            previous: Previous::File {
                bytes: previous.to_vec(),
                mode: 0o644,
            },
            bytes: bytes.to_vec(),
            installed: at,
        }
    }

    #[test]
    fn newer_bytes_replace_the_owed_ones_and_keep_what_the_app_ran() {
        let at = tokio::time::Instant::now();
        let owed = vec![out("/a", b"ran", b"v1", at), out("/b", b"b0", b"b1", at)];
        let merged = merge(owed, vec![out("/a", b"v1", b"v2", at)]);
        assert_eq!(
            merged,
            [out("/b", b"b0", b"b1", at), out("/a", b"ran", b"v2", at)]
        );
        assert_eq!(
            merge(Vec::new(), vec![out("/a", b"x", b"y", at)]),
            [out("/a", b"x", b"y", at)]
        );
    }
}
