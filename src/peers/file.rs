//! The `file` peer source: one name per line, re-read whenever it changes.
//!
//! The file may be a ConfigMap key, a file another container writes, or one
//! edited by hand; [`ContentWatcher`] handles all three. Blank lines and lines
//! starting with `#` are ignored. A file that cannot be read gives no snapshot
//! at all (the last set stays), never an empty one.

use std::path::PathBuf;

use super::PeerSet;
use crate::event::{Context, Event, SourceError, Worker};
use crate::watch::ContentWatcher;

/// Parses the file's text into a peer set.
pub fn parse(text: &str, origin: &str) -> PeerSet {
    let names = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    PeerSet::from_names(names, origin)
}

/// The worker: sends the file's peer set at start and after every change.
pub fn worker(path: PathBuf, ctx: Context) -> Result<Worker, SourceError> {
    let mut watcher = ContentWatcher::new(std::slice::from_ref(&path))?;
    let origin = path.display().to_string();
    Ok(Box::pin(async move {
        let Context {
            events,
            errors,
            shutdown,
            ..
        } = ctx;
        let mut reported_missing = false;
        loop {
            let sent = match watcher.contents(0) {
                Some(bytes) => {
                    reported_missing = false;
                    let set = parse(&String::from_utf8_lossy(bytes), &origin);
                    events.send(Event::Peers(set)).await.is_ok()
                }
                // One report per outage, not one per event.
                None if !reported_missing => {
                    reported_missing = true;
                    let e = SourceError::PeerFile(format!(
                        "cannot read the peers file {origin}; keeping the last known peers"
                    ));
                    errors.send(e).await.is_ok()
                }
                None => true,
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
