//! Choosing the leader: the policies (`ordinal`, `sticky`, `probe`) over the
//! peer set and its readiness, and the worker that asks peers and apps.
//!
//! The seed guide's warning is the reason this module exists: pods must not
//! assume peer 0 leads, and must never act on a partial view. [`Leadership`]
//! is the state the loop keeps (pure, driven by peer sets, hints and time):
//!
//! - `ordinal`: peer 0 of the peer set, readiness ignored (the seed's rule).
//! - `sticky`: the current leader stays while it is ready, or missing (from
//!   the ready set or the peer set) for less than `grace`; past that the
//!   first ready peer in ordinal order takes over, so pods that see the same
//!   sets agree; with none ready, peer 0. A pod that starts asks its ready
//!   peers (`GET /leader` on their admin port) and adopts the plurality, so a
//!   returning `web-0` follows the leader chosen while it was away.
//! - `probe`: the app says who leads: a 2xx from the peer's URL. The current
//!   leader stays while it answers 2xx; otherwise the first ready peer in
//!   ordinal order that does; when none does, the `sticky` rule.
//!
//! The network half is [`worker`], one worker of the usual shape: it asks
//! (peers every `grace` and on request; the app every `interval`) and sends
//! what it learnt as [`Event::LeaderHint`]; the loop decides. Peers are
//! reached at the addresses the DNS poller already has (A records from the
//! same server), never through the system resolver. Under a network
//! partition two pods may still name different leaders: an app that needs a
//! single writer must run its own election, which `probe` then follows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Leader as LeaderConfig, Policy};
use crate::event::{Context, Event, LeaderHint, SourceError, Worker};
use crate::http_client::get;
use crate::peers::{Identity, Peer, PeerSet};

/// How many peers a `sticky` pod asks every `grace`, besides the lowest.
const ASK_OTHERS: usize = 4;

/// A change of leader, for the log line, the metric and the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub old: Option<String>,
    pub new: Option<String>,
    pub why: String,
}

/// The loop's leader state.
#[derive(Debug)]
pub struct Leadership {
    config: LeaderConfig,
    /// The last known record of the leader (kept while it is missing).
    current: Option<Peer>,
    /// When `current` became the leader.
    since: SystemTime,
    /// Since when `current` has been missing from the ready set.
    missing_since: Option<Instant>,
    /// Set once a choice was made (the first one counts as a change too).
    chosen: bool,
    /// The leader's grace ran out but no peer is ready to take over: wait
    /// for the next peer set rather than a deadline.
    no_candidate: bool,
}

impl Leadership {
    pub fn new(config: LeaderConfig) -> Leadership {
        Leadership {
            config,
            current: None,
            since: SystemTime::now(),
            missing_since: None,
            chosen: false,
            no_candidate: false,
        }
    }

    /// The leader, as templates see it: the last known record.
    pub fn current(&self) -> Option<&Peer> {
        self.current.as_ref()
    }

