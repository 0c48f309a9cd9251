//! The `dns` peer source: the SRV records of a headless Service, polled.
//!
//! This is what Kubernetes' peer-finder does, with the failure rules a
//! running application needs:
//!
//! - NXDOMAIN (a Service with no endpoints) or an empty answer is an empty
//!   peer set: a real state, sent like any other.
//! - A timeout, SERVFAIL, REFUSED or an unreachable server is *not* an
//!   answer: the last known set stays, one warning goes out per outage (not
//!   one per poll), and polling goes on.
//! - Nothing is cached, so a change is seen on the next poll whatever TTL the
//!   server gave.
//! - A truncated UDP answer (CoreDNS's answer for about 20 pods or more) is
//!   asked again over TCP, and from then on TCP is asked first.
//!
//! Why not hickory's `Resolver` for the poll: it opens a fresh UDP socket per
//! query and runs every query through its pool and cache layers, which cost
//! 17-20 ms of CPU per idle minute at one poll a second (measured; see
//! README). This module speaks the same wire format (hickory's `proto`) over
//! one connected UDP socket and one kept-open TCP connection, on a thread of
//! its own that sleeps exactly one interval between polls, and skips all
//! parsing when the answer's bytes did not change: about a third of the cost.

mod wire;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::model::{Peer, PeerSet};
use crate::config::Dns;
use crate::event::{Context, Event, SourceError, Worker};
use crate::metrics::{Lookup, Metrics};
pub use wire::LookupFailure;
use wire::{decode, srv_targets, Client, XorShift};

/// How long shutdown waits for the polling thread, which may sit in a
/// socket call for up to 5 s: after this it is left to end on its own
/// (the process is exiting), so SIGTERM still exits within a second.
const JOIN_WAIT: Duration = Duration::from_millis(300);

/// Polls one SRV name.
pub struct Poller {
    client: Client,
    query: Name,
    addresses: bool,
    /// The last answer's bytes after the ID: an identical answer needs no parsing.
    last_answer: Vec<u8>,
    /// Names dropped last time, so each bad name is warned about once.
    dropped: BTreeSet<String>,
    /// The last set returned.
    last_set: Option<PeerSet>,
    /// The last answer's SRV records as sorted (port, lower-case wire name).
    last_targets: Option<Vec<(u16, Vec<u8>)>>,
    /// The ready-only Service's SRV name (`peers.dns.ready_service`).
    ready_query: Option<Name>,
    /// The first labels it listed last time; `None` before its first answer.
    ready_hosts: Option<BTreeSet<String>>,
    /// Its last answer's sorted targets: unchanged means no decoding.
    ready_targets: Option<Vec<(u16, Vec<u8>)>>,
    /// The last set with readiness applied, as sent.
    last_sent: Option<PeerSet>,
}

