//! The state file: what peerplate must remember across a restart of its own
//! container (an `emptyDir` beside the outputs survives one), kept in one
//! versioned JSON document at `state:` (default `.peerplate-state.json` in
//! the first output's folder).
//!
//! Two parts use it: the converging loop keeps an install record per output
//! (what `prune: true` needs to prove a file is still the one peerplate
//! wrote), and leadership keeps the last leader and when it was confirmed.
//! The file is written only when one of them changes (never on a timer),
//! with the same atomic install as the outputs ([`crate::write::restore`]).
//! Unreadable, unknown-version or foreign content (another pod's
//! `POD_UID`) is ignored with a warning, never a crash: the worst outcome
//! of losing it is a cold start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::write::{self, Previous};

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The largest state file peerplate reads back, in bytes.
pub const MAX_SIZE: u64 = 1024 * 1024;

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`VERSION`] when written by this build.
    pub version: u32,
    /// The `POD_UID` of the pod that wrote it (Kubernetes' downward API
    /// `metadata.uid`); `None` when the environment had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Install records, by destination path as configured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub installs: BTreeMap<String, InstallRecord>,
    /// The last leader this pod followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderRecord>,
}

/// What peerplate installed at one destination: enough to prove, with
/// `lstat`, that the file there is still that file before pruning it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// `st_dev` of the installed file.
    pub dev: u64,
    /// `st_ino` of the installed file.
    pub ino: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// The last leader and when it was confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leader's name as peers list it (an SRV target, a static name).
    pub name: String,
    /// When this pod adopted or confirmed it, in milliseconds since the Unix
    /// epoch.
    pub since_unix_ms: u64,
}

/// Why a state file was not used (logged as a warning by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("{path}: cannot read the state file ({why}); starting without it")]
    Unreadable { path: PathBuf, why: String },
    #[error("{path}: the state file is not peerplate's JSON ({why}); starting without it")]
    Malformed { path: PathBuf, why: String },
    #[error("{path}: the state file has version {found}, this build reads {VERSION}; starting without it")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{path}: the state file was written by another pod (POD_UID {found}); starting without it"
    )]
    Foreign { path: PathBuf, found: String },
}

/// Reads the state at `path` for the pod `pod_uid`.
///
/// A missing file is an empty state with no warning; anything else that
/// keeps the file from being used is an empty state and an [`Ignored`]
/// to log. Never fails: the file is a memory, not an input.
pub fn load(path: &Path, pod_uid: Option<&str>) -> (State, Option<Ignored>) {
    let fresh = State {
        version: VERSION,
        pod_uid: pod_uid.map(str::to_owned),
        ..State::default()
    };
    let bytes = match limits::read_regular(path, MAX_SIZE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (fresh, None),
        Err(e) => {
            let why = e.to_string();
            return (
                fresh,
                Some(Ignored::Unreadable {
                    path: path.into(),
                    why,
                }),
            );
        }
    };
    let state: State = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            return (
                fresh,
                Some(Ignored::Malformed {
                    path: path.into(),
                    why,
                }),
            );
        }
    };
    if state.version != VERSION {
        let found = state.version;
        return (
            fresh,
            Some(Ignored::Version {
                path: path.into(),
                found,
            }),
        );
    }
    if let (Some(theirs), Some(ours)) = (&state.pod_uid, pod_uid) {
        if theirs != ours {
            let found = theirs.clone();
            return (
                fresh,
                Some(Ignored::Foreign {
                    path: path.into(),
                    found,
                }),
            );
        }
    }
    (state, None)
}

/// Writes `state` to `path` atomically (a file beside it, renamed over it,
/// the folder flushed), mode 0600.
///
/// # Errors
/// The install's I/O error, naming the path.
pub fn save(path: &Path, state: &State) -> Result<(), write::WriteError> {
    let mut bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    bytes.push(b'\n');
    write::restore(path, &Previous::File { bytes, mode: 0o600 })
}

/// This pod's `POD_UID` (Kubernetes' downward API `metadata.uid`, set by
/// deploy/), if the environment has one.
pub fn pod_uid() -> Option<String> {
    std::env::var("POD_UID").ok().filter(|v| !v.is_empty())
}

