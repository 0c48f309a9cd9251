//! Live configuration: a changed `peerplate.yaml` (watched, or SIGHUP) is
//! validated whole; a valid one takes effect at the next pass and restarts
//! only the workers whose settings changed; an invalid one is logged and
//! counted, the running config stays, and the file is read again with
//! backoff until it loads (a template it names may arrive a moment later).

use std::sync::Arc;

use tokio::time::Instant;

use super::diff;
use super::{action_names, base_dir, hook_names, Loop, Mode, Workers};
use crate::config::{Config, PeerSource, Policy};
use crate::leader::Leadership;
use crate::metrics;
use crate::owed::{self, Owed};
use crate::render::Renderer;

impl Loop {
    /// Re-reads the config file. A valid, changed one replaces the running
    /// config (the workers whose settings changed are restarted) and is
    /// rendered at the next pass; an invalid one is logged and counted, and
    /// the running config stays. True if it changed.
    pub(super) fn reload_config(&mut self, workers: &mut Workers) -> bool {
        self.read_config(workers, false)
    }

    /// The backoff's next read of a config that did not load; a changed
    /// one is rendered at the next pass.
    pub(super) fn retry_config(&mut self, workers: &mut Workers) {
        if self.read_config(workers, true) {
            self.mark_pending(false);
        }
        self.publish_status();
    }

    /// [`Loop::reload_config`]; `retry` is a backoff's read (a failure
    /// with the same error is neither logged above debug nor counted again).
    fn read_config(&mut self, workers: &mut Workers, retry: bool) -> bool {
        let path = self.config.path.clone();
        if path.as_os_str().is_empty() {
            return false;
        }
        let mut new = match Config::load(&path, true) {
            Ok(new) => new,
            Err(e) => {
                self.config_invalid(e.to_string(), "the new config is invalid; the running config stays; reading it again with backoff until it loads", retry);
                return false;
            }
        };
        if let Some(refused) = new.run_refuses.first() {
            tracing::error!(config = %path.display(), error = %refused, "the new config is invalid; the running config stays");
            self.metrics.config_reload(metrics::ConfigReload::Invalid);
            return false;
        }
        let old = Arc::clone(&self.config);
        let diff = diff::diff(&old, &mut new, &self.succeeded);
        // What needs a restart is logged and otherwise ignored.
        if diff.identity_kept {
            tracing::warn!(config = %path.display(), "identity changed: that needs a restart of peerplate; the running identity stays");
        }
        if diff.http_kept {
            tracing::warn!(config = %path.display(), "http.listen changed: that needs a restart of peerplate; the admin server stays where it is");
        }
        if diff.unchanged {
            self.config_converged();
            self.metrics.config_reload(metrics::ConfigReload::Unchanged);
            return false;
        }
        let renderer = Renderer::load(&new).with_base(&base_dir(&new));
        let errors: Vec<String> = renderer.errors().iter().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            self.config_invalid(errors.join("; "), "the new config's templates do not compile; the running config stays; reading it again with backoff until it loads", retry);
            return false;
        }
        if let Policy::Sticky { port: 0, .. } = new.leader.policy {
            self.config_invalid(String::new(), "leader.policy sticky asks the peers who leads on their admin port; set http.listen (which needs a restart); the running config stays", retry);
            return false;
        }
        // Valid: it takes effect now.
        self.config_converged();
        let names: Vec<String> = (0..new.templates.len())
            .map(|i| renderer.name(i).to_string())
            .collect();
        self.metrics.expect(
            &names,
            matches!(new.peers.source, PeerSource::Dns(_)),
            &action_names(&new),
            &hook_names(&new),
        );
        // Removed templates are forgotten (their files stay); the others
        // keep whether they have rendered once.
        self.succeeded = diff.succeeded.clone();
        self.actions
            .states
            .retain(|name, state| diff.keeps_action(name, state.busy));
        self.actions.rejected.clear();
        self.templates.renderer = Arc::new(renderer);
        self.templates.dirty = false;
        self.templates.inputs.clear();
        self.config = Arc::new(new);
        // Outputs of the templates that left the config: named, or pruned.
        crate::prune::sweep(&self.config, &diff.old_destinations);
        tracing::info!(config = %path.display(), templates = self.config.templates.len(), actions = %crate::log::list(action_names(&self.config)), "config reloaded");
        self.metrics.config_reload(metrics::ConfigReload::Applied);
        self.update_watched();
        if let Some(ctx) = self.supervisor.ctx.clone() {
            if diff.peers {
                if let Err(e) = self.start_peers(workers, &ctx) {
                    tracing::error!(error = %e, "the new peer source could not start; /healthz now fails so the container is restarted");
                    self.state
                        .set_broken(format!("the new peer source could not start: {e}"));
                }
            }
            if diff.leader {
                self.leader.leadership = Leadership::new(self.config.leader.clone());
                self.leader.awaiting =
                    self.mode == Mode::Run && self.config.leader.policy != Policy::Ordinal;
                self.state.set_leader(
                    None,
                    self.leader.leadership.policy(),
                    self.leader.leadership.since(),
                );
                if let Err(e) = self.start_leader(workers, &ctx) {
                    tracing::error!(error = %e, "the new leader worker could not start; /healthz now fails so the container is restarted");
                    self.state
                        .set_broken(format!("the leader worker could not start: {e}"));
                }
                if !self.leader.awaiting {
                    self.decide_leader();
                }
            }
            if diff.hooks {
                self.start_hooks(workers, &ctx);
            }
        }
        true
    }

    /// A changed config did not load: logged (once per distinct error, at
    /// debug after that) and counted, and read again with backoff, so a
    /// config that names a template still on its way converges when it
    /// arrives, without SIGHUP.
    fn config_invalid(&mut self, error: String, message: &'static str, retry: bool) {
        let now = Instant::now();
        let path = self.config.path.display().to_string();
        if self.mode != Mode::Run {
            self.metrics.config_reload(metrics::ConfigReload::Invalid);
            tracing::error!(config = %path, error = %error, "{message}");
            return;
        }
        let owed = self.config_owed.get_or_insert_with(|| Owed::new((), now));
        let repeated = retry && owed.last_error.as_deref() == Some(error.as_str());
        let delay = owed.failed(now, error.clone(), owed::jitter());
        if repeated {
            tracing::debug!(config = %path, error = %error, retry_in_ms = crate::log::ms(delay), "{message}");
        } else {
            self.metrics.config_reload(metrics::ConfigReload::Invalid);
            tracing::error!(config = %path, error = %error, "{message}");
        }
    }

    /// The config file loaded (or is the running one again): nothing owed.
    fn config_converged(&mut self) {
        if let Some(owed) = self.config_owed.take() {
            tracing::info!(config = %self.config.path.display(), tries = owed.failures + 1, owed_ms = crate::log::ms(owed.since.elapsed()), "the config file loads now");
        }
    }
}