    /// The policy's name.
    pub fn policy(&self) -> &'static str {
        self.config.policy.name()
    }

    /// When the current leader became leader.
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// When the grace of a missing leader runs out: the loop decides again then.
    pub fn deadline(&self) -> Option<Instant> {
        match self.config.policy {
            Policy::Ordinal => None,
            _ if self.no_candidate => None,
            _ => self
                .missing_since
                .map(|at| crate::limits::later(at, self.config.grace)),
        }
    }

    /// Decides from `peers` alone (no network): `ordinal` always; the
    /// `sticky` rule for the others. `None` when nothing changed.
    pub fn decide(&mut self, peers: &PeerSet, now: Instant) -> Option<Change> {
        self.no_candidate = false;
        if let Policy::Ordinal = self.config.policy {
            let first = peers.iter().next().cloned();
            return self.set(first, "peer 0 of the peer set (policy: ordinal)".into());
        }
        let Some(current) = self.current.clone() else {
            // First choice without answers: the first ready peer, else peer 0.
            let (pick, why) = first_ready(peers);
            return self.set(pick, why);
        };
        match peers.get(&current.fqdn) {
            Some(peer) if peer.ready => {
                if let Some(since) = self.missing_since.take() {
                    tracing::info!(leader = %current.fqdn, missing_ms = crate::log::ms(since.elapsed()), "the leader is ready again; it stays the leader");
                }
                // Keep the record fresh (addresses, port).
                self.current = Some(peer.clone());
                None
            }
            found => {
                let since = *self.missing_since.get_or_insert(now);
                let gone = now.saturating_duration_since(since);
                if gone < self.config.grace {
                    return None;
                }
                // Nobody to take over: a ready set emptied for a moment (a
                // shared dependency failing every readiness probe) must not
                // hand leadership to a pod that is not ready either.
                let Some(pick) = peers.ready().next().cloned() else {
                    self.no_candidate = true;
                    return None;
                };
                let pick = Some(pick);
                let what = if found.is_some() {
                    "not ready"
                } else {
                    "not in the peer set"
                };
                let why = format!(
                    "{} has been {what} for {} (leader.grace {})",
                    current.fqdn,
                    humantime::format_duration(round(gone)),
                    humantime::format_duration(self.config.grace)
                );
                self.set(pick, why)
            }
        }
    }

    /// Applies what the worker learnt: a peer that the app (probe) or the
    /// peers (sticky) name as leader, adopted only while it is ready.
    pub fn hint(&mut self, hint: &LeaderHint, peers: &PeerSet, now: Instant) -> Option<Change> {
        match &hint.leader {
            Some(fqdn) => match peers.get(fqdn) {
                Some(peer) if peer.ready => {
                    if self.current.as_ref().is_some_and(|c| c.fqdn == *fqdn) {
                        self.missing_since = None;
                        return self.first_choice();
                    }
                    self.set(Some(peer.clone()), hint.why.clone())
                }
                _ => self.decide(peers, now),
            },
            None => self.decide(peers, now),
        }
    }

    /// The first decision counts as a change (logged, hooked) even when it
    /// names the leader already held.
    fn first_choice(&mut self) -> Option<Change> {
        if self.chosen {
            return None;
        }
        self.chosen = true;
        Some(Change {
            old: None,
            new: self.current.as_ref().map(|p| p.fqdn.clone()),
            why: "first choice".into(),
        })
    }

    fn set(&mut self, new: Option<Peer>, why: String) -> Option<Change> {
        let old = self.current.as_ref().map(|p| p.fqdn.clone());
        let new_name = new.as_ref().map(|p| p.fqdn.clone());
        self.missing_since = None;
        if old == new_name {
            self.current = new;
            return self.first_choice();
        }
        self.current = new;
        self.since = SystemTime::now();
        self.chosen = true;
        Some(Change {
            old,
            new: new_name,
            why,
        })
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// The first ready peer in ordinal order; with none ready, peer 0.
fn first_ready(peers: &PeerSet) -> (Option<Peer>, String) {
    match peers.ready().next() {
        Some(p) => (Some(p.clone()), "the first ready peer".into()),
        None => (
            peers.iter().next().cloned(),
            "no peer is ready: peer 0".into(),
        ),
    }
}

/// What the loop publishes for the worker: the accepted peer set, its
/// current leader, and a counter the loop bumps to ask the peers now (after
/// a DNS outage ends).
#[derive(Debug, Clone, Default)]
pub struct View {
    pub peers: PeerSet,
    pub leader: Option<String>,
    pub ask_now: u64,
}

/// The plurality of `answers` (peers' leaders), with `own` counted as one
/// answer. Ties: `own` if it is among them, else the lowest ordinal.
pub fn plurality(answers: &[String], own: Option<&str>, peers: &PeerSet) -> Option<String> {
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers.iter().map(String::as_str).chain(own) {
        *votes.entry(a).or_default() += 1;
    }
    let top = *votes.values().max()?;
    let tied: Vec<&str> = votes
        .iter()
        .filter(|(_, n)| **n == top)
        .map(|(name, _)| *name)
        .collect();
    if let Some(own) = own.filter(|o| tied.contains(o)) {
        return Some(own.to_string());
    }
    // Lowest ordinal among the tied, in peer-set order.
    peers
        .iter()
        .find(|p| tied.contains(&p.fqdn.as_str()))
        .map(|p| p.fqdn.clone())
        .or_else(|| tied.first().map(|s| s.to_string()))
}

/// The worker: asks peers (`sticky`) or the app (`probe`) and sends hints.
/// `ordinal` needs none. `views` is what the loop publishes.
pub fn worker(
    config: LeaderConfig,
    me: Identity,
    mut views: watch::Receiver<View>,
    ctx: Context,
) -> Result<Worker, SourceError> {
    let pause = match &config.policy {
        Policy::Ordinal => return Ok(Box::pin(async { Ok(()) })),
        Policy::Sticky { .. } => config.grace,
        Policy::Probe { interval, .. } => *interval,
    };
    Ok(Box::pin(async move {
        // Nothing to do before the first accepted set; then a round every
        // `pause`, whatever else changes, and one at once when the loop asks
        // (`ask_now`: a DNS outage ended).
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            changed = views.changed() => if changed.is_err() { return Ok(()) },
        }
        let mut first = true;
        let mut asked_at;
        loop {
            let view = views.borrow_and_update().clone();
            asked_at = view.ask_now;
            let hint = if view.peers.is_empty() {
                // Nobody to ask; the loop still waits for a first answer.
                first.then(|| LeaderHint {
                    leader: None,
                    why: "no peers to ask".into(),
                })
            } else {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    hint = ask(&config, &me, &view, first) => hint,
                }
            };
            first = false;
            if let Some(hint) = hint {
                if ctx.events.send(Event::LeaderHint(hint)).await.is_err() {
                    return Ok(());
                }
            }
            let next = crate::limits::later(tokio::time::Instant::now(), pause);
            loop {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(next) => break,
                    changed = views.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                        if views.borrow().ask_now != asked_at {
                            break;
                        }
                    }
                }
            }
        }
    }))
}

