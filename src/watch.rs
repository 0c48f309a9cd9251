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
//! Three more watches close the gaps of that rule: the folder holding any
//! symlink on the way to a file (a key in a subfolder, `sub -> ..data/sub`,
//! sees its swaps there), the file itself (a bind mount of a single file is
//! edited in place without an event in its folder), and every watch is set
//! again after each change, so it follows the new inodes. When no inotify
//! instance is left (`fs.inotify.max_user_instances`), the files are polled
//! once a second instead, with one warning.
//!
//! Events are never queued: notify's thread folds each into one flag and
//! one error ([`Burst`]) and wakes the worker, so a flood of events (a
//! process rewriting a watched folder in a loop) costs no memory and one
//! read of the files per wake-up.
//!
//! Files are read with [`limits::read_regular`]: a FIFO or a device in
//! their place is an error, never a hang or a memory blow-up.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{watch, Notify};

use crate::event::{Context, Event, SourceError, Worker};
use crate::limits;

/// How often files are read when inotify is not available.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One warning per process about polling.
static WARNED_POLLING: AtomicBool = AtomicBool::new(false);

/// The baseline of a file a render could not read.
const NOT_READ: &str = "not read";

/// What a file read gave: its bytes, or why it could not be read.
pub type Read = Result<Vec<u8>, String>;

enum Backend {
    Notify {
        // Dropping the watcher stops inotify; it lives as long as this struct.
        watcher: RecommendedWatcher,
        inbox: Arc<Inbox>,
        watched: BTreeSet<PathBuf>,
    },
    Poll(tokio::time::Interval),
}

/// Watches a set of files through their directories and reports which of them
/// now hold different bytes than last time.
pub struct ContentWatcher {
    backend: Backend,
    files: Vec<(PathBuf, Read)>,
    max: u64,
}

impl ContentWatcher {
    /// Starts watching files of at most `max` bytes each. Neither the files
    /// nor their folders need exist: a missing folder is watched through its
    /// nearest existing ancestor.
    pub fn new(paths: &[PathBuf], max: u64) -> Result<ContentWatcher, SourceError> {
        let files = paths.iter().map(|p| (p.clone(), read(p, max))).collect();
        ContentWatcher::start(files, max)
    }

    /// Starts watching, comparing later reads with the bytes given (what a
    /// render read, so a change since then is not missed; `None`: it could
    /// not be read).
    pub fn with_baseline(
        files: Vec<(PathBuf, Option<Vec<u8>>)>,
        max: u64,
    ) -> Result<ContentWatcher, SourceError> {
        let files = files
            .into_iter()
            .map(|(p, bytes)| (p, bytes.ok_or_else(|| NOT_READ.to_string())))
            .collect();
        ContentWatcher::start(files, max)
    }

