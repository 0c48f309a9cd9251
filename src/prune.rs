//! Outputs left behind: files peerplate installed for templates that are no
//! longer in the config (an nginx `include conf.d/*.conf` keeps serving a
//! removed vhost otherwise).
//!
//! Each install is recorded in the state file ([`crate::state`]): the
//! file's device, inode, size and SHA-256. An output no template produces
//! any more is named in a warning; with `prune: true` it is removed, but
//! only when `lstat` shows a regular file whose device, inode, size and
//! SHA-256 all match the record (the file is still the one peerplate wrote:
//! not replaced, not edited, not a symlink), never when it is a `seed:`
//! target, and never without a readable record. The decision is
//! [`decide`], a pure function; the I/O around it is [`record`] and
//! [`sweep`].

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::state::{self, InstallRecord};
use crate::status::sha256;

/// What `lstat` (and a read) showed of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub regular: bool,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// SHA-256 of the bytes (regular files only).
    pub sha256: Option<String>,
}

/// Whether to remove a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Remove,
    /// Keep it; the text says why.
    Keep(String),
}

/// Decides for one destination no template produces any more.
pub fn decide(record: Option<&InstallRecord>, seen: Option<&Seen>, seed_target: bool) -> Decision {
    let keep = |why: &str| Decision::Keep(why.to_string());
    if seed_target {
        return keep("it is a seed: target");
    }
    let Some(record) = record else {
        return keep("no install record for it in the state file");
    };
    let Some(seen) = seen else {
        return keep("it is gone already");
    };
    if !seen.regular {
        return keep("it is not a regular file (a symlink or folder is never removed)");
    }
    if (seen.dev, seen.ino) != (record.dev, record.ino) {
        return keep(
            "it is another file than the one peerplate installed (device or inode differ)",
        );
    }
    if seen.size != record.size || seen.sha256.as_deref() != Some(record.sha256.as_str()) {
        return keep("its content changed since peerplate installed it");
    }
    Decision::Remove
}

/// `lstat` of `path`, and the SHA-256 of a regular file's bytes.
fn look(path: &Path) -> Option<Seen> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let regular = meta.file_type().is_file();
    Some(Seen {
        regular,
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        sha256: regular
            .then(|| std::fs::read(path).ok().map(|b| sha256(&b)))
            .flatten(),
    })
}

/// The POD_UID the state file is tied to.
fn pod_uid() -> Option<String> {
    std::env::var("POD_UID").ok().filter(|u| !u.is_empty())
}

/// Records the installs of `outputs` (destination and bytes just installed)
/// in the state file: read, changed, written back, so the leader's entry
/// written by another part stays. Failures are logged, never fatal.
pub fn record(config: &Config, outputs: &[(PathBuf, &[u8])]) {
    let Some(path) = &config.state else { return };
    if outputs.is_empty() {
        return;
    }
    let (mut doc, ignored) = state::load(path, pod_uid().as_deref());
    if let Some(why) = ignored {
        tracing::warn!(state = %path.display(), reason = %why, "state file ignored");
    }
    for (dest, bytes) in outputs {
        let Some(seen) = look(dest) else { continue };
        doc.installs.insert(
            dest.display().to_string(),
            InstallRecord {
                dev: seen.dev,
                ino: seen.ino,
                size: seen.size,
                sha256: sha256(bytes),
            },
        );
    }
    if let Err(e) = state::save(path, &doc) {
        tracing::warn!(state = %path.display(), error = %e, "could not write the state file; prune will not remove these outputs");
    }
}

/// Whether `dest` is a `seed:` target or inside one.
fn seed_target(config: &Config, dest: &Path) -> bool {
    config.seed.iter().any(|s| dest.starts_with(&s.to))
}

