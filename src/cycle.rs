//! The loop: the one place that decides when to render.
//!
//! Sources (the peer source, the template watcher) only report what they
//! saw. This loop keeps the last known peer set, holds rendering back until
//! this pod is in it (`wait_for_self`), waits for a quiet moment (`wait.min`,
//! bounded by `wait.max`) so a burst of changes gives one render, then renders
//! every template, installs what changed, and reloads the app once for the
//! whole cycle. Failures inside a cycle are logged and the last good output
//! stays; the loop goes on.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Render, Status};
use crate::config::{Config, Hooks, PeerSource};
use crate::error::Error;
use crate::hooks;
use crate::peers::{self, PeerSet};
use crate::reload;
use crate::render::{self, Renderer};
use crate::watch;
use crate::write::{self, Plan, WriteError};

/// What a source tells the loop.
#[derive(Debug)]
pub enum Event {
    /// The source's whole current peer set.
    Peers(PeerSet),
    /// A template source's bytes changed.
    Templates,
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
/// template once, and returns. Fails if any template could not be installed.
pub async fn once(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    Loop::new(config, Mode::Once).run(shutdown).await
}

/// A change seen but not yet rendered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    last: Instant,
}

impl Pending {
    /// When to render: `min` after the last change, but no later than `max`
    /// after the first (if `max` is set).
    fn due(&self, wait: &crate::config::Wait) -> Instant {
        let quiet = self.last + wait.min;
        if wait.max.is_zero() {
            quiet
        } else {
            quiet.min(self.first + wait.max)
        }
    }
}

struct Loop {
    config: Arc<Config>,
    status: Arc<Status>,
    /// Which templates have rendered and installed at least once: all of
    /// them make the pod ready.
    succeeded: Vec<bool>,
    mode: Mode,
    renderer: Renderer,
    templates_dirty: bool,
    peers: Option<PeerSet>,
    pending: Option<Pending>,
    /// Set after the first cycle: from then on `wait_for_self` no longer holds
    /// rendering back (a pod briefly missing from DNS keeps its config).
    rendered: bool,
    waiting_since: Option<Instant>,
    /// The peer set the hooks last saw; `None` until `on_start` has run.
    hooked: Option<PeerSet>,
}