    fn start(files: Vec<(PathBuf, Read)>, max: u64) -> Result<ContentWatcher, SourceError> {
        let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        let backend = match start_notify(&paths) {
            Ok(backend) => backend,
            Err(Fallback::Poll(why)) => {
                if !WARNED_POLLING.swap(true, Ordering::Relaxed) {
                    tracing::warn!(reason = %why, "cannot watch files with inotify: polling them once a second instead; raise the node's fs.inotify.max_user_instances (sysctl) if other containers use up the inotify instances");
                }
                let mut interval = tokio::time::interval(POLL_INTERVAL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Backend::Poll(interval)
            }
            Err(Fallback::Fail(e)) => return Err(e),
        };
        Ok(ContentWatcher {
            backend,
            files,
            max,
        })
    }

    /// The bytes of the `i`th file as last read, `None` if it could not be read.
    pub fn contents(&self, i: usize) -> Option<&[u8]> {
        self.files
            .get(i)
            .and_then(|(_, c)| c.as_ref().ok())
            .map(Vec::as_slice)
    }

    /// The path of the `i`th file.
    pub fn path(&self, i: usize) -> Option<&Path> {
        self.files.get(i).map(|(p, _)| p.as_path())
    }

    /// Why the `i`th file could not be read the last time, if it could not.
    pub fn read_error(&self, i: usize) -> Option<&str> {
        self.files
            .get(i)
            .and_then(|(_, c)| c.as_ref().err())
            .map(String::as_str)
    }

    /// Waits until at least one file reads differently than before, and
    /// returns the indices of those that do. `None` once the watcher has died.
    pub async fn changed(&mut self) -> Option<Result<Vec<usize>, SourceError>> {
        loop {
            match &mut self.backend {
                Backend::Poll(interval) => {
                    interval.tick().await;
                }
                Backend::Notify {
                    watcher,
                    inbox,
                    watched,
                } => {
                    // A ConfigMap swap is half a dozen events; the files are
                    // read once for the whole burst that has arrived.
                    let burst = inbox.next().await?;
                    if let Some(e) = burst.failure {
                        return Some(Err(SourceError::Watch(e)));
                    }
                    if !burst.relevant {
                        continue;
                    }
                    // Follow the new inodes (a swapped subfolder, a new file).
                    let paths: Vec<PathBuf> = self.files.iter().map(|(p, _)| p.clone()).collect();
                    rewatch(watcher, watched, &paths);
                }
            }
            let changed = self.reread();
            if !changed.is_empty() {
                return Some(Ok(changed));
            }
        }
    }

    /// Reads every file again; the indices of those whose bytes differ from
    /// the last read (or the baseline), which become the new last read. A
    /// file that failed again counts as changed only when the reason changed
    /// (a missing file become a FIFO); a baseline "not read" is any failure.
    pub fn reread(&mut self) -> Vec<usize> {
        let mut changed = Vec::new();
        for (i, (path, last)) in self.files.iter_mut().enumerate() {
            let now = read(path, self.max);
            let same = match (&now, &*last) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a == b || b == NOT_READ,
                _ => false,
            };
            *last = now;
            if !same {
                changed.push(i);
            }
        }
        changed
    }
}

fn read(path: &Path, max: u64) -> Read {
    limits::read_regular(path, max).map_err(|e| e.to_string())
}

enum Fallback {
    /// inotify cannot be used: poll.
    Poll(String),
    /// Something else: the worker cannot start.
    Fail(SourceError),
}

fn start_notify(paths: &[PathBuf]) -> Result<Backend, Fallback> {
    let inbox = Arc::new(Inbox::default());
    let reporter = Reporter(Arc::clone(&inbox));
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        reporter.report(&event);
    })
    .map_err(|e| Fallback::Poll(e.to_string()))?;
    // notify starts its thread without checking that it started, and its
    // `watch` and `drop` then panic; ask the thread something first. A
    // watcher without its thread is leaked, never dropped.
    if watcher.configure(notify::Config::default()).is_err() {
        std::mem::forget(watcher);
        return Err(Fallback::Fail(SourceError::Setup(
            "cannot start the file watcher: its thread did not start (is the process or thread limit reached?)"
                .into(),
        )));
    }
    let dirs: BTreeSet<PathBuf> = paths.iter().map(|p| watch_dir(p)).collect();
    for dir in &dirs {
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {}
            // No inotify watch left (fs.inotify.max_user_watches).
            Err(notify::Error {
                kind: notify::ErrorKind::MaxFilesWatch,
                ..
            }) => return Err(Fallback::Poll("no inotify watch left".into())),
            Err(e) => {
                return Err(Fallback::Fail(SourceError::Setup(format!(
                    "cannot watch {}: {e}",
                    dir.display()
                ))))
            }
        }
    }
    let mut watched = BTreeSet::new();
    rewatch(&mut watcher, &mut watched, paths);
    Ok(Backend::Notify {
        watcher,
        inbox,
        watched,
    })
}

/// What notify's thread has reported since the worker last looked, folded
/// as it arrives: however many events a burst (or a flood) holds, this is
/// one flag and one error, never a queue.
#[derive(Debug, Default)]
struct Burst {
    /// Some event may have changed a file.
    relevant: bool,
    /// The first error reported.
    failure: Option<String>,
    /// notify's handler is gone: no event will come again.
    closed: bool,
}

/// Where notify's thread leaves the [`Burst`] and wakes the worker.
#[derive(Debug, Default)]
struct Inbox {
    burst: Mutex<Burst>,
    wake: Notify,
}

