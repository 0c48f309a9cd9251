//! From the file as written to the [`Config`] every command works from:
//! defaults filled in from the pod's environment ([`Env`], read once), paths
//! made relative to the config's folder, and the rules that span several
//! keys checked, each error finding its line with [`line_of`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diagnostics::line_of;
use super::model::{
    Config, ConfigError, Dns, Hooks, Http, Identity, Leader, PeerSource, Peers, Policy, Reload,
    ReloadTarget, Seed, Template, Wait,
};
use super::raw::{parse_nameserver, RawConfig, RawLeader, RawPolicy};

/// The file kubelet mounts into every pod with its namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What the config's defaults come from: the pod's environment, read once.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$HOSTNAME`, then gethostname(), first label; `None` if neither works.
    pub hostname: Option<String>,
    /// `$POD_NAMESPACE`, then the service-account namespace file, then `default`.
    pub namespace: String,
    /// `/etc/resolv.conf` (or `$PEERPLATE_RESOLV_CONF`).
    pub resolv: ResolvConf,
}

impl Env {
    /// Reads this process's environment.
    pub fn from_process() -> Env {
        Env {
            hostname: default_hostname(),
            namespace: default_namespace(),
            resolv: ResolvConf::load(),
        }
    }
}

/// Resolves the raw file into a [`Config`]; `text` is the file's text (to
/// find lines for errors), `path` where it came from. Pure: everything it
/// needs from the pod's environment is in `env`.
pub(super) fn resolve(
    raw: RawConfig,
    text: &str,
    path: &Path,
    env: &Env,
) -> Result<Config, ConfigError> {
    let fail = |keys: &[&str], message: String| ConfigError {
        path: path.to_path_buf(),
        line: line_of(text, keys),
        column: None,
        message,
    };
    let resolv = &env.resolv;
    // Relative paths in a config file are relative to the file's folder,
    // so a config and its templates can move together.
    let base = path.parent().unwrap_or(Path::new(""));
    let at = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };

    let identity = Identity {
        hostname: match raw.identity.hostname {
            Some(h) => h,
            None => env.hostname.clone()
                .ok_or_else(|| fail(&["identity"], "cannot tell this pod's host name: $HOSTNAME is unset and gethostname() failed; set identity.hostname".into()))?,
        },
        namespace: raw
            .identity
            .namespace
            .unwrap_or_else(|| env.namespace.clone()),
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

    let policy = raw.leader.as_ref().map(|l| l.policy).unwrap_or_default();
    let asks_peers = policy != RawPolicy::Ordinal;
    let peers = match raw.peers {
        // No peers section: a config that only seeds, or whose templates
        // need no peers. Nothing to wait for.
        None => Peers {
            source: PeerSource::Static(Vec::new()),
            wait_for_self: false,
            timeout: Duration::ZERO,
            min: 0,
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
                let key = if dns.name.is_some() {
                    "name"
                } else {
                    "service"
                };
                if let Err(e) = hickory_resolver::proto::rr::Name::from_ascii(format!(
                    "{}.",
                    query.trim_end_matches('.')
                )) {
                    return Err(fail(
                        &["peers", "dns", key],
                        format!(
                            "peers.dns: {query:?} is not a DNS name ({e}); fix peers.dns.{key}: dot-separated labels of letters, digits and '-', like nginx.default.svc.cluster.local"
                        ),
                    ));
                }
                if dns.nameservers.is_empty() && resolv.nameservers.is_empty() {
                    return Err(fail(
                        &["peers", "dns"],
                        "peers.dns: no DNS server to ask; set peers.dns.nameservers or give the pod an /etc/resolv.conf with a nameserver line".into(),
                    ));
                }
                if dns.interval.is_zero() {
                    return Err(fail(
                        &["peers", "dns", "interval"],
                        "peers.dns.interval must be more than 0s, like 1s".into(),
                    ));
                }
                let ready_query = dns
                    .ready_service
                    .as_ref()
                    .map(|ready| format!("{ready}.{}.svc.{cluster_domain}", identity.namespace));
                let soa_query = if dns.name.is_some() {
                    query.clone()
                } else {
                    cluster_domain.trim_end_matches('.').to_string()
                };
                PeerSource::Dns(Dns {
                    service: dns.service,
                    cluster_domain,
                    query,
                    nameservers: dns.nameservers,
                    interval: dns.interval,
                    refresh: dns.refresh,
                    soa_query,
                    // Peers are asked who leads at the addresses DNS gives.
                    addresses: dns.addresses || asks_peers,
                    ready_query,
                })
            } else {
                unreachable!("exactly one source was checked above")
            };
            let min = p.min.unwrap_or(match source {
                PeerSource::Dns(_) | PeerSource::File(_) => 1,
                PeerSource::Static(_) => 0,
            });
            Peers {
                source,
                wait_for_self: p.wait_for_self,
                timeout: p.timeout,
                min,
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
                (process, Some(file)) => ReloadTarget::PidFile {
                    path: at(file),
                    process,
                },
                (None, None) => return Err(fail(
                    &["reload"],
                    "reload: give process (a process name, like nginx), pid_file, or both (then the pid in the file is signalled only when its name matches)"
                        .into(),
                )),
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
        on_leader_change: h.on_leader_change,
        timeout: h.timeout,
    });
    let http = raw.http.map(|h| Http { listen: h.listen });
    let leader = leader(raw.leader, &peers, http.as_ref(), &fail)?;
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
        http,
        nameservers,
        pod_fqdn,
        leader,
    })
}

