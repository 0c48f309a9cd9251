//! peerplate: the config-templating sidecar for Kubernetes StatefulSets.
//!
//! It finds the pod's peers, renders Jinja templates with them, installs the
//! outputs atomically into a volume shared with the application, and tells
//! the application to reload when an output really changed. The same binary
//! serves as an init container (`once`) and as a template author's tool
//! (`render`, `check`). The contract, and what was decided where it was
//! silent: README.md.
//!
//! # Layout
//!
//! The modules follow the data, and each imports only from the layers
//! below it (a test, `tests/integration/structure.rs`, fails on any import
//! cycle):
//!
//! ```text
//!   peers (static | file | dns) ──────┐
//!   watch (templates, file(), config) ┼─► cycle: debounce ─► render ─► write (stage, check; all or nothing per action)
//!   SIGHUP, leader worker ────────────┘          │                        ├─► action ─► verdict ─► rollback
//!                                                │                        └─► hooks (own queues)
//!                                                └─ admin (/healthz /readyz /metrics /leader) reads the loop's State
//! ```
//!
//! Layers, bottom up:
//!
//! 0. [`limits`]: the bounds on what peerplate reads, and the one bounded
//!    way to read a file; [`log`]: the log's text and JSON formats.
//! 1. [`config`]: the YAML schema ([`config`]`::raw`), its resolution into a
//!    [`Config`] as a pure function of the file and the pod's environment,
//!    and errors that name the file, the line and the fix.
//! 2. [`peers::model`]: `Peer`, `PeerSet` and this pod's `Identity` ("is this
//!    peer me?"), worked out in one place.
//! 3. [`event`] (what workers send, the worker [`event::Context`]) and
//!    [`metrics`] (the registry and its label types).
//! 4. The workers and stages: [`peers`] sources (`static`, `file`, `dns`
//!    with its wire client apart), [`watch`] (templates, `file()` inputs,
//!    the config), [`render`], [`write`], [`reload`] (signals), [`action`]
//!    (one reload action and the app's verdict), [`leader`] (the policies
//!    and the worker that asks peers and apps), [`resign`] (a leader's
//!    hand-over on shutdown and the check a follower makes), [`hooks`], over [`process`]
//!    (child processes and `/proc`), [`http_client`] and [`redact`]
//!    (`file()` inputs kept out of the log); [`seed`] for `once`; [`admin`],
//!    the HTTP side.
//! 5. [`cycle`]: the loop, which supervises every worker and is the only
//!    module that knows all the others; one file per job (`workers`, `view`:
//!    partial sets and the leader, `pass`, `verdicts`, `live`: the config
//!    re-read, `once`).
//! 6. [`cli`] and [`peer_finder`], then `main`; [`error`] is the startup
//!    error they turn into exit codes.
//!
//! Every source is a worker of the same shape ([`event`]): one context
//! (`events`, `errors`, `metrics`, `shutdown`), one constructor signature,
//! supervised by the loop in a `JoinSet`. [`run`] takes its shutdown token
//! as a parameter, so tests drive the whole loop with a token of their own.

pub(crate) mod action;
pub(crate) mod admin;
pub mod cli;
pub mod config;
pub(crate) mod cycle;
pub mod error;
pub(crate) mod event;
pub(crate) mod hooks;
pub(crate) mod http_client;
pub(crate) mod leader;
pub(crate) mod limits;
pub mod log;
pub(crate) mod metrics;
pub(crate) mod owed;
pub mod peer_finder;
pub mod peers;
pub mod process;
pub(crate) mod prune;
pub(crate) mod redact;
pub(crate) mod reload;
pub mod render;
pub(crate) mod resign;
pub(crate) mod seed;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod watch;
pub(crate) mod write;

pub use config::Config;
pub use cycle::{once, run};
pub use error::Error;
