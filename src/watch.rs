//! Noticing when files change, in the way kubelet changes them.
//!
//! A ConfigMap volume is a directory of symlinks (`nginx.conf.j2 ->
//! ..data/nginx.conf.j2`) into a timestamped directory; an update writes a new
//! timestamped directory and renames a `..data_tmp` symlink over `..data`. A
//! watch on the file itself would follow the old inode and miss the swap, so
//! this module watches each file's *directory* and, after any event there,
//! re-reads the files through their paths and compares the bytes. That one rule
//! covers the symlink swap, editors that write a new file and rename it, and
//! plain in-place writes alike, and it ignores events that change nothing (our
//! own reads, a touch, a swap to identical content).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::event::{Context, Event, SourceError, Worker};

/// Watches a set of files through their directories and reports which of them
/// now hold different bytes than last time.
pub struct ContentWatcher {
    // Dropping the watcher stops inotify; it lives as long as this struct.
    _watcher: RecommendedWatcher,
    raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl ContentWatcher {
    /// Starts watching. Each file's directory must exist; the file need not.
    pub fn new(paths: &[PathBuf]) -> Result<ContentWatcher, SourceError> {
        let (tx, raw) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the worker stopped; nothing to do then.
            let _ = tx.send(event);
        })
        .map_err(|e| SourceError::Setup(format!("cannot start the file watcher: {e}")))?;
        // notify starts its thread without checking that it started, and its
        // `watch` and `drop` then panic; ask the thread something first. A
        // watcher without its thread is leaked, never dropped.
        if watcher.configure(notify::Config::default()).is_err() {
            std::mem::forget(watcher);
            return Err(SourceError::Setup(
                "cannot start the file watcher: its thread did not start (is the process or thread limit reached?)"
                    .into(),
            ));
        }
        let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| parent_dir(p)).collect();
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| SourceError::Setup(format!("cannot watch {}: {e}", dir.display())))?;
        }
        let files = paths
            .iter()
            .map(|p| (p.clone(), std::fs::read(p).ok()))
            .collect();
        Ok(ContentWatcher {
            _watcher: watcher,
            raw,
            files,
        })
    }

    /// The bytes of the `i`th file as last read, `None` if it could not be read.
    pub fn contents(&self, i: usize) -> Option<&[u8]> {
        self.files.get(i).and_then(|(_, c)| c.as_deref())
    }

    /// Waits until at least one file reads differently than before, and
    /// returns the indices of those that do. `None` once the watcher has died.
    pub async fn changed(&mut self) -> Option<Result<Vec<usize>, SourceError>> {
        loop {
            let first = self.raw.recv().await?;
            let mut relevant = is_relevant(&first);
            let mut failure = first.err();
            // A ConfigMap swap is half a dozen events; read the files once for
            // the whole burst that has already arrived.
            while let Ok(event) = self.raw.try_recv() {
                relevant |= is_relevant(&event);
                failure = failure.or(event.err());
            }
            if let Some(e) = failure {
                return Some(Err(SourceError::Watch(e.to_string())));
            }
            if !relevant {
                continue;
            }
            let mut changed = Vec::new();
            for (i, (path, last)) in self.files.iter_mut().enumerate() {
                let now = std::fs::read(&*path).ok();
                if now != *last {
                    *last = now;
                    changed.push(i);
                }
            }
            if !changed.is_empty() {
                return Some(Ok(changed));
            }
        }
    }
}

/// Opening and reading a file (ours included) changes nothing. A write in
/// place is looked at when the writer closes the file, not at each write: a
/// file truncated and being rewritten must not read as empty.
fn is_relevant(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            EventKind::Modify(ModifyKind::Data(_)) => false,
            _ => true,
        },
        Err(_) => true,
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The template watcher: sends [`Event::Templates`] whenever a template
/// source's bytes change.
pub fn worker(sources: Vec<PathBuf>, ctx: Context) -> Result<Worker, SourceError> {
    let mut watcher = ContentWatcher::new(&sources)?;
    Ok(Box::pin(async move {
        loop {
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                next = watcher.changed() => next,
            };
            let sent = match next {
                None => return Err(SourceError::Watch("the template watch closed".into())),
                Some(Ok(_)) => ctx.events.send(Event::Templates).await.is_ok(),
                Some(Err(e)) => ctx.errors.send(e).await.is_ok(),
            };
            if !sent {
                return Ok(());
            }
        }
    }))
}
