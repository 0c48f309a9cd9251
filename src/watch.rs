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
//!
//! A file whose folder does not exist yet (a Secret volume's subfolder to
//! come) is watched through its nearest existing ancestor; when a folder on
//! the way appears, the watch moves down to it before the files are read
//! again, so the file's arrival is not missed.
//!
//! The loop's [`worker`] watches three kinds of file, from a set the loop
//! updates as it goes ([`Watched`]): template sources, the `file()` inputs
//! the last render read, and the config file itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::event::{Context, Event, SourceError, Worker};

/// Watches a set of files through their directories and reports which of them
/// now hold different bytes than last time.
pub struct ContentWatcher {
    // Dropping the watcher stops inotify; it lives as long as this struct.
    _watcher: RecommendedWatcher,
    raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// The folders watched now.
    dirs: BTreeSet<PathBuf>,
}

impl ContentWatcher {
    /// Starts watching. Neither the files nor their folders need exist: a
    /// missing folder is watched through its nearest existing ancestor.
    pub fn new(paths: &[PathBuf]) -> Result<ContentWatcher, SourceError> {
        let files = paths
            .iter()
            .map(|p| (p.clone(), std::fs::read(p).ok()))
            .collect();
        ContentWatcher::with_baseline(files)
    }

    /// Starts watching, comparing later reads with the bytes given (what a
    /// render read, so a change since then is not missed).
    pub fn with_baseline(
        files: Vec<(PathBuf, Option<Vec<u8>>)>,
    ) -> Result<ContentWatcher, SourceError> {
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
        let dirs: BTreeSet<PathBuf> = files.iter().map(|(p, _)| watch_dir(p)).collect();
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| SourceError::Setup(format!("cannot watch {}: {e}", dir.display())))?;
        }
        Ok(ContentWatcher {
            _watcher: watcher,
            raw,
            files,
            dirs,
        })
    }

    /// Moves watches down to folders that appeared since (a missing folder
    /// is watched through an ancestor until then).
    fn rearm(&mut self) {
        let wanted: BTreeSet<PathBuf> = self.files.iter().map(|(p, _)| watch_dir(p)).collect();
        for dir in wanted.difference(&self.dirs.clone()) {
            match self._watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir.clone());
                }
                Err(e) => tracing::debug!(dir = %dir.display(), "cannot watch yet: {e}"),
            }
        }
    }

    /// Reads every file again; the indices of those whose bytes differ from
    /// the last read (or the baseline), which become the new last read.
    pub fn reread(&mut self) -> Vec<usize> {
        let mut changed = Vec::new();
        for (i, (path, last)) in self.files.iter_mut().enumerate() {
            let now = std::fs::read(&*path).ok();
            if now != *last {
                *last = now;
                changed.push(i);
            }
        }
        changed
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
            self.rearm();
            let changed = self.reread();
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

/// The folder to watch for `path`: its own, or the nearest existing
/// ancestor while that does not exist.
fn watch_dir(path: &Path) -> PathBuf {
    let mut dir = parent_dir(path);
    while !dir.is_dir() {
        match dir.parent() {
            Some(up) if !up.as_os_str().is_empty() => dir = up.to_path_buf(),
            _ => return PathBuf::from(if path.is_absolute() { "/" } else { "." }),
        }
    }
    dir
}

/// What the loop's watcher watches; the loop sends a new one when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    /// Template sources: a change sends [`Event::Templates`].
    pub templates: Vec<PathBuf>,
    /// `file()` inputs with the bytes the last render read: a change sends
    /// [`Event::Inputs`].
    pub inputs: Vec<(PathBuf, Option<Vec<u8>>)>,
    /// The config file: a change sends [`Event::Config`].
    pub config: Option<PathBuf>,
}

/// The loop's file watcher: sends [`Event::Templates`], [`Event::Inputs`]
/// or [`Event::Config`] whenever such a file's bytes change; follows the
/// set the loop sends on `set`.
pub fn worker(mut set: watch::Receiver<Watched>, ctx: Context) -> Result<Worker, SourceError> {
    let build = |w: &Watched| {
        let mut files: Vec<(PathBuf, Option<Vec<u8>>)> = w
            .templates
            .iter()
            .map(|p| (p.clone(), std::fs::read(p).ok()))
            .collect();
        files.extend(w.inputs.iter().cloned());
        files.extend(w.config.iter().map(|p| (p.clone(), std::fs::read(p).ok())));
        ContentWatcher::with_baseline(files)
    };
    let mut current = set.borrow_and_update().clone();
    let mut watcher = build(&current)?;
    Ok(Box::pin(async move {
        loop {
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                changed = set.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let new = set.borrow_and_update().clone();
                    if new != current {
                        // Inputs keep the bytes the render read; templates
                        // and the config are compared from now on.
                        match build(&new) {
                            Ok(w) => watcher = w,
                            Err(e) => {
                                if ctx.errors.send(e).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                        current = new;
                        // A change between the render's read and this watch
                        // had no event to tell of it: compare now.
                        let changed = watcher.reread();
                        if changed.is_empty() {
                            continue;
                        }
                        Some(Ok(changed))
                    } else {
                        continue;
                    }
                }
                next = watcher.changed() => next,
            };
            let events = match next {
                None => return Err(SourceError::Watch("the file watch closed".into())),
                Some(Ok(changed)) => {
                    let templates = current.templates.len();
                    let inputs = templates + current.inputs.len();
                    let mut events = Vec::new();
                    if changed.iter().any(|i| *i >= inputs) {
                        events.push(Event::Config);
                    }
                    if changed.iter().any(|i| *i < templates) {
                        events.push(Event::Templates);
                    }
                    if changed.iter().any(|i| (templates..inputs).contains(i)) {
                        events.push(Event::Inputs);
                    }
                    events
                }
                Some(Err(e)) => {
                    if ctx.errors.send(e).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            };
            for event in events {
                if ctx.events.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }))
}
