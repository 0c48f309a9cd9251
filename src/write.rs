//! Installing a rendered output without ever leaving a half-written or
//! unchecked file where the application can read it.
//!
//! The bytes go to a temporary file in the destination's own directory (so
//! the final rename is atomic: same filesystem), are flushed to disk, get
//! their mode, pass the optional check, and only then are renamed over the
//! destination, after which the directory itself is flushed so the rename
//! survives a crash. Identical bytes are never rewritten: the file keeps its
//! inode and mtime, and no reload follows. A [`Staged`] file that is dropped
//! instead of committed is deleted, so a failed check or a shutdown leaves
//! the old destination as it was.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::NamedTempFile;

use crate::config::Template;
use crate::process;

/// How long a `check` command may run before it is killed and counted as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a failed check's stderr is kept: its first lines say what
/// the checker was doing, its last lines why it gave up.
pub const CHECK_OUTPUT: Excerpt = Excerpt {
    head_lines: 10,
    tail_lines: 20,
    line_chars: 300,
};

pub use crate::process::{excerpt, Excerpt};

/// Why an output was not installed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, like "write the staged file".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("check `{command}` failed ({status}): {stderr}")]
    CheckFailed {
        command: String,
        status: String,
        stderr: String,
    },
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> WriteError + 'p {
    move |source| WriteError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`stage`] decided.
#[derive(Debug)]
pub enum Plan {
    /// The destination already holds these bytes: nothing to do.
    Unchanged,
    /// `create_only` and the destination exists: never overwritten.
    Kept,
    /// New bytes, staged beside the destination, waiting for [`Staged::commit`].
    Staged(Staged),
}

/// A fully written, flushed temporary file next to its destination.
#[derive(Debug)]
pub struct Staged {
    file: NamedTempFile,
    destination: PathBuf,
}

/// Compares `bytes` with the destination and, if they differ, stages them.
pub fn stage(template: &Template, bytes: &[u8]) -> Result<Plan, WriteError> {
    let dest = &template.destination;
    let existing = match std::fs::metadata(dest) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("look at the destination", dest)(e)),
    };
    if let Some(meta) = &existing {
        if template.create_only {
            return Ok(Plan::Kept);
        }
        // Bounded, regular files only: a FIFO or a device in the output's
        // place is "different" (the install replaces it), never a hang.
        if meta.len() == bytes.len() as u64
            && crate::limits::read_regular(dest, bytes.len() as u64).is_ok_and(|old| old == bytes)
        {
            // Same bytes; a wrong mode is fixed in place, which is not a change
            // the application needs to reload for. Never through a symlink:
            // that would change the file it points to.
            if let Some(mode) = template.mode {
                if meta.permissions().mode() & 0o7777 != mode {
                    let link = std::fs::symlink_metadata(dest)
                        .map_err(io("look at the destination", dest))?
                        .file_type()
                        .is_symlink();
                    if link {
                        tracing::info!(destination = %dest.display(), "the destination is a symlink: its mode is left alone (peerplate never changes a file through a link); the link is replaced by a file when the output changes");
                    } else {
                        std::fs::set_permissions(dest, Permissions::from_mode(mode))
                            .map_err(io("set the mode of", dest))?;
                    }
                }
            }
            return Ok(Plan::Unchanged);
        }
    }
    let mode = template
        .mode
        .or(existing.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);

    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io("create the destination folder", dir))?;
        tracing::info!(folder = %dir.display(), "created the destination folder");
    }
    let file = staged_file(dir, dest, bytes, mode)?;
    if let Some(meta) = &existing {
        keep_owner(&file, dest, meta);
    }
    Ok(Plan::Staged(Staged {
        file,
        destination: dest.clone(),
    }))
}

/// Gives the staged file the owner of the output it replaces (the app may
/// read it as that user), when peerplate may (as root); says so when not.
fn keep_owner(file: &NamedTempFile, dest: &Path, old: &std::fs::Metadata) {
    let Ok(new) = file.as_file().metadata() else {
        return;
    };
    if (new.uid(), new.gid()) == (old.uid(), old.gid()) {
        return;
    }
    if let Err(e) = std::os::unix::fs::fchown(file.as_file(), Some(old.uid()), Some(old.gid())) {
        tracing::warn!(destination = %dest.display(), uid = old.uid(), gid = old.gid(), new_uid = new.uid(), new_gid = new.gid(), error = %e, "cannot keep the owner of the output: the new file belongs to new_uid and new_gid; run peerplate as the owner, or as root");
    }
}

/// Removes what a killed peerplate left beside `template`'s destination:
/// staged files named `.<name>.XXXXXX.peerplate`. Returns how many.
pub fn remove_stale(template: &Template) -> usize {
    let dest = &template.destination;
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let stale = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".peerplate"))
            .is_some_and(|random| {
                random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        let regular = entry.file_type().is_ok_and(|t| t.is_file());
        if stale && regular {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(path = %entry.path().display(), "removed a staged file left by an earlier peerplate");
                }
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a staged file left by an earlier peerplate")
                }
            }
        }
    }
    removed
}

