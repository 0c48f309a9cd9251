//! The loop: the one place that decides when to render, and the supervisor
//! of every worker.
//!
//! Sources (the peer source, the template watcher, SIGHUP) only report what
//! they saw. This loop keeps the last known peer set, holds rendering back
//! until this pod is in it (`wait_for_self`), waits for a quiet moment
//! (`wait.min`, bounded by `wait.max`) so a burst of changes gives one
//! render, then runs a pass: every template rendered, staged and checked
//! first, installed only when its whole reload group passed (the outputs of
//! one reload action; each output without an action is its own group), and
//! each action that had an output installed run once, in the order the
//! actions are written, beside the loop ([`actions`]): its verdict comes
//! back later, and a rejection puts the group's previous files back. An
//! action waiting for its verdict (or for `min_interval`) holds back only
//! its own outputs. A pass returns one [`Outcome`] per template;
//! metrics, readiness and `once`'s exit code are each derived from that list
//! in one place. Hooks run beside this path in a queue of their own
//! ([`hooks::queue`]), never in front of a render.
//!
//! The config file is watched (and re-read on SIGHUP): a valid new one
//! takes effect at the next pass, the workers whose settings changed are
//! restarted; an invalid one is logged and counted, and the running one
//! stays.
//!
//! Every worker runs in one `JoinSet`. One that ends while the loop runs is
//! logged, counted (`peerplate_workers_ended_total`) and turns `/healthz` to
//! 503, since the loop is no longer whole; at shutdown the loop waits for all
//! of them, bounded so SIGTERM still exits within a second.

mod actions;
mod diff;
mod groups;
mod hold;
mod live;
mod once;
mod outcome;
mod pass;
mod status;
mod verdicts;
mod view;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBackoff;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use outcome::{CycleError, Installed, Outcome};

use crate::admin::State;
use crate::config::Policy;
use crate::config::{Config, PeerSource, Wait};
use crate::error::Error;
use crate::event::{Context, Event, SourceError, Worker};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::owed::{self, Owed};
use crate::peers::Identity;
use crate::render::Renderer;
use crate::write;

/// How long shutdown waits for the workers to return.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// `run` keeps going; `once` stops after the first cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Once,
}

/// Runs the sidecar loop until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    Loop::new(config, Mode::Run).run(shutdown).await
}

/// Waits for peers (bounded by `peers.timeout`), renders and installs every
/// template once, runs `on_start` (or `on_change`), and returns. Fails if any
/// template could not be installed or the hook failed.
pub async fn once(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    Loop::new(config, Mode::Once).run(shutdown).await
}

/// A change seen but not yet rendered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    last: Instant,
    /// SIGHUP: render at once, whatever `wait` says.
    now: bool,
}

impl Pending {
    /// When to render: `min` after the last change, but no later than `max`
    /// after the first (if `max` is set).
    fn due(&self, wait: &Wait) -> Instant {
        if self.now {
            return self.last;
        }
        let quiet = crate::limits::later(self.last, wait.min);
        if wait.max.is_zero() {
            quiet
        } else {
            quiet.min(crate::limits::later(self.first, wait.max))
        }
    }
}

