//! From the file as written to the [`Config`] every command works from:
//! defaults filled in from the pod's environment ([`Env`], read once), paths
//! made relative to the config's folder, and the rules that span several
//! keys checked, each error finding its line with [`line_of`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diagnostics::line_of;
use super::model::{
    Action, ActionKind, Config, ConfigError, Dns, Hooks, Http, HttpAction, Identity, Leader,
    Partial, PeerSource, Peers, Policy, Reload, ReloadTarget, Seed, Template, Wait,
};
use super::raw::{
    parse_nameserver, RawAction, RawConfig, RawLeader, RawPolicy, RawReloadRef, RawVerify,
};

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
    // Durations are quoted as written (a huge one reads badly as years).
    let within = |keys: &[&str], value: Duration, range: Range| {
        if range.contains(value) {
            return Ok(());
        }
        let written = line_of(text, keys)
            .and_then(|l| text.lines().nth(l - 1))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| humantime::format_duration(value).to_string());
        Err(fail(
            keys,
            format!(
                "{} {written} is out of range; give a duration {}",
                range.key,
                range.describe()
            ),
        ))
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
            min_given: false,
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
                within(
                    &["peers", "dns", "interval"],
                    dns.interval,
                    Range::DNS_INTERVAL,
                )?;
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
            within(&["peers", "timeout"], p.timeout, Range::PEERS_TIMEOUT)?;
            Peers {
                source,
                wait_for_self: p.wait_for_self,
                timeout: p.timeout,
                min,
                min_given: p.min.is_some(),
            }
        }
    };

    let wait = Wait {
        min: raw.wait.min,
        max: raw.wait.max,
    };
    within(&["wait", "min"], wait.min, Range::WAIT_MIN)?;
    within(&["wait", "max"], wait.max, Range::WAIT_MAX)?;
    if !wait.max.is_zero() && wait.max < wait.min {
        return Err(fail(
            &["wait", "max"],
            "wait.max is shorter than wait.min; make max 0s (no limit) or at least min".into(),
        ));
    }

    let actions = actions(raw.reload, raw.reloads, &at, &fail)?;

    let lstrip_default = raw.render.lstrip_blocks;
    let mut templates = Vec::new();
    let mut partials = Vec::new();
    for (i, t) in raw.templates.into_iter().enumerate() {
        let lstrip_blocks = t.lstrip_blocks.unwrap_or(lstrip_default);
        let Some(destination) = t.destination else {
            // A partial: only what shapes its text has a meaning.
            let output_only = [
                ("mode", t.mode.is_some()),
                ("create_only", t.create_only),
                ("check", t.check.is_some()),
                ("reload", t.reload.is_some()),
                ("max_size", t.max_size.is_some()),
                ("fuel", t.fuel.is_some()),
            ];
            if let Some((key, _)) = output_only.iter().find(|(_, given)| *given) {
                return Err(fail(
                    &["templates", key],
                    format!(
                        "templates[{i}] has no destination, so it is a partial (only included or imported by other templates), and `{key}` has no meaning for it; give it a destination, or drop `{key}`"
                    ),
                ));
            }
            partials.push(Partial {
                written: t.source.display().to_string(),
                source: at(t.source),
                lstrip_blocks,
            });
            continue;
        };
        if destination.file_name().is_none() {
            return Err(fail(
                &["templates"],
                format!("templates[{i}].destination {destination:?} must name a file"),
            ));
        }
        let max_size = t.max_size.unwrap_or(Template::DEFAULT_MAX_SIZE);
        if max_size == 0 || max_size > Template::MAX_MAX_SIZE {
            return Err(fail(
                &["templates", "max_size"],
                format!(
                    "templates[{i}].max_size {max_size} is out of range; give 1 byte to 64MiB, like max_size: 4MiB"
                ),
            ));
        }
        let fuel = t.fuel.unwrap_or(Template::DEFAULT_FUEL);
        let (low, high) = Template::FUEL_RANGE;
        if !(low..=high).contains(&fuel) {
            return Err(fail(
                &["templates", "fuel"],
                format!("templates[{i}].fuel {fuel} is out of range; give {low} to {high}"),
            ));
        }
        let (source, destination) = (at(t.source), at(destination));
        if source == destination {
            return Err(fail(
                &["templates", "destination"],
                format!(
                    "templates[{i}].destination is its source {}; the output would overwrite the template, give it another path",
                    source.display()
                ),
            ));
        }
        let reload = template_action(i, &t.reload.unwrap_or_default(), &actions, text, path)?;
        templates.push(Template {
            source,
            destination,
            mode: t.mode,
            create_only: t.create_only,
            check: t.check,
            reload,
            max_size,
            fuel,
            lstrip_blocks,
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

    if let Some(h) = &raw.hooks {
        within(&["hooks", "timeout"], h.timeout, Range::HOOKS_TIMEOUT)?;
    }
    let hooks = raw.hooks.map(|h| Hooks {
        on_start: h.on_start,
        on_change: h.on_change,
        on_leader_change: h.on_leader_change,
        timeout: h.timeout,
    });
    let http = raw.http.map(|h| Http { listen: h.listen });
    let leader = leader(raw.leader, &peers, http.as_ref(), &fail)?;
    let mut seed = Vec::new();
    for (i, s) in raw.seed.into_iter().enumerate() {
        let (from, to) = (at(s.from), at(s.to));
        if inside(&to, &from) {
            return Err(fail(
                &["seed"],
                format!(
                    "seed[{i}]: to {} is inside from {}; copying a folder into itself never ends (cp -r refuses it too): give a `to` outside `from`",
                    to.display(),
                    from.display()
                ),
            ));
        }
        seed.push(Seed { from, to });
    }

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
        actions,
        partials,
        lstrip_blocks: lstrip_default,
        hooks,
        seed,
        vars: raw.vars,
        http,
        nameservers,
        pod_fqdn,
        leader,
    })
}

