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
//! - No SRV answer is cached, so a change is seen on the next fetch whatever
//!   TTL the server gave.
//! - A truncated UDP answer (CoreDNS's answer for about 20 pods or more) is
//!   asked again over TCP, and from then on TCP is asked first. A TCP answer
//!   with TC set did not fit in 64 KiB and is a failed lookup (see `wire`).
//!
//! Asking whether anything changed before asking for everything
//! ([`SerialCheck`]): CoreDNS's kubernetes plugin sets its zone's SOA serial
//! to the Unix time of the last Service or endpoint change it saw, and a
//! primary like BIND raises it on every update (RFC 1035 3.3.13, RFC 1982).
//! So every interval the poller asks the zone's SOA (about 100 bytes, over
//! UDP) and fetches the SRV set (both names, with a ready service) only when
//! the serial is different from the last one seen, for max(2 s, two
//! intervals) after any such move, and at least every `peers.dns.refresh`.
//! "Different", never "greater": two CoreDNS replicas each keep a serial of
//! their own, and the fetch window after a move covers a replica that lags
//! the one that answered the SOA, and a second change in the same second
//! (which shares the serial: the window runs two seconds past the moment
//! the move was seen, so past the end of the serial's second). A refresh
//! that finds a change the serial did not announce turns the check off for
//! ten refresh periods, said once in the log.
//!
//! With `addresses: true`, A/AAAA lookups are kept for their TTL (RFC 1035
//! 3.2.1; negative answers for the SOA minimum, RFC 2308 5): only peers that
//! are new or whose lookups expired are asked, at most
//! [`ADDRESS_LOOKUPS_PER_POLL`] a poll once a set has been sent.
//!
//! Why not hickory's `Resolver` for the poll: it opens a fresh UDP socket per
//! query and runs every query through its pool and cache layers, which cost
//! 17-20 ms of CPU per idle minute at one poll a second (measured; see
//! README). This module speaks the same wire format (hickory's `proto`) over
//! one connected UDP socket and one kept-open TCP connection, on a thread of
//! its own that polls on a fixed beat (one interval apart), and skips all
//! parsing when the answer's bytes did not change: about a third of the cost.

mod schedule;
mod wire;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::model::{Peer, PeerSet};
use crate::config::Dns;
use crate::event::{Context, Event, SourceError, Worker};
use crate::metrics::{Lookup, Metrics};
use schedule::{Distrusted, Fetch, SerialCheck, DISTRUST_REFRESHES};
pub use wire::LookupFailure;
use wire::{decode, soa_serial, srv_targets, Client, Question};

/// How long shutdown waits for the polling thread, which may sit in a
/// socket call for up to 5 s: after this it is left to end on its own
/// (the process is exiting), so SIGTERM still exits within a second.
const JOIN_WAIT: Duration = Duration::from_millis(300);

/// `peers.dns.refresh` when the config does not set it.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// Peers whose addresses may be looked up (A and AAAA) in one poll, once a
/// set has been sent; the first set is resolved whole.
pub const ADDRESS_LOOKUPS_PER_POLL: usize = 128;

/// The last SRV answer's size and record count, for the poll's log line.
#[derive(Debug, Default, Clone, Copy)]
struct AnswerSize {
    bytes: usize,
    records: u16,
}

/// Polls one SRV name.
pub struct Poller {
    client: Client,
    /// The peers' SRV name.
    query: Question,
    addresses: bool,
    /// The last answer's bytes after the ID: an identical answer needs no parsing.
    last_answer: Vec<u8>,
    /// The size of the answer the last fetch read (for the log).
    answer_size: AnswerSize,
    /// Names dropped last time, so each bad name is warned about once.
    dropped: BTreeSet<String>,
    /// The last set returned.
    last_set: Option<PeerSet>,
    /// The last answer's SRV records as sorted (port, lower-case wire name).
    last_targets: Option<Vec<(u16, Vec<u8>)>>,
    /// The ready-only Service's SRV name (`peers.dns.ready_service`).
    ready_query: Option<Question>,
    /// The first labels it listed last time; `None` before its first answer.
    ready_hosts: Option<BTreeSet<String>>,
    /// Its last answer's sorted targets: unchanged means no decoding.
    ready_targets: Option<Vec<(u16, Vec<u8>)>>,
    /// The last set with readiness applied, as sent.
    last_sent: Option<PeerSet>,
    /// `None` with `refresh: 0s`: fetch every interval.
    serial: Option<SerialCheck>,
    /// The zone's SOA, asked every poll while `serial` is on.
    soa: Option<Question>,
    /// The last fetch failed or left addresses to look up: fetch again.
    unsettled: bool,
    /// Addresses looked up by A/AAAA (not from an additional section), by
    /// peer name, with when they expire.
    address_cache: BTreeMap<String, (Vec<IpAddr>, Instant)>,
    /// The name a peer's target must be one label under (lower case, no
    /// trailing dot), and the ready Service's; `None` with `any_target`.
    service: Option<String>,
    ready_service: Option<String>,
}

