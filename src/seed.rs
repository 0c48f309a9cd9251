//! Seeding volumes without clobbering: the init-container pattern that
//! carries state across restarts (`cp -n -p -r`, done carefully).
//!
//! Each `seed` entry copies the tree `from` into `to`. A path that already
//! exists under `to` is never touched, whatever it is, so a file the app
//! changed survives every restart and a second run is a no-op. What is
//! copied keeps its mode, its modification time and (when peerplate runs as
//! root) its owner; symlinks are copied as symlinks, never followed.
//! Anything that is not a file, directory or symlink (sockets, devices) is
//! skipped with a warning.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::config::Seed;
use crate::error::Error;

/// What one seed entry did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub copied: usize,
    pub kept: usize,
}

/// Copies every seed entry, in order.
pub fn run(seeds: &[Seed]) -> Result<Report, Error> {
    let mut total = Report::default();
    for seed in seeds {
        refuse_nested(&seed.from, &seed.to)?;
        let report = copy_tree(&seed.from, &seed.to)?;
        tracing::info!(from = %seed.from.display(), to = %seed.to.display(), copied = report.copied, kept = report.kept, "seeded");
        total.copied += report.copied;
        total.kept += report.kept;
    }
    Ok(total)
}

/// A `to` inside its `from` (through symlinks too) would copy the tree into
/// itself until the path is too long; refuse it, as `cp -r` does.
fn refuse_nested(from: &Path, to: &Path) -> Result<(), Error> {
    let Ok(from_real) = fs::canonicalize(from) else {
        // A missing `from` fails with its own message in the copy.
        return Ok(());
    };
    // The real path of the longest part of `to` that exists, and the rest.
    let mut existing = to;
    let mut rest = Vec::new();
    let to_real = loop {
        if let Ok(real) = fs::canonicalize(existing) {
            break rest
                .iter()
                .rev()
                .fold(real, |p: std::path::PathBuf, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(()),
        }
    };
    if to_real.starts_with(&from_real) {
        return Err(Error::Usage(format!(
            "seed: to {} is inside from {}; copying a folder into itself never ends (cp -r refuses it too): give a `to` outside `from`",
            to.display(),
            from.display()
        )));
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `from` (a directory, file or symlink) to `to` without
/// overwriting anything that exists.
pub fn copy_tree(from: &Path, to: &Path) -> Result<Report, Error> {
    let mut report = Report::default();
    copy_entry(from, to, &mut report)?;
    Ok(report)
}

fn copy_entry(from: &Path, to: &Path, report: &mut Report) -> Result<(), Error> {
    let meta = fs::symlink_metadata(from).map_err(io(from))?;
    let exists = fs::symlink_metadata(to).is_ok();
    let kind = meta.file_type();
    if kind.is_dir() {
        if exists {
            // An existing directory is descended into (new files in the
            // seed still arrive), but its own mode and times stay.
            if !fs::metadata(to).map_err(io(to))?.is_dir() {
                report.kept += 1;
                return Ok(());
            }
            report.kept += 1;
        } else {
            fs::create_dir(to).map_err(io(to))?;
            report.copied += 1;
        }
        let mut entries: Vec<_> = fs::read_dir(from)
            .map_err(io(from))?
            .collect::<Result<_, _>>()
            .map_err(io(from))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            copy_entry(&entry.path(), &to.join(entry.file_name()), report)?;
        }
        if !exists {
            // Mode and times last: a read-only directory must still be filled.
            finish(from, to, &meta)?;
        }
        return Ok(());
    }
    if exists {
        report.kept += 1;
        return Ok(());
    }
    if kind.is_symlink() {
        let target = fs::read_link(from).map_err(io(from))?;
        std::os::unix::fs::symlink(&target, to).map_err(io(to))?;
        own(to, &meta, true);
        // The link's own times, as `cp -p` keeps them (never the target's).
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            to,
            &nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
            &nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    } else if kind.is_file() {
        // Into a temporary name first, so a crash never leaves a half file
        // under the real name (which the next run would then keep).
        let staging = to.with_file_name(format!(
            ".{}.peerplate-seed",
            to.file_name().unwrap_or_default().to_string_lossy()
        ));
        fs::copy(from, &staging).map_err(io(&staging))?;
        finish(from, &staging, &meta)?;
        fs::rename(&staging, to).map_err(io(to))?;
    } else {
        tracing::warn!(path = %from.display(), "seed skips what is not a file, directory or symlink");
        return Ok(());
    }
    report.copied += 1;
    Ok(())
}

/// Mode, times and owner, as `cp -p` keeps them.
fn finish(from: &Path, to: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    own(to, meta, false);
    fs::set_permissions(
        to,
        fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
    )
    .map_err(io(to))?;
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed().map_err(io(from))?)
        .set_modified(meta.modified().map_err(io(from))?);
    // Directories cannot be opened for writing; times on them are kept
    // best-effort through a read-only handle.
    if let Ok(file) = fs::File::open(to) {
        let _ = file.set_times(times);
    }
    Ok(())
}

/// Keeps the owner when we may (as root); silently not otherwise, like `cp -p`.
fn own(path: &Path, meta: &fs::Metadata, symlink: bool) {
    let (uid, gid) = (Some(meta.uid()), Some(meta.gid()));
    let _ = if symlink {
        std::os::unix::fs::lchown(path, uid, gid)
    } else {
        std::os::unix::fs::chown(path, uid, gid)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_once_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::write(from.join("a.conf"), "seed a").unwrap();
        fs::write(from.join("sub/b"), "seed b").unwrap();
        fs::set_permissions(from.join("sub/b"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("a.conf", from.join("link")).unwrap();

        let first = copy_tree(&from, &to).unwrap();
        assert_eq!(first.copied, 5, "to, a.conf, link, sub, sub/b");
        assert_eq!(fs::read_to_string(to.join("sub/b")).unwrap(), "seed b");
        assert_eq!(
            fs::metadata(to.join("sub/b")).unwrap().permissions().mode() & 0o777,
            0o750
        );
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("a.conf"));

        fs::write(to.join("a.conf"), "changed by the app").unwrap();
        let second = copy_tree(&from, &to).unwrap();
        assert_eq!(second.copied, 0);
        assert_eq!(
            fs::read_to_string(to.join("a.conf")).unwrap(),
            "changed by the app"
        );
    }
}