/// The name the single `reload:` goes by (the `action` label).
pub const DEFAULT_ACTION: &str = "default";

/// Resolves `reload:` (one action, `default`) or `reloads:` (named, in the
/// order written); giving both is an error.
fn actions(
    single: Option<RawAction>,
    named: Option<Vec<(String, RawAction)>>,
    at: &dyn Fn(PathBuf) -> PathBuf,
    fail: &dyn Fn(&[&str], String) -> ConfigError,
) -> Result<Vec<Action>, ConfigError> {
    let raw: Vec<(String, RawAction, Vec<&str>)> = match (single, named) {
        (Some(_), Some(_)) => {
            return Err(fail(
                &["reloads"],
                "give either reload: (one action) or reloads: (named actions), not both; move the reload: entry under reloads: with a name".into(),
            ))
        }
        (Some(r), None) => vec![(DEFAULT_ACTION.to_string(), r, vec!["reload"])],
        (None, Some(list)) => list.into_iter().map(|(n, r)| (n, r, vec!["reloads"])).collect(),
        (None, None) => Vec::new(),
    };
    let mut out = Vec::new();
    for (name, r, base) in raw {
        let mut keys = base.clone();
        if base[0] == "reloads" {
            keys.push(name.as_str());
        }
        let key = if base[0] == "reloads" {
            format!("reloads.{name}")
        } else {
            "reload".to_string()
        };
        let signal_target = r.process.is_some() || r.pid_file.is_some();
        let kinds = [signal_target, r.http.is_some(), r.exec.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(fail(
                &keys,
                format!(
                    "{key}: give exactly one of: a signal target (process, a process name like nginx; pid_file; or both, then the pid in the file is signalled only when its name matches), http (a URL to call, like {{url: \"http://127.0.0.1:9090/-/reload\"}}) or exec (a command, like \"/usr/local/bin/app reload\")"
                ),
            ));
        }
        let misplaced = |what: &str| fail(&keys, format!("{key}: {what}"));
        let kind = if signal_target {
            if r.timeout.is_some() {
                return Err(misplaced("timeout is for exec; a signal action waits verify_timeout (with verify: children)"));
            }
            let target = match (r.process, r.pid_file) {
                (Some(name), None) => ReloadTarget::Process(name),
                (process, Some(file)) => ReloadTarget::PidFile {
                    path: at(file),
                    process,
                },
                (None, None) => unreachable!("a signal target was checked above"),
            };
            let verify = match (r.verify, r.verify_timeout) {
                (Some(RawVerify::Children), t) => {
                    let t = t.unwrap_or(Duration::from_secs(5));
                    if t.is_zero() {
                        return Err(misplaced("verify_timeout must be more than 0s, like 5s"));
                    }
                    Some(t)
                }
                (None, Some(_)) => return Err(misplaced("verify_timeout needs verify: children")),
                (None, None) => None,
            };
            ActionKind::Signal {
                reload: Reload {
                    signal: r.signal.unwrap_or(nix::sys::signal::Signal::SIGHUP),
                    target,
                },
                verify,
            }
        } else {
            if r.signal.is_some() || r.verify.is_some() || r.verify_timeout.is_some() {
                return Err(misplaced("signal, verify and verify_timeout are for a signal action (process or pid_file); http and exec are verified by their answer"));
            }
            if let Some(http) = r.http {
                if r.timeout.is_some() {
                    return Err(misplaced(
                        "timeout goes under http: (http: {url: ..., timeout: 5s})",
                    ));
                }
                let url = http.url.trim().to_string();
                let scheme_ok = url.starts_with("http://")
                    || (cfg!(feature = "https") && url.starts_with("https://"));
                let parsed = url.parse::<hyper::Uri>();
                let host_ok = parsed
                    .as_ref()
                    .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
                if !scheme_ok || !host_ok {
                    let https = if url.starts_with("https://") && !cfg!(feature = "https") {
                        " (this build has no https: build with --features https)"
                    } else {
                        ""
                    };
                    return Err(fail(
                        &[keys.as_slice(), &["http", "url"]].concat(),
                        format!(
                            "{key}.http.url {url:?} must be an http:// URL with a host{https}, like \"http://127.0.0.1:9090/-/reload\""
                        ),
                    ));
                }
                let method = http.method.trim().to_ascii_uppercase();
                if hyper::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
                    return Err(fail(
                        &[keys.as_slice(), &["http", "method"]].concat(),
                        format!(
                            "{key}.http.method {:?} is not an HTTP method; write POST, PUT or GET",
                            http.method
                        ),
                    ));
                }
                if http.timeout.is_zero() {
                    return Err(fail(
                        &[keys.as_slice(), &["http", "timeout"]].concat(),
                        format!("{key}.http.timeout must be more than 0s, like 5s"),
                    ));
                }
                ActionKind::Http(HttpAction {
                    url,
                    method,
                    timeout: http.timeout,
                    retries: http.retries,
                })
            } else {
                let command = r.exec.unwrap_or_default();
                let timeout = r.timeout.unwrap_or(Duration::from_secs(10));
                if timeout.is_zero() {
                    return Err(misplaced("timeout must be more than 0s, like 10s"));
                }
                ActionKind::Exec { command, timeout }
            }
        };
        out.push(Action {
            name,
            kind,
            min_interval: r.min_interval,
        });
    }
    Ok(out)
}

