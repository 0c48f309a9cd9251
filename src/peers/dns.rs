//! The `dns` peer source: the SRV records of a headless Service, polled.
//!
//! This is what Kubernetes' peer-finder does, with the failure rules a
//! running application needs:
//!
//! - NXDOMAIN (a Service with no endpoints) or an empty answer is an empty
//!   peer set: a real state, sent like any other.
//! - A timeout, SERVFAIL, REFUSED or an unreachable server is *not* an
//!   answer: the last known set stays, one warning is sent per outage (not
//!   one per poll), and polling goes on.
//! - The resolver caches nothing, so a change is seen on the next poll no
//!   matter what TTL the server gave.
//! - A truncated UDP answer (CoreDNS's answer for about 20 pods or more) is
//!   retried over TCP by hickory's name server pool.
//!
//! Only a set that differs from the last one sent becomes an event, so an idle
//! cluster costs one query per interval and nothing more.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Peer, PeerSet};
use crate::config::Dns;
use crate::cycle::Event;
use crate::error::{Error, RuntimeError};

/// One SRV lookup's worth of work: a resolver that caches nothing, and the
/// name it asks for.
pub struct Poller {
    resolver: TokioResolver,
    query: Name,
    addresses: bool,
    /// Names dropped last time, so each bad name is warned about once.
    dropped: BTreeSet<String>,
}

/// Why a poll gave no answer (the last known set stays).
#[derive(Debug)]
pub struct LookupFailure(pub String);

impl Poller {
    /// Builds the resolver for `dns.query` against `nameservers`.
    pub fn new(dns: &Dns, nameservers: &[SocketAddr]) -> Result<Poller, Error> {
        if nameservers.is_empty() {
            return Err(Error::Usage(
                "peers.dns: no DNS server to ask; set peers.dns.nameservers or give the pod an /etc/resolv.conf with a nameserver line".into(),
            ));
        }
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        // No cache: a TTL of 30 s must not hide a scale-up for 30 s.
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        // One attempt per poll with a timeout near the interval: the next
        // poll is the retry, and a dead server is noticed within a poll.
        opts.attempts = 1;
        opts.timeout = dns
            .interval
            .clamp(Duration::from_secs(1), Duration::from_secs(5));
        opts.num_concurrent_reqs = 1;
        let resolver = builder
            .build()
            .map_err(|e| Error::Usage(format!("peers.dns: cannot set up the resolver: {e}")))?;
        let query =
            Name::from_ascii(format!("{}.", dns.query.trim_end_matches('.'))).map_err(|e| {
                Error::Usage(format!("peers.dns: {:?} is not a DNS name: {e}", dns.query))
            })?;
        Ok(Poller {
            resolver,
            query,
            addresses: dns.addresses,
            dropped: BTreeSet::new(),
        })
    }

    /// The name being queried, without the trailing dot.
    pub fn query(&self) -> String {
        self.query.to_ascii().trim_end_matches('.').to_string()
    }

    /// Asks once. `Ok` is an answer (possibly empty); `Err` is no answer.
    pub async fn poll(&mut self) -> Result<PeerSet, LookupFailure> {
        let lookup = match self.resolver.srv_lookup(self.query.clone()).await {
            Ok(lookup) => lookup,
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => return Ok(PeerSet::default()),
            Err(e) => return Err(LookupFailure(e.to_string())),
        };
        let mut peers = Vec::new();
        let mut dropped = BTreeSet::new();
        for record in lookup.answers() {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            let target = srv.target.to_ascii();
            match Peer::parse(&target, Some(srv.port)) {
                Ok(peer) => peers.push(peer),
                Err(why) => {
                    if !self.dropped.contains(&target) {
                        tracing::warn!(name = %target, query = %self.query(), reason = %why, "dropping an SRV target that is not a valid host name");
                    }
                    dropped.insert(target);
                }
            }
        }
        self.dropped = dropped;
        if self.addresses {
            self.fill_addresses(&mut peers, lookup.additionals())
                .await?;
        }
        Ok(PeerSet::new(peers))
    }

    /// Gives each peer its A/AAAA addresses: from the answer's additional
    /// section when it covers every peer (CoreDNS sends them), otherwise by
    /// looking the missing ones up.
    async fn fill_addresses(
        &self,
        peers: &mut [Peer],
        additionals: &[hickory_resolver::proto::rr::Record],
    ) -> Result<(), LookupFailure> {
        let mut known: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for record in additionals {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            let name = record
                .name
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            known.entry(name).or_default().push(ip);
        }
        for peer in peers.iter_mut() {
            let mut ips = match known.remove(&peer.fqdn) {
                Some(ips) => ips,
                None => match self.resolver.lookup_ip(format!("{}.", peer.fqdn)).await {
                    Ok(found) => found.iter().collect(),
                    Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Vec::new(),
                    // A half-known address list would change the output for
                    // no reason; count the whole poll as failed instead.
                    Err(e) => {
                        return Err(LookupFailure(format!("addresses of {}: {e}", peer.fqdn)))
                    }
                },
            };
            ips.sort();
            ips.dedup();
            peer.addresses = ips;
        }
        Ok(())
    }
}

/// Polls every `interval` (plus up to 10% jitter, so a StatefulSet's pods do
/// not query in lockstep) and sends each new peer set.
pub fn spawn(
    dns: Dns,
    nameservers: Vec<SocketAddr>,
    events: mpsc::Sender<Event>,
    errors: mpsc::Sender<RuntimeError>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, Error> {
    let mut poller = Poller::new(&dns, &nameservers)?;
    let query = poller.query();
    Ok(tokio::spawn(async move {
        let mut last: Option<PeerSet> = None;
        let mut outage: Option<(Instant, u64)> = None;
        let mut jitter = Jitter::new();
        loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => return,
                polled = poller.poll() => polled,
            };
            let sent = match polled {
                Ok(set) => {
                    if let Some((since, failures)) = outage.take() {
                        tracing::info!(query = %query, failures, after = ?since.elapsed(), "DNS lookups work again");
                    }
                    if last.as_ref() == Some(&set) {
                        true
                    } else {
                        last = Some(set.clone());
                        events.send(Event::Peers(set)).await.is_ok()
                    }
                }
                Err(LookupFailure(reason)) => match &mut outage {
                    Some((_, failures)) => {
                        *failures += 1;
                        tracing::debug!(query = %query, reason = %reason, "DNS lookup failed again");
                        true
                    }
                    None => {
                        outage = Some((Instant::now(), 1));
                        let e = RuntimeError::Lookup {
                            query: query.clone(),
                            reason,
                        };
                        errors.send(e).await.is_ok()
                    }
                },
            };
            if !sent {
                return;
            }
            let pause = jitter.stretch(dns.interval);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }))
}

/// A tiny xorshift generator: jitter needs spread, not cryptography.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        Jitter(seed | 1)
    }

    /// `interval` plus 0 to 10% of it.
    fn stretch(&mut self, interval: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let extra = interval.as_nanos() as u64 / 10;
        interval + Duration::from_nanos(if extra == 0 { 0 } else { self.0 % extra })
    }
}
