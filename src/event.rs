//! What workers tell the loop, and the one shape every worker has.
//!
//! A worker (a peer source, the template watcher, and any source to come)
//! gets one [`Context`]: it sends [`Event`]s on `events` and the trouble it
//! survives as [`SourceError`]s on `errors`, counts into `metrics`, and stops
//! when `shutdown` is cancelled. It is built by a function of one shape,
//! `fn worker(settings, Context) -> Result<Worker, SourceError>`: setup
//! failures (no inotify, no DNS server) come back at once and stop the start;
//! the returned [`Worker`] is the body, which the loop supervises in a
//! `JoinSet`. A worker that returns before shutdown has ended early: the loop
//! logs it, counts it and fails `/healthz`. (This is watchexec's shape.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, SourceErrorKind};
use crate::peers::model::PeerSet;

/// What a source tells the loop.
#[derive(Debug)]
pub enum Event {
    /// The source's whole current peer set.
    Peers(PeerSet),
    /// A template source's bytes changed.
    Templates,
    /// A file a template read with `file()` changed.
    Inputs,
    /// The config file's bytes changed: re-read it.
    Config,
    /// SIGHUP: re-read the config and the templates and render now,
    /// whatever `wait` says.
    Rerender,
    /// DNS lookups work again after an outage: time to ask peers who leads.
    Recovered,
    /// What the leader worker learnt from the peers or the app.
    LeaderHint(LeaderHint),
    /// The leader this pod follows confirmed, at its own `GET /leader`, that
    /// it resigned and named a successor.
    Resigned(Resigned),
    /// One `probe` round: which peers' apps claim to lead.
    Probed(ProbeRound),
}

/// A resignation the resigning leader itself confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resigned {
    /// The leader that resigned (the one this pod followed), FQDN.
    pub leader: String,
    /// The successor it named, FQDN.
    pub successor: String,
}

/// What one `probe` round saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRound {
    /// The peers whose app answered 2xx at `probe.url`, in ordinal order.
    pub claimants: Vec<String>,
    /// What the ready peers' sidecars answered at `GET /leader` (asked only
    /// when two or more claim, or when none does before any was confirmed).
    pub named: Vec<String>,
    /// `probe.url`, for the log line.
    pub url: String,
}

/// A leader named by the peers (plurality of their `GET /leader`) or by the
/// app (`probe`); `None`: the app named nobody. The loop decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader: Option<String>,
    /// For the log line: who said so.
    pub why: String,
    /// How many ready peers were asked when none of them answered (0 when
    /// one did, or when there was nobody to ask).
    pub unanswered: usize,
}

/// Trouble a worker reports: at setup (it stops the start) or while it runs
/// (logged and counted; the worker goes on, the last known state stays).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("file watcher: {0}")]
    Watch(String),
    #[error("{0}")]
    PeerFile(String),
    #[error("DNS lookup of {query} failed: {reason}; keeping the last known peers")]
    Lookup { query: String, reason: String },
    /// The worker could not be set up (a thread, a socket, a watch).
    #[error("{0}")]
    Setup(String),
    /// A worker's body returned before shutdown.
    #[error("{worker} stopped: {reason}")]
    Ended { worker: String, reason: String },
}

impl SourceError {
    /// The `kind` label of `peerplate_source_errors_total`.
    pub fn kind(&self) -> SourceErrorKind {
        match self {
            SourceError::Watch(_) => SourceErrorKind::Watch,
            SourceError::PeerFile(_) => SourceErrorKind::PeerFile,
            SourceError::Lookup { .. } => SourceErrorKind::Lookup,
            SourceError::Setup(_) => SourceErrorKind::Setup,
            SourceError::Ended { .. } => SourceErrorKind::Ended,
        }
    }
}

/// Everything a worker gets; cheap to clone.
#[derive(Clone, Debug)]
pub struct Context {
    pub events: mpsc::Sender<Event>,
    pub errors: mpsc::Sender<SourceError>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// A worker's body. `Ok(())` after shutdown is the normal end; returning
/// while the loop still runs (either way) means the worker ended early.
pub type Worker = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// Set up in tests only: the worker named here ends with an error right
/// after its first event, so the loop's supervision can be seen from the
/// binary. Compiled into debug builds only.
pub fn fault_injected(worker: &str) -> bool {
    cfg!(debug_assertions)
        && std::env::var("PEERPLATE_TEST_END_WORKER").is_ok_and(|name| name == worker)
}