/// A template's `reload:` as an index into the actions: `true` means the
/// only action (none when there is none), a name means that action.
fn template_action(
    i: usize,
    given: &RawReloadRef,
    actions: &[Action],
    text: &str,
    path: &Path,
) -> Result<Option<usize>, ConfigError> {
    let names = || {
        actions
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fail = |value: &str, message: String| ConfigError {
        path: path.to_path_buf(),
        line: line_of_template_key(text, i, "reload", value)
            .or_else(|| line_of(text, &["templates"])),
        column: None,
        message,
    };
    match given {
        RawReloadRef::Flag(false) => Ok(None),
        RawReloadRef::Flag(true) => match actions.len() {
            0 | 1 => Ok((!actions.is_empty()).then_some(0)),
            _ => Err(fail(
                "true",
                format!(
                    "templates[{i}]: there are several reload actions ({}); say which one this output triggers, like reload: {}, or reload: false",
                    names(),
                    actions[0].name
                ),
            )),
        },
        RawReloadRef::Name(name) => match actions.iter().position(|a| a.name == *name) {
            Some(k) => Ok(Some(k)),
            None => Err(fail(
                name,
                format!(
                    "templates[{i}].reload: no action named {name:?}; {}",
                    if actions.is_empty() {
                        "there are none: define it under reloads:, or write reload: true or false".to_string()
                    } else {
                        format!("the actions are: {}", names())
                    }
                ),
            )),
        },
    }
}

/// The line of `key: value` in the `i`th entry of `templates:` (block or
/// flow style); `None` when it is not written there.
fn line_of_template_key(text: &str, i: usize, key: &str, value: &str) -> Option<usize> {
    let start = line_of(text, &["templates"])?;
    let mut entry = None;
    let mut count = 0;
    for (n, line) in text.lines().enumerate().skip(start) {
        let body = line.trim_start();
        if !line.starts_with(' ') && !line.starts_with('-') && !body.is_empty() && n >= start {
            break; // the next top-level key
        }
        if body.starts_with("- ") || body == "-" {
            if count == i {
                entry = Some(n);
            } else if entry.is_some() {
                break;
            }
            count += 1;
        }
        if entry.is_some() {
            let plain = format!("{key}: {value}");
            let quoted = format!("{key}: \"{value}\"");
            if body.contains(&plain) || body.contains(&quoted) {
                return Some(n + 1);
            }
        }
    }
    entry.map(|n| n + 1)
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
    within(fail, &["leader", "grace"], raw.grace, Range::LEADER_GRACE)?;
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
            within(
                fail,
                &["leader", "probe", "timeout"],
                probe.timeout,
                Range::PROBE_TIMEOUT,
            )?;
            within(
                fail,
                &["leader", "probe", "interval"],
                probe.interval,
                Range::PROBE_INTERVAL,
            )?;
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

/// The range a duration key accepts (README, "Durations"): from `min` to
/// `max`, or exactly zero where zero has a meaning of its own.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The key as written, like `wait.min`.
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
    /// What `0s` means for this key, when it means something.
    pub zero: Option<&'static str>,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Range {
    pub const WAIT_MIN: Range = Range {
        key: "wait.min",
        min: Duration::ZERO,
        max: HOUR,
        zero: None,
    };
    pub const WAIT_MAX: Range = Range {
        key: "wait.max",
        min: ms(1),
        max: DAY,
        zero: Some("no limit"),
    };
    pub const PEERS_TIMEOUT: Range = Range {
        key: "peers.timeout",
        min: ms(1),
        max: DAY,
        zero: Some("wait forever"),
    };
    pub const DNS_INTERVAL: Range = Range {
        key: "peers.dns.interval",
        min: ms(100),
        max: HOUR,
        zero: None,
    };
    pub const HOOKS_TIMEOUT: Range = Range {
        key: "hooks.timeout",
        min: ms(100),
        max: DAY,
        zero: None,
    };
    pub const LEADER_GRACE: Range = Range {
        key: "leader.grace",
        min: ms(100),
        max: DAY,
        zero: None,
    };
    pub const PROBE_TIMEOUT: Range = Range {
        key: "leader.probe.timeout",
        min: ms(10),
        max: Duration::from_secs(60),
        zero: None,
    };
    pub const PROBE_INTERVAL: Range = Range {
        key: "leader.probe.interval",
        min: ms(100),
        max: HOUR,
        zero: None,
    };

    /// Every duration key, for the README's table.
    pub const ALL: [Range; 8] = [
        Range::WAIT_MIN,
        Range::WAIT_MAX,
        Range::PEERS_TIMEOUT,
        Range::DNS_INTERVAL,
        Range::HOOKS_TIMEOUT,
        Range::LEADER_GRACE,
        Range::PROBE_TIMEOUT,
        Range::PROBE_INTERVAL,
    ];

    /// Whether `value` is in range.
    pub fn contains(&self, value: Duration) -> bool {
        (value.is_zero() && self.zero.is_some()) || (self.min..=self.max).contains(&value)
    }

    /// `from 100ms to 1h`, with `, or 0s (no limit)` where zero means something.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "from {} to {}",
            humantime::format_duration(self.min),
            humantime::format_duration(self.max)
        );
        if let Some(zero) = self.zero {
            text.push_str(&format!(", or 0s ({zero})"));
        }
        text
    }
}

/// Fails unless `value` is in `range`, naming the key's line and the range.
fn within(
    fail: &dyn Fn(&[&str], String) -> ConfigError,
    keys: &[&str],
    value: Duration,
    range: Range,
) -> Result<(), ConfigError> {
    if range.contains(value) {
        return Ok(());
    }
    Err(fail(
        keys,
        format!(
            "{} {} is out of range; give a duration {}",
            range.key,
            humantime::format_duration(value),
            range.describe()
        ),
    ))
}

/// Whether `path` is `base` or below it, by their components (the config's
/// paths; `seed` checks the real folders again when it runs).
pub fn inside(path: &Path, base: &Path) -> bool {
    let clean = |p: &Path| -> PathBuf { p.components().collect() };
    clean(path).starts_with(clean(base))
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
