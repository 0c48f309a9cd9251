//! The config file: its schema, defaults from the pod's environment, and
//! validation whose every error names the file, the line and the fix.
//!
//! Parsing happens in two steps. serde reads the YAML into `Raw*` structs
//! that mirror the file exactly (unknown keys are errors, and each value is
//! checked as it is read, so serde_yaml can point at its line); then
//! [`Config::load`] resolves the raw file into a [`Config`]: defaults filled
//! in from the environment, and the rules that span several keys checked
//! (those errors find their line with [`line_of`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Where the config is read from when neither `--config` nor
/// `$PEERPLATE_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/peerplate/peerplate.yaml";

/// The file kubelet mounts into every pod with its namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

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
    Process(String),
    PidFile(PathBuf),
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

// ---- the file as written -------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    identity: RawIdentity,
    peers: Option<RawPeers>,
    #[serde(default)]
    wait: RawWait,
    #[serde(default)]
    templates: Vec<RawTemplate>,
    reload: Option<RawReload>,
    hooks: Option<RawHooks>,
    #[serde(default)]
    seed: Vec<RawSeed>,
    #[serde(default)]
    vars: serde_yaml::Mapping,
    http: Option<RawHttp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    hostname: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeers {
    dns: Option<RawDns>,
    #[serde(rename = "static")]
    static_: Option<Vec<String>>,
    file: Option<PathBuf>,
    #[serde(default = "yes")]
    wait_for_self: bool,
    #[serde(default, deserialize_with = "duration")]
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    service: Option<String>,
    cluster_domain: Option<String>,
    name: Option<String>,
    #[serde(default, deserialize_with = "nameservers")]
    nameservers: Vec<SocketAddr>,
    #[serde(default = "one_second", deserialize_with = "duration")]
    interval: Duration,
    #[serde(default)]
    addresses: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    #[serde(default, deserialize_with = "duration")]
    min: Duration,
    #[serde(default, deserialize_with = "duration")]
    max: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    source: PathBuf,
    destination: PathBuf,
    #[serde(default, deserialize_with = "mode")]
    mode: Option<u32>,
    #[serde(default)]
    create_only: bool,
    #[serde(default, deserialize_with = "command")]
    check: Option<Vec<String>>,
    #[serde(default = "yes")]
    reload: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    #[serde(default = "hup", deserialize_with = "signal")]
    signal: nix::sys::signal::Signal,
    process: Option<String>,
    pid_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    on_start: Option<String>,
    on_change: Option<String>,
    #[serde(default = "sixty_seconds", deserialize_with = "duration")]
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    from: PathBuf,
    to: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
}

fn yes() -> bool {
    true
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn hup() -> nix::sys::signal::Signal {
    nix::sys::signal::Signal::SIGHUP
}

// ---- values checked as they are read ---------------------------------------

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like 250ms, 1s or 2m"
        ))
    })
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Text(String),
        Number(u64),
    }
    match Mode::deserialize(d)? {
        Mode::Text(text) => match u32::from_str_radix(text.trim().trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid mode {text:?}; write an octal mode in quotes, like mode: \"0644\""
            ))),
        },
        Mode::Number(n) => Err(serde::de::Error::custom(format!(
            "mode {n} is a number, which YAML may read as decimal; write it in quotes, like mode: \"0644\""
        ))),
    }
}

fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let text = String::deserialize(d)?;
    match shlex::split(&text) {
        Some(words) if !words.is_empty() => Ok(Some(words)),
        _ => Err(serde::de::Error::custom(format!(
            "cannot split the command {text:?} into words (an unclosed quote?); it is split like a shell would, with no shell features"
        ))),
    }
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<nix::sys::signal::Signal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sig {
        Name(String),
        Number(i32),
    }
    match Sig::deserialize(d)? {
        Sig::Name(name) => parse_signal(&name),
        Sig::Number(n) => nix::sys::signal::Signal::try_from(n).map_err(|_| format!("{n}")),
    }
    .map_err(|what| {
        serde::de::Error::custom(format!(
            "unknown signal {what:?}; use a name like HUP, SIGHUP or USR2, or a number"
        ))
    })
}

