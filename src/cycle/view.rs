//! What this pod sees: holding back a partial peer set (one without this
//! pod, or smaller than `peers.min`, after the first render), waiting for
//! this pod to appear at start, and choosing the leader from the accepted
//! sets and the leader worker's hints.

use std::time::Duration;

use tokio::time::Instant;

use super::hold::{self, HoldStep};
use super::{Loop, Mode};
use crate::config::Policy;
use crate::leader;
use crate::leader::Leadership;
use crate::metrics;
use crate::peers::PeerSet;
use tokio::sync::watch;

/// The leader as the loop knows it, and what waits on it.
pub(super) struct LeaderState {
    /// The chosen leader.
    pub leadership: Leadership,
    /// `sticky`/`probe` in `run`: the first render waits for the first
    /// answer of the leader worker (bounded by its timeout), so a restarted
    /// pod never renders itself as leader for a moment.
    pub awaiting: bool,
    /// `once` with `sticky` or `probe`: no leader is chosen (nor logged)
    /// before its one round of asking.
    pub asked_once: bool,
    /// Where the loop publishes what the leader worker needs.
    pub views: Option<watch::Sender<leader::View>>,
    /// `on_leader_change`'s queue, and the leader to give it after the next pass.
    pub hook: Option<watch::Sender<Option<String>>>,
    pub hook_due: Option<Option<String>>,
}

impl Loop {
    /// Whether a new set from the source may be rendered. After this pod's
    /// first render in `run`, a set that lacks this pod (with
    /// `wait_for_self`) or has fewer than `peers.min` peers is a partial
    /// view: it is held back, the last set stays, and one warning marks the
    /// start of a hold and one line its end.
    pub(super) fn accept(&mut self, set: &PeerSet) -> bool {
        let partial = hold::partial(hold::Seen {
            run_rendered: self.mode == Mode::Run && self.view.rendered,
            wait_for_self: self.config.peers.wait_for_self,
            has_self: self.me.is_in(set),
            len: set.len(),
            min: self.config.peers.min,
        });
        let step = self.view.hold_step(partial, Instant::now());
        match step {
            HoldStep::Start(reason) => {
                let why = match reason {
                    metrics::Held::SelfMissing => format!("{} is not in it", self.me.name()),
                    metrics::Held::TooFew => format!(
                        "it has {} peer(s), fewer than peers.min {}",
                        set.len(),
                        self.config.peers.min
                    ),
                };
                tracing::warn!(reason = reason.as_str(), why = %why, seen = %crate::log::list(set.names()), "holding back a partial peer set; the last rendered set stays until a whole one arrives");
                self.metrics.held(reason);
            }
            HoldStep::End { reason, held } => {
                tracing::info!(
                    reason = reason.as_str(),
                    held_ms = crate::log::ms(held),
                    count = set.len(),
                    "a whole peer set again; no longer holding"
                );
            }
            HoldStep::Holding | HoldStep::Accept => {}
        }
        step.accepts()
    }

    /// Decides the leader from the accepted set (and the time), and applies
    /// a change.
    pub(super) fn decide_leader(&mut self) {
        let asks = self.config.leader.policy != Policy::Ordinal;
        if self.leader.awaiting || (self.mode == Mode::Once && asks && !self.leader.asked_once) {
            return;
        }
        let peers = self.view.peers.clone().unwrap_or_default();
        let change = self.leader.leadership.decide(&peers, Instant::now());
        if self.apply_leader(change) {
            self.mark_pending(false);
        }
    }

    /// Logs, counts and publishes a change of leader; true if there was one.
    pub(super) fn apply_leader(&mut self, change: Option<leader::Change>) -> bool {
        let Some(change) = change else {
            return false;
        };
        let me = self
            .leader
            .leadership
            .current()
            .is_some_and(|l| self.me.is_self(l));
        if change.old.is_none() && change.new.is_none() {
            // No peers at all (a config without a peer source): nothing to say.
            tracing::debug!(why = %change.why, "no leader: there are no peers");
        } else {
            tracing::info!(
                old = change.old.as_deref().unwrap_or("none"),
                new = change.new.as_deref().unwrap_or("none"),
                why = %change.why,
                policy = self.leader.leadership.policy(),
                "leader changed"
            );
        }
        self.metrics.leader_changed(me);
        if let Some(new) = change.new.as_deref() {
            self.remember_leader(new);
        }
        self.state.set_leader(
            change.new.as_deref(),
            self.leader.leadership.policy(),
            self.leader.leadership.since(),
        );
        self.leader.hook_due = Some(change.new);
        self.publish_view(false);
        true
    }

