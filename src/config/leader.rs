//! `leader:`: the policy, its grace and probe, and what each needs from the
//! rest of the config (a `dns` source, an admin listener peers can reach).

use std::time::Duration;

use super::model::Fallback;
use super::model::{ConfigError, Http, Leader, PeerSource, Peers, Policy};
use super::ranges::{within, Range};
use super::raw::{RawFallback, RawLeader, RawPolicy};

/// Resolves `leader:`. `sticky` (and `probe`, whose fallback is the sticky
/// rule) asks peers at their DNS addresses on this pod's admin port, so it
/// needs a `dns` source and an `http.listen` that peers can reach.
pub(super) fn leader(
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
        (_, Some(http)) if http.listen.port() == 0 => {
            return Err(fail(
                &["http", "listen"],
                format!(
                    "http.listen {} has port 0 (any free port), where peers cannot find it to ask who leads; give a fixed port, like 0.0.0.0:9090",
                    http.listen
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
                fallback: match probe.fallback {
                    RawFallback::Sticky => Fallback::Sticky,
                    RawFallback::None => Fallback::None,
                },
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