/// Accepts `HUP`, `SIGHUP`, `hup` and `1`.
pub fn parse_signal(name: &str) -> Result<nix::sys::signal::Signal, String> {
    let trimmed = name.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| name.to_string());
    }
    let upper = trimmed.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().map_err(|_| name.to_string())
}

fn nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            parse_nameserver(s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid nameserver {s:?}; write an IP address, optionally with a port: 10.96.0.10, 127.0.0.1:5353 or [::1]:53"
                ))
            })
        })
        .collect()
}

fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {text:?}; write IP:PORT, like 0.0.0.0:9090 or [::]:9090"
        ))
    })
}

// ---- resolving ----------------------------------------------------------------

impl Config {
    /// Reads and resolves a config file. With `required` false, a missing
    /// file gives the built-in default (so `render` works with no config).
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Config::resolve(RawConfig::default(), "", Path::new(""))
            }
            Err(e) => {
                return Err(ConfigError {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    message: format!(
                        "cannot read the config file: {e}; give its path with --config or $PEERPLATE_CONFIG"
                    ),
                })
            }
        };
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is used in messages and to resolve nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // An empty file is an empty config, not an error.
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| yaml_error(e, path))?
        };
        Config::resolve(raw, text, path)
    }

    fn resolve(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |keys: &[&str], message: String| ConfigError {
            path: path.to_path_buf(),
            line: line_of(text, keys),
            column: None,
            message,
        };
        let resolv = ResolvConf::load();
        // Relative paths in a config file are relative to the file's folder,
        // so a config and its templates can move together.
        let base = path.parent().unwrap_or(Path::new(""));
        let at = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

        let identity = Identity {
            hostname: match raw.identity.hostname {
                Some(h) => h,
                None => default_hostname()
                    .ok_or_else(|| fail(&["identity"], "cannot tell this pod's host name: $HOSTNAME is unset and gethostname() failed; set identity.hostname".into()))?,
            },
            namespace: raw.identity.namespace.unwrap_or_else(default_namespace),
        };
        if identity.hostname.is_empty() || identity.hostname.contains('.') {
            return Err(fail(
                &["identity", "hostname"],
                format!(
                    "identity.hostname {:?} must be the pod's short name (the first DNS label), like web-1",
                    identity.hostname
                ),
            ));
        }

        let peers = match raw.peers {
            // No peers section: a config that only seeds, or whose templates
            // need no peers. Nothing to wait for.
            None => Peers {
                source: PeerSource::Static(Vec::new()),
                wait_for_self: false,
                timeout: Duration::ZERO,
            },
            Some(p) => {
                let given = [p.dns.is_some(), p.static_.is_some(), p.file.is_some()];
                if given.iter().filter(|g| **g).count() != 1 {
                    return Err(fail(
                        &["peers"],
                        "peers: give exactly one source: dns, static or file".into(),
                    ));
                }
                let source = if let Some(names) = p.static_ {
                    PeerSource::Static(names)
                } else if let Some(file) = p.file {
                    PeerSource::File(at(file))
                } else if let Some(dns) = p.dns {
                    let cluster_domain = dns
                        .cluster_domain
                        .or_else(|| resolv.cluster_domain())
                        .unwrap_or_else(|| "cluster.local".into());
                    let query = match (&dns.name, &dns.service) {
                        (Some(name), _) => name.trim_end_matches('.').to_string(),
                        (None, Some(service)) => format!(
                            "{service}.{}.svc.{cluster_domain}",
                            identity.namespace
                        ),
                        (None, None) => {
                            return Err(fail(
                                &["peers", "dns"],
                                "peers.dns: give the headless Service's name (service: nginx) or an SRV name to query (name: ...)".into(),
                            ))
                        }
                    };
                    if dns.interval.is_zero() {
                        return Err(fail(
                            &["peers", "dns", "interval"],
                            "peers.dns.interval must be more than 0s, like 1s".into(),
                        ));
                    }
                    PeerSource::Dns(Dns {
                        service: dns.service,
                        cluster_domain,
                        query,
                        nameservers: dns.nameservers,
                        interval: dns.interval,
                        addresses: dns.addresses,
                    })
                } else {
                    unreachable!("exactly one source was checked above")
                };
                Peers {
                    source,
                    wait_for_self: p.wait_for_self,
                    timeout: p.timeout,
                }
            }
        };

        let wait = Wait {
            min: raw.wait.min,
            max: raw.wait.max,
        };
        if !wait.max.is_zero() && wait.max < wait.min {
            return Err(fail(
                &["wait", "max"],
                "wait.max is shorter than wait.min; make max 0s (no limit) or at least min".into(),
            ));
        }

        let mut templates = Vec::new();
        for (i, t) in raw.templates.into_iter().enumerate() {
            if t.destination.file_name().is_none() {
                return Err(fail(
                    &["templates"],
                    format!(
                        "templates[{i}].destination {:?} must name a file",
                        t.destination
                    ),
                ));
            }
            templates.push(Template {
                source: at(t.source),
                destination: at(t.destination),
                mode: t.mode,
                create_only: t.create_only,
                check: t.check,
                reload: t.reload,
            });
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = templates
            .iter()
            .find(|t| !seen.insert(t.destination.clone()))
        {
            return Err(fail(
                &["templates"],
                format!(
                    "two templates write to {}; give each its own destination",
                    dup.destination.display()
                ),
            ));
        }

        let reload = match raw.reload {
            None => None,
            Some(r) => {
                let target = match (r.process, r.pid_file) {
                    (Some(name), None) => ReloadTarget::Process(name),
                    (None, Some(file)) => ReloadTarget::PidFile(at(file)),
                    _ => {
                        return Err(fail(
                            &["reload"],
                            "reload: give exactly one of process (a process name, like nginx) or pid_file".into(),
                        ))
                    }
                };
                Some(Reload {
                    signal: r.signal,
                    target,
                })
            }
        };

        let hooks = raw.hooks.map(|h| Hooks {
            on_start: h.on_start,
            on_change: h.on_change,
            timeout: h.timeout,
        });
        let seed = raw
            .seed
            .into_iter()
            .map(|s| Seed {
                from: at(s.from),
                to: at(s.to),
            })
            .collect();

        let nameservers = match &peers.source {
            PeerSource::Dns(dns) if !dns.nameservers.is_empty() => dns.nameservers.clone(),
            _ => resolv.nameservers.clone(),
        };

        let pod_fqdn = pod_fqdn(&identity, &peers.source);
        Ok(Config {
            path: path.to_path_buf(),
            identity,
            peers,
            wait,
            templates,
            reload,
            hooks,
            seed,
            vars: raw.vars,
            http: raw.http.map(|h| Http { listen: h.listen }),
            nameservers,
            pod_fqdn,
        })
    }

    /// Renders as another pod (`render --hostname`).
    pub fn set_hostname(&mut self, hostname: &str) {
        self.identity.hostname = hostname.to_string();
        self.pod_fqdn = pod_fqdn(&self.identity, &self.peers.source);
    }

    /// Whether `peer` is this pod: the same full name when DNS says what it
    /// is, otherwise the same first label.
    pub fn is_self(&self, peer: &crate::peers::Peer) -> bool {
        match &self.pod_fqdn {
            Some(fqdn) => peer.fqdn == *fqdn,
            None => peer.hostname == self.identity.hostname,
        }
    }
}