/// The workers, each with its name.
type Workers = JoinSet<(&'static str, Result<(), SourceError>)>;

/// The loop's state, grouped by what decides on it: each group is owned by
/// the module that decides on it ([`hold`], [`view`], [`actions`],
/// [`workers`], [`pass`], [`live`]).
struct Loop {
    config: Arc<Config>,
    me: Identity,
    metrics: Arc<Metrics>,
    state: Arc<State>,
    mode: Mode,
    /// The templates as compiled, and what they read.
    templates: pass::Templates,
    /// Which templates have rendered and installed at least once: all of
    /// them make the pod ready.
    succeeded: Vec<bool>,
    /// A change seen but not yet rendered.
    pending: Option<Pending>,
    /// The peer set this pod renders, and the holds on it.
    view: hold::PeerView,
    /// The chosen leader and what waits on it.
    leader: view::LeaderState,
    /// The reload actions: their states, pending verdicts, rejected bytes
    /// and failed rollbacks.
    actions: actions::Actions,
    /// An install failed on I/O (`run`): when to try again, and the delays
    /// still to come; none once every install went through.
    retry: Option<(Instant, ExponentialBackoff)>,
    /// What the outputs should hold and what they hold (`/status`).
    observed: status::Observed,
    /// A changed config that did not load (`run`): read again with backoff
    /// (a template it names may arrive a moment later, in another
    /// ConfigMap), until it loads or the file changes back.
    config_owed: Option<Owed<()>>,
    /// The workers' channels and tokens.
    supervisor: workers::Supervisor,
}

/// The folder relative paths in the config start from.
fn base_dir(config: &Config) -> PathBuf {
    config
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The action names, for the metrics.
fn action_names(config: &Config) -> Vec<&str> {
    config.actions.iter().map(|a| a.name.as_str()).collect()
}

/// The hooks a config has, for the metrics.
fn hook_names(config: &Config) -> Vec<&'static str> {
    match &config.hooks {
        Some(h) => [
            ("on_start", &h.on_start),
            ("on_change", &h.on_change),
            ("on_leader_change", &h.on_leader_change),
        ]
        .into_iter()
        .filter(|(_, command)| command.is_some())
        .map(|(which, _)| which)
        .collect(),
        None => Vec::new(),
    }
}

impl Loop {
    fn new(config: Config, mode: Mode) -> Loop {
        let renderer = Arc::new(Renderer::load(&config).with_base(&base_dir(&config)));
        let metrics = Arc::new(Metrics::new());
        let names: Vec<String> = (0..config.templates.len())
            .map(|i| renderer.name(i).to_string())
            .collect();
        metrics.expect(
            &names,
            matches!(config.peers.source, PeerSource::Dns(_)),
            &action_names(&config),
            &hook_names(&config),
        );
        let awaiting_leader = mode == Mode::Run && config.leader.policy != Policy::Ordinal;
        let mut leadership = Leadership::new(config.leader.clone());
        if mode == Mode::Run && config.leader.policy != Policy::Ordinal {
            // The leader before a restart of this container.
            leadership.remember(
                config
                    .state
                    .as_deref()
                    .and_then(|p| {
                        crate::state::remembered_leader(p, crate::state::pod_uid().as_deref())
                    })
                    .map(|l| l.name),
            );
        }
        let state = Arc::new(State::new(Arc::clone(&metrics)));
        state.set_leader(None, leadership.policy(), leadership.since());
        Loop {
            me: Identity::of(&config),
            state,
            metrics,
            succeeded: vec![false; config.templates.len()],
            templates: pass::Templates {
                renderer,
                dirty: false,
                inputs: Vec::new(),
            },
            config: Arc::new(config),
            mode,
            // The start of the process is a change.
            pending: Some(Pending {
                first: Instant::now(),
                last: Instant::now(),
                now: false,
            }),
            view: hold::PeerView::default(),
            leader: view::LeaderState {
                leadership,
                awaiting: awaiting_leader,
                asked_once: false,
                views: None,
                hook: None,
                hook_due: None,
            },
            actions: actions::Actions::default(),
            retry: None,
            config_owed: None,
            observed: status::Observed::default(),
            supervisor: workers::Supervisor::default(),
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let (event_tx, mut events) = mpsc::channel(64);
        let (error_tx, mut errors) = mpsc::channel(64);
        let ctx = Context {
            events: event_tx,
            errors: error_tx,
            metrics: Arc::clone(&self.metrics),
            shutdown: shutdown.child_token(),
        };
        // Stop the workers however this function returns.
        let _stop_workers = ctx.shutdown.clone().drop_guard();
        let mut workers = Workers::new();
        let names = [
            "templates",
            "static",
            "file",
            "dns",
            "signals",
            "hooks",
            "leader",
            "leader_hook",
            "admin",
        ];
        self.metrics.expect_workers(&names);
        if let (Mode::Run, Policy::Sticky { port: 0, .. }) = (self.mode, &self.config.leader.policy)
        {
            return Err(Error::Usage(format!(
                "{}: leader.policy sticky asks the peers who leads on their admin port (GET /leader); set http.listen, like 0.0.0.0:9090",
                self.config.path.display()
            )));
        }
        for template in &self.config.templates {
            write::remove_stale(template);
        }
        // Outputs recorded in the state file that no template produces.
        crate::prune::sweep(&self.config, &[]);
        self.start_workers(&mut workers, &ctx).await?;
        let worker_shutdown = ctx.shutdown.clone();
        // Kept to restart workers after a config change.
        self.supervisor.ctx = Some(ctx);

        let give_up = match (self.mode, self.config.peers.timeout) {
            (Mode::Once, t) if !t.is_zero() => Some(crate::limits::later(Instant::now(), t)),
            _ => None,
        };

        let result = loop {
            if self.due().is_some_and(|d| d <= Instant::now()) {
                // Due (at once when wait.min is 0): take what has already
                // arrived, so a burst is one render, and render now rather
                // than through a timer that rounds up to the next millisecond.
                while let Ok(event) = events.try_recv() {
                    self.on_event(event, &mut workers);
                }
                if self.due().is_some_and(|d| d <= Instant::now()) {
                    if self.mode == Mode::Once && self.config.leader.policy != Policy::Ordinal {
                        tokio::select! {
                            _ = shutdown.cancelled() => break self.interrupted(),
                            () = self.ask_leader_once() => {}
                        }
                    }
                    let outcomes = tokio::select! {
                        // A pass in the middle of a check is abandoned; the
                        // staged files are removed and the old outputs stay.
                        _ = shutdown.cancelled() => break self.interrupted(),
                        outcomes = self.pass() => outcomes,
                    };
                    if self.mode == Mode::Once {
                        break self.finish_once(outcomes, &shutdown).await;
                    }
                    continue;
                }
            }
            let due = self.due();
            let grace = self.leader.leadership.deadline();
            let install_retry = self.retry.as_ref().map(|(at, _)| *at);
            let action_retry = self.action_retry();
            let rollback_retry = owed::earliest(&self.actions.rollbacks);
            let config_retry = self.config_owed.as_ref().map(|o| o.due);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break self.interrupted(),
                Some(done) = self.actions.verdicts.join_next(), if !self.actions.verdicts.is_empty() => self.on_verdict(done),
                Some(event) = events.recv() => self.on_event(event, &mut workers),
                Some(error) = errors.recv() => {
                    self.metrics.source_error(error.kind());
                    tracing::warn!(error = %error, "a worker reported an error");
                }
                Some(ended) = workers.join_next() => self.worker_ended(ended),
                // An action's min_interval ended: render its waiting outputs.
                _ = sleep_until(action_retry), if action_retry.is_some() => self.retry_actions(),
                // A failed rollback's next try.
                _ = sleep_until(rollback_retry), if rollback_retry.is_some() => self.retry_rollbacks(),
                // A config that did not load: read it again.
                _ = sleep_until(config_retry), if config_retry.is_some() => self.retry_config(&mut workers),
                // Due now: the top of the loop renders.
                _ = sleep_until(due), if due.is_some() => {}
                // A failed install's next try.
                _ = sleep_until(install_retry), if install_retry.is_some() => {
                    if let Some((at, _)) = &mut self.retry {
                        // Far off until the pass sets the next try.
                        *at = crate::limits::later(*at, Duration::from_secs(86_400));
                    }
                    self.mark_pending(true);
                }
                // A missing leader's grace ran out.
                _ = sleep_until(grace), if grace.is_some() => self.decide_leader(),
                _ = sleep_until(give_up), if give_up.is_some() => {
                    break Err(Error::PeerTimeout(self.timeout_message()));
                }
            }
        };
        worker_shutdown.cancel();
        // A leader stopped on purpose hands over (telling bounded by
        // resign::BUDGET, waiting for checks by resign::CHECK_WAIT) while
        // the other workers stop.
        let admin = self.supervisor.tokens.get("admin").map(|(t, _)| t.clone());
        let resign = async {
            if shutdown.is_cancelled() {
                self.resign().await;
            }
            if let Some(admin) = admin {
                admin.cancel();
            }
        };
        let all = async { while workers.join_next().await.is_some() {} };
        // The admin worker ends with the resignation, the others at once.
        let bound = SHUTDOWN_WAIT.max(crate::resign::BUDGET) + Duration::from_millis(50);
        let (_, waited) = tokio::join!(resign, tokio::time::timeout(bound, all));
        if waited.is_err() {
            tracing::debug!(
                wait_ms = crate::log::ms(bound),
                "a worker did not stop in time; leaving it"
            );
            workers.detach_all();
        }
        result
    }

    /// A worker returned while the loop runs: the loop is no longer whole.
    fn worker_ended(
        &mut self,
        ended: Result<(&'static str, Result<(), SourceError>), tokio::task::JoinError>,
    ) {
        if let Ok((name, _)) = &ended {
            // Stopped on purpose by a config change.
            if let Some(count) = self.supervisor.retired.get_mut(name).filter(|c| **c > 0) {
                *count -= 1;
                return;
            }
        }
        let (name, why) = match ended {
            Ok((name, Ok(()))) => (name, "it returned".to_string()),
            Ok((name, Err(e))) => (name, e.to_string()),
            Err(e) => ("unknown", format!("it panicked: {e}")),
        };
        tracing::error!(worker = name, reason = %why, "a worker stopped; /healthz now fails so the container is restarted");
        self.metrics.worker_ended(name);
        self.state
            .set_broken(format!("the {name} worker stopped: {why}"));
    }

    /// SIGTERM ends `run` cleanly; an init container stopped before its
    /// outputs exist must not look like it succeeded.
    fn interrupted(&self) -> Result<(), Error> {
        // The runs are abandoned (an exec is killed with its group) when the
        // loop is dropped; the files they installed stay.
        for (name, state) in &self.actions.states {
            if state.busy {
                tracing::warn!(action = %name, "verdict unknown: shutting down while the reload was being verified; the new file stays");
            }
        }
        match self.mode {
            Mode::Run => Ok(()),
            Mode::Once => Err(Error::Incomplete(
                "interrupted before every output was installed".into(),
            )),
        }
    }

    fn on_event(&mut self, event: Event, workers: &mut Workers) {
        let mut now = false;
        match event {
            Event::Peers(set) => {
                if !self.accept(&set) {
                    return;
                }
                if self.view.peers.as_ref() == Some(&set) {
                    return;
                }
                let (added, removed) = match &self.view.peers {
                    Some(before) => set.diff(before),
                    None => (set.names(), Vec::new()),
                };
                tracing::info!(
                    count = set.len(),
                    ready = set.ready().count(),
                    added = %name_list(&added, LOGGED_NAMES),
                    removed = %name_list(&removed, LOGGED_NAMES),
                    "peer set changed"
                );
                tracing::trace!(count = set.len(), peers = %name_list(&set.names(), usize::MAX), "peer set in full");
                self.metrics.peers(set.len());
                self.view.peers = Some(set);
                self.note_self_wait();
                self.decide_leader();
                self.publish_view(false);
            }
            Event::Recovered => {
                // Peers may have chosen a leader while this pod could not see.
                self.publish_view(true);
                return;
            }
            Event::LeaderHint(hint) => {
                let first = std::mem::take(&mut self.leader.awaiting);
                let peers = self.view.peers.clone().unwrap_or_default();
                if hint.unanswered > 0 {
                    self.metrics.leader_unanswered();
                }
                let change = self.leader.leadership.hint(&hint, &peers, Instant::now());
                if !self.apply_leader(change) && !first {
                    return;
                }
            }
            Event::Probed(round) => {
                let first = std::mem::take(&mut self.leader.awaiting);
                let peers = self.view.peers.clone().unwrap_or_default();
                let change = self
                    .leader
                    .leadership
                    .probed(&round, &peers, Instant::now());
                let unconfirmed = self.leader.leadership.unconfirmed_since();
                self.metrics
                    .leader_probe(round.claimants.len(), unconfirmed);
                self.state.set_unconfirmed(unconfirmed);
                if !self.apply_leader(change) && !first {
                    return;
                }
            }
            Event::Resigned(resigned) => {
                let peers = self.view.peers.clone().unwrap_or_default();
                let change = self
                    .leader
                    .leadership
                    .resigned(&resigned, &peers, Instant::now());
                if !self.apply_leader(change) {
                    return;
                }
            }
            Event::Templates => {
                tracing::info!("template sources changed");
                self.templates.dirty = true;
                self.actions.rejected.clear();
            }
            Event::Inputs => {
                tracing::info!("files read with file() changed");
                self.actions.rejected.clear();
            }
            Event::Config => {
                if !self.reload_config(workers) {
                    return;
                }
            }
            Event::Rerender => {
                tracing::info!("SIGHUP: re-reading the config and the templates and rendering now");
                self.reload_config(workers);
                self.templates.dirty = true;
                self.actions.rejected.clear();
                now = true;
            }
        }
        self.mark_pending(now);
        self.publish_status();
    }

    /// A change to render: now (SIGHUP), or after the quiet time.
    fn mark_pending(&mut self, now: bool) {
        let at = Instant::now();
        self.pending = Some(match self.pending {
            Some(p) => Pending {
                last: at,
                now: p.now || now,
                ..p
            },
            None => Pending {
                first: at,
                last: at,
                now,
            },
        });
    }

    fn due(&self) -> Option<Instant> {
        if self.held_for_self() || self.leader.awaiting {
            return None;
        }
        self.pending.map(|p| p.due(&self.config.wait))
    }

    fn timeout_message(&self) -> String {
        let source = match &self.config.peers.source {
            PeerSource::Dns(dns) => format!("the SRV records of {}", dns.query),
            PeerSource::File(path) => format!("the peers file {}", path.display()),
            PeerSource::Static(_) => "peers.static".to_string(),
        };
        let seen = match &self.view.peers {
            None => "no answer yet".to_string(),
            Some(set) if set.is_empty() => "no peers".to_string(),
            Some(set) => set.names().join(", "),
        };
        format!(
            "timed out after {} waiting for {} to appear in {source}; seen: {seen}",
            humantime::format_duration(self.config.peers.timeout),
            self.me.name()
        )
    }
}

/// Adds a worker to the set, under its name.
fn spawn(workers: &mut Workers, name: &'static str, worker: Worker) {
    workers.spawn(async move { (name, worker.await) });
}

/// Names of added and removed peers a "peer set changed" line lists (the
/// whole set only at `-vv`): a 1,000-pod change stays one short line.
const LOGGED_NAMES: usize = 10;

/// `names` as a JSON array of strings, the first `limit` of them and then
/// `"and N more"`: readable in text logs, parseable in JSON ones (where it
/// is a JSON-encoded string: tracing-subscriber's JSON formatter has no
/// array values without the unstable `valuable` support).
fn name_list(names: &[&str], limit: usize) -> String {
    let mut shown: Vec<String> = names.iter().take(limit).map(|n| n.to_string()).collect();
    if names.len() > limit {
        shown.push(format!("and {} more", names.len() - limit));
    }
    serde_json::to_string(&shown).unwrap_or_default()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(min_ms: u64, max_ms: u64) -> Wait {
        Wait {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_renders_once_after_the_quiet_time_but_no_later_than_max() {
        let first = Instant::now();
        let mut pending = Pending {
            first,
            last: first,
            now: false,
        };
        // A change every 400 ms: each one pushes the quiet time (1 s) on...
        for _ in 0..4 {
            tokio::time::advance(Duration::from_millis(400)).await;
            pending.last = Instant::now();
        }
        let last = pending.last;
        assert_eq!(pending.due(&wait(1000, 0)), last + Duration::from_secs(1));
        // ...but never past `max` after the first.
        assert_eq!(
            pending.due(&wait(1000, 2000)),
            first + Duration::from_secs(2)
        );
        // SIGHUP: at once.
        pending.now = true;
        assert_eq!(pending.due(&wait(1000, 2000)), last);
    }
}
