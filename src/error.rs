//! Failures that end a command, and their exit codes.
//!
//! [`Error`] stops the process: bad flags, a bad config, a template that does
//! not compile, a resource that cannot be set up, `once` without its outputs.
//! `main` maps it to an exit code. What goes wrong *inside* the loop is a
//! different type on purpose: a worker's [`SourceError`] and a cycle's
//! `CycleError` (see `cycle`) are logged and counted, the last good output
//! stays, and the loop goes on.

use std::path::PathBuf;

use crate::config::ConfigError;
pub use crate::event::SourceError;
use crate::render::RenderError;

/// A failure that ends the command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Template(#[from] RenderError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Templates(Vec<RenderError>),
    #[error("{0}")]
    Usage(String),
    /// A worker could not be set up (file watcher, DNS thread, sockets).
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A one-shot DNS lookup (`render`) got no answer.
    #[error("{0}")]
    Lookup(String),
    /// `once` gave up waiting for peers.
    #[error("{0}")]
    PeerTimeout(String),
    /// A command that already said why, and only needs this exit code
    /// (the peer-finder drop-in).
    #[error("exit status {0}")]
    Exit(i32),
    /// `once` could not install every output, or a hook it ran failed.
    #[error("{0}")]
    Incomplete(String),
}

impl Error {
    /// The process exit code the spec assigns to this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Template(_) | Error::Templates(_) | Error::Usage(_) => 2,
            Error::PeerTimeout(_) => 3,
            Error::Exit(code) => *code,
            Error::Source(_) | Error::Io { .. } | Error::Incomplete(_) | Error::Lookup(_) => 1,
        }
    }
}