/// The Service an SRV name belongs to: the name less its leading
/// `_port._proto` labels (`_http._tcp.nginx.default.svc.cluster.local` ->
/// `nginx.default.svc.cluster.local`), lower case, without the trailing dot.
pub fn service_of(query: &str) -> String {
    let mut name = query.trim_end_matches('.');
    while let Some(rest) = name.strip_prefix('_').and_then(|n| n.split_once('.')) {
        name = rest.1;
    }
    name.to_ascii_lowercase()
}

/// Whether `target` is one label under `service` (compared
/// case-insensitively): how Kubernetes names a Service's pods
/// (`web-0.nginx.default.svc.cluster.local`). A target elsewhere
/// (`web-0.evil.example.com`) would otherwise become a peer, and perhaps
/// the leader.
pub fn is_under(target: &str, service: &str) -> bool {
    let target = target.trim_end_matches('.');
    match target.split_once('.') {
        Some((first, rest)) => !first.is_empty() && rest.eq_ignore_ascii_case(service),
        None => false,
    }
}

impl Poller {
    /// Sets up polling of `dns.query` against `nameservers`.
    pub fn new(dns: &Dns, nameservers: &[SocketAddr]) -> Result<Poller, SourceError> {
        if nameservers.is_empty() {
            return Err(SourceError::Setup(
                "peers.dns: no DNS server to ask; set peers.dns.nameservers or give the pod an /etc/resolv.conf with a nameserver line".into(),
            ));
        }
        // `key`: the setting an error names.
        let question = |key: &str, name: &str, rtype| {
            let fqdn =
                Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(|e| {
                    SourceError::Setup(format!("{key}: {name:?} is not a DNS name: {e}"))
                })?;
            Question::new(fqdn, rtype).map_err(|e| SourceError::Setup(format!("{key}: {e}")))
        };
        let query = question("peers.dns", &dns.query, RecordType::SRV)?;
        let ready_query = match &dns.ready_query {
            None => None,
            Some(name) => Some(question("peers.dns.ready_service", name, RecordType::SRV)?),
        };
        let soa = if dns.refresh.is_zero() {
            None
        } else {
            let zone = format!("{}.", dns.soa_query.trim_end_matches('.'));
            Some(question("peers.dns", &zone, RecordType::SOA)?)
        };
        let serial = soa
            .as_ref()
            .map(|soa| SerialCheck::new(soa.name.clone(), dns.refresh, dns.interval));
        let (service, ready_service) = if dns.any_target {
            (None, None)
        } else {
            (
                Some(service_of(&dns.query)),
                dns.ready_query.as_deref().map(service_of),
            )
        };
        Ok(Poller {
            service,
            ready_service,
            serial,
            soa,
            unsettled: true,
            address_cache: BTreeMap::new(),
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
            answer_size: AnswerSize::default(),
            dropped: BTreeSet::new(),
            last_set: None,
            last_targets: None,
        })
    }

