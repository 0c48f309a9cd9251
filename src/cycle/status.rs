//! The loop's side of `/status`: what each template should hold (the hash
//! of its last render) against what is installed, and every item owed,
//! published to the admin state after each change; the pending gauge by
//! kind; one log line when an item has been pending past
//! [`OVERDUE`] (and one when it converges, logged where it converges).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::outcome::{Installed, Outcome};
use super::Loop;
use crate::config::Config;
use crate::metrics::Pending;
use crate::status::{Owing, Status, TemplateStatus};

/// What each output should hold against what it holds, as plain data.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// What each template should hold: the SHA-256 of its last render.
    pub desired: Vec<Option<String>>,
    /// What peerplate installed (or found equal) at each destination.
    pub installed: HashMap<PathBuf, String>,
    /// Each template's last error (render, check, install).
    pub last_errors: Vec<Option<String>>,
    /// Destinations changed by someone else since peerplate installed them
    /// (logged once; left alone until their render changes).
    pub drifted: HashSet<PathBuf>,
    /// Items already logged as pending past [`OVERDUE`].
    pub overdue_logged: HashSet<String>,
}

/// An item pending this long is logged once, as a warning.
pub(super) const OVERDUE: Duration = Duration::from_secs(60);

impl Loop {
    /// Notes what a pass observed: each template's desired hash, what is
    /// installed now, its last error.
    pub(super) fn observe(
        &mut self,
        config: &Config,
        outcomes: &[Outcome],
        desired: Vec<Option<String>>,
    ) {
        self.observed.last_errors = outcomes
            .iter()
            .map(|o| o.result.as_ref().err().map(|e| e.to_string()))
            .collect();
        for ((template, outcome), hash) in config.templates.iter().zip(outcomes).zip(&desired) {
            if let (Ok(Installed::Changed | Installed::Unchanged), Some(hash), false) =
                (&outcome.result, hash, template.create_only)
            {
                self.observed
                    .installed
                    .insert(template.destination.clone(), hash.clone());
            }
        }
        self.observed.desired = desired;
        self.publish_status();
    }

    /// Publishes what the loop knows now to `/status` and the pending gauge,
    /// and logs items pending past [`OVERDUE`] (once each).
    pub(super) fn publish_status(&mut self) {
        let now = Instant::now();
        let mut templates = Vec::with_capacity(self.config.templates.len());
        for (i, template) in self.config.templates.iter().enumerate() {
            let action = template.reload.and_then(|k| self.config.actions.get(k));
            let state = action.and_then(|a| self.actions.states.get(&a.name));
            let pending = match (action, state) {
                (Some(a), Some(s)) => s
                    .owed
                    .as_ref()
                    .map(|o| Owing::of(format!("reload {}", a.name), o, now)),
                _ => None,
            };
            // A rollback owed for its destination is what it waits for.
            let pending = pending.or_else(|| {
                self.actions
                    .rollbacks
                    .iter()
                    .find(|o| o.want.destination == template.destination)
                    .map(|o| {
                        let what = format!("roll back {}", o.want.destination.display());
                        Owing::of(what, o, now)
                    })
            });
            templates.push(TemplateStatus {
                template: self.templates.renderer.name(i).to_string(),
                destination: template.destination.display().to_string(),
                desired_sha256: self.observed.desired.get(i).cloned().flatten(),
                installed_sha256: self.observed.installed.get(&template.destination).cloned(),
                action: action.map(|a| a.name.clone()),
                verdict: state.and_then(|s| s.last_verdict.clone()),
                pending,
                last_error: self.observed.last_errors.get(i).cloned().flatten().or_else(|| {
                    self.observed.drifted.contains(&template.destination).then(|| {
                        "changed on disk by someone else since peerplate installed it; left alone until its render changes".to_string()
                    })
                }),
            });
        }
        let rollbacks: Vec<Owing> = self
            .actions
            .rollbacks
            .iter()
            .map(|o| {
                let what = format!("roll back {}", o.want.destination.display());
                Owing::of(what, o, now)
            })
            .collect();
        let config = self
            .config_owed
            .as_ref()
            .map(|o| Owing::of(format!("load {}", self.config.path.display()), o, now));
        let reloads = self
            .actions
            .states
            .values()
            .filter(|s| s.owed.is_some())
            .count();
        self.metrics.pending(Pending::Reload, reloads);
        self.metrics.pending(Pending::Rollback, rollbacks.len());
        self.metrics
            .pending(Pending::Config, usize::from(config.is_some()));
        self.metrics
            .pending(Pending::Install, usize::from(self.retry.is_some()));
        self.log_overdue(now);
        let status = Status {
            converged: false,
            templates,
            hooks: Vec::new(),
            rollbacks,
            config,
            peers: self
                .view
                .peers
                .as_ref()
                .map(|p| p.names().iter().map(|n| n.to_string()).collect())
                .unwrap_or_default(),
            leader: self.leader.leadership.current().map(|l| l.fqdn.clone()),
        };
        self.state.set_status(status);
    }

    /// One warning per item pending past [`OVERDUE`].
    fn log_overdue(&mut self, now: Instant) {
        let mut overdue: Vec<(String, Duration, Option<String>)> = Vec::new();
        for (name, state) in &self.actions.states {
            if let Some(o) = &state.owed {
                overdue.push((
                    format!("reload {name}"),
                    now - o.since,
                    o.last_error.clone(),
                ));
            }
        }
        for o in &self.actions.rollbacks {
            overdue.push((
                format!("roll back {}", o.want.destination.display()),
                now - o.since,
                o.last_error.clone(),
            ));
        }
        if let Some(o) = &self.config_owed {
            overdue.push((
                "load the config file".into(),
                now - o.since,
                o.last_error.clone(),
            ));
        }
        let still: HashSet<String> = overdue.iter().map(|(w, _, _)| w.clone()).collect();
        self.observed.overdue_logged.retain(|w| still.contains(w));
        for (what, age, error) in overdue {
            if age >= OVERDUE && self.observed.overdue_logged.insert(what.clone()) {
                tracing::warn!(item = %what, pending_ms = crate::log::ms(age), last_error = error.as_deref().unwrap_or(""), "still pending; trying again with backoff (peerplate status shows what is owed)");
            }
        }
    }
}
