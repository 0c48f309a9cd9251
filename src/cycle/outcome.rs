//! What a cycle did, as types: one [`CycleError`] with a variant per stage,
//! and a per-template [`Outcome`] list from which metrics, readiness and
//! `once`'s exit code are each derived in one place (`cycle`).

use crate::event::SourceError;
use crate::hooks::HookError;
use crate::render::RenderError;
use crate::write::WriteError;

/// Why a stage of a cycle failed. Logged and counted; the last good output
/// stays and the loop goes on.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// A worker's trouble (a failed lookup, an unreadable peers file).
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Staging or installing the output failed (I/O).
    #[error("{0}")]
    Write(WriteError),
    /// The output's `check` rejected it.
    #[error("{0}")]
    Check(WriteError),
    /// Another output of the same reload group failed, so this one, though
    /// fine, was not installed either (all or nothing).
    #[error("not installed because {0} failed in the same cycle (all or nothing per reload)")]
    Group(String),
    #[error(transparent)]
    Hook(#[from] HookError),
}

impl From<WriteError> for CycleError {
    fn from(e: WriteError) -> CycleError {
        match e {
            WriteError::CheckFailed { .. } => CycleError::Check(e),
            WriteError::Io { .. } => CycleError::Write(e),
        }
    }
}

/// What happened to one template in one cycle.
#[derive(Debug)]
pub struct Outcome {
    /// The template's display name.
    pub template: String,
    /// The destination, for messages.
    pub destination: String,
    pub result: Result<Installed, CycleError>,
    /// Render, stage and check time.
    pub elapsed: std::time::Duration,
}

/// A template that went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// New bytes are in place.
    Changed,
    /// The destination already held these bytes (or `create_only` kept it).
    Unchanged,
    /// New bytes, not installed yet: the output's reload action is busy
    /// (its verdict pending) or within its `min_interval`.
    Deferred,
    /// The app rejected these same bytes before; not installed again until
    /// an input changes.
    Held,
}