impl Poller {
    /// Sets up polling of `dns.query` against `nameservers`.
    pub fn new(dns: &Dns, nameservers: &[SocketAddr]) -> Result<Poller, SourceError> {
        if nameservers.is_empty() {
            return Err(SourceError::Setup(
                "peers.dns: no DNS server to ask; set peers.dns.nameservers or give the pod an /etc/resolv.conf with a nameserver line".into(),
            ));
        }
        let query =
            Name::from_ascii(format!("{}.", dns.query.trim_end_matches('.'))).map_err(|e| {
                SourceError::Setup(format!("peers.dns: {:?} is not a DNS name: {e}", dns.query))
            })?;
        let ready_query = match &dns.ready_query {
            None => None,
            Some(name) => Some(
                Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| {
                    SourceError::Setup(format!(
                        "peers.dns.ready_service: {name:?} is not a DNS name: {e}"
                    ))
                })?,
            ),
        };
        Ok(Poller {
            ready_query,
            ready_hosts: None,
            ready_targets: None,
            last_sent: None,
            client: Client::new(
                nameservers.to_vec(),
                dns.interval
                    .clamp(Duration::from_secs(1), Duration::from_secs(5)),
            ),
            query,
            addresses: dns.addresses,
            last_answer: Vec::new(),
            dropped: BTreeSet::new(),
            last_set: None,
            last_targets: None,
        })
    }

    /// The name being queried, without the trailing dot.
    pub fn query(&self) -> String {
        self.query.to_ascii().trim_end_matches('.').to_string()
    }

    /// One [`Poller::poll`] on a thread of its own: the poll blocks in
    /// socket calls, never on the async runtime. A thread that cannot be
    /// started (a process limit) is an error, not a panic, unlike tokio's
    /// `spawn_blocking`.
    pub async fn poll_on_thread(
        mut self,
    ) -> std::io::Result<(Poller, Result<Option<PeerSet>, LookupFailure>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("peerplate-dns".into())
            .spawn(move || {
                let polled = self.poll();
                let _ = tx.send((self, polled));
            })?;
        rx.await
            .map_err(|_| std::io::Error::other("the DNS thread ended without an answer"))
    }

    /// Asks the peers' SRV name and, with a ready service, its SRV name too,
    /// over the same sockets. `Ok(Some(set))`: a new set (possibly empty),
    /// with `peer.ready` from the ready service; `Ok(None)`: the same as
    /// last time; `Err`: either lookup failed, so the last known state stays
    /// (no set is sent before both have answered once).
    pub fn poll(&mut self) -> Result<Option<PeerSet>, LookupFailure> {
        let peers_changed = self.poll_peers()?.is_some();
        let ready_changed = self.poll_ready()?;
        if !peers_changed && !ready_changed && self.last_sent.is_some() {
            return Ok(None);
        }
        let mut set = self.last_set.clone().unwrap_or_default();
        if let Some(ready) = &self.ready_hosts {
            set = set.with_ready(ready);
        }
        if self.last_sent.as_ref() == Some(&set) {
            return Ok(None);
        }
        self.last_sent = Some(set.clone());
        Ok(Some(set))
    }

    /// The ready service's answer; true when the ready hosts changed.
    fn poll_ready(&mut self) -> Result<bool, LookupFailure> {
        let Some(query) = self.ready_query.clone() else {
            return Ok(false);
        };
        let bytes = self.client.query(&query, RecordType::SRV).map_err(|e| {
            LookupFailure(format!(
                "ready service {}: {}",
                query.to_ascii().trim_end_matches('.'),
                e.0
            ))
        })?;
        let targets = srv_targets(&bytes);
        if targets.is_some() && targets == self.ready_targets && self.ready_hosts.is_some() {
            return Ok(false);
        }
        let message = decode(&bytes)?;
        let hosts: BTreeSet<String> = message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Peer::parse(&srv.target.to_ascii(), None).ok(),
                _ => None,
            })
            .map(|p| p.hostname)
            .collect();
        self.ready_targets = targets;
        let changed = self.ready_hosts.as_ref() != Some(&hosts);
        self.ready_hosts = Some(hosts);
        Ok(changed)
    }

    /// Asks the peers' SRV name once. `Ok(Some(set))` is a new answer
    /// (possibly empty), `Ok(None)` the same peers as last time, `Err` no
    /// answer at all.
    fn poll_peers(&mut self) -> Result<Option<PeerSet>, LookupFailure> {
        let bytes = self.client.query(&self.query, RecordType::SRV)?;
        // An identical answer (CoreDNS answers in a stable order) is an
        // identical peer set: skip even decoding it. Not with addresses,
        // which may come from other lookups that changed on their own.
        if !self.addresses && bytes.get(2..) == self.last_answer.get(2..) {
            return Ok(None);
        }
        // The same records in another order (BIND rotates them on every
        // answer) are the same peers: compare the sorted (port, target)
        // pairs, read straight off the wire, before decoding anything.
        let targets = if self.addresses {
            None
        } else {
            srv_targets(&bytes)
        };
        if targets.is_some() && targets == self.last_targets {
            self.last_answer = bytes;
            return Ok(None);
        }
        let message = decode(&bytes)?;
        if self.addresses
            && additionals_cover_answers(&message)
            && bytes.get(2..) == self.last_answer.get(2..)
        {
            return Ok(None);
        }
        self.last_answer = bytes;
        self.last_targets = targets;

        let mut peers = Vec::new();
        let mut dropped = BTreeSet::new();
        for record in &message.answers {
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
            if let Err(e) = self.fill_addresses(&mut peers, &message) {
                // Ask again next time rather than trust a half-filled set.
                self.last_answer.clear();
                self.last_set = None;
                self.last_targets = None;
                return Err(e);
            }
        }
        let set = PeerSet::new(peers);
        if self.last_set.as_ref() == Some(&set) {
            return Ok(None);
        }
        self.last_set = Some(set.clone());
        Ok(Some(set))
    }

    /// Gives each peer its A/AAAA addresses: from the answer's additional
    /// section when it has them (CoreDNS sends them), otherwise by asking.
    fn fill_addresses(
        &mut self,
        peers: &mut [Peer],
        answer: &Message,
    ) -> Result<(), LookupFailure> {
        let mut known = addresses_in(&answer.additionals);
        for peer in peers.iter_mut() {
            let mut ips = match known.remove(&peer.fqdn) {
                Some(ips) => ips,
                None => {
                    let name = Name::from_ascii(format!("{}.", peer.fqdn))
                        .map_err(|e| LookupFailure(e.to_string()))?;
                    let mut ips = Vec::new();
                    for rtype in [RecordType::A, RecordType::AAAA] {
                        let reply = self
                            .client
                            .query(&name, rtype)
                            .and_then(|bytes| decode(&bytes))
                            .map_err(|e| {
                                LookupFailure(format!("addresses of {}: {}", peer.fqdn, e.0))
                            })?;
                        ips.extend(addresses_in(&reply.answers).into_values().flatten());
                    }
                    ips
                }
            };
            ips.sort();
            ips.dedup();
            peer.addresses = ips;
        }
        Ok(())
    }
}