/// One round of asking, per policy, as a pod that has not chosen yet (what
/// `once` does before its render).
pub async fn ask_once(config: &LeaderConfig, me: &Identity, view: &View) -> Option<LeaderHint> {
    ask(config, me, view, true).await
}

/// One round of asking, per policy.
async fn ask(config: &LeaderConfig, me: &Identity, view: &View, first: bool) -> Option<LeaderHint> {
    match &config.policy {
        Policy::Ordinal => None,
        Policy::Sticky { port: 0, .. } => None,
        Policy::Sticky { port, timeout } => ask_peers(me, view, *port, *timeout, first).await,
        Policy::Probe {
            url,
            timeout,
            interval: _,
            port: _,
        } => Some(probe(url, *timeout, view).await),
    }
}

/// Asks a few ready peers for their leader and returns the plurality (with
/// this pod's own view as one answer), when it is a ready peer.
pub async fn ask_peers(
    me: &Identity,
    view: &View,
    port: u16,
    timeout: Duration,
    first: bool,
) -> Option<LeaderHint> {
    let others: Vec<&Peer> = view.peers.ready().filter(|p| !me.is_self(p)).collect();
    // The lowest-ordinal one and up to four others at random: a bounded
    // cost whatever the size of the set.
    let mut chosen: Vec<&Peer> = others.iter().take(1).copied().collect();
    let mut rest: Vec<&Peer> = others.iter().skip(1).copied().collect();
    fastrand::shuffle(&mut rest);
    chosen.extend(rest.into_iter().take(ASK_OTHERS));
    let asks = chosen.iter().map(|peer| async move {
        let addr = peer.addresses.first()?;
        let reply = get(SocketAddr::new(*addr, port), &peer.fqdn, "/leader", timeout).await;
        match reply {
            Ok((200, body)) => {
                let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
                json.get("leader")?.as_str().map(String::from)
            }
            Ok((status, _)) => {
                tracing::debug!(peer = %peer.fqdn, status, "GET /leader");
                None
            }
            Err(e) => {
                tracing::debug!(peer = %peer.fqdn, error = %e, "GET /leader");
                None
            }
        }
    });
    let answers: Vec<String> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    let own = if first { None } else { view.leader.as_deref() };
    if answers.is_empty() {
        // A cold start of the whole set: the rule decides.
        return first.then(|| LeaderHint {
            leader: None,
            why: format!("no answer from {} ready peer(s) asked", chosen.len()),
        });
    }
    let leader = plurality(&answers, own, &view.peers)?;
    let counts = summarize(&answers);
    Some(LeaderHint {
        leader: Some(leader),
        why: format!(
            "asked {} peer(s): {counts}{}",
            chosen.len(),
            if own.is_some() {
                " (and this pod's own view)"
            } else {
                ""
            }
        ),
    })
}