impl Loop {
    fn new(config: Config, mode: Mode) -> Loop {
        let renderer = Renderer::load(&config.templates);
        let status = Status::new();
        let names: Vec<String> = (0..config.templates.len())
            .map(|i| renderer.name(i).to_string())
            .collect();
        let hooks: Vec<&str> = match &config.hooks {
            Some(h) => [("on_start", &h.on_start), ("on_change", &h.on_change)]
                .into_iter()
                .filter(|(_, command)| command.is_some())
                .map(|(which, _)| which)
                .collect(),
            None => Vec::new(),
        };
        status.expect(
            &names,
            matches!(config.peers.source, PeerSource::Dns(_)),
            config.reload.is_some(),
            &hooks,
        );
        Loop {
            status: Arc::new(status),
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
            }),
            rendered: false,
            waiting_since: None,
            hooked: None,
        }
    }

    async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let (event_tx, mut events) = mpsc::channel(64);
        let (error_tx, mut errors) = mpsc::channel(64);
        let workers = shutdown.child_token();
        // Stop the workers however this function returns.
        let _stop_workers = workers.clone().drop_guard();

        if self.mode == Mode::Run && !self.config.templates.is_empty() {
            let sources: Vec<PathBuf> = self
                .config
                .templates
                .iter()
                .map(|t| t.source.clone())
                .collect();
            watch::spawn_templates(sources, event_tx.clone(), error_tx.clone(), workers.clone())?;
        }
        peers::spawn(
            &self.config,
            Arc::clone(&self.status),
            event_tx,
            error_tx,
            workers.clone(),
        )?;
        if let Some(http) = &self.config.http {
            admin::serve(http.listen, Arc::clone(&self.status), workers.clone()).await?;
        }

        let give_up = match (self.mode, self.config.peers.timeout) {
            (Mode::Once, t) if !t.is_zero() => Some(Instant::now() + t),
            _ => None,
        };

        loop {
            if self.due().is_some_and(|d| d <= Instant::now()) {
                // Due (at once when wait.min is 0): take what has already
                // arrived, so a burst is one render, and render now rather
                // than through a timer that rounds up to the next millisecond.
                while let Ok(event) = events.try_recv() {
                    self.on_event(event);
                }
                if self.due().is_some_and(|d| d <= Instant::now()) {
                    let result = tokio::select! {
                        // A cycle in the middle of a check is abandoned; the
                        // staged file is removed and the old output stays.
                        _ = shutdown.cancelled() => return self.interrupted(),
                        result = self.cycle() => result,
                    };
                    if self.mode == Mode::Once {
                        return result;
                    }
                    continue;
                }
            }
            let due = self.due();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.interrupted(),
                Some(event) = events.recv() => self.on_event(event),
                Some(error) = errors.recv() => tracing::warn!("{error}"),
                // Due now: the top of the loop renders.
                _ = sleep_until(due), if due.is_some() => {}
                _ = sleep_until(give_up), if give_up.is_some() => {
                    return Err(Error::PeerTimeout(self.timeout_message()));
                }
            }
        }
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
        match event {
            Event::Peers(set) => {
                if self.peers.as_ref() == Some(&set) {
                    return;
                }
                tracing::info!(count = set.len(), peers = ?set.names(), "peer set changed");
                self.status.peers(set.len());
                self.peers = Some(set);
                self.note_self_wait();
            }
            Event::Templates => {
                tracing::info!("template sources changed");
                self.templates_dirty = true;
            }
        }
        let now = Instant::now();
        self.pending = Some(match self.pending {
            Some(p) => Pending { last: now, ..p },
            None => Pending {
                first: now,
                last: now,
            },
        });
    }

    /// Whether `wait_for_self` still holds rendering back.
    fn held_for_self(&self) -> bool {
        let Some(peers) = &self.peers else {
            return true;
        };
        self.config.peers.wait_for_self
            && !self.rendered
            && !peers.iter().any(|p| self.config.is_self(p))
    }

    /// Logs the wait for this pod once when it starts and once when it ends,
    /// not on every poll.
    fn note_self_wait(&mut self) {
        let held = self.held_for_self();
        let seen = self.peers.as_ref().map(PeerSet::names).unwrap_or_default();
        let name = self.own_name();
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

    fn own_name(&self) -> String {
        self.config
            .pod_fqdn
            .clone()
            .unwrap_or_else(|| self.config.identity.hostname.clone())
    }

    fn due(&self) -> Option<Instant> {
        if self.held_for_self() {
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
            self.own_name()
        )
    }

    /// Renders every template, installs what changed, reloads once.
    async fn cycle(&mut self) -> Result<(), Error> {
        self.pending = None;
        if self.templates_dirty {
            self.renderer = Renderer::load(&self.config.templates);
            self.templates_dirty = false;
        }
        let config = Arc::clone(&self.config);
        let peers = self.peers.clone().unwrap_or_default();
        let context = render::context(&config, &peers);
        let mut first_failure: Option<Error> = None;
        let mut installed_reloadable = false;

        for (i, template) in config.templates.iter().enumerate() {
            let started = std::time::Instant::now();
            let name = self.renderer.name(i).to_string();
            let destination = template.destination.display().to_string();
            let output = match self.renderer.render(i, &context) {
                Ok(output) => output,
                Err(e) => {
                    self.status.render(&name, Render::Failed);
                    tracing::warn!(template = %name, error = %e, "render failed, keeping the last good output");
                    first_failure.get_or_insert(Error::Template(e));
                    continue;
                }
            };
            let installed = match write::stage(template, output.as_bytes()) {
                Ok(Plan::Unchanged) | Ok(Plan::Kept) => Ok(false),
                Ok(Plan::Staged(staged)) => {
                    let checked = match &template.check {
                        Some(command) => staged.check(command).await,
                        None => Ok(()),
                    };
                    checked.and_then(|()| staged.commit()).map(|()| true)
                }
                Err(e) => Err(e),
            };
            match installed {
                Ok(changed) => {
                    self.succeeded[i] = true;
                    self.status.render(
                        &name,
                        if changed {
                            Render::Changed
                        } else {
                            Render::Unchanged
                        },
                    );
                    tracing::info!(template = %name, destination = %destination, changed, elapsed = ?started.elapsed(), "rendered");
                    installed_reloadable |= changed && template.reload;
                }
                Err(e) => {
                    self.status.render(&name, Render::Failed);
                    if matches!(e, WriteError::CheckFailed { .. }) {
                        self.status.check_failed(&name);
                    }
                    tracing::warn!(template = %name, destination = %destination, error = %e, "not installed, keeping the last good output");
                    first_failure.get_or_insert(Error::Incomplete(format!("{name}: {e}")));
                }
            }
        }
        self.rendered = true;
        // Once, after every output of the cycle is in place.
        if installed_reloadable {
            if let Some(reload) = &config.reload {
                self.status.reload(match reload::send(reload) {
                    reload::Outcome::Signalled(_) => admin::Reload::Signalled,
                    reload::Outcome::NoProcess(_) => admin::Reload::NoProcess,
                    reload::Outcome::Failed(_) => admin::Reload::Failed,
                });
            }
        }
        if self.succeeded.iter().all(|ok| *ok) {
            self.status.set_ready();
        }
        if first_failure.is_none() {
            self.status.cycle_succeeded();
        }
        if let Some(hooks) = &config.hooks {
            self.run_hooks(hooks, &peers).await;
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `on_start` once the set first includes this pod (`on_change` stands
    /// in when there is no `on_start`, as in peer-finder), then `on_change`
    /// whenever the set differs from the one the hooks last saw.
    async fn run_hooks(&mut self, hooks: &Hooks, peers: &PeerSet) {
        let (which, command) = match &self.hooked {
            None if !peers.iter().any(|p| self.config.is_self(p)) => return,
            None => match (&hooks.on_start, &hooks.on_change) {
                (Some(c), _) => ("on_start", c),
                (None, Some(c)) => ("on_change", c),
                (None, None) => return,
            },
            Some(seen) if seen == peers => return,
            Some(_) => match &hooks.on_change {
                Some(c) => ("on_change", c),
                None => {
                    self.hooked = Some(peers.clone());
                    return;
                }
            },
        };
        // A failed hook is not retried until the next change: a hook that
        // fails every time must not run every interval.
        self.hooked = Some(peers.clone());
        let result = hooks::run(which, command, peers, hooks.timeout).await;
        self.status.hook(
            which,
            match &result {
                Ok(()) => admin::Hook::Ok,
                Err(hooks::HookError::Timeout { .. }) => admin::Hook::Timeout,
                Err(_) => admin::Hook::Failed,
            },
        );
        match result {
            // Already logged where it was killed.
            Ok(()) | Err(hooks::HookError::Timeout { .. }) => {}
            Err(e) => tracing::warn!(hook = which, "{e}"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
