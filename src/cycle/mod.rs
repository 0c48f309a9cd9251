//! The loop: the one place that decides when to render, and the supervisor
//! of every worker.
//!
//! Sources (the peer source, the template watcher, SIGHUP) only report what
//! they saw. This loop keeps the last known peer set, holds rendering back
//! until this pod is in it (`wait_for_self`), waits for a quiet moment
//! (`wait.min`, bounded by `wait.max`) so a burst of changes gives one
//! render, then runs a pass: every template rendered, staged and checked
//! first, installed only when its whole reload group passed, and the app
//! reloaded once for the pass. A pass returns one [`Outcome`] per template;
//! metrics, readiness and `once`'s exit code are each derived from that list
//! in one place. Hooks run beside this path in a queue of their own
//! ([`hooks::queue`]), never in front of a render.
//!
//! Every worker runs in one `JoinSet`. One that ends while the loop runs is
//! logged, counted (`peerplate_workers_ended_total`) and turns `/healthz` to
//! 503, since the loop is no longer whole; at shutdown the loop waits for all
//! of them, bounded so SIGTERM still exits within a second.

mod outcome;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use outcome::{CycleError, Installed, Outcome};

use crate::admin::{self, State};
use crate::config::Policy;
use crate::config::{Config, PeerSource, Wait};
use crate::error::Error;
use crate::event::{Context, Event, SourceError, Worker};
use crate::hooks;
use crate::leader::{self, Leadership};
use crate::metrics::{self, Metrics};
use crate::peers::{self, Identity, PeerSet};
use crate::reload;
use crate::render::{self, Renderer};
use crate::watch as template_watch;
use crate::write::{self, Plan};

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
    renderer: Renderer,
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
}

impl Loop {
    fn new(config: Config, mode: Mode) -> Loop {
        let renderer = Renderer::load(&config.templates);
        let metrics = Arc::new(Metrics::new());
        let names: Vec<String> = (0..config.templates.len())
            .map(|i| renderer.name(i).to_string())
            .collect();
        let hooks: Vec<&str> = match &config.hooks {
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
        };
        metrics.expect(
            &names,
            matches!(config.peers.source, PeerSource::Dns(_)),
            config.reload.is_some(),
            &hooks,
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
        }
    }

