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
//!   A leader stopped on purpose resigns ([`crate::resign`]): its
//!   followers adopt the successor it names as soon as it confirms, at its
//!   own `GET /leader`, that it resigned ([`Leadership::resigned`]). A pod
//!   that starts and gets no answer from any ready peer follows the leader
//!   remembered in its state file, while that peer is in the set.
//! - `probe`: the app says who leads: a 2xx from the peer's URL
//!   ([`Leadership::probed`]). A leader confirmed by a 2xx stays the leader
//!   until another peer answers 2xx, however long the app's own failover
//!   takes; `probe.fallback` decides only a cold start. With two or more
//!   claimants, the one the peers' sidecars name wins, then the current
//!   one, then the lowest ordinal.
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

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{Fallback, Leader as LeaderConfig, Policy};
use crate::event::{Context, Event, LeaderHint, ProbeRound, Resigned, SourceError, Worker};
use crate::http_client::get;
use crate::peers::{Identity, Peer, PeerSet};
use crate::resign::{self, Notice};

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
    /// A confirmed resignation (the leader, its successor) waiting for the
    /// successor to be ready in this pod's view.
    resigned: Option<Resigned>,
    /// Leaders confirmed as resigned, and when: never a successor while
    /// remembered (see [`Leadership::resigned_peers`]).
    gone: BTreeMap<String, Instant>,
    /// The leader remembered in the state file (a restart).
    remembered: Option<String>,
    /// `probe`: a leader is known (a 2xx, the state file, a peer's
    /// `/leader`): no guess from now on.
    confirmed: bool,
    /// `probe`: since when the known leader no longer answers 2xx.
    unconfirmed_since: Option<SystemTime>,
    /// `probe`: the claimants last warned about.
    warned_claimants: Vec<String>,
    /// A round of asking in which no peer answered was already warned about.
    unanswered_warned: bool,
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
            resigned: None,
            gone: BTreeMap::new(),
            remembered: None,
            confirmed: false,
            unconfirmed_since: None,
            warned_claimants: Vec::new(),
            unanswered_warned: false,
        }
    }

    /// The leader this pod followed before a restart (its state file):
    /// followed when no peer answers, while it is in the set.
    pub fn remember(&mut self, name: Option<String>) {
        self.remembered = name;
    }

    /// `probe`: since when the leader no longer answers 2xx (`None` while it
    /// does, or when none was ever confirmed).
    pub fn unconfirmed_since(&self) -> Option<SystemTime> {
        self.unconfirmed_since
    }

    /// `probe`: whether a leader is known, so no guess is made any more.
    pub fn confirmed(&self) -> bool {
        self.confirmed
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
            Policy::Probe { .. } if self.confirmed => None,
            _ => self
                .missing_since
                .map(|at| crate::limits::later(at, self.config.grace)),
        }
    }

    /// Decides from `peers` alone (no network): `ordinal` always; the
    /// `sticky` rule for the others. `None` when nothing changed.
    pub fn decide(&mut self, peers: &PeerSet, now: Instant) -> Option<Change> {
        self.no_candidate = false;
        self.forget_resigned(peers, now);
        if let Policy::Ordinal = self.config.policy {
            let first = peers.iter().next().cloned();
            return self.set(first, "peer 0 of the peer set (policy: ordinal)".into());
        }
        if let Policy::Probe {
            fallback: Fallback::None,
            ..
        } = self.config.policy
        {
            if !self.confirmed {
                // No guess at all: only a 2xx (or a peer, or memory) names one.
                return None;
            }
        }
        let Some(current) = self.current.clone() else {
            // First choice without answers: the first ready peer, else peer 0.
            let (pick, why) = first_ready(peers);
            return self.set(pick, why);
        };
        if let Some(change) = self.follow_resignation(peers, now) {
            return Some(change);
        }
        if matches!(self.config.policy, Policy::Probe { .. }) && self.confirmed {
            // Never a guess once a leader is known: only another 2xx moves it.
            if let Some(peer) = peers.get(&current.fqdn) {
                self.current = Some(peer.clone());
            }
            self.missing_since = None;
            return None;
        }
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

    /// The leader this pod follows confirmed that it resigned for
    /// `r.successor`: adopted at once if this pod sees the successor ready,
    /// else as soon as it does (meanwhile the usual rule goes on).
    ///
    /// The resigned leader is remembered ([`Leadership::resigned_peers`]):
    /// a successor named later that is a leader already confirmed as
    /// resigned (DNS still lists a stopping pod ready for a moment) is not
    /// adopted; the first ready peer that is neither is, the same choice
    /// the resigning leader makes ([`resign::successor`]).
    pub fn resigned(&mut self, r: &Resigned, peers: &PeerSet, now: Instant) -> Option<Change> {
        // The leader itself said so at its own address: remembered whether
        // or not this pod still follows it.
        self.gone.insert(r.leader.clone(), now);
        if self.current.as_ref().map(|c| c.fqdn.as_str()) != Some(r.leader.as_str()) {
            return None;
        }
        self.resigned = Some(r.clone());
        self.follow_resignation(peers, now)
    }

    /// The leaders this pod confirmed as resigned, still remembered at
    /// `now`: for `leader.grace` at most (past it a leader lost without a
    /// word would be replaced anyway), and only while the peer is in the
    /// ready set (Kubernetes takes a stopped pod out of it; one that left
    /// and came back is a new pod).
    pub fn resigned_peers(&self, peers: &PeerSet, now: Instant) -> Vec<String> {
        self.gone
            .iter()
            .filter(|(name, at)| {
                now.saturating_duration_since(**at) < self.config.grace
                    && peers.get(name).is_some_and(|p| p.ready)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Forgets the resigned leaders no longer remembered for good (a peer
    /// seen out of the ready set once stays forgotten when it comes back:
    /// it is a new pod); returns those still remembered.
    fn forget_resigned(&mut self, peers: &PeerSet, now: Instant) -> Vec<String> {
        let gone = self.resigned_peers(peers, now);
        self.gone.retain(|name, _| gone.contains(name));
        gone
    }

    fn follow_resignation(&mut self, peers: &PeerSet, now: Instant) -> Option<Change> {
        let r = self.resigned.clone()?;
        if self.current.as_ref().map(|c| c.fqdn.as_str()) != Some(r.leader.as_str()) {
            self.resigned = None;
            return None;
        }
        let gone = self.forget_resigned(peers, now);
        let named = peers.get(&r.successor).filter(|p| p.ready)?;
        let (successor, why) = if gone.contains(&named.fqdn) {
            let Some(other) = peers
                .ready()
                .find(|p| p.fqdn != r.leader && !gone.contains(&p.fqdn))
            else {
                // Nobody else to take over: the usual rule decides.
                self.resigned = None;
                return None;
            };
            let why = format!(
                "{} resigned and named {}, which resigned before it; {} is the first ready peer that did not",
                r.leader, r.successor, other.fqdn
            );
            (other.clone(), why)
        } else {
            let why = format!(
                "{} resigned and named {} (confirmed at its GET /leader)",
                r.leader, r.successor
            );
            (named.clone(), why)
        };
        self.resigned = None;
        self.set(Some(successor), why)
    }

    /// Applies what the worker learnt from the peers (sticky): a leader
    /// they name, adopted only while it is ready. When no ready peer
    /// answered, a first choice follows the remembered leader (state file)
    /// while it is in the set, else the rule; either way a WARN says so.
    pub fn hint(&mut self, hint: &LeaderHint, peers: &PeerSet, now: Instant) -> Option<Change> {
        if hint.unanswered == 0 {
            self.unanswered_warned = false;
        } else if hint.leader.is_none() {
            return self.unanswered(hint.unanswered, peers, now);
        }
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

    /// No ready peer answered `GET /leader` (`asked` of them were asked).
    fn unanswered(&mut self, asked: usize, peers: &PeerSet, now: Instant) -> Option<Change> {
        if self.chosen {
            // Keeping the leader: said once per streak.
            if !self.unanswered_warned {
                tracing::warn!(
                    asked,
                    kept = %self.current.as_ref().map_or("none", |p| p.fqdn.as_str()),
                    "no peer answered who leads (GET /leader); keeping the current leader"
                );
            }
            self.unanswered_warned = true;
            return self.decide(peers, now);
        }
        self.unanswered_warned = true;
        let remembered = self
            .remembered
            .as_deref()
            .and_then(|name| peers.get(name))
            .cloned();
        if let Some(peer) = remembered {
            tracing::warn!(
                asked,
                chose = %peer.fqdn,
                "no peer answered who leads (GET /leader); following the leader remembered in the state file"
            );
            let why = format!(
                "no answer from {asked} ready peer(s) asked; {} remembered in the state file",
                peer.fqdn
            );
            return self.set(Some(peer), why);
        }
        let change = self.decide(peers, now);
        tracing::warn!(
            asked,
            chose = %self.current.as_ref().map_or("none", |p| p.fqdn.as_str()),
            "no peer answered who leads (GET /leader) and none is remembered; choosing by the rule (the first ready peer)"
        );
        change
    }

    /// Applies one `probe` round. A claimant (a 2xx) confirms; with none, a
    /// known leader stays (unconfirmed since now), and only a cold start
    /// (none ever known) uses `probe.fallback`.
    pub fn probed(&mut self, round: &ProbeRound, peers: &PeerSet, now: Instant) -> Option<Change> {
        let names: Vec<String> = round
            .claimants
            .iter()
            .filter(|c| peers.get(c).is_some())
            .cloned()
            .collect();
        let Some(lowest) = names.first().cloned() else {
            return self.no_claimant(round, peers, now);
        };
        self.confirmed = true;
        if let Some(since) = self.unconfirmed_since.take() {
            let gone = SystemTime::now().duration_since(since).unwrap_or_default();
            tracing::info!(claimants = %crate::log::list(&names), unconfirmed_ms = crate::log::ms(gone), "a peer answers 2xx again");
        }
        let current = self.current.as_ref().map(|p| p.fqdn.clone());
        let pick = if names.len() >= 2 {
            self.pick_claimant(&names, round, current.as_deref(), peers)
        } else {
            self.warned_claimants.clear();
            lowest
        };
        if current.as_deref() == Some(pick.as_str()) {
            self.current = peers.get(&pick).cloned();
            self.missing_since = None;
            return self.first_choice();
        }
        let why = if names.len() >= 2 {
            let named = if round.named.is_empty() {
                "no peer named one".to_string()
            } else {
                summarize(&round.named)
            };
            format!(
                "{pick} of {} peers answering 2xx at {} ({named})",
                names.len(),
                round.url
            )
        } else {
            format!("{pick} answers 2xx at {}", round.url)
        };
        self.set(peers.get(&pick).cloned(), why)
    }

    /// Two or more claimants: the one the peers' sidecars name, then the
    /// current leader, then the lowest ordinal (`names` is in ordinal
    /// order); one WARN per set of claimants.
    fn pick_claimant(
        &mut self,
        names: &[String],
        round: &ProbeRound,
        current: Option<&str>,
        peers: &PeerSet,
    ) -> String {
        let named: Vec<String> = round
            .named
            .iter()
            .filter(|n| names.contains(n))
            .cloned()
            .collect();
        let by_peers = (!named.is_empty())
            .then(|| plurality(&named, None, peers))
            .flatten();
        let (pick, how) = match (by_peers, current.filter(|c| names.iter().any(|n| n == c))) {
            (Some(p), _) => (p, "the one the peers name"),
            (None, Some(c)) => (c.to_string(), "the current leader"),
            (None, None) => (
                names.first().cloned().unwrap_or_default(),
                "the lowest ordinal",
            ),
        };
        if self.warned_claimants != names {
            tracing::warn!(
                claimants = %crate::log::list(names),
                chose = %pick,
                how,
                url = %round.url,
                "two or more peers answer 2xx (claim to lead); following one of them"
            );
            self.warned_claimants = names.to_vec();
        }
        pick
    }

    /// No peer answers 2xx: a known leader stays (unconfirmed since now);
    /// else one the peers name or the state file remembers; else the cold
    /// start's `probe.fallback`.
    fn no_claimant(&mut self, round: &ProbeRound, peers: &PeerSet, now: Instant) -> Option<Change> {
        if self.confirmed {
            if let Some(current) = &self.current {
                if self.unconfirmed_since.is_none() {
                    tracing::warn!(
                        leader = %current.fqdn,
                        url = %round.url,
                        "the leader no longer answers 2xx and no other peer does; it stays the leader until another peer answers 2xx"
                    );
                    self.unconfirmed_since = Some(SystemTime::now());
                }
                return self.first_choice();
            }
        }
        let named = plurality(&round.named, None, peers)
            .and_then(|n| peers.get(&n).cloned())
            .map(|p| {
                let why = format!(
                    "no peer answers 2xx at {}; the peers name {} ({})",
                    round.url,
                    p.fqdn,
                    summarize(&round.named)
                );
                (p, why)
            });
        let known = named.or_else(|| {
            let p = peers.get(self.remembered.as_deref()?)?.clone();
            let why = format!(
                "no peer answers 2xx at {}; {} remembered in the state file",
                round.url, p.fqdn
            );
            Some((p, why))
        });
        if let Some((peer, why)) = known {
            self.confirmed = true;
            self.unconfirmed_since = Some(SystemTime::now());
            return self.set(Some(peer), why);
        }
        match self.config.policy {
            Policy::Probe {
                fallback: Fallback::None,
                ..
            } => self.set(
                None,
                format!(
                    "no peer answers 2xx at {} and none ever did (probe.fallback: none)",
                    round.url
                ),
            ),
            _ => self.decide(peers, now),
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

/// The leader the policy's rule names from `peers` alone, with no one to
/// ask (`render`, `check`'s trial render): peer 0 for `ordinal`, else the
/// first ready peer (also under `probe.fallback: none`, so a template that
/// uses `leader` is tried with one).
pub fn by_rule(config: &LeaderConfig, peers: &PeerSet) -> Option<Peer> {
    let mut config = config.clone();
    if let Policy::Probe { fallback, .. } = &mut config.policy {
        *fallback = Fallback::Sticky;
    }
    let mut leadership = Leadership::new(config);
    leadership.decide(peers, Instant::now());
    leadership.current().cloned()
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
    /// `probe`: a leader is known (no cold start any more).
    pub confirmed: bool,
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
/// `ordinal` needs none. `views` is what the loop publishes; `notices` are
/// resignation notices that passed the admin screen (`sticky`): each one is
/// checked with the leader this pod follows before anything changes.
pub fn worker(
    config: LeaderConfig,
    me: Identity,
    mut views: watch::Receiver<View>,
    mut notices: mpsc::Receiver<Notice>,
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
        // Resignation notices: at most one check per second of a leader,
        // one arriving meanwhile kept for when the second is over.
        let mut pace = resign::Pace::default();
        loop {
            let view = views.borrow_and_update().clone();
            asked_at = view.ask_now;
            let event = if view.peers.is_empty() {
                // Nobody to ask; the loop still waits for a first answer.
                first.then(|| {
                    Event::LeaderHint(LeaderHint {
                        leader: None,
                        why: "no peers to ask".into(),
                        unanswered: 0,
                    })
                })
            } else {
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    event = ask(&config, &me, &view, first) => event,
                }
            };
            first = false;
            if let Some(event) = event {
                if ctx.events.send(event).await.is_err() {
                    return Ok(());
                }
            }
            let next = crate::limits::later(tokio::time::Instant::now(), pause);
            loop {
                let due = pace.due(tokio::time::Instant::now());
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(next) => break,
                    Some(notice) = notices.recv() => {
                        pace.offer(notice);
                    }
                    _ = tokio::time::sleep_until(due.unwrap_or(next)), if due.is_some() => {
                        let Some(notice) = pace.take(tokio::time::Instant::now()) else {
                            continue;
                        };
                        let view = views.borrow().clone();
                        if let Some(event) = check_notice(&config, &view, &notice, &ctx).await {
                            if ctx.events.send(event).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
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

/// Checks a screened resignation notice with the leader this pod follows,
/// at the address its own DNS view gives: an [`Event::Resigned`] only if
/// that leader answers that it resigned; otherwise counted as ignored.
async fn check_notice(
    config: &LeaderConfig,
    view: &View,
    notice: &Notice,
    ctx: &Context,
) -> Option<Event> {
    let Policy::Sticky { port, timeout } = config.policy else {
        return None;
    };
    let leader = view
        .leader
        .as_deref()
        .filter(|l| *l == notice.leader)
        .and_then(|l| view.peers.get(l));
    let checked = match leader {
        Some(leader) => resign::check(leader, port, timeout).await,
        None => Err(format!(
            "this pod no longer follows {} (it follows {})",
            notice.leader,
            view.leader.as_deref().unwrap_or("none")
        )),
    };
    match checked {
        Ok(successor) => {
            tracing::info!(leader = %notice.leader, successor = %successor, "the leader confirms it resigned");
            Some(Event::Resigned(Resigned {
                leader: notice.leader.clone(),
                successor,
            }))
        }
        Err(why) => {
            ctx.metrics.resignation_ignored();
            tracing::warn!(leader = %notice.leader, named_successor = %notice.successor, why = %why, "a resignation notice was not confirmed by the leader; ignored");
            None
        }
    }
}

/// One round of asking, per policy, as a pod that has not chosen yet (what
/// `once` does before its render): an [`Event::LeaderHint`] (`sticky`) or
/// an [`Event::Probed`] (`probe`).
pub async fn ask_once(config: &LeaderConfig, me: &Identity, view: &View) -> Option<Event> {
    ask(config, me, view, true).await
}

/// One round of asking, per policy.
async fn ask(config: &LeaderConfig, me: &Identity, view: &View, first: bool) -> Option<Event> {
    match &config.policy {
        Policy::Ordinal => None,
        Policy::Sticky { port: 0, .. } => None,
        Policy::Sticky { port, timeout } => ask_peers(me, view, *port, *timeout, first)
            .await
            .map(Event::LeaderHint),
        Policy::Probe {
            url, timeout, port, ..
        } => Some(Event::Probed(probe(url, *timeout, *port, me, view).await)),
    }
}

/// What a round of `GET /leader` got: how many ready peers were asked, how
/// many answered at all, and the leaders they named.
struct Asked {
    asked: usize,
    answered: usize,
    names: Vec<String>,
}

/// Asks the lowest-ordinal ready peer and up to four others at random
/// (a bounded cost whatever the size of the set) for their leader.
async fn ask_names(me: &Identity, view: &View, port: u16, timeout: Duration) -> Asked {
    let others: Vec<&Peer> = view.peers.ready().filter(|p| !me.is_self(p)).collect();
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
                // An answer, even "I do not know yet" (null).
                Some(json.get("leader")?.as_str().map(String::from))
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
    let replies: Vec<Option<Option<String>>> = futures_util::future::join_all(asks).await;
    Asked {
        asked: chosen.len(),
        answered: replies.iter().filter(|r| r.is_some()).count(),
        names: replies.into_iter().flatten().flatten().collect(),
    }
}

/// Asks a few ready peers for their leader and returns the plurality (with
/// this pod's own view as one answer), when it is a ready peer. When no
/// ready peer answers at all, the hint says how many were asked.
pub async fn ask_peers(
    me: &Identity,
    view: &View,
    port: u16,
    timeout: Duration,
    first: bool,
) -> Option<LeaderHint> {
    let Asked {
        asked,
        answered,
        names: answers,
    } = ask_names(me, view, port, timeout).await;
    let own = if first { None } else { view.leader.as_deref() };
    if answers.is_empty() {
        let unanswered = if answered == 0 { asked } else { 0 };
        // A cold start of the whole set: the rule decides. Later rounds
        // report only silence (the loop warns and counts it).
        return (first || unanswered > 0).then(|| LeaderHint {
            leader: None,
            why: format!("no answer from {asked} ready peer(s) asked"),
            unanswered,
        });
    }
    let leader = plurality(&answers, own, &view.peers)?;
    let counts = summarize(&answers);
    Some(LeaderHint {
        leader: Some(leader),
        why: format!(
            "asked {asked} peer(s): {counts}{}",
            if own.is_some() {
                " (and this pod's own view)"
            } else {
                ""
            }
        ),
        unanswered: 0,
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

/// Asks the app: every ready peer (and the current leader even when not
/// ready) in parallel, so the claimants' count is always whole. The peers'
/// sidecars (`GET /leader`) are asked when two or more claim, or when none
/// does before a leader is known.
async fn probe(url: &str, timeout: Duration, port: u16, me: &Identity, view: &View) -> ProbeRound {
    let current = view.leader.as_deref().and_then(|l| view.peers.get(l));
    // The ready peers, and the current leader even when not ready.
    let asked: Vec<&Peer> = view
        .peers
        .iter()
        .filter(|p| p.ready || current.is_some_and(|c| c.fqdn == p.fqdn))
        .collect();
    let answers =
        futures_util::future::join_all(asked.iter().map(|p| probe_one(url, p, timeout))).await;
    let claimants: Vec<String> = asked
        .iter()
        .zip(answers)
        .filter(|(_, ok)| *ok)
        .map(|(p, _)| p.fqdn.clone())
        .collect();
    let ask_peers = claimants.len() >= 2 || (claimants.is_empty() && !view.confirmed);
    let named = if ask_peers && port != 0 {
        ask_names(me, view, port, timeout).await.names
    } else {
        Vec::new()
    };
    ProbeRound {
        claimants,
        named,
        url: url.to_string(),
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

    fn probe(fallback: Fallback) -> Leadership {
        Leadership::new(LeaderConfig {
            policy: Policy::Probe {
                url: "http://{peer}:8008/primary".into(),
                timeout: Duration::from_secs(1),
                interval: Duration::from_secs(2),
                port: 9090,
                fallback,
            },
            grace: Duration::from_secs(10),
        })
    }

    fn round(claimants: &[&str], named: &[&str]) -> ProbeRound {
        ProbeRound {
            claimants: claimants.iter().map(|s| s.to_string()).collect(),
            named: named.iter().map(|s| s.to_string()).collect(),
            url: "http://{peer}:8008/primary".into(),
        }
    }

    fn new_name(change: Option<Change>) -> Option<String> {
        change.and_then(|c| c.new)
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirmed_resignation_hands_over_when_the_successor_is_ready() {
        let mut l = sticky(30);
        let all = set(&[("web-0.s", true), ("web-1.s", true), ("web-2.s", true)]);
        l.decide(&all, Instant::now());
        let r = Resigned {
            leader: "web-0.s".into(),
            successor: "web-1.s".into(),
        };
        // At once, long before grace.
        let change = l.resigned(&r, &all, Instant::now()).expect("a change");
        assert_eq!(change.new.as_deref(), Some("web-1.s"));
        assert_eq!(
            change.why,
            "web-0.s resigned and named web-1.s (confirmed at its GET /leader)"
        );
        // A resignation of a leader this pod no longer follows: nothing.
        assert_eq!(l.resigned(&r, &all, Instant::now()), None);
        assert_eq!(l.current().map(|p| p.fqdn.as_str()), Some("web-1.s"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_successor_that_resigned_before_is_never_adopted() {
        // web-0 resigns for web-1; 0.3 s later web-1 resigns too, naming
        // web-0, which DNS still lists ready for a moment.
        let mut l = sticky(30);
        let all = set(&[("web-0.s", true), ("web-1.s", true), ("web-2.s", true)]);
        l.decide(&all, Instant::now());
        let first = Resigned {
            leader: "web-0.s".into(),
            successor: "web-1.s".into(),
        };
        let change = l.resigned(&first, &all, Instant::now()).expect("a change");
        assert_eq!(change.new.as_deref(), Some("web-1.s"));
        assert_eq!(l.resigned_peers(&all, Instant::now()), ["web-0.s"]);
        tokio::time::advance(Duration::from_millis(300)).await;
        let second = Resigned {
            leader: "web-1.s".into(),
            successor: "web-0.s".into(),
        };
        let change = l.resigned(&second, &all, Instant::now()).expect("a change");
        assert_eq!(change.new.as_deref(), Some("web-2.s"));
        assert_eq!(
            change.why,
            "web-1.s resigned and named web-0.s, which resigned before it; web-2.s is the first ready peer that did not"
        );
        // Both are remembered while ready, forgotten once they leave the
        // ready set (a pod that comes back is a new one) or after a while.
        let now = Instant::now();
        assert_eq!(l.resigned_peers(&all, now), ["web-0.s", "web-1.s"]);
        let left = set(&[("web-0.s", false), ("web-1.s", true), ("web-2.s", true)]);
        assert_eq!(l.resigned_peers(&left, now), ["web-1.s"]);
        // Seen out of the ready set once (a peer set decided on): web-0
        // stays forgotten when it is back, as a new pod.
        l.decide(&left, now);
        assert_eq!(l.resigned_peers(&all, now), ["web-1.s"]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(l.resigned_peers(&all, Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_resignation_naming_only_resigned_peers_leaves_the_rule_to_decide() {
        let mut l = sticky(30);
        let two = set(&[("web-0.s", true), ("web-1.s", true)]);
        l.decide(&two, Instant::now());
        let first = Resigned {
            leader: "web-0.s".into(),
            successor: "web-1.s".into(),
        };
        assert!(l.resigned(&first, &two, Instant::now()).is_some());
        let second = Resigned {
            leader: "web-1.s".into(),
            successor: "web-0.s".into(),
        };
        assert_eq!(l.resigned(&second, &two, Instant::now()), None);
        assert_eq!(l.current().map(|p| p.fqdn.as_str()), Some("web-1.s"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_successor_not_yet_ready_here_is_adopted_when_it_is() {
        let mut l = sticky(30);
        let all = set(&[("web-0.s", true), ("web-1.s", false), ("web-2.s", true)]);
        l.decide(&all, Instant::now());
        let r = Resigned {
            leader: "web-0.s".into(),
            successor: "web-1.s".into(),
        };
        assert_eq!(
            l.resigned(&r, &all, Instant::now()),
            None,
            "web-1 is not ready in this view"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let lagging = set(&[("web-0.s", false), ("web-1.s", false), ("web-2.s", true)]);
        assert_eq!(
            l.decide(&lagging, Instant::now()),
            None,
            "still within grace"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let seen = set(&[("web-0.s", false), ("web-1.s", true), ("web-2.s", true)]);
        assert_eq!(
            new_name(l.decide(&seen, Instant::now())).as_deref(),
            Some("web-1.s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_at_start_follows_the_remembered_leader_while_in_the_set() {
        let all = set(&[("web-0.s", true), ("web-1.s", true), ("web-2.s", true)]);
        let silence = LeaderHint {
            leader: None,
            why: "no answer from 2 ready peer(s) asked".into(),
            unanswered: 2,
        };
        let mut l = sticky(30);
        l.remember(Some("web-1.s".into()));
        let change = l.hint(&silence, &all, Instant::now()).expect("a choice");
        assert_eq!(change.new.as_deref(), Some("web-1.s"));
        assert!(
            change.why.contains("remembered in the state file"),
            "{}",
            change.why
        );
        // Remembered but gone from the set: the rule.
        let mut l = sticky(30);
        l.remember(Some("web-7.s".into()));
        assert_eq!(
            new_name(l.hint(&silence, &all, Instant::now())).as_deref(),
            Some("web-0.s")
        );
        // Answers win over memory.
        let mut l = sticky(30);
        l.remember(Some("web-1.s".into()));
        let named = LeaderHint {
            leader: Some("web-2.s".into()),
            why: "asked 2 peer(s): 2 named web-2.s".into(),
            unanswered: 0,
        };
        assert_eq!(
            new_name(l.hint(&named, &all, Instant::now())).as_deref(),
            Some("web-2.s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probe_keeps_a_confirmed_leader_however_long_nobody_answers() {
        let mut l = probe(Fallback::Sticky);
        let all = set(&[("db-0.s", true), ("db-1.s", true), ("db-2.s", true)]);
        assert_eq!(
            new_name(l.probed(&round(&["db-1.s"], &[]), &all, Instant::now())).as_deref(),
            Some("db-1.s")
        );
        assert_eq!(l.unconfirmed_since(), None);
        // The app fails over: nobody answers 2xx, db-1 not even ready.
        let gone = set(&[("db-0.s", true), ("db-1.s", false), ("db-2.s", true)]);
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(l.probed(&round(&[], &[]), &gone, Instant::now()), None);
            assert_eq!(l.decide(&gone, Instant::now()), None);
            assert_eq!(l.deadline(), None, "no grace deadline once confirmed");
        }
        assert!(l.unconfirmed_since().is_some());
        assert_eq!(l.current().map(|p| p.fqdn.as_str()), Some("db-1.s"));
        // A new primary: adopted at the next round.
        let change = l
            .probed(&round(&["db-2.s"], &[]), &gone, Instant::now())
            .expect("a change");
        assert_eq!(change.new.as_deref(), Some("db-2.s"));
        assert_eq!(
            change.why,
            "db-2.s answers 2xx at http://{peer}:8008/primary"
        );
        assert_eq!(l.unconfirmed_since(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_cold_start_uses_the_fallback_and_memory_or_peers_first() {
        let all = set(&[("db-0.s", true), ("db-1.s", true)]);
        let mut l = probe(Fallback::Sticky);
        assert_eq!(
            new_name(l.probed(&round(&[], &[]), &all, Instant::now())).as_deref(),
            Some("db-0.s")
        );
        assert!(!l.confirmed(), "a guess is not a confirmation");
        let mut l = probe(Fallback::None);
        let change = l.probed(&round(&[], &[]), &all, Instant::now());
        assert_eq!(new_name(change), None);
        assert_eq!(l.current(), None);
        // A new peer set does not guess either.
        assert_eq!(l.decide(&all, Instant::now()), None);
        assert_eq!(l.current(), None);
        // `render` and `check` still try templates with the rule's pick.
        assert_eq!(
            by_rule(&probe(Fallback::None).config, &all).map(|p| p.fqdn),
            Some("db-0.s".to_string())
        );
        // A peer's /leader names one: not a guess.
        let mut l = probe(Fallback::None);
        assert_eq!(
            new_name(l.probed(&round(&[], &["db-1.s"]), &all, Instant::now())).as_deref(),
            Some("db-1.s")
        );
        assert!(l.confirmed());
        // The state file remembers one.
        let mut l = probe(Fallback::Sticky);
        l.remember(Some("db-1.s".into()));
        assert_eq!(
            new_name(l.probed(&round(&[], &[]), &all, Instant::now())).as_deref(),
            Some("db-1.s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_claimants_the_peers_name_then_the_current_then_the_lowest() {
        let all = set(&[("db-0.s", true), ("db-1.s", true), ("db-2.s", true)]);
        let both = ["db-0.s", "db-2.s"];
        let mut l = probe(Fallback::Sticky);
        assert_eq!(
            new_name(l.probed(&round(&both, &["db-2.s", "db-2.s"]), &all, Instant::now()))
                .as_deref(),
            Some("db-2.s")
        );
        let mut l = probe(Fallback::Sticky);
        assert_eq!(
            new_name(l.probed(&round(&both, &[]), &all, Instant::now())).as_deref(),
            Some("db-0.s"),
            "nobody names one: the lowest ordinal"
        );
        // The current one stays when the peers name none of them.
        let mut l = probe(Fallback::Sticky);
        l.probed(&round(&["db-2.s"], &[]), &all, Instant::now());
        assert_eq!(l.probed(&round(&both, &[]), &all, Instant::now()), None);
        assert_eq!(l.current().map(|p| p.fqdn.as_str()), Some("db-2.s"));
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
