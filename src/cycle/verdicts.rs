//! What comes back from the reload actions: an accepted reload, or a
//! rejection whose outputs were rolled back (their bytes are not installed
//! again until an input changes); reloads not answered, owed and tried
//! again with backoff; rollbacks that failed, tried again until the refused
//! bytes are gone; and actions waiting out `min_interval`.

use tokio::time::Instant;

use super::actions::{self, GroupReport, InstalledOutput};
use super::{Loop, Mode};
use crate::action::Verdict;
use crate::config::ActionKind;
use crate::cycle::actions::Settled;
use crate::owed::{self, Owed};
use crate::write;

impl Loop {
    /// An action's run ended: count and log its verdict; after a rejection,
    /// remember the bytes the app refused (they were put back already).
    pub(super) fn on_verdict(&mut self, done: Result<GroupReport, tokio::task::JoinError>) {
        let report = match done {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "a reload run ended abnormally");
                // Which one is unknown: free them all, render again.
                for state in self.actions.states.values_mut() {
                    if state.busy && self.actions.verdicts.is_empty() {
                        state.busy = false;
                    }
                }
                self.mark_pending(false);
                return;
            }
        };
        let signal = self
            .config
            .actions
            .iter()
            .find(|a| a.name == report.action)
            .is_some_and(|a| matches!(a.kind, ActionKind::Signal { .. }));
        self.metrics.reload(&report.action, report.verdict.metric());
        let action = report.action.as_str();
        let took = report.took;
        match &report.verdict {
            // `reload` logged the signal, or why there was none.
            Verdict::Signalled(_) => {}
            Verdict::NoProcess(_) | Verdict::Failed(_) if signal => {}
            Verdict::Accepted(how) => {
                tracing::info!(action = %action, took_ms = crate::log::ms(took), how = %how, "reload accepted")
            }
            Verdict::NoProcess(why) => tracing::info!(
                action = %action,
                reason = %why,
                "no process to reload; it reads the new file when it starts"
            ),
            Verdict::Failed(why) => {
                tracing::warn!(action = %action, reason = %why, "reload failed")
            }
            Verdict::Rejected(why) => {
                tracing::warn!(action = %action, took_ms = crate::log::ms(took), reason = %why, "reload rejected by the app")
            }
        }
        for (out, undone) in &report.outputs {
            match undone {
                None => {}
                Some(Ok(())) => {
                    self.note_restored(out);
                    self.actions
                        .rejected
                        .insert(out.destination.clone(), out.bytes.clone());
                    // Counted as a rejected reload, not as a failed render:
                    // the render was fine, the app refused it.
                    tracing::warn!(
                        action = %action,
                        template = %out.template,
                        destination = %out.destination.display(),
                        rollback_ms = crate::log::ms(report.rollback.unwrap_or_default()),
                        restored = match out.previous { write::Previous::Absent => "removed (it did not exist before)", _ => "the previous file" },
                        "rolled back: the file on disk is again what the app runs; these bytes are not installed again until an input changes"
                    );
                }
                Some(Err(e)) => {
                    self.actions
                        .rejected
                        .insert(out.destination.clone(), out.bytes.clone());
                    let mut owed = Owed::new(out.clone(), Instant::now());
                    let delay = owed.failed(Instant::now(), e.clone(), owed::jitter());
                    tracing::error!(action = %action, template = %out.template, destination = %out.destination.display(), error = %e, retry_in_ms = crate::log::ms(delay), "could not roll back: the file on disk is not what the app runs; trying again until the refused bytes are gone");
                    // Unreadable before: nothing to put back, ever.
                    if self.mode == Mode::Run
                        && !matches!(out.previous, write::Previous::Unreadable(_))
                    {
                        self.actions.rollbacks.push(owed);
                    }
                }
            }
        }
        let settled = actions::settle(&report.verdict, signal, self.mode == Mode::Run);
        let Some(state) = self.actions.states.get_mut(&report.action) else {
            return;
        };
        state.busy = false;
        state.last_verdict = Some(match &report.verdict {
            Verdict::Signalled(pids) => format!("signalled: pid {}", crate::log::list(pids)),
            Verdict::Accepted(t)
            | Verdict::Rejected(t)
            | Verdict::NoProcess(t)
            | Verdict::Failed(t) => format!("{}: {t}", report.verdict.metric().as_str()),
        });
        let now = Instant::now();
        match settled {
            Settled::Pending(why) => {
                let outputs = report.outputs.into_iter().map(|(o, _)| o).collect();
                let owed = state.owed.get_or_insert_with(|| Owed::new(Vec::new(), now));
                owed.replace(outputs);
                let delay = owed.failed(now, why, owed::jitter());
                tracing::info!(action = %action, tries = owed.failures, owed_ms = crate::log::ms(now - owed.since), retry_in_ms = crate::log::ms(delay), "reload not answered; trying again (new bytes for it wait for that try)");
            }
            Settled::Done | Settled::Rejected => {
                if let Some(owed) = state.owed.take() {
                    tracing::info!(action = %action, tries = owed.failures + 1, owed_ms = crate::log::ms(now - owed.since), "reload answered after trying again");
                }
            }
        }
        if std::mem::take(&mut state.wanted) {
            self.mark_pending(false);
        }
        self.publish_status();
    }

    /// A destination holds its previous bytes again: what `/status` shows
    /// as installed.
    fn note_restored(&mut self, out: &InstalledOutput) {
        match &out.previous {
            write::Previous::File { bytes, .. } => {
                self.observed
                    .installed
                    .insert(out.destination.clone(), crate::status::sha256(bytes));
            }
            _ => {
                self.observed.installed.remove(&out.destination);
            }
        }
    }

    /// Puts back, once more, each output whose rollback failed and is due,
    /// until its refused bytes are gone from disk (put back, or replaced by
    /// a newer install).
    pub(super) fn retry_rollbacks(&mut self) {
        let now = Instant::now();
        let mut still = Vec::new();
        for mut owed in std::mem::take(&mut self.actions.rollbacks) {
            if !owed.is_due(now) {
                still.push(owed);
                continue;
            }
            let out = &owed.want;
            let on_disk = std::fs::read(&out.destination).ok();
            if on_disk.as_deref() != Some(out.bytes.as_slice()) {
                tracing::info!(template = %out.template, destination = %out.destination.display(), tries = owed.failures, "the refused bytes are gone: a newer file replaced them");
                continue;
            }
            match write::restore(&out.destination, &out.previous) {
                Ok(()) => {
                    self.note_restored(out);
                    tracing::warn!(template = %out.template, destination = %out.destination.display(), tries = owed.failures + 1, owed_ms = crate::log::ms(now - owed.since), "rolled back: the file on disk is again what the app runs");
                }
                Err(e) => {
                    let delay = owed.failed(now, e.to_string(), owed::jitter());
                    tracing::warn!(template = %owed.want.template, destination = %owed.want.destination.display(), error = %e, tries = owed.failures, retry_in_ms = crate::log::ms(delay), "could not roll back yet; trying again");
                    still.push(owed);
                }
            }
        }
        self.actions.rollbacks = still;
        self.publish_status();
    }

    /// The earliest end of an action's `min_interval` that outputs wait for.
    pub(super) fn action_retry(&self) -> Option<Instant> {
        self.actions
            .states
            .values()
            .flat_map(|s| [s.retry_at, s.owed_due()])
            .flatten()
            .min()
    }

    /// Renders again the outputs whose action's `min_interval` ended.
    pub(super) fn retry_actions(&mut self) {
        let now = Instant::now();
        let mut due = false;
        for state in self.actions.states.values_mut() {
            if state.retry_at.is_some_and(|at| at <= now) {
                state.retry_at = None;
                due = true;
            }
            if state.owed_due().is_some_and(|at| at <= now) {
                due = true;
            }
        }
        if due {
            self.mark_pending(true);
        }
    }
}
