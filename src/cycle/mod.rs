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
mod outcome;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use outcome::{CycleError, Installed, Outcome};

use self::actions::{ActionState, GroupReport, InstalledOutput};
use crate::action::Verdict;
use crate::admin::{self, State};
use crate::config::ActionKind;
use crate::config::Policy;
use crate::config::{Config, PeerSource, Wait};
use crate::error::Error;
use crate::event::{Context, Event, SourceError, Worker};
use crate::hooks;
use crate::leader::{self, Leadership};
use crate::metrics::{self, Metrics};
use crate::peers::{self, Identity, PeerSet};
use crate::redact::Redactor;
use crate::render::{self, Input, Renderer};
use crate::watch::{self as file_watch, Watched};
use crate::write::{self, Plan, WriteError};

/// How long shutdown waits for the workers to return.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// The delays between retries of an install that failed on I/O (`run`):
/// from 1 s, doubling, at most 30 s apart, with jitter, until it succeeds.
fn install_retries() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

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
        let quiet = self.last + wait.min;
        if wait.max.is_zero() {
            quiet
        } else {
            quiet.min(self.first + wait.max)
        }
    }
}

/// The workers, each with its name.
type Workers = JoinSet<(&'static str, Result<(), SourceError>)>;

struct Loop {
    config: Arc<Config>,
    me: Identity,
    metrics: Arc<Metrics>,
    state: Arc<State>,
    /// Which templates have rendered and installed at least once: all of
    /// them make the pod ready.
    succeeded: Vec<bool>,
    mode: Mode,
    /// Shared with the thread a render runs on.
    renderer: Arc<Renderer>,
    templates_dirty: bool,
    peers: Option<PeerSet>,
    pending: Option<Pending>,
    /// Set after the first pass: from then on `wait_for_self` no longer holds
    /// rendering back (a pod briefly missing from DNS keeps its config).
    rendered: bool,
    waiting_since: Option<Instant>,
    /// Where `run` publishes peer sets for the hook queue.
    hook_sets: Option<watch::Sender<Option<PeerSet>>>,
    /// A partial set is being held back (after the first render): why and since.
    hold: Option<(metrics::Held, Instant)>,
    /// The chosen leader.
    leadership: Leadership,
    /// `sticky`/`probe` in `run`: the first render waits for the first
    /// answer of the leader worker (bounded by its timeout), so a restarted
    /// pod never renders itself as leader for a moment.
    awaiting_leader: bool,
    /// Where the loop publishes what the leader worker needs.
    leader_views: Option<watch::Sender<leader::View>>,
    /// `on_leader_change`'s queue, and the leader to give it after the next pass.
    leader_hook: Option<watch::Sender<Option<String>>>,
    leader_hook_due: Option<Option<String>>,
    /// An install failed on I/O (`run`): when to try again, and the delays
    /// still to come; none once every install went through.
    retry: Option<(Instant, ExponentialBackoff)>,
    /// Each action's state, by name (a run may outlive a config change).
    action_states: HashMap<String, ActionState>,
    /// The runs of actions whose verdict is pending.
    verdicts: JoinSet<GroupReport>,
    /// Bytes an app rejected, by destination: not installed again until an
    /// input (a template, a `file()`, the config) changes.
    rejected: HashMap<PathBuf, Vec<u8>>,
    /// The `file()` inputs of the last pass, per template.
    inputs: Vec<Vec<Input>>,
    /// Where the loop tells the file watcher what to watch.
    watched: Option<watch::Sender<Watched>>,
    /// The workers' context, kept to restart workers after a config change.
    ctx: Option<Context>,
    /// The shutdown tokens of the workers a config change may restart.
    tokens: HashMap<&'static str, (CancellationToken, &'static str)>,
    /// Workers stopped on purpose (a config change), whose end is expected.
    retired: HashMap<&'static str, usize>,
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
        let leadership = Leadership::new(config.leader.clone());
        let state = Arc::new(State::new(Arc::clone(&metrics)));
        state.set_leader(None, leadership.policy(), leadership.since());
        Loop {
            me: Identity::of(&config),
            state,
            metrics,
            succeeded: vec![false; config.templates.len()],
            renderer,
            config: Arc::new(config),
            mode,
            templates_dirty: false,
            peers: None,
            // The start of the process is a change.
            pending: Some(Pending {
                first: Instant::now(),
                last: Instant::now(),
                now: false,
            }),
            rendered: false,
            waiting_since: None,
            hook_sets: None,
            hold: None,
            awaiting_leader,
            leadership,
            leader_views: None,
            leader_hook: None,
            leader_hook_due: None,
            retry: None,
            action_states: HashMap::new(),
            verdicts: JoinSet::new(),
            rejected: HashMap::new(),
            inputs: Vec::new(),
            watched: None,
            ctx: None,
            tokens: HashMap::new(),
            retired: HashMap::new(),
        }
    }

    /// A context for the worker `name` whose shutdown token a config change
    /// can cancel alone (the one it had before is cancelled and its end
    /// expected).
    fn restartable(&mut self, key: &'static str, name: &'static str, ctx: &Context) -> Context {
        self.retire(key);
        let token = ctx.shutdown.child_token();
        self.tokens.insert(key, (token.clone(), name));
        Context {
            shutdown: token,
            ..ctx.clone()
        }
    }

    /// Stops the worker started under `key`, if any; its end is expected.
    fn retire(&mut self, key: &'static str) {
        if let Some((old, name)) = self.tokens.remove(key) {
            old.cancel();
            *self.retired.entry(name).or_default() += 1;
        }
    }

    /// Starts every worker of this config into `workers`. Setup failures
    /// stop the start.
    async fn start_workers(&mut self, workers: &mut Workers, ctx: &Context) -> Result<(), Error> {
        if self.mode == Mode::Run {
            let (tx, rx) = watch::channel(self.watched_now());
            self.watched = Some(tx);
            spawn(workers, "templates", file_watch::worker(rx, ctx.clone())?);
        }
        self.start_peers(workers, ctx)?;
        if self.mode == Mode::Run {
            spawn(workers, "signals", signals_worker(ctx.clone())?);
            self.start_leader(workers, ctx)?;
            self.start_hooks(workers, ctx);
        }
        if let Some(http) = &self.config.http {
            let listener = admin::bind(http.listen).await.map_err(|source| {
                let culprit = if source.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        " (another process listens there{}; give peerplate another port, like http.listen: {}:{})",
                        if http.listen.port() == 9090 {
                            ", likely Prometheus, whose default port is 9090"
                        } else {
                            ""
                        },
                        http.listen.ip(),
                        http.listen.port().wrapping_add(1).max(1)
                    )
                } else {
                    String::new()
                };
                Error::Io {
                    path: format!("http.listen {}{culprit}", http.listen).into(),
                    source,
                }
            })?;
            let state = Arc::clone(&self.state);
            let shutdown = ctx.shutdown.clone();
            spawn(
                workers,
                "admin",
                Box::pin(async move {
                    admin::serve(listener, state, shutdown).await;
                    Ok(())
                }),
            );
        }
        Ok(())
    }

    /// The peer source of the current config.
    fn start_peers(&mut self, workers: &mut Workers, ctx: &Context) -> Result<(), Error> {
        let name = match &self.config.peers.source {
            PeerSource::Static(_) => "static",
            PeerSource::File(_) => "file",
            PeerSource::Dns(_) => "dns",
        };
        let ctx = self.restartable("peers", name, ctx);
        let (name, worker) = peers::worker(&self.config, self.mode == Mode::Run, ctx)?;
        spawn(workers, name, worker);
        Ok(())
    }

    /// The leader worker (`sticky`, `probe`), if the policy asks anyone.
    fn start_leader(&mut self, workers: &mut Workers, ctx: &Context) -> Result<(), Error> {
        self.retire("leader");
        self.leader_views = None;
        if self.config.leader.policy != Policy::Ordinal {
            let (tx, rx) = watch::channel(leader::View::default());
            self.leader_views = Some(tx);
            let ctx = self.restartable("leader", "leader", ctx);
            spawn(
                workers,
                "leader",
                leader::worker(self.config.leader.clone(), self.me.clone(), rx, ctx)?,
            );
        }
        Ok(())
    }

    /// The hook queues (`on_start`/`on_change`, `on_leader_change`).
    fn start_hooks(&mut self, workers: &mut Workers, ctx: &Context) {
        self.retire("leader_hook");
        self.retire("hooks");
        self.leader_hook = None;
        self.hook_sets = None;
        if let Some(command) = self
            .config
            .hooks
            .as_ref()
            .and_then(|h| h.on_leader_change.clone())
        {
            let timeout = self
                .config
                .hooks
                .as_ref()
                .map_or(Duration::from_secs(60), |h| h.timeout);
            let ctx = self.restartable("leader_hook", "leader_hook", ctx);
            let (tx, body) =
                hooks::leader_queue(command, timeout, Arc::clone(&self.metrics), ctx.shutdown);
            self.leader_hook = Some(tx);
            spawn(
                workers,
                "leader_hook",
                Box::pin(async move {
                    body.await;
                    Ok(())
                }),
            );
        }
        if let Some(hooks) = self.config.hooks.clone() {
            let ctx = self.restartable("hooks", "hooks", ctx);
            let (tx, body) = hooks::queue(hooks, Arc::clone(&self.metrics), ctx.shutdown);
            self.hook_sets = Some(tx);
            spawn(
                workers,
                "hooks",
                Box::pin(async move {
                    body.await;
                    Ok(())
                }),
            );
        }
    }

    /// What the file watcher is to watch now: the template sources, the
    /// last pass's `file()` inputs (with the bytes it read), the config.
    fn watched_now(&self) -> Watched {
        let mut inputs: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
        for input in self.inputs.iter().flatten() {
            if !inputs.iter().any(|(p, _)| *p == input.path) {
                inputs.push((
                    input.path.clone(),
                    input.text.as_ref().map(|t| t.as_bytes().to_vec()),
                ));
            }
        }
        Watched {
            templates: self
                .config
                .templates
                .iter()
                .map(|t| t.source.clone())
                .chain(self.config.partials.iter().map(|p| p.source.clone()))
                .collect(),
            inputs,
            config: (!self.config.path.as_os_str().is_empty()).then(|| self.config.path.clone()),
        }
    }

    /// Tells the watcher the current set, if it changed.
    fn update_watched(&self) {
        if let Some(tx) = &self.watched {
            let now = self.watched_now();
            tx.send_if_modified(|w| {
                if *w == now {
                    false
                } else {
                    *w = now;
                    true
                }
            });
        }
    }

    /// Everything the last pass read with `file()`, to hide from the log.
    fn redactor(&self) -> Redactor {
        Redactor::new(
            self.inputs
                .iter()
                .flatten()
                .filter_map(|i| Some((i.path.as_path(), i.text.as_deref()?))),
        )
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
        self.start_workers(&mut workers, &ctx).await?;
        let worker_shutdown = ctx.shutdown.clone();
        // Kept to restart workers after a config change.
        self.ctx = Some(ctx);

        let give_up = match (self.mode, self.config.peers.timeout) {
            (Mode::Once, t) if !t.is_zero() => Some(Instant::now() + t),
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
            let grace = self.leadership.deadline();
            let install_retry = self.retry.as_ref().map(|(at, _)| *at);
            let action_retry = self.action_retry();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break self.interrupted(),
                Some(done) = self.verdicts.join_next(), if !self.verdicts.is_empty() => self.on_verdict(done),
                Some(event) = events.recv() => self.on_event(event, &mut workers),
                Some(error) = errors.recv() => tracing::warn!("{error}"),
                Some(ended) = workers.join_next() => self.worker_ended(ended),
                // An action's min_interval ended: render its waiting outputs.
                _ = sleep_until(action_retry), if action_retry.is_some() => self.retry_actions(),
                // Due now: the top of the loop renders.
                _ = sleep_until(due), if due.is_some() => {}
                // A failed install's next try.
                _ = sleep_until(install_retry), if install_retry.is_some() => {
                    if let Some((at, _)) = &mut self.retry {
                        // Far off until the pass sets the next try.
                        *at += Duration::from_secs(86_400);
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
        let all = async { while workers.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
            tracing::debug!("a worker did not stop within {SHUTDOWN_WAIT:?}; leaving it");
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
            if let Some(count) = self.retired.get_mut(name).filter(|c| **c > 0) {
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
        for (name, state) in &self.action_states {
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
                if self.peers.as_ref() == Some(&set) {
                    return;
                }
                let (added, removed) = match &self.peers {
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
                self.peers = Some(set);
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
                let first = std::mem::take(&mut self.awaiting_leader);
                let peers = self.peers.clone().unwrap_or_default();
                let change = self.leadership.hint(&hint, &peers, Instant::now());
                if !self.apply_leader(change) && !first {
                    return;
                }
            }
            Event::Templates => {
                tracing::info!("template sources changed");
                self.templates_dirty = true;
                self.rejected.clear();
            }
            Event::Inputs => {
                tracing::info!("files read with file() changed");
                self.rejected.clear();
            }
            Event::Config => {
                if !self.reload_config(workers) {
                    return;
                }
            }
            Event::Rerender => {
                tracing::info!("SIGHUP: re-reading the config and the templates and rendering now");
                self.reload_config(workers);
                self.templates_dirty = true;
                self.rejected.clear();
                now = true;
            }
        }
        self.mark_pending(now);
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

    /// Whether a new set from the source may be rendered. After this pod's
    /// first render in `run`, a set that lacks this pod (with
    /// `wait_for_self`) or has fewer than `peers.min` peers is a partial
    /// view: it is held back, the last set stays, and one warning marks the
    /// start of a hold and one line its end.
    fn accept(&mut self, set: &PeerSet) -> bool {
        let partial = if self.mode != Mode::Run || !self.rendered {
            None
        } else if self.config.peers.wait_for_self && !self.me.is_in(set) {
            Some(metrics::Held::SelfMissing)
        } else if set.len() < self.config.peers.min {
            Some(metrics::Held::TooFew)
        } else {
            None
        };
        match (partial, self.hold) {
            (Some(reason), None) => {
                let why = match reason {
                    metrics::Held::SelfMissing => format!("{} is not in it", self.me.name()),
                    metrics::Held::TooFew => format!(
                        "it has {} peer(s), fewer than peers.min {}",
                        set.len(),
                        self.config.peers.min
                    ),
                };
                tracing::warn!(reason = reason.as_str(), seen = ?set.names(), "holding back a partial peer set: {why}; the last rendered set stays until a whole one arrives");
                self.metrics.held(reason);
                self.hold = Some((reason, Instant::now()));
                false
            }
            (Some(_), Some(_)) => false,
            (None, Some((reason, since))) => {
                tracing::info!(reason = reason.as_str(), held = ?since.elapsed(), count = set.len(), "a whole peer set again; no longer holding");
                self.hold = None;
                true
            }
            (None, None) => true,
        }
    }

    /// Decides the leader from the accepted set (and the time), and applies
    /// a change.
    fn decide_leader(&mut self) {
        if self.awaiting_leader {
            return;
        }
        let peers = self.peers.clone().unwrap_or_default();
        let change = self.leadership.decide(&peers, Instant::now());
        if self.apply_leader(change) {
            self.mark_pending(false);
        }
    }

    /// Logs, counts and publishes a change of leader; true if there was one.
    fn apply_leader(&mut self, change: Option<leader::Change>) -> bool {
        let Some(change) = change else {
            return false;
        };
        let me = self
            .leadership
            .current()
            .is_some_and(|l| self.me.is_self(l));
        if change.old.is_none() && change.new.is_none() {
            // No peers at all (a config without a peer source): nothing to say.
            tracing::debug!(why = %change.why, "no leader: there are no peers");
        } else {
            tracing::info!(
                old = change.old.as_deref().unwrap_or("none"),
                new = change.new.as_deref().unwrap_or("none"),
                why = %change.why,
                policy = self.leadership.policy(),
                "leader changed"
            );
        }
        self.metrics.leader_changed(me);
        self.state.set_leader(
            change.new.as_deref(),
            self.leadership.policy(),
            self.leadership.since(),
        );
        self.leader_hook_due = Some(change.new);
        self.publish_view(false);
        true
    }

    /// Tells the leader worker the accepted set and the current leader; with
    /// `ask_now`, asks it to ask the peers at once.
    fn publish_view(&mut self, ask_now: bool) {
        let Some(views) = &self.leader_views else {
            return;
        };
        let peers = self.peers.clone().unwrap_or_default();
        let leader = self.leadership.current().map(|l| l.fqdn.clone());
        views.send_modify(|view| {
            view.peers = peers;
            view.leader = leader;
            if ask_now {
                view.ask_now += 1;
            }
        });
    }

    /// Whether `wait_for_self` still holds rendering back.
    fn held_for_self(&self) -> bool {
        let Some(peers) = &self.peers else {
            return true;
        };
        self.config.peers.wait_for_self && !self.rendered && !self.me.is_in(peers)
    }

    /// Logs the wait for this pod once when it starts and once when it ends,
    /// not on every poll.
    fn note_self_wait(&mut self) {
        let held = self.held_for_self();
        let seen = self.peers.as_ref().map(PeerSet::names).unwrap_or_default();
        let name = self.me.name().to_string();
        match (held, self.waiting_since) {
            (true, None) => {
                tracing::info!(waiting_for = %name, seen = ?seen, "waiting for this pod to appear in the peer set");
                self.waiting_since = Some(Instant::now());
            }
            (false, Some(since)) => {
                tracing::info!(name = %name, waited = ?since.elapsed(), "this pod is in the peer set");
                self.waiting_since = None;
            }
            _ => {}
        }
    }

    fn due(&self) -> Option<Instant> {
        if self.held_for_self() || self.awaiting_leader {
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
        let seen = match &self.peers {
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

    /// One pass: render, stage and check every template; install each reload
    /// group only if all of it passed (and its action is free); start each
    /// action that had an output installed; publish the outcome.
    async fn pass(&mut self) -> Vec<Outcome> {
        self.pending = None;
        if self.templates_dirty {
            self.renderer = Arc::new(Renderer::load(&self.config).with_base(&base_dir(&self.config)));
            self.templates_dirty = false;
        }
        let config = Arc::clone(&self.config);
        let peers = self.peers.clone().unwrap_or_default();
        let context = render::context(&config, &peers, self.leadership.current());

        // 1. Render, stage and check everything; install nothing yet.
        let mut staged = Vec::with_capacity(config.templates.len());
        let mut outcomes = Vec::with_capacity(config.templates.len());
        let mut inputs = Vec::with_capacity(config.templates.len());
        let mut redact = self.redactor();
        for (i, template) in config.templates.iter().enumerate() {
            let started = std::time::Instant::now();
            // Off the runtime thread: the admin listener and SIGTERM go on
            // while it runs; a shutdown abandons it (fuel ends it soon after).
            let (rendered, read) =
                render::render_detached(Arc::clone(&self.renderer), i, context.clone()).await;
            if !read.is_empty() {
                // A check quoting this output's inputs is redacted too.
                let mut all: Vec<&Input> = self.inputs.iter().flatten().collect();
                all.extend(read.iter());
                redact = Redactor::new(
                    all.into_iter()
                        .filter_map(|i| Some((i.path.as_path(), i.text.as_deref()?))),
                );
            }
            let result = match rendered {
                Err(e) => Err(CycleError::Render(e)),
                Ok(output)
                    if self
                        .rejected
                        .get(&template.destination)
                        .is_some_and(|bytes| *bytes == output.as_bytes()) =>
                {
                    Ok(Step::Held)
                }
                Ok(output) => {
                    tracing::debug!(template = %self.renderer.name(i), bytes = output.len(), inputs = ?read.iter().map(|i| &i.path).collect::<Vec<_>>(), "rendered");
                    // An output that read file() is a secret: 0600 unless
                    // the config says otherwise.
                    let template: Cow<'_, _> = if !read.is_empty() && template.mode.is_none() {
                        let mut private = template.clone();
                        private.mode = Some(0o600);
                        Cow::Owned(private)
                    } else {
                        Cow::Borrowed(template)
                    };
                    match write::stage(&template, output.as_bytes()) {
                        Err(e) => Err(e.into()),
                        Ok(Plan::Unchanged | Plan::Kept) => Ok(Step::Unchanged),
                        Ok(Plan::Staged(file)) => match &template.check {
                            Some(command) => match file.check(command).await {
                                Ok(()) => Ok(Step::Staged(file, output.into_bytes())),
                                Err(e) => Err(redacted(e, &redact).into()),
                            },
                            None => Ok(Step::Staged(file, output.into_bytes())),
                        },
                    }
                }
            };
            let (result, file) = match result {
                Ok(Step::Staged(file, bytes)) => (Ok(Installed::Changed), Some((file, bytes))),
                Ok(Step::Unchanged) => (Ok(Installed::Unchanged), None),
                Ok(Step::Held) => (Ok(Installed::Held), None),
                Err(e) => (Err(e), None),
            };
            staged.push(file);
            inputs.push(read);
            outcomes.push(Outcome {
                template: self.renderer.name(i).to_string(),
                destination: template.destination.display().to_string(),
                result,
                elapsed: started.elapsed(),
            });
        }
        self.inputs = inputs;
        self.update_watched();
        let redact = self.redactor();

        // 2. All or nothing per reload group: the outputs of one action
        // form a group; each output without an action is its own. A group
        // whose action is running (its verdict pending) or within its
        // min_interval waits: nothing of it is installed now, and it is
        // rendered again when the action is free.
        let now = Instant::now();
        let actions = &config.actions;
        let group_failure: Vec<Option<String>> = (0..actions.len())
            .map(|k| {
                config
                    .templates
                    .iter()
                    .zip(&outcomes)
                    .find(|(t, o)| t.reload == Some(k) && o.result.is_err())
                    .map(|(_, o)| o.template.clone())
            })
            .collect();
        let waits: Vec<bool> = actions
            .iter()
            .enumerate()
            .map(|(k, action)| {
                let changed = config
                    .templates
                    .iter()
                    .zip(&staged)
                    .any(|(t, f)| t.reload == Some(k) && f.is_some());
                if !changed || group_failure[k].is_some() {
                    return false;
                }
                let state = self.action_states.entry(action.name.clone()).or_default();
                if state.busy {
                    state.wanted = true;
                    return true;
                }
                match state.last_run.map(|last| last + action.min_interval) {
                    Some(free_at) if free_at > now => {
                        state.retry_at = Some(free_at);
                        true
                    }
                    _ => false,
                }
            })
            .collect();
        let mut groups: Vec<Vec<InstalledOutput>> = actions.iter().map(|_| Vec::new()).collect();
        for ((template, outcome), file) in config.templates.iter().zip(&mut outcomes).zip(staged) {
            let Some((file, bytes)) = file else { continue };
            if let Some(k) = template.reload {
                if let Some(failed) = &group_failure[k] {
                    // Dropping the staged file deletes it; the old output stays.
                    outcome.result = Err(CycleError::Group(failed.clone()));
                    continue;
                }
                if waits[k] {
                    outcome.result = Ok(Installed::Deferred);
                    continue;
                }
            }
            let previous = write::previous(&template.destination);
            match file.commit() {
                Ok(()) => {
                    if let Some(k) = template.reload {
                        groups[k].push(InstalledOutput {
                            template: outcome.template.clone(),
                            destination: template.destination.clone(),
                            previous,
                            bytes,
                        });
                    }
                }
                Err(e) => outcome.result = Err(e.into()),
            }
        }

        // 3. Each action that had an output installed runs once, started in
        // the order written, beside the loop: its verdict comes back through
        // `verdicts`.
        for (action, outputs) in actions.iter().zip(groups) {
            if outputs.is_empty() {
                continue;
            }
            let state = self.action_states.entry(action.name.clone()).or_default();
            state.busy = true;
            state.last_run = Some(now);
            state.retry_at = None;
            self.verdicts
                .spawn(actions::run_group(action.clone(), outputs, redact.clone()));
        }
        self.rendered = true;
        self.publish(&outcomes);
        self.schedule_retry(&outcomes);

        // 4. Hooks, beside the render path (`run`); `once` runs them itself.
        // on_leader_change runs after the installs and reloads that name
        // the new leader, in a queue of its own.
        if let (Some(queue), Some(leader)) = (&self.leader_hook, &self.leader_hook_due) {
            queue.send_replace(Some(leader.clone().unwrap_or_default()));
            self.leader_hook_due = None;
        }
        if let Some(queue) = &self.hook_sets {
            if self.me.is_in(&peers) {
                queue.send_replace(Some(peers));
            }
        }
        outcomes
    }

    /// `run`: an install that failed on I/O (a full disk, a folder that
    /// cannot be made) is tried again with backoff until it goes through;
    /// nothing else is retried here.
    fn schedule_retry(&mut self, outcomes: &[Outcome]) {
        let failed = outcomes
            .iter()
            .any(|o| matches!(o.result, Err(CycleError::Write(_))));
        if self.mode != Mode::Run || !failed {
            self.retry = None;
            return;
        }
        let (at, delays) = self
            .retry
            .get_or_insert_with(|| (Instant::now(), install_retries()));
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        *at = Instant::now() + delay;
        tracing::info!(retry_in = ?delay, "an install failed; trying again");
    }

    /// Logs, metrics and readiness of a pass: the one place they are derived.
    fn publish(&mut self, outcomes: &[Outcome]) {
        for (i, o) in outcomes.iter().enumerate() {
            match &o.result {
                Ok(Installed::Deferred) => {
                    tracing::info!(template = %o.template, destination = %o.destination, "waiting: its reload action is busy or within min_interval; installed when it is free");
                }
                Ok(Installed::Held) => {
                    tracing::info!(template = %o.template, destination = %o.destination, "not installed: the app rejected these same bytes; waiting for a template, file() input or config change");
                }
                Ok(installed) => {
                    self.succeeded[i] = true;
                    let changed = *installed == Installed::Changed;
                    self.metrics.render(
                        &o.template,
                        if changed {
                            metrics::Render::Changed
                        } else {
                            metrics::Render::Unchanged
                        },
                    );
                    tracing::info!(template = %o.template, destination = %o.destination, changed, elapsed = ?o.elapsed, "rendered");
                }
                Err(e) => {
                    self.metrics.render(&o.template, metrics::Render::Failed);
                    if matches!(e, CycleError::Check(_)) {
                        self.metrics.check_failed(&o.template);
                    }
                    // Say what is true: at start there may be no output yet.
                    let kept = std::path::Path::new(&o.destination).exists();
                    let render = matches!(e, CycleError::Render(_));
                    match (render, kept) {
                        (true, true) => {
                            tracing::warn!(template = %o.template, error = %e, "render failed, keeping the last good output")
                        }
                        (true, false) => {
                            tracing::warn!(template = %o.template, error = %e, "render failed, no output yet")
                        }
                        (false, true) => {
                            tracing::warn!(template = %o.template, destination = %o.destination, error = %e, "not installed, keeping the last good output")
                        }
                        (false, false) => {
                            tracing::warn!(template = %o.template, destination = %o.destination, error = %e, "not installed, no output yet")
                        }
                    }
                }
            }
        }
        if self.succeeded.iter().all(|ok| *ok) {
            self.state.set_ready();
        }
        if outcomes
            .iter()
            .all(|o| matches!(o.result, Ok(Installed::Changed | Installed::Unchanged)))
        {
            self.metrics.cycle_succeeded();
        }
    }

    /// An action's run ended: count and log its verdict; after a rejection,
    /// remember the bytes the app refused (they were put back already).
    fn on_verdict(&mut self, done: Result<GroupReport, tokio::task::JoinError>) {
        let report = match done {
            Ok(report) => report,
            Err(e) => {
                tracing::error!("a reload run ended abnormally: {e}");
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
                tracing::info!(action = %action, took = ?took, "reload accepted: {how}")
            }
            Verdict::NoProcess(why) => tracing::info!(
                action = %action,
                "no process to reload ({why}); it reads the new file when it starts"
            ),
            Verdict::Failed(why) => tracing::warn!(action = %action, "reload failed: {why}"),
            Verdict::Rejected(why) => {
                tracing::warn!(action = %action, took = ?took, "reload rejected by the app: {why}")
            }
        }
        for (out, undone) in &report.outputs {
            match undone {
                None => {}
                Some(Ok(())) => {
                    self.rejected
                        .insert(out.destination.clone(), out.bytes.clone());
                    self.metrics.render(&out.template, metrics::Render::Failed);
                    tracing::warn!(
                        action = %action,
                        template = %out.template,
                        destination = %out.destination.display(),
                        rollback = ?report.rollback.unwrap_or_default(),
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
    fn action_retry(&self) -> Option<Instant> {
        self.action_states.values().filter_map(|s| s.retry_at).min()
    }

    /// Renders again the outputs whose action's `min_interval` ended.
    fn retry_actions(&mut self) {
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

    /// Re-reads the config file. A valid, changed one replaces the running
    /// config (the workers whose settings changed are restarted) and is
    /// rendered at the next pass; an invalid one is logged and counted, and
    /// the running config stays. True if it changed.
    fn reload_config(&mut self, workers: &mut Workers) -> bool {
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
        tracing::info!(config = %path.display(), templates = self.config.templates.len(), actions = ?action_names(&self.config), "config reloaded");
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

    /// `once` with `sticky` or `probe`: one round of asking (bounded by the
    /// policy's timeout) before the render, so an init container follows
    /// the leader its peers chose.
    async fn ask_leader_once(&mut self) {
        let view = leader::View {
            peers: self.peers.clone().unwrap_or_default(),
            leader: None,
            ask_now: 0,
        };
        if let Some(hint) = leader::ask_once(&self.config.leader, &self.me, &view).await {
            let change = self.leadership.hint(&hint, &view.peers, Instant::now());
            self.apply_leader(change);
        }
    }

    /// `once`: the exit status from the pass's outcomes, then the bootstrap
    /// hook and `on_leader_change`, which must succeed too.
    async fn finish_once(
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
        while !self.verdicts.is_empty() {
            let done = tokio::select! {
                _ = shutdown.cancelled() => return self.interrupted(),
                Some(done) = self.verdicts.join_next() => done,
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
        let peers = self.peers.clone().unwrap_or_default();
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
            let leader = self.leadership.current().map(|l| l.fqdn.clone());
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

/// What rendering one template came to, before the groups are decided.
enum Step {
    /// New bytes, staged (and checked).
    Staged(write::Staged, Vec<u8>),
    Unchanged,
    /// The bytes an app rejected: not installed again.
    Held,
}

/// A check's stderr with the `file()` inputs hidden.
fn redacted(e: WriteError, redact: &Redactor) -> WriteError {
    match e {
        WriteError::CheckFailed {
            command,
            status,
            stderr,
        } => WriteError::CheckFailed {
            command,
            status,
            stderr: redact.apply(&stderr),
        },
        other => other,
    }
}

/// Adds a worker to the set, under its name.
fn spawn(workers: &mut Workers, name: &'static str, worker: Worker) {
    workers.spawn(async move { (name, worker.await) });
}

/// SIGHUP re-reads the config and re-renders everything now (ignoring
/// `wait`); the app is reloaded only if bytes changed. (SIGUSR1/SIGUSR2 are logged and ignored by
/// `main`, so none of the three ever ends the process.)
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

fn signals_worker(ctx: Context) -> Result<Worker, SourceError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| SourceError::Setup(format!("cannot listen for SIGHUP: {e}")))?;
    Ok(Box::pin(async move {
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                got = hup.recv() => {
                    if got.is_none() || ctx.events.send(Event::Rerender).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