/// `<hostname>.<service>.<namespace>.svc.<cluster_domain>` when the peers come
/// from a Service's DNS records.
fn pod_fqdn(identity: &Identity, source: &PeerSource) -> Option<String> {
    match source {
        PeerSource::Dns(dns) => dns.service.as_ref().map(|service| {
            format!(
                "{}.{service}.{}.svc.{}",
                identity.hostname, identity.namespace, dns.cluster_domain
            )
        }),
        _ => None,
    }
}

/// The pod's short host name: `$HOSTNAME`, then gethostname(), first label.
pub fn default_hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
}

fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

/// Turns a serde_yaml error into one that names the line, and suggests the
/// right key for a misspelt one.
fn yaml_error(e: serde_yaml::Error, path: &Path) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; we print the location first.
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    if let Some(hint) = did_you_mean(&message) {
        message.push_str(&hint);
    }
    ConfigError {
        path: path.to_path_buf(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}

/// For "unknown field `destinaton`, expected one of `source`, `destination`",
/// suggests the closest expected key.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .min()?;
    (best.0 <= 2.max(unknown.len() / 3) && best.0 < unknown.len())
        .then(|| format!("; did you mean `{}`?", best.1))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Finds the line of a nested key (`["peers", "dns"]`) in YAML text, by
/// indentation: good enough for messages about keys that parsed fine but
/// do not fit together.
pub fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let mut found = None;
    let mut min_indent = 0;
    let mut start = 0;
    for key in keys {
        let (line, indent) = text.lines().enumerate().skip(start).find_map(|(n, line)| {
            let body = line.trim_start_matches([' ', '-']);
            let indent = line.len() - body.len();
            let matches = body.strip_prefix(key).is_some_and(|r| r.starts_with(':'));
            (matches && indent >= min_indent).then_some((n, indent))
        })?;
        found = Some(line + 1);
        start = line + 1;
        min_indent = indent + 1;
    }
    found
}

