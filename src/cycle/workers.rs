//! Starting the loop's workers (the peer source, the file watcher, SIGHUP,
//! the leader worker, the hook queues, the admin listener), each under a
//! shutdown token of its own where a config change may restart it, and
//! telling the file watcher what to watch as the config and the `file()`
//! inputs change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{spawn, Loop, Mode, Workers};
use crate::admin;
use crate::config::{PeerSource, Policy};
use crate::error::Error;
use crate::event::{Context, Event, SourceError, Worker};
use crate::hooks;
use crate::leader;
use crate::peers;
use crate::peers::PeerSet;
use crate::redact::Redactor;
use crate::watch::{self as file_watch, Watched};

/// The workers' side of the loop: what it needs to restart them and to tell
/// them what changed.
#[derive(Default)]
pub(super) struct Supervisor {
    /// The workers' context, kept to restart workers after a config change.
    pub ctx: Option<Context>,
    /// The shutdown tokens of the workers a config change may restart.
    pub tokens: HashMap<&'static str, (CancellationToken, &'static str)>,
    /// Workers stopped on purpose (a config change), whose end is expected.
    pub retired: HashMap<&'static str, usize>,
    /// Where the loop tells the file watcher what to watch.
    pub watched: Option<watch::Sender<Watched>>,
    /// Where `run` publishes peer sets for the hook queue.
    pub hook_sets: Option<watch::Sender<Option<PeerSet>>>,
}

impl Loop {
    /// A context for the worker `name` whose shutdown token a config change
    /// can cancel alone (the one it had before is cancelled and its end
    /// expected).
    pub(super) fn restartable(
        &mut self,
        key: &'static str,
        name: &'static str,
        ctx: &Context,
    ) -> Context {
        self.retire(key);
        let token = ctx.shutdown.child_token();
        self.supervisor.tokens.insert(key, (token.clone(), name));
        Context {
            shutdown: token,
            ..ctx.clone()
        }
    }

    /// Stops the worker started under `key`, if any; its end is expected.
    pub(super) fn retire(&mut self, key: &'static str) {
        if let Some((old, name)) = self.supervisor.tokens.remove(key) {
            old.cancel();
            *self.supervisor.retired.entry(name).or_default() += 1;
        }
    }

    /// Starts every worker of this config into `workers`. Setup failures
    /// stop the start.
    pub(super) async fn start_workers(
        &mut self,
        workers: &mut Workers,
        ctx: &Context,
    ) -> Result<(), Error> {
        if self.mode == Mode::Run {
            let (tx, rx) = watch::channel(self.watched_now());
            self.supervisor.watched = Some(tx);
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
            // Not a child of the loop's shutdown: a resigning leader answers
            // `GET /leader` with its successor until the loop lets it go.
            let shutdown = CancellationToken::new();
            self.supervisor
                .tokens
                .insert("admin", (shutdown.clone(), "admin"));
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
    pub(super) fn start_peers(
        &mut self,
        workers: &mut Workers,
        ctx: &Context,
    ) -> Result<(), Error> {
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
    pub(super) fn start_leader(
        &mut self,
        workers: &mut Workers,
        ctx: &Context,
    ) -> Result<(), Error> {
        self.retire("leader");
        self.leader.views = None;
        self.state.set_notices(None);
        if self.config.leader.policy != Policy::Ordinal {
            let (tx, rx) = watch::channel(leader::View::default());
            self.leader.views = Some(tx);
            // Resignation notices (sticky): one check at a time.
            let (notice_tx, notices) = mpsc::channel(1);
            if let Policy::Sticky { .. } = self.config.leader.policy {
                self.state.set_notices(Some(notice_tx));
            }
            let ctx = self.restartable("leader", "leader", ctx);
            spawn(
                workers,
                "leader",
                leader::worker(
                    self.config.leader.clone(),
                    self.me.clone(),
                    rx,
                    notices,
                    ctx,
                )?,
            );
        }
        Ok(())
    }

    /// The hook queues (`on_start`/`on_change`, `on_leader_change`).
    pub(super) fn start_hooks(&mut self, workers: &mut Workers, ctx: &Context) {
        self.retire("leader_hook");
        self.retire("hooks");
        self.leader.hook = None;
        self.supervisor.hook_sets = None;
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
                hooks::leader_queue(command, timeout, Arc::clone(&self.state), ctx.shutdown);
            self.leader.hook = Some(tx);
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
            let (tx, body) = hooks::queue(hooks, Arc::clone(&self.state), ctx.shutdown);
            self.supervisor.hook_sets = Some(tx);
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
    pub(super) fn watched_now(&self) -> Watched {
        let mut inputs: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
        for input in self.templates.inputs.iter().flatten() {
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
    pub(super) fn update_watched(&self) {
        if let Some(tx) = &self.supervisor.watched {
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

    /// Everything the last pass read with `file()` and `env()`, to hide
    /// from the log.
    pub(super) fn redactor(&self) -> Redactor {
        let vars = self.env_read_all();
        Redactor::with_env(
            self.templates
                .inputs
                .iter()
                .flatten()
                .filter_map(|i| Some((i.path.as_path(), i.text.as_deref()?))),
            vars.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        )
    }

    /// The `env()` variables (name, value) every template's last render read.
    pub(super) fn env_read_all(&self) -> Vec<(String, String)> {
        (0..self.config.templates.len())
            .flat_map(|i| self.templates.renderer.env_read(i))
            .collect()
    }

    /// Whether template `i`'s last render read a `file()` input or an
    /// `env()` variable.
    pub(super) fn read_secrets(&self, i: usize) -> bool {
        self.templates.inputs.get(i).is_some_and(|r| !r.is_empty())
            || !self.templates.renderer.env_read(i).is_empty()
    }
}

/// SIGHUP re-reads the config and re-renders everything now (ignoring
/// `wait`); the app is reloaded only if bytes changed. (SIGUSR1/SIGUSR2 are logged and ignored by
/// `main`, so none of the three ever ends the process.)
pub(super) fn signals_worker(ctx: Context) -> Result<Worker, SourceError> {
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
