//! The metrics peerplate exports, in one registry (prometheus-client).
//!
//! Label values come from enums written the way Prometheus queries expect
//! them (lower_snake_case), so a typo cannot invent a new series, and every
//! series a config can produce exists at zero from the start
//! ([`Metrics::expect`]) so `increase()` sees the first failure after a
//! restart. The HTTP side lives in `admin`; the outcomes that become labels
//! say which label they are where they are defined.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label values, written the way Prometheus queries expect them
/// (lower_snake_case), from enums so a typo cannot invent a new series.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

label_values!(
    /// How a DNS poll went.
    Lookup { Answer => "answer", Failure => "failure" }
);
label_values!(
    /// How a template's render and install went.
    Render { Changed => "changed", Unchanged => "unchanged", Failed => "failed" }
);
label_values!(
    /// How a reload action went: `signalled` (sent, not verified),
    /// `accepted` / `rejected` (the app's verdict), `no_process` (nothing
    /// answered), `failed` (peerplate could not do it).
    Reload {
        Signalled => "signalled",
        Accepted => "accepted",
        Rejected => "rejected",
        NoProcess => "no_process",
        Failed => "failed",
    }
);
label_values!(
    /// How a re-read of the config file went.
    ConfigReload { Applied => "applied", Unchanged => "unchanged", Invalid => "invalid" }
);
label_values!(
    /// Why a peer set was held back instead of rendered.
    Held { SelfMissing => "self_missing", TooFew => "too_few" }
);
label_values!(
    /// What kind of error a worker reported while running
    /// ([`crate::event::SourceError`]).
    SourceErrorKind {
        Watch => "watch",
        PeerFile => "peer_file",
        Lookup => "lookup",
        Setup => "setup",
        Ended => "ended",
    }
);
label_values!(
    /// What kind of item is owed and not done yet (`/status` lists them).
    Pending {
        Reload => "reload",
        Hook => "hook",
        Rollback => "rollback",
        Config => "config",
        Install => "install",
    }
);
label_values!(
    /// How a hook run went.
    Hook { Ok => "ok", Failed => "failed", Timeout => "timeout" }
);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenderLabels {
    template: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabels {
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    action: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeldLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Every series peerplate exports. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    peers: Gauge,
    lookups: Family<LookupLabels, Counter>,
    renders: Family<RenderLabels, Counter>,
    checks_failed: Family<TemplateLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    hooks: Family<HookLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    workers_ended: Family<WorkerLabels, Counter>,
    source_errors: Family<KindLabels, Counter>,
    is_leader: Gauge,
    leader_changes: Counter,
    held: Family<HeldLabels, Counter>,
    resignations_ignored: Counter,
    leader_unanswered: Counter,
    leader_claimants: Gauge,
    leader_unconfirmed_since: Gauge<f64, AtomicU64>,
    pending: Family<KindLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("peerplate");
        let peers = Gauge::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let renders = Family::<RenderLabels, Counter>::default();
        let checks_failed = Family::<TemplateLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let hooks = Family::<HookLabels, Counter>::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        let workers_ended = Family::<WorkerLabels, Counter>::default();
        let source_errors = Family::<KindLabels, Counter>::default();
        let is_leader = Gauge::default();
        let leader_changes = Counter::default();
        let held = Family::<HeldLabels, Counter>::default();
        let resignations_ignored = Counter::default();
        let leader_unanswered = Counter::default();
        let leader_claimants = Gauge::default();
        let leader_unconfirmed_since = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "leader_resignations_ignored",
            "Resignation notices (POST /leader/resign) not acted on: malformed, too large, not naming this pod's leader, or not confirmed by that leader",
            resignations_ignored.clone(),
        );
        registry.register(
            "leader_unanswered",
            "Rounds of asking the peers who leads (GET /leader) in which no ready peer answered",
            leader_unanswered.clone(),
        );
        registry.register(
            "leader_claimants",
            "probe: how many peers answered 2xx at the last round",
            leader_claimants.clone(),
        );
        registry.register(
            "leader_unconfirmed_since_timestamp_seconds",
            "probe: Unix time since which the leader no longer answers 2xx (0 while it does)",
            leader_unconfirmed_since.clone(),
        );
        registry.register(
            "is_leader",
            "1 while this pod is the leader it has chosen, else 0",
            is_leader.clone(),
        );
        registry.register(
            "leader_changes",
            "Changes of the chosen leader (the first choice counts)",
            leader_changes.clone(),
        );
        registry.register(
            "peer_sets_held",
            "Peer sets not rendered because they were partial, by reason",
            held.clone(),
        );
        for reason in Held::ALL {
            let _ = held.get_or_create(&HeldLabels {
                reason: reason.as_str(),
            });
        }
        let pending = Family::<KindLabels, Gauge>::default();
        registry.register(
            "pending_items",
            "Items owed and not done yet (tried again with backoff), by kind",
            pending.clone(),
        );
        for kind in Pending::ALL {
            let _ = pending.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
        }
        registry.register("peers", "Peers in the current peer set", peers.clone());
        registry.register("dns_lookups", "DNS SRV lookups, by result", lookups.clone());
        registry.register(
            "renders",
            "Template renders, by template and result",
            renders.clone(),
        );
        registry.register(
            "checks_failed",
            "Outputs that failed their check, by template",
            checks_failed.clone(),
        );
        registry.register(
            "reloads",
            "Reload actions run, by action and result",
            reloads.clone(),
        );
        registry.register(
            "config_reloads",
            "Re-reads of the config file (changed on disk or SIGHUP), by result",
            config_reloads.clone(),
        );
        for result in ConfigReload::ALL {
            let _ = config_reloads.get_or_create(&ResultLabels {
                result: result.as_str(),
            });
        }
        registry.register("hook_runs", "Hook runs, by hook and result", hooks.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last cycle in which every template rendered and installed",
            last_success.clone(),
        );
        registry.register(
            "workers_ended",
            "Workers (peer sources, watchers) that stopped while the loop ran, by worker",
            workers_ended.clone(),
        );
        registry.register(
            "source_errors",
            "Errors the workers reported while running, by kind",
            source_errors.clone(),
        );
        for kind in SourceErrorKind::ALL {
            let _ = source_errors.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
        }
        registry.register("build_info", "peerplate's version", build.clone());
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        Metrics {
            registry,
            peers,
            lookups,
            renders,
            checks_failed,
            reloads,
            config_reloads,
            hooks,
            last_success,
            workers_ended,
            source_errors,
            is_leader,
            leader_changes,
            held,
            resignations_ignored,
            leader_unanswered,
            leader_claimants,
            leader_unconfirmed_since,
            pending,
        }
    }

    /// How many items of `kind` are owed now.
    pub fn pending(&self, kind: Pending, count: usize) {
        self.pending
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn peers(&self, count: usize) {
        self.peers.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Creates every series the config can produce, at zero, so that
    /// `increase()` sees the first failure after a restart and dashboards
    /// show 0 rather than "no data".
    pub fn expect(&self, templates: &[String], dns: bool, actions: &[&str], hooks: &[&str]) {
        for template in templates {
            for result in Render::ALL {
                let _ = self
                    .renders
                    .get_or_create(&render_labels(template, *result));
            }
            let _ = self.checks_failed.get_or_create(&TemplateLabels {
                template: template.clone(),
            });
        }
        if dns {
            for result in Lookup::ALL {
                let _ = self.lookups.get_or_create(&LookupLabels {
                    result: result.as_str(),
                });
            }
        }
        for action in actions {
            for result in Reload::ALL {
                let _ = self.reloads.get_or_create(&ReloadLabels {
                    action: (*action).to_string(),
                    result: result.as_str(),
                });
            }
        }
        for hook in hooks {
            for result in Hook::ALL {
                let _ = self.hooks.get_or_create(&hook_labels(hook, *result));
            }
        }
    }

    /// The counter of DNS lookups with `result`, to keep: a clone shares
    /// the family's counter, so the poll loop increments it without the
    /// family's lock and label hash every interval.
    pub fn lookup_counter(&self, result: Lookup) -> Counter {
        self.lookups
            .get_or_create(&LookupLabels {
                result: result.as_str(),
            })
            .clone()
    }

    pub fn render(&self, template: &str, result: Render) {
        self.renders
            .get_or_create(&render_labels(template, result))
            .inc();
    }

    pub fn check_failed(&self, template: &str) {
        self.checks_failed
            .get_or_create(&TemplateLabels {
                template: template.into(),
            })
            .inc();
    }

    /// An action ran (`action` is its name, `default` for `reload:`).
    pub fn reload(&self, action: &str, result: Reload) {
        self.reloads
            .get_or_create(&ReloadLabels {
                action: action.to_string(),
                result: result.as_str(),
            })
            .inc();
    }

    /// The config file was re-read.
    pub fn config_reload(&self, result: ConfigReload) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn hook(&self, hook: &str, result: Hook) {
        self.hooks.get_or_create(&hook_labels(hook, result)).inc();
    }

    /// Creates the `workers_ended` series of each worker at zero.
    pub fn expect_workers(&self, workers: &[&str]) {
        for worker in workers {
            let _ = self.workers_ended.get_or_create(&WorkerLabels {
                worker: (*worker).into(),
            });
        }
    }

    /// A worker stopped while the loop ran.
    pub fn worker_ended(&self, worker: &str) {
        self.workers_ended
            .get_or_create(&WorkerLabels {
                worker: worker.into(),
            })
            .inc();
    }

    /// A worker reported an error while running.
    pub fn source_error(&self, kind: SourceErrorKind) {
        self.source_errors
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The chosen leader changed; `me` says whether it is this pod.
    pub fn leader_changed(&self, me: bool) {
        self.leader_changes.inc();
        self.is_leader.set(i64::from(me));
    }

    /// A resignation notice was not acted on.
    pub fn resignation_ignored(&self) {
        self.resignations_ignored.inc();
    }

    /// A round of asking the peers got no answer from any ready peer.
    pub fn leader_unanswered(&self) {
        self.leader_unanswered.inc();
    }

    /// `probe`: how many peers claim to lead, and since when the leader no
    /// longer answers 2xx (`None`: it does).
    pub fn leader_probe(&self, claimants: usize, unconfirmed_since: Option<std::time::SystemTime>) {
        self.leader_claimants
            .set(i64::try_from(claimants).unwrap_or(i64::MAX));
        let at = unconfirmed_since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.leader_unconfirmed_since.set(at);
    }

    /// A partial peer set was held back (counted once per episode).
    pub fn held(&self, reason: Held) {
        self.held
            .get_or_create(&HeldLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn cycle_succeeded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_success.set(now);
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn render_labels(template: &str, result: Render) -> RenderLabels {
    RenderLabels {
        template: template.into(),
        result: result.as_str(),
    }
}

fn hook_labels(hook: &str, result: Hook) -> HookLabels {
    HookLabels {
        hook: hook.into(),
        result: result.as_str(),
    }
}