/// What peerplate takes from /etc/resolv.conf (or `$PEERPLATE_RESOLV_CONF`,
/// which tests and unusual pods use to point elsewhere).
#[derive(Debug, Default, Clone)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    pub fn path() -> PathBuf {
        std::env::var_os("PEERPLATE_RESOLV_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"))
    }

    pub fn load() -> ResolvConf {
        ResolvConf::parse(&std::fs::read_to_string(ResolvConf::path()).unwrap_or_default())
    }

    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(addr) = words.next().and_then(parse_nameserver) {
                        conf.nameservers.push(addr);
                    }
                }
                Some("search") => {
                    conf.search = words.map(|w| w.trim_end_matches('.').into()).collect()
                }
                _ => {}
            }
        }
        conf
    }

    /// The cluster domain from a pod's search list (`svc.cluster.local`), as
    /// peer-finder takes it.
    pub fn cluster_domain(&self) -> Option<String> {
        self.search
            .iter()
            .find_map(|s| s.strip_prefix("svc."))
            .filter(|d| !d.is_empty())
            .map(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("peerplate.yaml"))
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let e =
            parse("identity:\n  hostname: web-1\ntemplates:\n  - source: a\n    destinaton: b\n")
                .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("peerplate.yaml:5:5: templates[0]: unknown field `destinaton`"),
            "{text}"
        );
        assert!(
            text.contains("destinaton") && text.contains("did you mean `destination`"),
            "{text}"
        );
    }

    #[test]
    fn bad_duration_names_line() {
        let e = parse("identity: {hostname: web-1}\nwait:\n  min: 5 parsecs\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("like 250ms"), "{e}");
    }

    #[test]
    fn cross_key_errors_find_their_line() {
        let e =
            parse("identity: {hostname: web-1}\npeers:\n  static: [a]\n  file: /x\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("identity: {hostname: web-1}\nreload:\n  signal: HUP\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn values() {
        let c = parse(
            "identity: {hostname: web-1, namespace: prod}\npeers:\n  dns: {service: nginx, cluster_domain: k.local, nameservers: ['127.0.0.1:5353']}\ntemplates:\n  - {source: a, destination: /b, mode: \"0640\", check: \"nginx -t -c {staged}\"}\nreload: {signal: USR2, process: nginx}\n",
        )
        .unwrap();
        assert_eq!(c.templates[0].mode, Some(0o640));
        assert_eq!(
            c.templates[0].check.as_deref().unwrap(),
            ["nginx", "-t", "-c", "{staged}"]
        );
        assert_eq!(c.pod_fqdn.as_deref(), Some("web-1.nginx.prod.svc.k.local"));
        assert_eq!(
            c.nameservers,
            ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
        );
        assert!(matches!(
            c.reload.unwrap().signal,
            nix::sys::signal::Signal::SIGUSR2
        ));
        assert!(parse("templates:\n  - {source: a, destination: /b, mode: 644}\n").is_err());
    }

    #[test]
    fn resolv_conf() {
        let r = ResolvConf::parse("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
        assert_eq!(r.cluster_domain().as_deref(), Some("cluster.local"));
        assert_eq!(r.nameservers[0].to_string(), "10.96.0.10:53");
    }
}
