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
    /// How the leader is chosen (`leader:`; none means `policy: ordinal`).
    pub leader: Leader,
}

/// `leader:`: how this pod chooses the leader among its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub policy: Policy,
    /// How long the current leader may be missing from the ready set (or
    /// the peer set) before another takes over (`sticky`, `probe`).
    pub grace: Duration,
}

/// The leader policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Peer 0 of the peer set, whatever its readiness (the seed's rule).
    Ordinal,
    /// The current leader stays while it is ready (or missing for less than
    /// `grace`); peers are asked who leads at start and every `grace`.
    Sticky {
        /// The admin port of every pod (this pod's `http.listen` port), where
        /// peers answer `GET /leader`.
        port: u16,
        /// How long one peer's answer may take.
        timeout: Duration,
    },
    /// The app says who leads: a 2xx from the peer's `url` means "this peer
    /// leads"; the `sticky` rule decides when none does.
    Probe {
        /// With `{peer}` standing for the peer's FQDN, e.g.
        /// `http://{peer}:8008/primary`.
        url: String,
        timeout: Duration,
        interval: Duration,
        /// As for `Sticky`, when there is an admin listener (else 0: no asking).
        port: u16,
    },
}

impl Policy {
    /// `ordinal`, `sticky` or `probe`.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Ordinal => "ordinal",
            Policy::Sticky { .. } => "sticky",
            Policy::Probe { .. } => "probe",
        }
    }
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
    /// `peers.min`: after this pod's first render, a smaller set is held
    /// (not rendered) in `run`. Default 1 for `dns` and `file`, else 0.
    pub min: usize,
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
    /// `peers.dns.refresh`: the SRV set is fetched at least this often even
    /// when the zone's SOA serial did not move; zero turns the serial check
    /// off (the SRV set is fetched every interval).
    pub refresh: Duration,
    /// The name whose SOA serial is polled: the cluster domain (the zone
    /// CoreDNS's kubernetes plugin is authoritative for) with `service`,
    /// the SRV name itself with `name` (its zone's SOA comes back in the
    /// answer or, for a name below the apex, the authority section).
    pub soa_query: String,
    pub addresses: bool,
    /// `peers.dns.ready_service` as an SRV name: a second headless Service
    /// over the same pods *without* publishNotReadyAddresses, so it lists
    /// only ready pods (`peer.ready`).
    pub ready_query: Option<String>,
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
    /// Run with the new leader's FQDN on stdin (one line) when it changes.
    pub on_leader_change: Option<String>,
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
