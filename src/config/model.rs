//! The resolved config every command works from, and the error a config
//! that cannot be used gives: plain data, so every layer can read it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A config that cannot be used, and where it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), location(*line, *column))]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The resolved config every command works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages); empty for the built-in default.
    pub path: PathBuf,
    pub identity: Identity,
    pub peers: Peers,
    pub wait: Wait,
    pub templates: Vec<Template>,
    pub reload: Option<Reload>,
    pub hooks: Option<Hooks>,
    pub seed: Vec<Seed>,
    pub vars: serde_yaml::Mapping,
    pub http: Option<Http>,
    /// The DNS servers peerplate uses (`peers.dns.nameservers`, else resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// This pod's full name as peers list it, when the source says how
    /// (`dns` with a `service`); `None` when the first label decides.
    pub pod_fqdn: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: String,
    pub namespace: String,
}

#[derive(Debug, Clone)]
pub struct Peers {
    pub source: PeerSource,
    pub wait_for_self: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum PeerSource {
    Dns(Dns),
    Static(Vec<String>),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Dns {
    pub service: Option<String>,
    pub cluster_domain: String,
    /// The SRV name to query: `peers.dns.name`, or the Service's name.
    pub query: String,
    pub nameservers: Vec<SocketAddr>,
    pub interval: Duration,
    pub addresses: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub source: PathBuf,
    pub destination: PathBuf,
    /// `None`: keep the existing file's mode, 0644 for a new file.
    pub mode: Option<u32>,
    pub create_only: bool,
    /// The check command split into words; `{staged}` is still a placeholder.
    pub check: Option<Vec<String>>,
    pub reload: bool,
}

#[derive(Debug, Clone)]
pub struct Reload {
    pub signal: nix::sys::signal::Signal,
    pub target: ReloadTarget,
}

#[derive(Debug, Clone)]
pub enum ReloadTarget {
    /// `process:` alone: the top-most processes with this name.
    Process(String),
    /// `pid_file:`: the pid in this file; with `process:` too, only when
    /// that pid has this name (a stale file names some other process).
    PidFile {
        path: PathBuf,
        process: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Hooks {
    pub on_start: Option<String>,
    pub on_change: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Seed {
    pub from: PathBuf,
    pub to: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Http {
    pub listen: SocketAddr,
}
