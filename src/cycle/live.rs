//! Live configuration: a changed `peerplate.yaml` (watched, or SIGHUP) is
//! validated whole; a valid one takes effect at the next pass and restarts
//! only the workers whose settings changed; an invalid one is logged and
//! counted, and the running config stays.

use super::*;

impl Loop {
    /// Re-reads the config file. A valid, changed one replaces the running
    /// config (the workers whose settings changed are restarted) and is
    /// rendered at the next pass; an invalid one is logged and counted, and
    /// the running config stays. True if it changed.
    pub(super) fn reload_config(&mut self, workers: &mut Workers) -> bool {
        let path = self.config.path.clone();
        if path.as_os_str().is_empty() {
            return false;
        }
        let mut new = match Config::load(&path, true) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(config = %path.display(), error = %e, "the new config is invalid; the running config stays");
                self.metrics.config_reload(metrics::ConfigReload::Invalid);
                return false;
            }
        };
        if let Some(refused) = new.run_refuses.first() {
            tracing::error!(config = %path.display(), error = %refused, "the new config is invalid; the running config stays");
            self.metrics.config_reload(metrics::ConfigReload::Invalid);
            return false;
        }
        let old = Arc::clone(&self.config);
        // What needs a restart is logged and otherwise ignored.
        if new.identity != old.identity {
            tracing::warn!(config = %path.display(), "identity changed: that needs a restart of peerplate; the running identity stays");
            new.identity = old.identity.clone();
            new.pod_fqdn = old.pod_fqdn.clone();
        }
        if new.http != old.http {
            tracing::warn!(config = %path.display(), "http.listen changed: that needs a restart of peerplate; the admin server stays where it is");
            new.http = old.http.clone();
        }
        if new == *old {
            self.metrics.config_reload(metrics::ConfigReload::Unchanged);
            return false;
        }
        let renderer = Renderer::load(&new).with_base(&base_dir(&new));
        let errors: Vec<String> = renderer.errors().iter().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            tracing::error!(config = %path.display(), error = %errors.join("; "), "the new config's templates do not compile; the running config stays");
            self.metrics.config_reload(metrics::ConfigReload::Invalid);
            return false;
        }
        if let Policy::Sticky { port: 0, .. } = new.leader.policy {
            tracing::error!(config = %path.display(), "leader.policy sticky asks the peers who leads on their admin port; set http.listen (which needs a restart); the running config stays");
            self.metrics.config_reload(metrics::ConfigReload::Invalid);
            return false;
        }
        // Valid: it takes effect now.
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
        self.succeeded = new
            .templates
            .iter()
            .map(|t| {
                old.templates
                    .iter()
                    .position(|o| o.destination == t.destination)
                    .is_some_and(|k| self.succeeded.get(k).copied().unwrap_or(false))
            })
            .collect();
        self.action_states
            .retain(|name, state| state.busy || new.actions.iter().any(|a| a.name == *name));
        self.rejected.clear();
        self.renderer = Arc::new(renderer);
        self.templates_dirty = false;
        self.inputs.clear();
        let peers_changed = new.peers != old.peers || new.nameservers != old.nameservers;
        let leader_changed = new.leader != old.leader;
        let hooks_changed = new.hooks != old.hooks;
        self.config = Arc::new(new);
        tracing::info!(config = %path.display(), templates = self.config.templates.len(), actions = %crate::log::list(action_names(&self.config)), "config reloaded");
        self.metrics.config_reload(metrics::ConfigReload::Applied);
        self.update_watched();
        if let Some(ctx) = self.ctx.clone() {
            if peers_changed {
                if let Err(e) = self.start_peers(workers, &ctx) {
                    tracing::error!(error = %e, "the new peer source could not start; /healthz now fails so the container is restarted");
                    self.state
                        .set_broken(format!("the new peer source could not start: {e}"));
                }
            }
            if leader_changed {
                self.leadership = Leadership::new(self.config.leader.clone());
                self.awaiting_leader =
                    self.mode == Mode::Run && self.config.leader.policy != Policy::Ordinal;
                self.state
                    .set_leader(None, self.leadership.policy(), self.leadership.since());
                if let Err(e) = self.start_leader(workers, &ctx) {
                    tracing::error!(error = %e, "the new leader worker could not start; /healthz now fails so the container is restarted");
                    self.state
                        .set_broken(format!("the leader worker could not start: {e}"));
                }
                if !self.awaiting_leader {
                    self.decide_leader();
                }
            }
            if hooks_changed {
                self.start_hooks(workers, &ctx);
            }
        }
        true
    }
}
