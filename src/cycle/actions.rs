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

use std::path::PathBuf;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use crate::action::{self, Verdict};
use crate::config::Action;
use crate::redact::Redactor;
use crate::write::{self, Previous};

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
}

/// One output of a group, installed this cycle.
#[derive(Debug)]
pub struct InstalledOutput {
    pub template: String,
    pub destination: PathBuf,
    /// What the destination held before.
    pub previous: Previous,
    /// What was installed.
    pub bytes: Vec<u8>,
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

/// Runs `action` for the outputs just installed, and on a rejection puts
/// each back (retrying I/O failures with a short backoff).
pub async fn run_group(
    action: Action,
    outputs: Vec<InstalledOutput>,
    redact: Redactor,
) -> GroupReport {
    let started = Instant::now();
    let verdict = action::run(&action, &redact).await;
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
