//! What a re-read config changes against the running one: which settings
//! need a restart of peerplate (identity, `http.listen`: the running ones
//! stay), whether anything changed at all, which workers restart (the peer
//! source, the leader worker, the hooks), what the templates that stay
//! carry over, and which action states survive. Plain data and a pure
//! function; the live-config code applies what it returns.

use std::path::PathBuf;

use crate::config::Config;

/// The difference between the running config and a re-read one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConfigDiff {
    /// The identity changed: that needs a restart; the running one stays.
    pub identity_kept: bool,
    /// `http.listen` changed: that needs a restart; the running one stays.
    pub http_kept: bool,
    /// Nothing else changed either.
    pub unchanged: bool,
    /// The peer source or the nameservers changed: its worker restarts.
    pub peers: bool,
    /// The leader settings changed: the leader worker restarts, and the
    /// leader is chosen anew.
    pub leader: bool,
    /// The hooks changed: their queues restart.
    pub hooks: bool,
    /// Per template of the new config: whether it has rendered and installed
    /// once already (the same destination did under the old config).
    pub succeeded: Vec<bool>,
    /// The old config's destinations: those no template produces any more
    /// are named (or pruned).
    pub old_destinations: Vec<PathBuf>,
    /// The new config's action names: an action state is kept when its
    /// action stays (or while a run of it is in flight).
    pub actions: Vec<String>,
}

impl ConfigDiff {
    /// Whether the state of action `name` survives (`busy`: a run of it is
    /// in flight and its verdict still comes back).
    pub(super) fn keeps_action(&self, name: &str, busy: bool) -> bool {
        busy || self.actions.iter().any(|a| a == name)
    }
}

/// Compares `new` with the running `old`. What needs a restart is put back
/// to the running value in `new` (so it does not count as a change), then
/// the rest is compared. `succeeded` is per template of `old`.
pub(super) fn diff(old: &Config, new: &mut Config, succeeded: &[bool]) -> ConfigDiff {
    let identity_kept = new.identity != old.identity;
    if identity_kept {
        new.identity = old.identity.clone();
        new.pod_fqdn = old.pod_fqdn.clone();
    }
    let http_kept = new.http != old.http;
    if http_kept {
        new.http = old.http.clone();
    }
    ConfigDiff {
        identity_kept,
        http_kept,
        unchanged: *new == *old,
        peers: new.peers != old.peers || new.nameservers != old.nameservers,
        leader: new.leader != old.leader,
        hooks: new.hooks != old.hooks,
        succeeded: new
            .templates
            .iter()
            .map(|t| {
                old.templates
                    .iter()
                    .position(|o| o.destination == t.destination)
                    .is_some_and(|k| succeeded.get(k).copied().unwrap_or(false))
            })
            .collect(),
        old_destinations: old
            .templates
            .iter()
            .map(|t| t.destination.clone())
            .collect(),
        actions: new.actions.iter().map(|a| a.name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Env, ResolvConf};

    fn config(text: &str) -> Config {
        let env = Env {
            hostname: Some("web-1".into()),
            namespace: "default".into(),
            resolv: ResolvConf::parse("nameserver 10.96.0.10\n"),
            hosts: String::new(),
        };
        match Config::parse(text, Path::new("/etc/peerplate/peerplate.yaml"), &env) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    const BASE: &str = "identity: {hostname: web-1}\npeers:\n  static: [web-0, web-1]\ntemplates:\n  - {source: a.j2, destination: /out/a.conf}\n  - {source: b.j2, destination: /out/b.conf}\nreload: {signal: HUP, process: nginx}\n";

    #[test]
    fn the_same_config_changes_nothing() {
        let old = config(BASE);
        let mut new = config(BASE);
        let d = diff(&old, &mut new, &[true, false]);
        assert!(d.unchanged && !d.peers && !d.leader && !d.hooks);
        assert!(!d.identity_kept && !d.http_kept);
        assert_eq!(d.succeeded, [true, false]);
    }

    #[test]
    fn identity_and_listen_need_a_restart_and_are_not_a_change() {
        let old = config(BASE);
        let mut new = config(&format!(
            "{}http: {{listen: '127.0.0.1:9090'}}\n",
            BASE.replace("hostname: web-1", "hostname: web-2")
        ));
        let d = diff(&old, &mut new, &[false, false]);
        assert!(d.identity_kept && d.http_kept);
        assert!(d.unchanged, "{d:?}");
        assert_eq!(new.identity, old.identity);
        assert_eq!(new.http, old.http);
    }

    #[test]
    fn a_new_peer_source_restarts_only_the_peer_worker() {
        let old = config(BASE);
        let mut new = config(&BASE.replace("[web-0, web-1]", "[web-0, web-1, web-2]"));
        let d = diff(&old, &mut new, &[true, true]);
        assert!(!d.unchanged && d.peers && !d.leader && !d.hooks);
    }

    #[test]
    fn templates_that_stay_keep_whether_they_rendered_and_removed_ones_are_named() {
        let old = config(BASE);
        let mut new = config(
            "identity: {hostname: web-1}\npeers:\n  static: [web-0, web-1]\ntemplates:\n  - {source: c.j2, destination: /out/c.conf}\n  - {source: b.j2, destination: /out/b.conf}\nhooks: {on_change: 'true'}\n",
        );
        let d = diff(&old, &mut new, &[true, true]);
        assert!(!d.unchanged && d.hooks && !d.peers);
        // c is new; b rendered under the old config.
        assert_eq!(d.succeeded, [false, true]);
        assert_eq!(
            d.old_destinations,
            [PathBuf::from("/out/a.conf"), PathBuf::from("/out/b.conf")]
        );
        // The reload action left the config: its state goes unless a run
        // of it is still in flight.
        assert!(d.actions.is_empty());
        assert!(!d.keeps_action("default", false));
        assert!(d.keeps_action("default", true));
    }
}
