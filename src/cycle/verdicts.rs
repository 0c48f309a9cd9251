//! What comes back from the reload actions: an accepted reload, or a
//! rejection whose outputs were rolled back (their bytes are not installed
//! again until an input changes); and actions waiting out `min_interval`.

use super::*;

impl Loop {
    /// An action's run ended: count and log its verdict; after a rejection,
    /// remember the bytes the app refused (they were put back already).
    pub(super) fn on_verdict(&mut self, done: Result<GroupReport, tokio::task::JoinError>) {
        let report = match done {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "a reload run ended abnormally");
                // Which one is unknown: free them all, render again.
                for state in self.action_states.values_mut() {
                    if state.busy && self.verdicts.is_empty() {
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
                    self.rejected
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
                    self.rejected
                        .insert(out.destination.clone(), out.bytes.clone());
                    tracing::error!(action = %action, template = %out.template, destination = %out.destination.display(), error = %e, "could not roll back: the file on disk is not what the app runs");
                }
            }
        }
        if let Some(state) = self.action_states.get_mut(&report.action) {
            state.busy = false;
            if std::mem::take(&mut state.wanted) {
                self.mark_pending(false);
            }
        }
    }

    /// The earliest end of an action's `min_interval` that outputs wait for.
    pub(super) fn action_retry(&self) -> Option<Instant> {
        self.action_states.values().filter_map(|s| s.retry_at).min()
    }

    /// Renders again the outputs whose action's `min_interval` ended.
    pub(super) fn retry_actions(&mut self) {
        let now = Instant::now();
        let mut due = false;
        for state in self.action_states.values_mut() {
            if state.retry_at.is_some_and(|at| at <= now) {
                state.retry_at = None;
                due = true;
            }
        }
        if due {
            self.mark_pending(true);
        }
    }
}