/// The outputs recorded in the state file that no template of `config`
/// produces: each named in a warning, and with `prune: true` removed when
/// [`decide`] says so (its record dropped). `removed` lists the
/// destinations the caller knows were outputs of templates just removed
/// from the config (warned about even without a record).
pub fn sweep(config: &Config, removed: &[PathBuf]) {
    let produced = |d: &Path| config.templates.iter().any(|t| t.destination == d);
    let (mut doc, ignored) = match &config.state {
        Some(path) => {
            let (doc, ignored) = state::load(path, pod_uid().as_deref());
            (Some(doc), ignored.map(|i| i.to_string()))
        }
        None => (None, None),
    };
    let mut behind: Vec<PathBuf> = removed.iter().filter(|d| !produced(d)).cloned().collect();
    if let Some(doc) = &doc {
        for dest in doc.installs.keys().map(PathBuf::from) {
            if !produced(&dest) && !behind.contains(&dest) {
                behind.push(dest);
            }
        }
    }
    let mut changed = false;
    for dest in behind {
        if std::fs::symlink_metadata(&dest).is_err() {
            if let Some(doc) = &mut doc {
                changed |= doc.installs.remove(&dest.display().to_string()).is_some();
            }
            continue;
        }
        if !config.prune {
            tracing::warn!(destination = %dest.display(), "output left behind: no template produces it any more; remove it, or set prune: true");
            continue;
        }
        let key = dest.display().to_string();
        let record = match (&doc, &ignored) {
            (Some(doc), None) => doc.installs.get(&key),
            _ => None,
        };
        match decide(record, look(&dest).as_ref(), seed_target(config, &dest)) {
            Decision::Remove => match std::fs::remove_file(&dest) {
                Ok(()) => {
                    tracing::info!(destination = %dest.display(), "pruned: an output peerplate installed that no template produces any more");
                    if let Some(doc) = &mut doc {
                        changed |= doc.installs.remove(&key).is_some();
                    }
                }
                Err(e) => {
                    tracing::warn!(destination = %dest.display(), error = %e, "output left behind: could not remove it")
                }
            },
            Decision::Keep(why) => {
                tracing::warn!(destination = %dest.display(), reason = %why, "output left behind, not pruned")
            }
        }
    }
    if let (true, Some(doc), Some(path)) = (changed, &doc, &config.state) {
        if let Err(e) = state::save(path, doc) {
            tracing::warn!(state = %path.display(), error = %e, "could not write the state file");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::prune::{decide, Decision, Seen};
    use crate::state::InstallRecord;

    fn record() -> InstallRecord {
        InstallRecord {
            dev: 1,
            ino: 2,
            size: 3,
            sha256: "abc".into(),
        }
    }

    fn seen() -> Seen {
        Seen {
            regular: true,
            dev: 1,
            ino: 2,
            size: 3,
            sha256: Some("abc".into()),
        }
    }

    fn kept(d: Decision) -> String {
        match d {
            Decision::Keep(why) => why,
            Decision::Remove => "REMOVED".into(),
        }
    }

    #[test]
    fn only_the_very_file_peerplate_installed_is_removed() {
        assert_eq!(
            decide(Some(&record()), Some(&seen()), false),
            Decision::Remove
        );
        assert_eq!(
            kept(decide(Some(&record()), Some(&seen()), true)),
            "it is a seed: target"
        );
        assert_eq!(
            kept(decide(None, Some(&seen()), false)),
            "no install record for it in the state file"
        );
        let symlink = Seen {
            regular: false,
            sha256: None,
            ..seen()
        };
        assert!(kept(decide(Some(&record()), Some(&symlink), false)).contains("not a regular file"));
        let replaced = Seen { ino: 9, ..seen() };
        assert!(kept(decide(Some(&record()), Some(&replaced), false)).contains("inode"));
        let edited = Seen {
            sha256: Some("def".into()),
            ..seen()
        };
        assert!(kept(decide(Some(&record()), Some(&edited), false)).contains("content changed"));
        let grown = Seen { size: 4, ..seen() };
        assert!(kept(decide(Some(&record()), Some(&grown), false)).contains("content changed"));
    }
}