fn addresses_in(records: &[hickory_resolver::proto::rr::Record]) -> BTreeMap<String, Vec<IpAddr>> {
    let mut found: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for record in records {
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
        found.entry(name).or_default().push(ip);
    }
    found
}

fn additionals_cover_answers(message: &Message) -> bool {
    let known = addresses_in(&message.additionals);
    message.answers.iter().all(|r| match &r.data {
        RData::SRV(srv) => known.contains_key(
            srv.target
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase()
                .as_str(),
        ),
        _ => true,
    })
}

/// The worker: the poller on a thread of its own (its socket calls block),
/// polling every `interval` (less up to 5% jitter, so a StatefulSet's pods do
/// not query in lockstep) and sending each new peer set. The body returns
/// when `shutdown` is cancelled, after waiting up to [`JOIN_WAIT`] for the
/// thread, or with an error if the thread ends first.
pub fn worker(dns: Dns, nameservers: Vec<SocketAddr>, ctx: Context) -> Result<Worker, SourceError> {
    let poller = Poller::new(&dns, &nameservers)?;
    // Dropping `stop` wakes the thread from its sleep at once.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
    let Context {
        events,
        errors,
        metrics,
        shutdown,
    } = ctx;
    std::thread::Builder::new()
        .name("peerplate-dns".into())
        .spawn(move || {
            poll_loop(poller, dns.interval, &metrics, events, errors, stopped);
            let _ = done_tx.send(());
        })
        .map_err(|e| SourceError::Setup(format!("cannot start the DNS thread: {e}")))?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {
                drop(stop);
                if tokio::time::timeout(JOIN_WAIT, &mut done).await.is_err() {
                    tracing::debug!("the DNS thread is still in a socket call; leaving it");
                }
                Ok(())
            }
            _ = &mut done => Err(SourceError::Ended {
                worker: "dns".into(),
                reason: "the polling thread ended".into(),
            }),
        }
    }))
}

fn poll_loop(
    mut poller: Poller,
    interval: Duration,
    metrics: &Metrics,
    events: tokio::sync::mpsc::Sender<Event>,
    errors: tokio::sync::mpsc::Sender<SourceError>,
    stopped: std::sync::mpsc::Receiver<()>,
) {
    let query = poller.query();
    let mut outage: Option<(Instant, u64)> = None;
    let mut jitter = XorShift::new();
    loop {
        let polled = poller.poll();
        metrics.lookup(match polled {
            Ok(_) => Lookup::Answer,
            Err(_) => Lookup::Failure,
        });
        let sent = match polled {
            Ok(answer) => {
                if let Some((since, failures)) = outage.take() {
                    tracing::info!(query = %query, failures, after = ?since.elapsed(), "DNS lookups work again");
                    // Others may have chosen a leader meanwhile: ask them.
                    let _ = events.blocking_send(Event::Recovered);
                }
                match answer {
                    Some(set) => events.blocking_send(Event::Peers(set)).is_ok(),
                    None => true,
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
                    let e = SourceError::Lookup {
                        query: query.clone(),
                        reason,
                    };
                    errors.blocking_send(e).is_ok()
                }
            },
        };
        if !sent || crate::event::fault_injected("dns") {
            return;
        }
        // Up to 5% *less* than the interval: pods spread out, and a change
        // is never seen later than one interval after it happened.
        let spread = interval.as_nanos() as u64 / 20;
        let pause = interval - Duration::from_nanos(jitter.next() % spread.max(1));
        match stopped.recv_timeout(pause) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}