/// Resolves `leader:`. `sticky` (and `probe`, whose fallback is the sticky
/// rule) asks peers at their DNS addresses on this pod's admin port, so it
/// needs a `dns` source and an `http.listen` that peers can reach.
fn leader(
    raw: Option<RawLeader>,
    peers: &Peers,
    http: Option<&Http>,
    fail: &dyn Fn(&[&str], String) -> ConfigError,
) -> Result<Leader, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Leader {
            policy: Policy::Ordinal,
            grace: Duration::from_secs(30),
        });
    };
    if raw.grace.is_zero() {
        return Err(fail(
            &["leader", "grace"],
            "leader.grace must be more than 0s, like 30s".into(),
        ));
    }
    if raw.policy != RawPolicy::Ordinal && !matches!(peers.source, PeerSource::Dns(_)) {
        return Err(fail(
            &["leader", "policy"],
            format!(
                "leader.policy {} asks the peers at the addresses DNS gives them; it needs peers.dns (or use policy: ordinal)",
                if raw.policy == RawPolicy::Sticky { "sticky" } else { "probe" }
            ),
        ));
    }
    let port = match (raw.policy, http) {
        (RawPolicy::Ordinal, _) => 0,
        (_, Some(http)) if http.listen.ip().is_loopback() && is_pod_loopback(http.listen.ip()) => {
            return Err(fail(
                &["http", "listen"],
                format!(
                    "http.listen {} is loopback, where peers cannot ask who leads; listen on the pod's address, like 0.0.0.0:{}",
                    http.listen,
                    http.listen.port()
                ),
            ))
        }
        (_, Some(http)) => http.listen.port(),
        // `run` refuses sticky without it; `once` then cannot ask.
        (_, None) => 0,
    };
    let probe = raw.probe;
    let policy = match raw.policy {
        RawPolicy::Ordinal => Policy::Ordinal,
        RawPolicy::Sticky => Policy::Sticky {
            port,
            timeout: probe.as_ref().map_or(Duration::from_secs(1), |p| p.timeout),
        },
        RawPolicy::Probe => {
            let Some(probe) = probe else {
                return Err(fail(
                    &["leader", "policy"],
                    "leader.policy probe needs leader.probe.url, like \"http://{peer}:8008/primary\"".into(),
                ));
            };
            if !probe.url.contains("{peer}") || !probe.url.starts_with("http://") {
                return Err(fail(
                    &["leader", "probe", "url"],
                    format!(
                        "leader.probe.url {:?} must be an http:// URL with {{peer}} where the peer's name goes, like \"http://{{peer}}:8008/primary\"",
                        probe.url
                    ),
                ));
            }
            if probe.interval.is_zero() || probe.timeout.is_zero() {
                return Err(fail(
                    &["leader", "probe"],
                    "leader.probe.interval and timeout must be more than 0s, like 2s and 1s".into(),
                ));
            }
            Policy::Probe {
                url: probe.url,
                timeout: probe.timeout,
                interval: probe.interval,
                port,
            }
        }
    };
    Ok(Leader {
        policy,
        grace: raw.grace,
    })
}

/// The loopback a pod's own containers share: 127.0.0.1 and ::1. (Other
/// 127/8 addresses stand for pod IPs in tests on one machine.)
fn is_pod_loopback(ip: std::net::IpAddr) -> bool {
    ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST
}

/// `<hostname>.<service>.<namespace>.svc.<cluster_domain>` when the peers come
/// from a Service's DNS records.
pub(super) fn pod_fqdn(identity: &Identity, source: &PeerSource) -> Option<String> {
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
