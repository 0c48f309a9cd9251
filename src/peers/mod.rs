//! The peer sources, over the model in [`model`].
//!
//! Each source (`static`, `file`, `dns`) is a worker of the shape set out in
//! [`crate::event`]: it owns its resource, sends whole [`PeerSet`] snapshots as
//! [`Event::Peers`], reports trouble on the error channel, and stops when the
//! shutdown token is cancelled. Only the loop decides what a snapshot means.

pub mod dns;
pub mod file;
pub mod model;

pub use model::{Identity, Peer, PeerSet};

use crate::config::{Config, PeerSource};
use crate::event::{Context, Event, SourceError, Worker};

/// The worker of the configured peer source, and its name. `start_jitter`
/// (`run` only): a polling source waits a random fraction of its interval
/// before its first poll.
pub fn worker(
    config: &Config,
    start_jitter: bool,
    ctx: Context,
) -> Result<(&'static str, Worker), SourceError> {
    match &config.peers.source {
        PeerSource::Static(names) => {
            let set = PeerSet::from_names(names.iter().map(String::as_str), "peers.static");
            Ok((
                "static",
                Box::pin(async move {
                    // A static set is one snapshot; the worker then just
                    // holds on until shutdown so every source has the same
                    // lifetime.
                    if ctx.events.send(Event::Peers(set)).await.is_ok() {
                        ctx.shutdown.cancelled().await;
                    }
                    Ok(())
                }),
            ))
        }
        PeerSource::File(path) => Ok(("file", file::worker(path.clone(), ctx)?)),
        PeerSource::Dns(dns) => Ok((
            "dns",
            dns::worker(dns.clone(), config.nameservers.clone(), start_jitter, ctx)?,
        )),
    }
}