    /// The name being queried, without the trailing dot.
    pub fn query(&self) -> String {
        self.query.name.to_ascii().trim_end_matches('.').to_string()
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

    /// One poll: asks the zone's SOA first (unless the serial check is off)
    /// and, when [`SerialCheck`] says so, the peers' SRV name and, with a
    /// ready service, its SRV name too, over the same sockets.
    /// `Ok(Some(set))`: a new set (possibly empty), with `peer.ready` from
    /// the ready service; `Ok(None)`: the same as last time (or not asked);
    /// `Err`: either lookup failed, so the last known state stays (no set
    /// is sent before both have answered once).
    pub fn poll(&mut self) -> Result<Option<PeerSet>, LookupFailure> {
        let now = Instant::now();
        let Some(why) = self.must_fetch(now) else {
            if self.addresses && self.addresses_expired(now) {
                let polled = self.refresh_addresses(now);
                self.log_poll("addresses expired", &polled, now);
                return polled;
            }
            tracing::debug!(
                query = %self.query(),
                fetched = false,
                outcome = "unchanged",
                why = "SOA serial unchanged",
                elapsed_ms = crate::log::ms(now.elapsed()),
                "DNS poll"
            );
            return Ok(None);
        };
        self.answer_size = AnswerSize::default();
        let polled = self.fetch();
        self.log_poll(why.as_str(), &polled, now);
        self.unsettled = self.unsettled || polled.is_err();
        if let (Some(check), true) = (self.serial.as_mut(), polled.is_ok()) {
            check.fetched(now);
        }
        if why == Fetch::Refresh && matches!(polled, Ok(Some(_))) {
            self.distrust(now);
        }
        polled
    }

    /// One debug line per poll that asked the SRV set: its answer's size,
    /// records, the outcome and the time it took.
    fn log_poll(
        &self,
        why: &str,
        polled: &Result<Option<PeerSet>, LookupFailure>,
        started: Instant,
    ) {
        let elapsed_ms = crate::log::ms(started.elapsed());
        match polled {
            Ok(set) => tracing::debug!(
                query = %self.query(),
                fetched = true,
                why,
                answer_bytes = self.answer_size.bytes,
                records = self.answer_size.records,
                outcome = if set.is_some() { "changed" } else { "unchanged" },
                peers = set.as_ref().map_or(0, |s| s.len()),
                elapsed_ms,
                "DNS poll"
            ),
            Err(LookupFailure(reason)) => tracing::debug!(
                query = %self.query(),
                fetched = true,
                why,
                outcome = "failed",
                reason = %reason,
                elapsed_ms,
                "DNS poll"
            ),
        }
    }

    /// A refresh found a change the serial stood still over: fetch every
    /// interval for [`DISTRUST_REFRESHES`] refresh periods, said once.
    fn distrust(&mut self, now: Instant) {
        let query = self.query();
        let Some(check) = self.serial.as_mut() else {
            return;
        };
        let Distrusted { off, first } = check.missed_change(now);
        let zone = check.query.to_ascii();
        let zone = zone.trim_end_matches('.');
        if !first {
            tracing::debug!(query = %query, zone = %zone, "a refresh found a peer change the SOA serial did not announce, again");
        } else {
            tracing::warn!(query = %query, zone = %zone, refresh_ms = crate::log::ms(check.refresh), distrusted_for_ms = crate::log::ms(off), "a refresh found a peer change that the zone's SOA serial did not announce; fetching the SRV set every interval for the next {DISTRUST_REFRESHES} refresh periods before trusting the serial again");
        }
    }

    /// Whether this poll fetches the SRV set, and why; asks the SOA when the
    /// serial check is on and trusted.
    fn must_fetch(&mut self, now: Instant) -> Option<Fetch> {
        let Some(check) = self.serial.as_mut() else {
            return Some(Fetch::Always);
        };
        if check.distrusted(now) {
            return Some(Fetch::Always);
        }
        // Asked first, even before the first fetch: the baseline serial
        // must not be younger than the set it vouches for.
        let Some(soa) = &mut self.soa else {
            return Some(Fetch::Always);
        };
        let serial = match self.client.query_udp(soa) {
            Ok(bytes) => soa_serial(bytes),
            Err(e) => {
                tracing::debug!(zone = %check.query, reason = %e.0, "SOA lookup failed; fetching the SRV set");
                None
            }
        };
        let unsettled = self.unsettled || self.last_sent.is_none();
        check.after_soa(serial, unsettled, now)
    }

    /// Asks the SRV name(s): see [`Poller::poll`].
    fn fetch(&mut self) -> Result<Option<PeerSet>, LookupFailure> {
        self.unsettled = false;
        let peers_changed = self.poll_peers()?.is_some();
        let ready_changed = self.poll_ready()?;
        Ok(self.outgoing(peers_changed || ready_changed))
    }

    /// The set to send after a change (`changed`), with readiness applied;
    /// `None` if it is what was sent last.
    fn outgoing(&mut self, changed: bool) -> Option<PeerSet> {
        if !changed && self.last_sent.is_some() {
            return None;
        }
        let mut set = self.last_set.clone().unwrap_or_default();
        if let Some(ready) = &self.ready_hosts {
            set = set.with_ready(ready);
        }
        if self.last_sent.as_ref() == Some(&set) {
            return None;
        }
        self.last_sent = Some(set.clone());
        Some(set)
    }

    /// Between fetches: looks up again the addresses of the last set's
    /// peers whose lookups expired (at most [`ADDRESS_LOOKUPS_PER_POLL`]),
    /// without asking the SRV set; a new set if an address changed.
    fn refresh_addresses(&mut self, now: Instant) -> Result<Option<PeerSet>, LookupFailure> {
        let Some(set) = self.last_set.clone() else {
            return Ok(None);
        };
        let mut peers: Vec<Peer> = set.iter().cloned().collect();
        let mut budget = ADDRESS_LOOKUPS_PER_POLL;
        for peer in &mut peers {
            if budget == 0 {
                break;
            }
            let expired = self
                .address_cache
                .get(&peer.fqdn)
                .is_some_and(|(_, expires)| schedule::expired(*expires, now));
            if expired {
                budget -= 1;
                let (ips, ttl) = self.look_up(&peer.fqdn)?;
                peer.addresses = ips.clone();
                self.address_cache
                    .insert(peer.fqdn.clone(), (ips, now + ttl));
            }
        }
        let fresh = PeerSet::new(peers);
        let changed = fresh != set;
        self.last_set = Some(fresh);
        Ok(self.outgoing(changed))
    }

    /// The ready service's answer; true when the ready hosts changed.
    fn poll_ready(&mut self) -> Result<bool, LookupFailure> {
        let Some(query) = &mut self.ready_query else {
            return Ok(false);
        };
        let bytes = self
            .client
            .query(query)
            .map_err(|e| {
                LookupFailure(format!(
                    "ready service {}: {}",
                    query.name.to_ascii().trim_end_matches('.'),
                    e.0
                ))
            })?
            .to_vec();
        let targets = srv_targets(&bytes);
        if targets.is_some() && targets == self.ready_targets && self.ready_hosts.is_some() {
            return Ok(false);
        }
        let message = decode(&bytes)?;
        let hosts: BTreeSet<String> = message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => {
                    let target = srv.target.to_ascii();
                    let inside = self
                        .ready_service
                        .as_deref()
                        .is_none_or(|s| is_under(&target, s));
                    inside.then(|| Peer::parse(&target, None).ok()).flatten()
                }
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
    /// (possibly empty), `Ok(None)` the same peers as last time (or, with
    /// addresses, a set whose new peers are not all resolved yet), `Err` no
    /// answer at all.
    fn poll_peers(&mut self) -> Result<Option<PeerSet>, LookupFailure> {
        let bytes = self.client.query(&mut self.query)?.to_vec();
        self.answer_size = AnswerSize {
            bytes: bytes.len(),
            records: bytes
                .get(6..8)
                .map_or(0, |c| u16::from_be_bytes([c[0], c[1]])),
        };
        let now = Instant::now();
        // An identical answer (CoreDNS answers in a stable order) is an
        // identical peer set: skip even decoding it. With addresses, only
        // while every looked-up address is within its TTL.
        if bytes.get(2..) == self.last_answer.get(2..)
            && (!self.addresses || !self.addresses_expired(now))
        {
            return Ok(None);
        }
        // The same records in another order (BIND rotates them on every
        // answer) are the same peers: compare the sorted (port, target)
        // pairs, read straight off the wire, before decoding anything. Not
        // with addresses, which may come from other records.
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

        let mut peers = Vec::new();
        let mut dropped = BTreeSet::new();
        for record in &message.answers {
            let RData::SRV(srv) = &record.data else {
                continue;
            };
            let target = srv.target.to_ascii();
            if let Some(service) = self.service.as_deref().filter(|s| !is_under(&target, s)) {
                if !self.dropped.contains(&target) {
                    tracing::warn!(name = %target, query = %self.query(), service = %service, "refusing an SRV target outside the Service: a peer must be one label under the Service's name; set peers.dns.any_target: true to take any target (DNS outside Kubernetes)");
                }
                dropped.insert(target);
                continue;
            }
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
            match self.fill_addresses(&mut peers, &message, now) {
                Ok(true) => {}
                Ok(false) => {
                    // New peers still without addresses: hold the set until
                    // the next poll has looked them up.
                    self.unsettled = true;
                    self.last_answer.clear();
                    return Ok(None);
                }
                Err(e) => {
                    // Ask again next time rather than trust a half-filled set.
                    self.last_answer.clear();
                    self.last_set = None;
                    self.last_targets = None;
                    return Err(e);
                }
            }
        }
        self.last_answer = bytes;
        self.last_targets = targets;
        let set = PeerSet::new(peers);
        if self.last_set.as_ref() == Some(&set) {
            return Ok(None);
        }
        self.last_set = Some(set.clone());
        Ok(Some(set))
    }

    /// Whether a looked-up address is past its TTL.
    fn addresses_expired(&self, now: Instant) -> bool {
        self.address_cache
            .values()
            .any(|(_, expires)| schedule::expired(*expires, now))
    }

    /// Gives each peer its A/AAAA addresses: from the answer's additional
    /// section when it has them (CoreDNS sends them), else from a lookup
    /// still within its TTL, else by asking: at most
    /// [`ADDRESS_LOOKUPS_PER_POLL`] peers a poll once a set was sent (an
    /// expired peer keeps its last addresses until its turn). `Ok(false)`:
    /// a new peer is left without addresses for now.
    fn fill_addresses(
        &mut self,
        peers: &mut [Peer],
        answer: &Message,
        now: Instant,
    ) -> Result<bool, LookupFailure> {
        let mut known = addresses_in(&answer.additionals);
        let mut budget = if self.last_sent.is_some() {
            ADDRESS_LOOKUPS_PER_POLL
        } else {
            usize::MAX
        };
        let mut complete = true;
        let mut current = BTreeSet::new();
        for peer in peers.iter_mut() {
            if let Some(mut ips) = known.remove(&peer.fqdn) {
                ips.sort();
                ips.dedup();
                peer.addresses = ips;
                continue;
            }
            current.insert(peer.fqdn.clone());
            let cached = self.address_cache.get(&peer.fqdn);
            if let Some((ips, expires)) = cached {
                if !schedule::expired(*expires, now) || budget == 0 {
                    peer.addresses = ips.clone();
                    continue;
                }
            } else if budget == 0 {
                complete = false;
                continue;
            }
            budget -= 1;
            let (ips, ttl) = self.look_up(&peer.fqdn)?;
            peer.addresses = ips.clone();
            self.address_cache
                .insert(peer.fqdn.clone(), (ips, now + ttl));
        }
        // Peers that left, or whose addresses now come in the answer.
        self.address_cache.retain(|name, _| current.contains(name));
        Ok(complete)
    }

    /// A and AAAA of `fqdn`: the sorted addresses and how long they hold
    /// (the smallest record TTL; for an empty answer the SOA's negative TTL,
    /// RFC 2308 5).
    fn look_up(&mut self, fqdn: &str) -> Result<(Vec<IpAddr>, Duration), LookupFailure> {
        let name =
            Name::from_ascii(format!("{fqdn}.")).map_err(|e| LookupFailure(e.to_string()))?;
        let mut ips = Vec::new();
        let mut ttl: Option<u32> = None;
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut question = Question::new(name.clone(), rtype)
                .map_err(|e| LookupFailure(format!("addresses of {fqdn}: {e}")))?;
            let reply = self
                .client
                .query(&mut question)
                .and_then(decode)
                .map_err(|e| LookupFailure(format!("addresses of {fqdn}: {}", e.0)))?;
            let found = addresses_in(&reply.answers);
            let this = if found.is_empty() {
                reply.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
            } else {
                reply
                    .answers
                    .iter()
                    .filter(|r| matches!(r.data, RData::A(_) | RData::AAAA(_)))
                    .map(|r| r.ttl)
                    .min()
            };
            if let Some(t) = this {
                ttl = Some(ttl.map_or(t, |old| old.min(t)));
            }
            ips.extend(found.into_values().flatten());
        }
        ips.sort();
        ips.dedup();
        Ok((ips, schedule::address_ttl(ttl)))
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

/// The worker: the poller on a thread of its own (its socket calls block),
/// polling on a fixed beat, one `interval` apart ([`next_beat`]), and
/// sending each new peer set. Each pod's beat falls at a random point of
/// the interval, so a StatefulSet's pods, even a whole set restarted at
/// once, poll at different moments and stay there, never in lockstep: with
/// `start_jitter` (`run`) the first poll waits for that point; without it
/// (`once`, which must not wait) the first poll is at once and the second
/// at that point. The body
/// returns when `shutdown` is cancelled, after waiting up to [`JOIN_WAIT`]
/// for the thread, or with an error if the thread ends first.
pub fn worker(
    dns: Dns,
    nameservers: Vec<SocketAddr>,
    start_jitter: bool,
    ctx: Context,
) -> Result<Worker, SourceError> {
    let poller = Poller::new(&dns, &nameservers)?;
    let stopped = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done) = tokio::sync::oneshot::channel::<()>();
    let Context {
        events,
        errors,
        metrics,
        shutdown,
    } = ctx;
    let flag = stopped.clone();
    let thread = std::thread::Builder::new()
        .name("peerplate-dns".into())
        .spawn(move || {
            // Where this pod's beat falls: a random point of the interval.
            let phase = dns.interval.mul_f64(fastrand::f64());
            let beat = if start_jitter {
                if sleep_until(crate::limits::later_std(Instant::now(), phase), &flag) {
                    let _ = done_tx.send(());
                    return;
                }
                Instant::now()
            } else {
                // `once` must not wait: it asks at once, and its second poll
                // comes at the random point, within one interval.
                let now = Instant::now();
                now.checked_sub(phase).unwrap_or(now)
            };
            let warn_ports = dns.port_name.is_none();
            poll_loop(
                poller,
                Beat {
                    at: beat,
                    interval: dns.interval,
                },
                warn_ports,
                &metrics,
                events,
                errors,
                &flag,
            );
            let _ = done_tx.send(());
        })
        .map_err(|e| SourceError::Setup(format!("cannot start the DNS thread: {e}")))?;
    // Dropping `stop` (shutdown, or the worker dropped) wakes the thread
    // from its sleep at once.
    let stop = Stop {
        stopped,
        thread: thread.thread().clone(),
    };
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

/// Stops the polling thread when dropped: sets its flag and wakes it.
struct Stop {
    stopped: Arc<AtomicBool>,
    thread: Thread,
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Sleeps on the polling thread until `deadline`, or less if [`Stop`] wakes
/// it; true if stopped. A bare park (one futex wait), not a channel: this
/// runs every interval, and an idle poll's cost is mostly what it touches.
fn sleep_until(deadline: Instant, stopped: &AtomicBool) -> bool {
    loop {
        if stopped.load(Ordering::Acquire) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Returns at the deadline, on unpark, or spuriously: checked again.
        std::thread::park_timeout(left);
    }
}

/// When the next poll starts, after one that started at `beat`: the first
/// beat of the `interval` grid through `beat` that is later than `now`. One
/// interval on, normally; a poll that overran (a server that did not answer
/// within the interval) skips the beats it missed rather than polling back
/// to back, and the pod keeps its place on the beat. Polling on a fixed
/// beat, not "an interval after the last poll ended", keeps a change from
/// being seen later than one interval after it happened, and asks no more
/// often than that needs.
fn next_beat(beat: Instant, interval: Duration, now: Instant) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let passed = now.saturating_duration_since(beat).as_nanos() / interval.as_nanos();
    let beats = u32::try_from(passed.saturating_add(1)).unwrap_or(u32::MAX);
    crate::limits::later_std(beat, interval.saturating_mul(beats))
}

/// The ports of the first peer listed with several (a Service with several
/// ports and no `port_name`), for the warning.
pub fn several_ports(set: &PeerSet) -> Option<(&str, &[u16])> {
    set.iter()
        .find(|p| p.ports.len() > 1)
        .map(|p| (p.fqdn.as_str(), p.ports.as_slice()))
}

/// A pod's polling beat: the instants one `interval` apart through `at`.
struct Beat {
    at: Instant,
    interval: Duration,
}

/// Polls on `beat` (the first poll at once), sending each new set and each
/// failure, until stopped or a channel closes.
fn poll_loop(
    mut poller: Poller,
    mut beat: Beat,
    mut warn_ports: bool,
    metrics: &Metrics,
    events: tokio::sync::mpsc::Sender<Event>,
    errors: tokio::sync::mpsc::Sender<SourceError>,
    stopped: &AtomicBool,
) {
    let query = poller.query();
    // Resolved once: the family's lock and label hash stay off the idle path.
    let (answered, failed) = (
        metrics.lookup_counter(Lookup::Answer),
        metrics.lookup_counter(Lookup::Failure),
    );
    let mut outage: Option<(Instant, u64)> = None;
    loop {
        let polled = poller.poll();
        match polled {
            Ok(_) => answered.inc(),
            Err(_) => failed.inc(),
        };
        let sent = match polled {
            Ok(answer) => {
                if let Some((since, failures)) = outage.take() {
                    tracing::info!(query = %query, failures, after_ms = crate::log::ms(since.elapsed()), "DNS lookups work again");
                    // Others may have chosen a leader meanwhile: ask them.
                    let _ = events.blocking_send(Event::Recovered);
                }
                match answer {
                    Some(set) => {
                        if let (true, Some((peer, ports))) = (warn_ports, several_ports(&set)) {
                            tracing::warn!(query = %query, peer, ports = %crate::log::list(ports), "the Service has several ports: peer.port is the lowest, peer.ports lists them all; set peers.dns.port_name to the name of the one you mean (like http)");
                            warn_ports = false;
                        }
                        events.blocking_send(Event::Peers(set)).is_ok()
                    }
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
        beat.at = next_beat(beat.at, beat.interval, Instant::now());
        if sleep_until(beat.at, stopped) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The poller's sleep ends at once when its [`Stop`] is dropped (as on
    /// shutdown), however long the pause, and runs the whole pause otherwise.
    #[test]
    fn a_dropped_stop_wakes_the_sleeping_poller_at_once() {
        let stopped = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        assert!(
            !sleep_until(start + Duration::from_millis(20), &stopped),
            "not stopped: the whole pause"
        );
        assert!(
            start.elapsed() >= Duration::from_millis(20),
            "slept to the deadline"
        );
        let flag = stopped.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            let _ = tx.send(sleep_until(start + Duration::from_secs(600), &flag));
        });
        drop(Stop {
            stopped,
            thread: sleeper.thread().clone(),
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "woken and stopped"
        );
        sleeper.join().expect("sleeper");
    }

    /// The next poll is the next beat of the grid through the last one:
    /// one interval on, whatever the poll took, and past the beats a slow
    /// poll missed.
    #[test]
    fn the_next_poll_is_the_next_beat_after_now() {
        let beat = Instant::now();
        let s = Duration::from_secs(1);
        let ms = Duration::from_millis;
        // A quick poll, a slow one, one that ended just on the next beat.
        assert_eq!(next_beat(beat, s, beat + ms(2)), beat + s);
        assert_eq!(next_beat(beat, s, beat + ms(999)), beat + s);
        assert_eq!(next_beat(beat, s, beat + s), beat + 2 * s);
        // A server that did not answer for 3.4 intervals: the 4th beat.
        assert_eq!(next_beat(beat, s, beat + ms(3_400)), beat + 4 * s);
        // `now` before the beat (never, with a monotonic clock): one on.
        assert_eq!(next_beat(beat + s, s, beat), beat + 2 * s);
        // A zero interval (the config refuses it) still moves on.
        assert_eq!(next_beat(beat, Duration::ZERO, beat), beat + ms(1));
        // No overflow, however far: a beat far away, later than now.
        let far = next_beat(beat, Duration::MAX, beat + s);
        assert!(far > beat + s);
    }

    #[test]
    fn targets_must_be_one_label_under_the_service() {
        assert_eq!(
            service_of("_http._tcp.Nginx.default.svc.cluster.local."),
            "nginx.default.svc.cluster.local"
        );
        let svc = service_of("nginx.default.svc.cluster.local");
        assert!(is_under("web-0.nginx.default.svc.cluster.local.", &svc));
        assert!(is_under("WEB-0.NGINX.default.svc.cluster.local", &svc));
        assert!(!is_under("web-0.evil.example.com", &svc));
        assert!(!is_under("a.web-0.nginx.default.svc.cluster.local", &svc));
        assert!(!is_under("nginx.default.svc.cluster.local", &svc));
        assert!(!is_under(".nginx.default.svc.cluster.local", &svc));
    }
}