impl Inbox {
    /// Waits for events and takes what they came to; `None` once notify's
    /// handler is gone and nothing is left.
    async fn next(&self) -> Option<Burst> {
        loop {
            let burst = std::mem::take(&mut *self.lock());
            if burst.relevant || burst.failure.is_some() {
                if burst.closed {
                    self.lock().closed = true;
                }
                return Some(burst);
            }
            if burst.closed {
                self.lock().closed = true;
                return None;
            }
            self.wake.notified().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Burst> {
        self.burst
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// notify's side of the [`Inbox`]: folds each event in, and says so when
/// notify drops it.
struct Reporter(Arc<Inbox>);

impl Reporter {
    fn report(&self, event: &notify::Result<notify::Event>) {
        {
            let mut burst = self.0.lock();
            burst.relevant |= is_relevant(event);
            if let Err(e) = event {
                burst.failure.get_or_insert_with(|| e.to_string());
            }
        }
        self.0.wake.notify_one();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

/// Everything to watch for `paths`: each file's folder, the folder of every
/// symlink on the way to it, and the file itself when it exists.
fn targets(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut all = BTreeSet::new();
    for path in paths {
        all.insert(watch_dir(path));
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            let link =
                std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                all.insert(parent_dir(ancestor));
            }
        }
        if path.exists() {
            all.insert(path.clone());
        }
    }
    all
}

/// Sets every watch again, so each follows what its path names now. A path
/// that cannot be watched (gone for a moment) is tried at the next change;
/// the folders that must exist were checked at start.
fn rewatch(watcher: &mut RecommendedWatcher, watched: &mut BTreeSet<PathBuf>, paths: &[PathBuf]) {
    for path in std::mem::take(watched) {
        let _ = watcher.unwatch(&path);
    }
    for target in targets(paths) {
        if watcher.watch(&target, RecursiveMode::NonRecursive).is_ok() {
            watched.insert(target);
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
            .map(|p| (p.clone(), read(p, limits::TEMPLATE_MAX_BYTES).ok()))
            .collect();
        files.extend(w.inputs.iter().cloned());
        files.extend(
            w.config
                .iter()
                .map(|p| (p.clone(), read(p, limits::TEMPLATE_MAX_BYTES).ok())),
        );
        ContentWatcher::with_baseline(files, limits::TEMPLATE_MAX_BYTES)
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
                        tracing::debug!(
                            templates = current.templates.len(),
                            inputs = current.inputs.len(),
                            config = current.config.is_some(),
                            "watching a new set of files"
                        );
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
                    // Paths only: never what the files hold.
                    let paths = |range: std::ops::Range<usize>| {
                        crate::log::list(
                            changed
                                .iter()
                                .filter(|i| range.contains(i))
                                .filter_map(|&i| watcher.path(i))
                                .map(|p| p.to_string_lossy().into_owned()),
                        )
                    };
                    tracing::debug!(
                        templates = %paths(0..templates),
                        inputs = %paths(templates..inputs),
                        config = %paths(inputs..usize::MAX),
                        "watched files changed"
                    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind))
    }

    #[tokio::test]
    async fn a_flood_of_events_is_one_burst_in_constant_memory() {
        let inbox = Arc::new(Inbox::default());
        let reporter = Reporter(Arc::clone(&inbox));
        for _ in 0..1_000_000 {
            reporter.report(&event(EventKind::Access(AccessKind::Open(AccessMode::Any))));
        }
        reporter.report(&event(EventKind::Create(notify::event::CreateKind::File)));
        reporter.report(&Err(notify::Error::generic("first")));
        reporter.report(&Err(notify::Error::generic("second")));
        let burst = inbox.next().await.expect("a burst");
        assert!(burst.relevant);
        assert_eq!(burst.failure.as_deref(), Some("first"));
        // Only reads since: nothing to look at, and once notify drops its
        // handler, the inbox ends.
        reporter.report(&event(EventKind::Access(AccessKind::Open(AccessMode::Any))));
        drop(reporter);
        assert!(inbox.next().await.is_none());
    }

    #[tokio::test]
    async fn events_after_a_look_wake_the_next_one() {
        let inbox = Arc::new(Inbox::default());
        let reporter = Reporter(Arc::clone(&inbox));
        let waiting = {
            let inbox = Arc::clone(&inbox);
            tokio::spawn(async move { inbox.next().await.map(|b| b.relevant) })
        };
        tokio::task::yield_now().await;
        reporter.report(&event(EventKind::Remove(notify::event::RemoveKind::File)));
        assert_eq!(waiting.await.expect("join"), Some(true));
    }
}