    /// Starts every worker of this config into `workers`. Setup failures
    /// stop the start.
    async fn start_workers(&mut self, workers: &mut Workers, ctx: &Context) -> Result<(), Error> {
        let mut add = |name: &'static str, worker: Worker| {
            workers.spawn(async move { (name, worker.await) });
        };
        if self.mode == Mode::Run && !self.config.templates.is_empty() {
            let sources = self
                .config
                .templates
                .iter()
                .map(|t| t.source.clone())
                .collect();
            add("templates", template_watch::worker(sources, ctx.clone())?);
        }
        let (name, worker) = peers::worker(&self.config, self.mode == Mode::Run, ctx.clone())?;
        add(name, worker);
        if self.mode == Mode::Run {
            add("signals", signals_worker(ctx.clone())?);
            if self.config.leader.policy != Policy::Ordinal {
                let (tx, rx) = watch::channel(leader::View::default());
                self.leader_views = Some(tx);
                add(
                    "leader",
                    leader::worker(self.config.leader.clone(), self.me.clone(), rx, ctx.clone())?,
                );
            }
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
                let (tx, body) = hooks::leader_queue(
                    command,
                    timeout,
                    Arc::clone(&self.metrics),
                    ctx.shutdown.clone(),
                );
                self.leader_hook = Some(tx);
                add(
                    "leader_hook",
                    Box::pin(async move {
                        body.await;
                        Ok(())
                    }),
                );
            }
            if let Some(hooks) = self.config.hooks.clone() {
                let (tx, body) =
                    hooks::queue(hooks, Arc::clone(&self.metrics), ctx.shutdown.clone());
                self.hook_sets = Some(tx);
                add(
                    "hooks",
                    Box::pin(async move {
                        body.await;
                        Ok(())
                    }),
                );
            }
        }
        if let Some(http) = &self.config.http {
            let listener = admin::bind(http.listen).await.map_err(|source| Error::Io {
                path: format!("http.listen {}", http.listen).into(),
                source,
            })?;
            let state = Arc::clone(&self.state);
            let shutdown = ctx.shutdown.clone();
            add(
                "admin",
                Box::pin(async move {
                    admin::serve(listener, state, shutdown).await;
                    Ok(())
                }),
            );
        }
        Ok(())
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
        self.start_workers(&mut workers, &ctx).await?;
        let worker_shutdown = ctx.shutdown.clone();
        drop(ctx);

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
                    self.on_event(event);
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
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break self.interrupted(),
                Some(event) = events.recv() => self.on_event(event),
                Some(error) = errors.recv() => tracing::warn!("{error}"),
                Some(ended) = workers.join_next() => self.worker_ended(ended),
                // Due now: the top of the loop renders.
                _ = sleep_until(due), if due.is_some() => {}
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
        match self.mode {
            Mode::Run => Ok(()),
            Mode::Once => Err(Error::Incomplete(
                "interrupted before every output was installed".into(),
            )),
        }
    }

    fn on_event(&mut self, event: Event) {
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
            }
            Event::Rerender => {
                tracing::info!("SIGHUP: re-reading the templates and rendering now");
                self.templates_dirty = true;
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
        tracing::info!(
            old = change.old.as_deref().unwrap_or("none"),
            new = change.new.as_deref().unwrap_or("none"),
            why = %change.why,
            policy = self.leadership.policy(),
            "leader changed"
        );
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
    /// group only if all of it passed; reload once; publish the outcome.
    async fn pass(&mut self) -> Vec<Outcome> {
        self.pending = None;
        if self.templates_dirty {
            self.renderer = Renderer::load(&self.config.templates);
            self.templates_dirty = false;
        }
        let config = Arc::clone(&self.config);
        let peers = self.peers.clone().unwrap_or_default();
        let context = render::context(&config, &peers, self.leadership.current());

        // 1. Render, stage and check everything; install nothing yet.
        let mut staged = Vec::with_capacity(config.templates.len());
        let mut outcomes = Vec::with_capacity(config.templates.len());
        for (i, template) in config.templates.iter().enumerate() {
            let started = std::time::Instant::now();
            let result = match self.renderer.render(i, &context) {
                Err(e) => Err(CycleError::Render(e)),
                Ok(output) => match write::stage(template, output.as_bytes()) {
                    Err(e) => Err(e.into()),
                    Ok(Plan::Unchanged | Plan::Kept) => Ok(None),
                    Ok(Plan::Staged(file)) => match &template.check {
                        Some(command) => match file.check(command).await {
                            Ok(()) => Ok(Some(file)),
                            Err(e) => Err(e.into()),
                        },
                        None => Ok(Some(file)),
                    },
                },
            };
            let (result, file) = match result {
                Ok(Some(file)) => (Ok(Installed::Changed), Some(file)),
                Ok(None) => (Ok(Installed::Unchanged), None),
                Err(e) => (Err(e), None),
            };
            staged.push(file);
            outcomes.push(Outcome {
                template: self.renderer.name(i).to_string(),
                destination: template.destination.display().to_string(),
                result,
                elapsed: started.elapsed(),
            });
        }

        // 2. All or nothing per reload group: the outputs that trigger the
        // reload form one group; each `reload: false` output is its own.
        let group_failure = config
            .templates
            .iter()
            .zip(&outcomes)
            .find(|(t, o)| t.reload && o.result.is_err())
            .map(|(_, o)| o.template.clone());
        let mut installed_reloadable = false;
        for ((template, outcome), file) in config.templates.iter().zip(&mut outcomes).zip(staged) {
            let Some(file) = file else { continue };
            if template.reload {
                if let Some(failed) = &group_failure {
                    // Dropping the staged file deletes it; the old output stays.
                    outcome.result = Err(CycleError::Group(failed.clone()));
                    continue;
                }
            }
            match file.commit() {
                Ok(()) => installed_reloadable |= template.reload,
                Err(e) => outcome.result = Err(e.into()),
            }
        }

        // 3. Reload once, after every output of the pass is in place.
        let reloaded = match (&config.reload, installed_reloadable) {
            (Some(reload), true) => Some(reload::send(reload)),
            _ => None,
        };
        self.rendered = true;
        self.publish(&outcomes, reloaded.as_ref());

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

    /// Logs, metrics and readiness of a pass: the one place they are derived.
    fn publish(&mut self, outcomes: &[Outcome], reloaded: Option<&reload::Outcome>) {
        for (i, o) in outcomes.iter().enumerate() {
            match &o.result {
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
                    match e {
                        CycleError::Render(_) => {
                            tracing::warn!(template = %o.template, error = %e, "render failed, keeping the last good output")
                        }
                        _ => {
                            tracing::warn!(template = %o.template, destination = %o.destination, error = %e, "not installed, keeping the last good output")
                        }
                    }
                }
            }
        }
        if let Some(outcome) = reloaded {
            self.metrics.reload(outcome.metric());
        }
        if self.succeeded.iter().all(|ok| *ok) {
            self.state.set_ready();
        }
        if outcomes.iter().all(|o| o.result.is_ok()) {
            self.metrics.cycle_succeeded();
        }
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
            Err(e) => Some(Error::Incomplete(format!("{}: {e}", o.template))),
            Ok(_) => None,
        }) {
            return Err(failed);
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

/// SIGHUP re-renders everything now (ignoring `wait`); the app is reloaded
/// only if bytes changed. (SIGUSR1/SIGUSR2 are logged and ignored by
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