impl Staged {
    /// The staged file's path: what `{staged}` means in a check.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Runs `command` (words, `{staged}` replaced by the staged file's path)
    /// and fails with its stderr unless it exits 0 within [`CHECK_TIMEOUT`].
    /// What the failure shows names the destination, never the staged file
    /// (deleted by then), quotes the command as a shell would, and keeps the
    /// head and the tail of a long stderr with a marker between.
    pub async fn check(&self, command: &[String]) -> Result<(), WriteError> {
        let staged = self.path().to_string_lossy().into_owned();
        let destination = self.destination.to_string_lossy().into_owned();
        let words: Vec<String> = command
            .iter()
            .map(|w| w.replace("{staged}", &staged))
            .collect();
        let shown_words: Vec<String> = command
            .iter()
            .map(|w| w.replace("{staged}", &destination))
            .collect();
        let shown = shlex::try_join(shown_words.iter().map(String::as_str))
            .unwrap_or_else(|_| shown_words.join(" "));
        let failed = |status: String, stderr: &str| WriteError::CheckFailed {
            command: shown.clone(),
            status,
            stderr: excerpt(&stderr.replace(&staged, &destination), CHECK_OUTPUT),
        };
        tracing::debug!(destination = %destination, command = %shown, staged = %staged, "running the check");
        let started = std::time::Instant::now();
        let output = match process::run(process::Spec {
            argv: &words,
            stdin: None,
            capture_stderr: true,
            quiet: true,
            timeout: CHECK_TIMEOUT,
        })
        .await
        {
            Ok(output) => output,
            Err(process::RunError::Start(e)) => {
                return Err(failed("did not start".into(), &e.to_string()))
            }
            Err(process::RunError::Wait(e)) => {
                return Err(failed("wait failed".into(), &e.to_string()))
            }
            Err(e @ process::RunError::Timeout(_)) => return Err(failed(e.to_string(), "")),
        };
        tracing::debug!(destination = %destination, command = %shown, status = %output.status, exit_code = output.status.code(), success = output.status.success(), elapsed_ms = crate::log::ms(started.elapsed()), "check finished");
        if output.status.success() {
            return Ok(());
        }
        Err(WriteError::CheckFailed {
            command: shown.clone(),
            status: output.status.to_string(),
            stderr: output
                .stderr
                .excerpt(CHECK_OUTPUT, |text| text.replace(&staged, &destination)),
        })
    }

    /// Renames the staged file over the destination and flushes the directory.
    pub fn commit(self) -> Result<(), WriteError> {
        let dest = self.destination;
        self.file.persist(&dest).map_err(|e| WriteError::Io {
            action: "rename the staged file over",
            path: dest.clone(),
            source: e.error,
        })?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("flush the folder", dir))?;
        }
        Ok(())
    }
}

/// What a destination held before an install: what a rollback puts back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// No file: a rollback removes the new one.
    Absent,
    /// These bytes, with this mode.
    File { bytes: Vec<u8>, mode: u32 },
    /// It could not be read; a rollback leaves the new file (and says so).
    Unreadable(String),
}

/// Reads what `dest` holds now, before an install replaces it.
pub fn previous(dest: &Path) -> Previous {
    // Bounded like every read of a file from outside: the largest output.
    match crate::limits::read_regular(dest, Template::MAX_MAX_SIZE) {
        Ok(bytes) => {
            let mode = std::fs::metadata(dest)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            Previous::File { bytes, mode }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Previous::Absent,
        Err(e) => Previous::Unreadable(format!("{}: {e}", dest.display())),
    }
}

/// `bytes` in a new temporary file beside `dest` (`.NAME.XXXXXX.peerplate`
/// in `dir`, the same filesystem, so the final rename is atomic), flushed to
/// disk and given `mode`: what an install and a rollback rename over `dest`.
fn staged_file(
    dir: &Path,
    dest: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<NamedTempFile, WriteError> {
    let prefix = format!(
        ".{}.",
        dest.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".peerplate")
        .tempfile_in(dir)
        .map_err(io("create a staged file in", dir))?;
    file.write_all(bytes)
        .map_err(io("write the staged file", file.path()))?;
    file.as_file()
        .sync_all()
        .map_err(io("flush the staged file", file.path()))?;
    std::fs::set_permissions(file.path(), Permissions::from_mode(mode))
        .map_err(io("set the mode of the staged file", file.path()))?;
    Ok(file)
}

/// Puts `previous` back at `dest`, atomically as any install (a temporary
/// file beside it, renamed over it, the directory flushed), or removes
/// `dest` when there was no file.
pub fn restore(dest: &Path, previous: &Previous) -> Result<(), WriteError> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match previous {
        Previous::Unreadable(why) => {
            return Err(WriteError::Io {
                action: "roll back",
                path: dest.to_path_buf(),
                source: std::io::Error::other(format!(
                    "the file it replaced could not be read before the install ({why}), so it cannot be put back"
                )),
            })
        }
        Previous::Absent => match std::fs::remove_file(dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the new output", dest)(e)),
        },
        Previous::File { bytes, mode } => {
            let file = staged_file(dir, dest, bytes, *mode)?;
            file.persist(dest).map_err(|e| WriteError::Io {
                action: "put back",
                path: dest.to_path_buf(),
                source: e.error,
            })?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flush the folder", dir))
}
