//! The `file` peer source: one name per line, re-read whenever it changes.
//!
//! The file may be a ConfigMap key, a file another container writes, or one
//! edited by hand; [`ContentWatcher`] handles all three. Blank lines and lines
//! starting with `#` are ignored. A file that cannot be read gives no snapshot
//! at all (the last set stays), never an empty one; so does one that breaks
//! the limits (a regular file of at most 1 MiB and 10,000 names: a FIFO, a
//! device or a runaway writer in its place is a source error). A name that
//! is not a host name is warned about once, not at every re-read.

use std::collections::HashSet;
use std::path::PathBuf;

use super::PeerSet;
use crate::event::{Context, Event, SourceError, Worker};
use crate::limits;
use crate::watch::ContentWatcher;

/// Parses the file's text into a peer set, warning about every invalid
/// name; more than [`limits::PEERS_MAX_NAMES`] names is an error.
pub fn parse(text: &str, origin: &str) -> Result<PeerSet, String> {
    parse_quietly(text, origin, &mut HashSet::new())
}

/// [`parse`], warning only about invalid names not in `warned` (and adding
/// them).
fn parse_quietly(
    text: &str,
    origin: &str,
    warned: &mut HashSet<String>,
) -> Result<PeerSet, String> {
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if names.len() > limits::PEERS_MAX_NAMES {
        return Err(format!(
            "the peers file {origin} lists {} names, more than {}; keeping the last known peers",
            names.len(),
            limits::PEERS_MAX_NAMES
        ));
    }
    let (set, invalid) = PeerSet::parse_names(names);
    for (name, why) in invalid {
        if warned.len() < limits::PEERS_MAX_NAMES && warned.insert(name.clone()) {
            tracing::warn!(name, origin, reason = %why, "dropping a peer name that is not a valid host name");
        }
    }
    Ok(set)
}

/// The worker: sends the file's peer set at start and after every change.
pub fn worker(path: PathBuf, ctx: Context) -> Result<Worker, SourceError> {
    let mut watcher =
        ContentWatcher::new(std::slice::from_ref(&path), limits::PEERS_FILE_MAX_BYTES)?;
    let origin = path.display().to_string();
    Ok(Box::pin(async move {
        let Context {
            events,
            errors,
            shutdown,
            ..
        } = ctx;
        let mut warned = HashSet::new();
        let mut reported: Option<String> = None;
        loop {
            let parsed = match (watcher.contents(0), watcher.read_error(0)) {
                (Some(bytes), _) => {
                    parse_quietly(&String::from_utf8_lossy(bytes), &origin, &mut warned)
                }
                (None, why) => Err(format!(
                    "cannot read the peers file {origin}: {}; keeping the last known peers",
                    why.unwrap_or("unknown error")
                )),
            };
            let sent = match parsed {
                Ok(set) => {
                    reported = None;
                    events.send(Event::Peers(set)).await.is_ok()
                }
                // One report per outage, not one per event.
                Err(why) if reported.as_deref() != Some(why.as_str()) => {
                    reported = Some(why.clone());
                    errors.send(SourceError::PeerFile(why)).await.is_ok()
                }
                Err(_) => true,
            };
            if !sent {
                return Ok(());
            }
            if crate::event::fault_injected("file") {
                return Err(SourceError::Setup("fault injected for a test".into()));
            }
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = watcher.changed() => next,
            };
            match next {
                None => return Err(SourceError::Watch(format!("the watch on {origin} closed"))),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if errors.send(e).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }))
}