/// The leader remembered at `path` for the pod `pod_uid` (nothing when the
/// file is missing; a warning when it cannot be used).
pub fn remembered_leader(path: &Path, pod_uid: Option<&str>) -> Option<LeaderRecord> {
    let (state, ignored) = load(path, pod_uid);
    if let Some(why) = ignored {
        tracing::warn!("{why}");
    }
    state.leader
}

/// Records `name` as the last leader, confirmed at `at`, keeping the rest
/// of the file; writes nothing when it already names `name` (the file
/// changes only when the leader does).
///
/// # Errors
/// The install's I/O error, naming the path.
pub fn remember_leader(
    path: &Path,
    pod_uid: Option<&str>,
    name: &str,
    at: std::time::SystemTime,
) -> Result<(), write::WriteError> {
    let (mut state, _) = load(path, pod_uid);
    if state.leader.as_ref().is_some_and(|l| l.name == name) {
        return Ok(());
    }
    state.version = VERSION;
    state.pod_uid = pod_uid.map(str::to_owned);
    // The first leader is chosen before the first render creates the
    // outputs' folder.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| write::WriteError::Io {
            action: "create the folder of",
            path: path.to_path_buf(),
            source,
        })?;
    }
    state.leader = Some(LeaderRecord {
        name: name.to_string(),
        since_unix_ms: at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    });
    save(path, &state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State {
            version: VERSION,
            pod_uid: Some("uid-a".into()),
            ..State::default()
        };
        s.installs.insert(
            "/out/nginx.conf".into(),
            InstallRecord {
                dev: 1,
                ino: 2,
                size: 3,
                sha256: "ab".into(),
            },
        );
        s.leader = Some(LeaderRecord {
            name: "web-1.nginx".into(),
            since_unix_ms: 5,
        });
        s
    }

    #[test]
    fn round_trips_and_ignores_what_it_cannot_trust() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(crate::config::DEFAULT_STATE_NAME);
        assert_eq!(
            load(&path, Some("uid-a")),
            (
                State {
                    version: VERSION,
                    pod_uid: Some("uid-a".into()),
                    ..State::default()
                },
                None
            )
        );
        save(&path, &sample()).expect("save");
        assert_eq!(load(&path, Some("uid-a")), (sample(), None));
        assert!(matches!(
            load(&path, Some("uid-b")).1,
            Some(Ignored::Foreign { .. })
        ));
        std::fs::write(&path, b"{\"version\": 9}").expect("write");
        assert!(matches!(
            load(&path, None).1,
            Some(Ignored::Version { found: 9, .. })
        ));
        // The leader record changes only when the leader does; the install
        // records stay.
        save(&path, &sample()).expect("save");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let before = mtime(&path);
        remember_leader(&path, Some("uid-a"), "web-1.nginx", std::time::UNIX_EPOCH)
            .expect("same leader");
        assert_eq!(mtime(&path), before, "not rewritten for the same leader");
        remember_leader(&path, Some("uid-a"), "web-2.nginx", std::time::UNIX_EPOCH)
            .expect("new leader");
        let (again, _) = load(&path, Some("uid-a"));
        assert_eq!(again.installs, sample().installs);
        assert_eq!(again.leader.map(|l| l.name).as_deref(), Some("web-2.nginx"));
        // A folder that does not exist yet is created.
        let deeper = dir
            .path()
            .join("out/conf")
            .join(crate::config::DEFAULT_STATE_NAME);
        remember_leader(&deeper, None, "web-0.nginx", std::time::UNIX_EPOCH).expect("new folder");
        assert_eq!(
            remembered_leader(&deeper, None).map(|l| l.name).as_deref(),
            Some("web-0.nginx")
        );
        // Another pod's file is not this pod's memory.
        assert_eq!(remembered_leader(&path, Some("uid-b")), None);
        std::fs::write(&path, b"not json").expect("write");
        let (state, why) = load(&path, None);
        assert_eq!(state.installs.len(), 0);
        assert!(why
            .expect("ignored")
            .to_string()
            .contains("not peerplate's JSON"));
    }
}