    /// Tells the leader worker the accepted set and the current leader; with
    /// `ask_now`, asks it to ask the peers at once.
    pub(super) fn publish_view(&mut self, ask_now: bool) {
        let Some(views) = &self.leader.views else {
            return;
        };
        let peers = self.view.peers.clone().unwrap_or_default();
        let leader = self.leader.leadership.current().map(|l| l.fqdn.clone());
        views.send_modify(|view| {
            view.peers = peers;
            view.leader = leader;
            view.confirmed = self.leader.leadership.confirmed();
            if ask_now {
                view.ask_now += 1;
            }
        });
    }

    /// Writes `name` as the last leader to the state file (only when it
    /// differs from the one there: never on a timer). `ordinal` decides
    /// from the set alone and needs no memory.
    pub(super) fn remember_leader(&self, name: &str) {
        let Some(path) = &self.config.state else {
            return;
        };
        if self.config.leader.policy == Policy::Ordinal {
            return;
        }
        let uid = crate::state::pod_uid();
        if let Err(e) =
            crate::state::remember_leader(path, uid.as_deref(), name, std::time::SystemTime::now())
        {
            tracing::warn!(error = %e, "cannot remember the leader in the state file");
        }
    }

    /// SIGTERM to the `sticky` leader: name the successor (the first ready
    /// peer other than this pod, from its own view), answer `GET /leader`
    /// with it, remember it (never this pod), tell the ready peers and wait
    /// for them to check back: telling within `resign::BUDGET`, the whole
    /// within `resign::CHECK_WAIT`. Never names, nor tells, a pod it
    /// confirmed as resigned. A follower's
    /// shutdown changes nothing.
    pub(super) async fn resign(&self) {
        let Policy::Sticky { port, timeout } = self.config.leader.policy else {
            return;
        };
        let Some(current) = self.leader.leadership.current() else {
            return;
        };
        if self.mode != Mode::Run || port == 0 || !self.me.is_self(current) {
            return;
        }
        let peers = self.view.peers.clone().unwrap_or_default();
        // Never a pod this one confirmed as resigned (still listed ready).
        let gone = self
            .leader
            .leadership
            .resigned_peers(&peers, Instant::now());
        let Some(successor) = crate::resign::successor(&peers, &self.me, &gone) else {
            tracing::info!("shutting down as the leader with no other ready peer to hand over to");
            return;
        };
        let started = Instant::now();
        let deadline = started + crate::resign::BUDGET;
        // The peers that accepted may check up to a second later (one that
        // checked a forged notice just before waits out its pace).
        let wait_until = started + crate::resign::CHECK_WAIT;
        let asks_before = self.state.leader_asks();
        self.state.set_resigned(&current.fqdn, &successor.fqdn);
        self.remember_leader(&successor.fqdn);
        let told = crate::resign::recipients(&peers, &self.me, &successor.fqdn, &gone);
        let notice = crate::resign::Notice {
            leader: current.fqdn.clone(),
            successor: successor.fqdn.clone(),
        };
        let tally = crate::resign::tell(
            &told,
            &notice,
            port,
            timeout.min(crate::resign::BUDGET),
            deadline,
        )
        .await;
        // The peers that accepted check back at GET /leader: wait for them.
        let want = asks_before + u64::try_from(tally.accepted).unwrap_or(u64::MAX);
        while self.state.leader_asks() < want && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(
            successor = %successor.fqdn,
            told = told.len(),
            accepted = tally.accepted,
            refused = tally.refused,
            unanswered = tally.unanswered,
            checked = self.state.leader_asks().saturating_sub(asks_before),
            took_ms = crate::log::ms(started.elapsed()),
            "resigned: the successor is named at GET /leader until this process exits"
        );
    }

    /// Whether `wait_for_self` still holds rendering back.
    pub(super) fn held_for_self(&self) -> bool {
        let has_self = self.view.peers.as_ref().is_some_and(|p| self.me.is_in(p));
        self.view
            .held_for_self(self.config.peers.wait_for_self, has_self)
    }

    /// Logs the wait for this pod once when it starts and once when it ends,
    /// not on every poll.
    pub(super) fn note_self_wait(&mut self) {
        let held = self.held_for_self();
        let name = self.me.name().to_string();
        match self.view.self_wait(held, Instant::now()) {
            Some(None) => {
                let seen = self
                    .view
                    .peers
                    .as_ref()
                    .map(PeerSet::names)
                    .unwrap_or_default();
                tracing::info!(waiting_for = %name, seen = %crate::log::list(&seen), "waiting for this pod to appear in the peer set");
            }
            Some(Some(waited)) => {
                tracing::info!(name = %name, waited_ms = crate::log::ms(waited), "this pod is in the peer set");
            }
            None => {}
        }
    }
}
