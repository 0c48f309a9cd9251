//! peerplate: the config-templating sidecar for Kubernetes StatefulSets.
//!
//! It finds the pod's peers, renders Jinja templates with them, installs the
//! outputs atomically into a volume shared with the application, and tells
//! the application to reload when an output really changed. The same binary
//! serves as an init container (`once`) and as a template author's tool
//! (`render`, `check`). `../SPEC.md`-style contract: see README.md.
//!
//! # Layout
//!
//! The modules follow the data, left to right:
//!
//! ```text
//! peers (static | file | dns) ──┐
//!                               ├─► cycle: debounce ─► render ─► write (stage, check, rename) ─► reload (signal)
//! watch (templates, ..data) ────┘                                                            └─► hooks (stdin)
//!                 admin (/healthz /readyz /metrics) reads the loop's Status
//! ```
//!
//! - [`config`]: the YAML schema, defaults from the pod's environment, and
//!   errors that name the file, the line and the fix.
//! - [`peers`]: the peer model (FQDN, hostname, ordinal, port), its ordering
//!   and validation, and one worker per source.
//! - [`watch`]: noticing file changes the way kubelet makes them (the
//!   ConfigMap `..data` symlink swap) as well as plain edits.
//! - [`cycle`]: the loop, the only place that decides when to render.
//! - [`render`]: the minijinja environment and the template context.
//! - [`write`]: stage beside the destination, fsync, check, rename.
//! - [`reload`]: find the app's process in /proc, send the signal.
//! - [`hooks`]: `on_start`/`on_change` with the peers on stdin.
//! - [`seed`]: `once`'s no-clobber copy of trees into volumes.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, and the counters behind them.
//! - [`cli`]: the command line and the `render`/`check` commands.
//! - [`peer_finder`]: the drop-in for Kubernetes' peer-finder, on top of
//!   the DNS poller and hooks.
//! - [`error`]: startup errors (exit) and runtime errors (log, go on).
//!
//! Every source is a worker of the same shape: it owns its resource, sends
//! [`cycle::Event`]s on one channel and [`error::RuntimeError`]s on another,
//! and stops when the shutdown token given to [`cycle::run`] is cancelled, so
//! tests drive the whole loop with a token of their own.

pub mod admin;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod error;
pub mod hooks;
pub mod peer_finder;
pub mod peers;
pub mod reload;
pub mod render;
pub mod seed;
pub mod watch;
pub mod write;

pub use config::Config;
pub use cycle::{once, run};
pub use error::{Error, RuntimeError};