fn summarize(answers: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        *counts.entry(a).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{n} named {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks the app: the current leader first; if it does not answer 2xx, every
/// ready peer in parallel, and the first in ordinal order that does.
async fn probe(url: &str, timeout: Duration, view: &View) -> LeaderHint {
    if let Some(current) = view.leader.as_deref().and_then(|l| view.peers.get(l)) {
        if current.ready && probe_one(url, current, timeout).await {
            return LeaderHint {
                leader: Some(current.fqdn.clone()),
                why: format!("{} answers 2xx at {url}", current.fqdn),
            };
        }
    }
    let ready: Vec<&Peer> = view.peers.ready().collect();
    let answers =
        futures_util::future::join_all(ready.iter().map(|p| probe_one(url, p, timeout))).await;
    match ready.iter().zip(answers).find(|(_, ok)| *ok) {
        Some((peer, _)) => LeaderHint {
            leader: Some(peer.fqdn.clone()),
            why: format!("{} answers 2xx at {url}", peer.fqdn),
        },
        None => LeaderHint {
            leader: None,
            why: format!("no ready peer answers 2xx at {url}"),
        },
    }
}

/// Whether `peer` answers 2xx at `url` (with `{peer}` its FQDN).
async fn probe_one(url: &str, peer: &Peer, timeout: Duration) -> bool {
    let url = url.replace("{peer}", &peer.fqdn);
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(addr) = peer.addresses.first() else {
        return false;
    };
    match get(SocketAddr::new(*addr, port), &peer.fqdn, path, timeout).await {
        Ok((status, _)) => (200..300).contains(&status),
        Err(e) => {
            tracing::debug!(peer = %peer.fqdn, url, error = %e, "probe");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[(&str, bool)]) -> PeerSet {
        PeerSet::new(
            names
                .iter()
                .map(|(n, ready)| {
                    let mut p = Peer::parse(n, None).unwrap();
                    p.ready = *ready;
                    p
                })
                .collect(),
        )
    }

    fn sticky(grace: u64) -> Leadership {
        Leadership::new(LeaderConfig {
            policy: Policy::Sticky {
                port: 9090,
                timeout: Duration::from_secs(1),
            },
            grace: Duration::from_secs(grace),
        })
    }

    #[test]
    fn sticky_keeps_a_leader_within_grace_and_hands_over_after() {
        let mut l = sticky(10);
        let t0 = Instant::now();
        let all = set(&[("web-0.s", true), ("web-1.s", true)]);
        assert_eq!(
            l.decide(&all, t0).and_then(|c| c.new).as_deref(),
            Some("web-0.s")
        );
        let gone = set(&[("web-0.s", false), ("web-1.s", true)]);
        assert_eq!(l.decide(&gone, t0), None);
        assert_eq!(l.decide(&gone, t0 + Duration::from_secs(9)), None);
        let change = l.decide(&gone, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(change.new.as_deref(), Some("web-1.s"));
        // web-0 back: nobody flips back.
        assert_eq!(l.decide(&all, t0 + Duration::from_secs(11)), None);
        assert_eq!(l.current().unwrap().fqdn, "web-1.s");
    }

    #[test]
    fn sticky_keeps_its_leader_while_no_peer_is_ready() {
        let mut l = sticky(10);
        let t0 = Instant::now();
        let all = set(&[("web-0.s", true), ("web-1.s", true)]);
        l.decide(&all, t0);
        let none = set(&[("web-0.s", false), ("web-1.s", false)]);
        assert_eq!(l.decide(&none, t0), None);
        assert_eq!(l.decide(&none, t0 + Duration::from_secs(60)), None);
        assert_eq!(
            l.deadline(),
            None,
            "no busy deadline while nobody can take over"
        );
        assert_eq!(l.current().unwrap().fqdn, "web-0.s");
        // web-1 ready, web-0 still not: web-1 takes over at once.
        let one = set(&[("web-0.s", false), ("web-1.s", true)]);
        let change = l.decide(&one, t0 + Duration::from_secs(61)).unwrap();
        assert_eq!(change.new.as_deref(), Some("web-1.s"));
    }

    #[test]
    fn plurality_counts_own_view_and_breaks_ties() {
        let peers = set(&[("web-0.s", true), ("web-1.s", true), ("web-2.s", true)]);
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            plurality(&a(&["web-1.s", "web-1.s"]), Some("web-0.s"), &peers).as_deref(),
            Some("web-1.s")
        );
        // A tie keeps its own.
        assert_eq!(
            plurality(&a(&["web-1.s"]), Some("web-0.s"), &peers).as_deref(),
            Some("web-0.s")
        );
        // Without its own view, the lowest ordinal among the tied.
        assert_eq!(
            plurality(&a(&["web-2.s", "web-1.s"]), None, &peers).as_deref(),
            Some("web-1.s")
        );
    }
}
