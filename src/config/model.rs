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
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (for messages); empty for the built-in default.
    pub path: PathBuf,
    pub identity: Identity,
    pub peers: Peers,
    pub wait: Wait,
    pub templates: Vec<Template>,
    /// The reload actions, in the order written (`reloads:`), or the single
    /// `reload:` as the one action named `default`.
    pub actions: Vec<Action>,
    /// Templates with no `destination`: only included or imported by others.
    pub partials: Vec<Partial>,
    /// `render.lstrip_blocks`: the default of `templates[].lstrip_blocks`.
    pub lstrip_blocks: bool,
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
    /// The state file (`state:`, relative paths against the config's
    /// folder); default [`DEFAULT_STATE_NAME`] in the first output's
    /// folder; `None` when there is no output to put it beside.
    pub state: Option<PathBuf>,
    /// What `run` and `once` refuse to start with but `check` and `render`
    /// only warn about (no DNS server to ask), each as `FILE:LINE: message`.
    pub run_refuses: Vec<String>,
    /// `prune: true` (default false): outputs peerplate installed that no
    /// template produces any more are removed ([`crate::prune`]).
    pub prune: bool,
}

/// The file name of the default `state:` path, in the first output's
/// folder (here, below `state`, which reads and writes the file, so the
/// config does not import it).
pub const DEFAULT_STATE_NAME: &str = ".peerplate-state.json";

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
        /// What decides a cold start, when no leader was ever confirmed.
        fallback: Fallback,
    },
}

/// `leader.probe.fallback`: who leads at a cold start, before any peer's app
/// answered 2xx (none remembered, none named by a peer). Once a leader has
/// been confirmed, `probe` never falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The `sticky` rule: the first ready peer in ordinal order.
    Sticky,
    /// No leader until an app answers 2xx.
    None,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub hostname: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Peers {
    pub source: PeerSource,
    pub wait_for_self: bool,
    pub timeout: Duration,
    /// `peers.min`: after this pod's first render, a smaller set is held
    /// (not rendered) in `run`. Default 1 for `dns` and `file`, else 0.
    pub min: usize,
    /// Whether `peers.min` was written (else the source's default).
    pub min_given: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PeerSource {
    Dns(Dns),
    Static(Vec<String>),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
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
    /// `peers.dns.any_target`: take every SRV target as a peer. Off (the
    /// default), a target must be one label under the queried Service's
    /// name (less a leading `_port._proto`), as Kubernetes names pods;
    /// others are refused with a warning.
    pub any_target: bool,
    /// `peers.dns.port_name`: the named port whose SRV records are asked
    /// (`_http._tcp.<service>...`, Kubernetes' DNS spec for headless
    /// Services); `None` asks the Service's name, which lists every port.
    pub port_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub source: PathBuf,
    pub destination: PathBuf,
    /// `None`: keep the existing file's mode, 0644 for a new file.
    pub mode: Option<u32>,
    pub create_only: bool,
    /// The check command split into words; `{staged}` is still a placeholder.
    pub check: Option<Vec<String>>,
    /// The index in [`Config::actions`] of the action this output triggers;
    /// `None`: none (`reload: false`, or no action configured).
    pub reload: Option<usize>,
    /// The largest output a render may produce, in bytes (`max_size`).
    pub max_size: u64,
    /// The render's instruction budget (`fuel`): minijinja's fuel, charged
    /// per instruction and per 64 bytes of data a template creates.
    pub fuel: u64,
    /// Strip the spaces before a block tag on its line (`lstrip_blocks`).
    pub lstrip_blocks: bool,
    /// `log_output`: log the output of this template's check and reload
    /// action even when its render read `file()` inputs or `env()`
    /// variables (redacted: their texts are replaced). Off, such output is
    /// logged only as its exit status and byte count.
    pub log_output: bool,
}

/// A template with no `destination`: compiled, never rendered alone,
/// included (`{% include %}`, `{% import %}`) by its source path as written
/// in the config or by its file name when no other template shares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// The file, relative paths resolved against the config's folder.
    pub source: PathBuf,
    /// The source path as written in the config.
    pub written: String,
    pub lstrip_blocks: bool,
}

impl Template {
    /// `max_size` when none is given: 1 MiB.
    pub const DEFAULT_MAX_SIZE: u64 = 1024 * 1024;
    /// `fuel` when none is given; chosen by measurement (README, "Limits").
    pub const DEFAULT_FUEL: u64 = 200_000;
    /// The smallest and largest `fuel`.
    pub const FUEL_RANGE: (u64, u64) = (1_000, 100_000_000);
    /// The largest `max_size`: 64 MiB.
    pub const MAX_MAX_SIZE: u64 = 64 * 1024 * 1024;

    /// A template with the defaults, for `render --template FILE`.
    pub fn preview(source: PathBuf) -> Template {
        Template {
            source,
            destination: PathBuf::from("-"),
            mode: None,
            create_only: false,
            check: None,
            reload: None,
            max_size: Template::DEFAULT_MAX_SIZE,
            fuel: Template::DEFAULT_FUEL,
            lstrip_blocks: false,
            log_output: false,
        }
    }
}

/// A named reload action (`reloads.<name>`, or `default` for `reload:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Its name: the `action` label of `peerplate_reloads_total`.
    pub name: String,
    pub kind: ActionKind,
    /// The least time between two runs; changes in between wait and are
    /// coalesced into one run at the end.
    pub min_interval: Duration,
}

/// What an action does, and how its verdict is read.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// Send a signal; with `verify` (`verify: children`), wait this long for
    /// each signalled process to start a new child.
    Signal {
        reload: Reload,
        verify: Option<Duration>,
    },
    /// An HTTP request: 2xx accepts, any other answer rejects.
    Http(HttpAction),
    /// A command (split into words, no shell): exit 0 accepts.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}

/// `http:` of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpAction {
    /// `http://host[:port]/path` (or `https://` with the `https` feature).
    pub url: String,
    /// `POST`, `GET`, `PUT` ...
    pub method: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Further attempts on a connection error or a 502/503/504.
    pub retries: u32,
}

/// A signal and whom it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Reload {
    /// The signal to send (default HUP).
    pub signal: nix::sys::signal::Signal,
    /// Who gets it.
    pub target: ReloadTarget,
    /// `min_age` (default 2 s): a process younger than this is waited for
    /// before it is signalled (Go programs such as Prometheus catch every
    /// signal in the runtime at once but exit on a HUP for the first
    /// ~30 ms).
    pub min_age: Duration,
    /// `catch_wait` (default 30 s): how long a process that neither catches
    /// nor blocks the signal is waited for (re-checked with backoff) before
    /// the reload fails; the signal is never sent uncaught.
    pub catch_wait: Duration,
}

/// Who gets the reload signal.
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    pub on_start: Option<String>,
    pub on_change: Option<String>,
    /// Run with the new leader's FQDN on stdin (one line) when it changes.
    pub on_leader_change: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    pub from: PathBuf,
    pub to: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub listen: SocketAddr,
}
