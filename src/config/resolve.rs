//! From the file as written to the [`Config`] every command works from:
//! defaults filled in from the pod's environment ([`Env`], read once), paths
//! made relative to the config's folder, and the rules that span several
//! keys checked, each error finding its line with [`line_of`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::actions::{actions, template_action};
use super::diagnostics::line_of;
use super::env::{pod_subdomain, Env, ResolvConf};
use super::leader::leader;
use super::model::{
    Action, Config, ConfigError, Dns, Hooks, Http, Identity, Partial, PeerSource, Peers, Seed,
    Template, Wait,
};
use super::ranges::Range;
use super::raw::{RawConfig, RawPeers, RawPolicy, RawSeed, RawTemplate};

/// What every part of the resolution needs to point at the file: its text
/// (to find a key's line), its path, and its folder (relative paths start
/// there, so a config and its templates can move together).
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
    base: &'a Path,
}

impl Source<'_> {
    /// An error at the line of `keys`.
    fn fail(&self, keys: &[&str], message: String) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: line_of(self.text, keys),
            column: None,
            message,
        }
    }

    /// `value` within `range`, else an error quoting the duration as written
    /// (a huge one reads badly as years).
    fn within(&self, keys: &[&str], value: Duration, range: Range) -> Result<(), ConfigError> {
        if range.contains(value) {
            return Ok(());
        }
        let written = line_of(self.text, keys)
            .and_then(|l| self.text.lines().nth(l - 1))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| humantime::format_duration(value).to_string());
        Err(self.fail(
            keys,
            format!(
                "{} {written} is out of range; give a duration {}",
                range.key,
                range.describe()
            ),
        ))
    }

    /// A path of the config, relative to its folder.
    fn at(&self, p: PathBuf) -> PathBuf {
        if p.is_relative() {
            self.base.join(p)
        } else {
            p
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
    let base = path.parent().unwrap_or(Path::new(""));
    let src = Source { text, path, base };
    let fail = |keys: &[&str], message: String| src.fail(keys, message);
    let within = |keys: &[&str], value: Duration, range: Range| src.within(keys, value, range);
    let at = |p: PathBuf| src.at(p);
    let resolv = &env.resolv;

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
    let mut run_refuses = Vec::new();
    let peers = peers(
        raw.peers,
        &identity,
        env,
        asks_peers,
        &src,
        &mut run_refuses,
    )?;

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
    let (templates, partials) = templates(raw.templates, lstrip_default, &actions, &src)?;

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
    let seed = seeds(raw.seed, &src)?;

    let nameservers = match &peers.source {
        PeerSource::Dns(dns) if !dns.nameservers.is_empty() => dns.nameservers.clone(),
        _ => resolv.nameservers.clone(),
    };

    let pod_fqdn = pod_fqdn(&identity, &peers.source);
    let state = match raw.state {
        Some(p) => Some(src.at(p)),
        None => templates.first().map(|t| {
            let dir = t.destination.parent().unwrap_or(Path::new(""));
            dir.join(super::model::DEFAULT_STATE_NAME)
        }),
    };
    if let Some(state) = &state {
        // peerplate rewrites the state file whole: it must be a file of its
        // own, never one it reads or installs.
        let mut others: Vec<(&Path, String)> = vec![(path, "the config file itself".into())];
        for t in &templates {
            others.push((&t.source, format!("the template {}", t.source.display())));
            others.push((
                &t.destination,
                format!("the output {}", t.destination.display()),
            ));
        }
        for p in &partials {
            others.push((&p.source, format!("the template {}", p.source.display())));
        }
        if let PeerSource::File(peers_file) = &peers.source {
            others.push((peers_file, "the peers file".into()));
        }
        if let Some((_, what)) = others.iter().find(|(p, _)| same_path(p, state)) {
            return Err(fail(
                &["state"],
                format!(
                    "state: {} is {what}; peerplate rewrites its state file whole, so give it a file of its own, or drop the state: key for the default (.peerplate-state.json beside the first output)",
                    state.display()
                ),
            ));
        }
    }
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
        state,
        run_refuses,
        prune: raw.prune,
    })
}

