//! `once` (the init container): one round of asking for the leader before
//! the render, then the exit status from the outcomes and the hooks, which
//! must succeed too.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CycleError, Loop, Outcome};
use crate::action::Verdict;
use crate::error::Error;
use crate::event::Event;
use crate::hooks;
use crate::leader;
use crate::metrics;

impl Loop {
    /// `once` with `sticky` or `probe`: one round of asking (bounded by the
    /// policy's timeout) before the render, so an init container follows
    /// the leader its peers chose.
    pub(super) async fn ask_leader_once(&mut self) {
        let view = leader::View {
            peers: self.view.peers.clone().unwrap_or_default(),
            leader: None,
            ask_now: 0,
            confirmed: false,
        };
        self.leader.asked_once = true;
        match leader::ask_once(&self.config.leader, &self.me, &view).await {
            Some(Event::LeaderHint(hint)) => {
                if hint.unanswered > 0 {
                    self.metrics.leader_unanswered();
                }
                let change = self
                    .leader
                    .leadership
                    .hint(&hint, &view.peers, Instant::now());
                self.apply_leader(change);
            }
            Some(Event::Probed(round)) => {
                let change = self
                    .leader
                    .leadership
                    .probed(&round, &view.peers, Instant::now());
                self.apply_leader(change);
            }
            // Nobody to ask (no http.listen): the rule from the set.
            _ => self.decide_leader(),
        }
    }

    /// `once`: the exit status from the pass's outcomes, then the bootstrap
    /// hook and `on_leader_change`, which must succeed too.
    pub(super) async fn finish_once(
        &mut self,
        outcomes: Vec<Outcome>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        if let Some(failed) = outcomes.into_iter().find_map(|o| match o.result {
            Err(CycleError::Render(e)) => Some(Error::Template(e)),
            // The check's output is in the warning just logged: once is enough.
            Err(CycleError::Check(_)) => Some(Error::Incomplete(format!(
                "{}: not installed, its check failed (the check's output is in the warning above)",
                o.template
            ))),
            Err(e) => Some(Error::Incomplete(format!("{}: {e}", o.template))),
            Ok(_) => None,
        }) {
            return Err(failed);
        }
        // The verdicts of the actions this pass started.
        let mut rejected = Vec::new();
        while !self.actions.verdicts.is_empty() {
            let done = tokio::select! {
                _ = shutdown.cancelled() => return self.interrupted(),
                Some(done) = self.actions.verdicts.join_next() => done,
            };
            if let Ok(report) = &done {
                if let Verdict::Rejected(why) = &report.verdict {
                    rejected.push(format!("reload action {} rejected: {why}", report.action));
                }
            }
            self.on_verdict(done);
        }
        if !rejected.is_empty() {
            return Err(Error::Incomplete(rejected.join("; ")));
        }
        let peers = self.view.peers.clone().unwrap_or_default();
        let Some(hooks) = self.config.hooks.clone() else {
            return Ok(());
        };
        let mut runs: Vec<(&str, &String, String)> = Vec::new();
        if self.me.is_in(&peers) {
            match (&hooks.on_start, &hooks.on_change) {
                (Some(c), _) => runs.push(("on_start", c, hooks::stdin_text(&peers))),
                (None, Some(c)) => runs.push(("on_change", c, hooks::stdin_text(&peers))),
                (None, None) => {}
            }
        }
        if let Some(c) = &hooks.on_leader_change {
            let leader = self.leader.leadership.current().map(|l| l.fqdn.clone());
            runs.push((
                "on_leader_change",
                c,
                format!("{}\n", leader.unwrap_or_default()),
            ));
        }
        for (which, command, stdin) in runs {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return self.interrupted(),
                result = hooks::run_with_stdin(which, command, stdin, hooks.timeout) => result,
            };
            self.metrics.hook(
                which,
                result
                    .as_ref()
                    .map_or_else(hooks::HookError::metric, |()| metrics::Hook::Ok),
            );
            result.map_err(|e| Error::Incomplete(format!("hooks.{which}: {e}")))?;
        }
        Ok(())
    }
}