/// `peers:`: exactly one source, its defaults and bounds.
fn peers(
    raw: Option<RawPeers>,
    identity: &Identity,
    env: &Env,
    asks_peers: bool,
    src: &Source<'_>,
    run_refuses: &mut Vec<String>,
) -> Result<Peers, ConfigError> {
    let fail = |keys: &[&str], message: String| src.fail(keys, message);
    let within = |keys: &[&str], value: Duration, range: Range| src.within(keys, value, range);
    let at = |p: PathBuf| src.at(p);
    let resolv: &ResolvConf = &env.resolv;
    let peers = match raw {
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
            } else if let Some(mut dns) = p.dns {
                // No Service and no SRV name: the pod's own subdomain from
                // /etc/hosts (kubelet builds it from the StatefulSet's
                // serviceName, which follows a kustomize namePrefix), and
                // its "-ready" twin unless one is given.
                if dns.name.is_none() && dns.service.is_none() {
                    if let Some(service) = pod_subdomain(&env.hosts, &identity.hostname) {
                        dns.ready_service
                            .get_or_insert_with(|| format!("{service}-ready"));
                        dns.service = Some(service);
                    }
                }
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
                            format!(
                                "peers.dns: no Service to ask: /etc/hosts has no line naming this pod {}.<service>.<namespace>.svc.<cluster domain> (kubelet writes one for a StatefulSet's pods, from its serviceName; outside a pod, PEERPLATE_HOSTS names a file to read instead); give the headless Service's name (service: nginx) or an SRV name to query (name: ...)",
                                identity.hostname
                            ),
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
                    // `check` (a linter) and `render --peer` run anywhere;
                    // only `run` and `once` need a server.
                    run_refuses.push(fail(
                        &["peers", "dns"],
                        "peers.dns: no DNS server to ask (no peers.dns.nameservers, and no nameserver line in /etc/resolv.conf); `run` and `once` refuse to start without one: set peers.dns.nameservers, or give the pod an /etc/resolv.conf with a nameserver line".into(),
                    ).to_string());
                }
                within(
                    &["peers", "dns", "interval"],
                    dns.interval,
                    Range::DNS_INTERVAL,
                )?;
                within(
                    &["peers", "dns", "refresh"],
                    dns.refresh,
                    Range::DNS_REFRESH,
                )?;
                let ready_query = dns
                    .ready_service
                    .as_ref()
                    .map(|ready| format!("{ready}.{}.svc.{cluster_domain}", identity.namespace));
                // A named port: `_<name>._tcp.` before each SRV name.
                let named = |name: String| match &dns.port_name {
                    Some(port) => format!("_{port}._tcp.{name}"),
                    None => name,
                };
                if let Some(port) = &dns.port_name {
                    let valid = !port.is_empty()
                        && port.len() <= 15
                        && port
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && port.bytes().any(|b| b.is_ascii_lowercase())
                        && !port.starts_with('-')
                        && !port.ends_with('-');
                    if !valid {
                        return Err(fail(
                            &["peers", "dns", "port_name"],
                            format!(
                                "peers.dns.port_name: {port:?} is not a Kubernetes port name; give the name of a port of the Service (at most 15 lower-case letters, digits and '-', like http)"
                            ),
                        ));
                    }
                }
                let soa_query_name = query.clone();
                let query = named(query);
                let ready_query = ready_query.map(named);
                let soa_query = if dns.name.is_some() {
                    soa_query_name
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
                    any_target: dns.any_target,
                    port_name: dns.port_name,
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
    Ok(peers)
}

/// `templates:`: the outputs (bounded, each to its own destination, each
/// with its reload action) and the partials (no `destination`).
fn templates(
    raw: Vec<RawTemplate>,
    lstrip_default: bool,
    actions: &[Action],
    src: &Source<'_>,
) -> Result<(Vec<Template>, Vec<Partial>), ConfigError> {
    let fail = |keys: &[&str], message: String| src.fail(keys, message);
    let at = |p: PathBuf| src.at(p);
    let (text, path) = (src.text, src.path);
    let mut templates = Vec::new();
    let mut partials = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
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
                ("log_output", t.log_output),
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
        let reload = template_action(i, &t.reload.unwrap_or_default(), actions, text, path)?;
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
            log_output: t.log_output,
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

    Ok((templates, partials))
}

/// `seed:`: a `to` inside its `from` would never end.
fn seeds(raw: Vec<RawSeed>, src: &Source<'_>) -> Result<Vec<Seed>, ConfigError> {
    let fail = |keys: &[&str], message: String| src.fail(keys, message);
    let at = |p: PathBuf| src.at(p);
    let mut seed = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
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

    Ok(seed)
}

/// Whether `path` is `base` or below it, by their components (the config's
/// paths; `seed` checks the real folders again when it runs).
pub fn inside(path: &Path, base: &Path) -> bool {
    let clean = |p: &Path| -> PathBuf { p.components().collect() };
    clean(path).starts_with(clean(base))
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

/// Whether `a` and `b` name the same file: the same canonical path when
/// both exist, else the same path once `.` components are dropped.
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().collect::<PathBuf>() == b.components().collect::<PathBuf>(),
    }
}
