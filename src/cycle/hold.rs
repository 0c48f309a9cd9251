//! Holding back a partial peer set: at start, rendering waits until this
//! pod is in the set (`wait_for_self`); after the first render in `run`, a
//! set that lacks this pod (with `wait_for_self`) or has fewer than
//! `peers.min` peers is held back and the last rendered set stays. Plain
//! data and pure decisions; the loop logs and counts what they return.

use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Held;
use crate::peers::PeerSet;

/// The peer set this pod renders, and the holds on it.
#[derive(Debug, Default)]
pub(super) struct PeerView {
    /// The last accepted set; `None` before the source's first answer.
    pub peers: Option<PeerSet>,
    /// A partial set is being held back (after the first render): why and since.
    pub hold: Option<(Held, Instant)>,
    /// Since when the start waits for this pod to appear (`wait_for_self`).
    pub waiting_since: Option<Instant>,
    /// Set after the first pass: from then on `wait_for_self` no longer holds
    /// rendering back (a pod briefly missing from DNS keeps its config).
    pub rendered: bool,
}

/// What is known about a new set, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// `run` (not `once`) and the first render is done.
    pub run_rendered: bool,
    /// `peers.wait_for_self`.
    pub wait_for_self: bool,
    /// This pod is in the set.
    pub has_self: bool,
    /// The number of peers in the set.
    pub len: usize,
    /// `peers.min`.
    pub min: usize,
}

/// Why a set is partial, if it is: only after the first render in `run`;
/// a missing self wins over too few peers.
pub(super) fn partial(seen: Seen) -> Option<Held> {
    if !seen.run_rendered {
        None
    } else if seen.wait_for_self && !seen.has_self {
        Some(Held::SelfMissing)
    } else if seen.len < seen.min {
        Some(Held::TooFew)
    } else {
        None
    }
}

/// What the hold does with a new set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HoldStep {
    /// A whole set, no hold: render it.
    Accept,
    /// A partial set starts a hold: warn once, count it, keep the last set.
    Start(Held),
    /// Still partial: nothing to say, keep the last set.
    Holding,
    /// A whole set ends a hold that lasted `held`: say so and render it.
    End { reason: Held, held: Duration },
}

impl HoldStep {
    /// Whether the new set is taken.
    pub(super) fn accepts(self) -> bool {
        matches!(self, HoldStep::Accept | HoldStep::End { .. })
    }
}

impl PeerView {
    /// Decides on a set that is partial (or not, `None`) at `now`, and
    /// updates the hold.
    pub(super) fn hold_step(&mut self, partial: Option<Held>, now: Instant) -> HoldStep {
        match (partial, self.hold) {
            (Some(reason), None) => {
                self.hold = Some((reason, now));
                HoldStep::Start(reason)
            }
            (Some(_), Some(_)) => HoldStep::Holding,
            (None, Some((reason, since))) => {
                self.hold = None;
                HoldStep::End {
                    reason,
                    held: now.saturating_duration_since(since),
                }
            }
            (None, None) => HoldStep::Accept,
        }
    }

    /// Whether `wait_for_self` still holds rendering back: no answer yet,
    /// or (before the first render) a set without this pod.
    pub(super) fn held_for_self(&self, wait_for_self: bool, has_self: bool) -> bool {
        match self.peers {
            None => true,
            Some(_) => wait_for_self && !self.rendered && !has_self,
        }
    }

    /// Updates the wait for this pod at `now`, given whether it still
    /// holds: `Some(None)` when it starts, `Some(Some(waited))` when it
    /// ends, `None` when nothing changed (logged once each, not per poll).
    pub(super) fn self_wait(&mut self, held: bool, now: Instant) -> Option<Option<Duration>> {
        match (held, self.waiting_since) {
            (true, None) => {
                self.waiting_since = Some(now);
                Some(None)
            }
            (false, Some(since)) => {
                self.waiting_since = None;
                Some(Some(now.saturating_duration_since(since)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(run_rendered: bool, has_self: bool, len: usize) -> Seen {
        Seen {
            run_rendered,
            wait_for_self: true,
            has_self,
            len,
            min: 3,
        }
    }

    #[test]
    fn nothing_is_partial_before_the_first_render_or_in_once() {
        assert_eq!(partial(seen(false, false, 0)), None);
        assert_eq!(partial(seen(true, true, 3)), None);
    }

    #[test]
    fn a_missing_self_wins_over_too_few_peers() {
        assert_eq!(partial(seen(true, false, 1)), Some(Held::SelfMissing));
        assert_eq!(partial(seen(true, true, 2)), Some(Held::TooFew));
        let without_wait = Seen {
            wait_for_self: false,
            ..seen(true, false, 3)
        };
        assert_eq!(partial(without_wait), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_starts_once_and_ends_with_how_long_it_lasted() {
        let mut view = PeerView::default();
        let start = Instant::now();
        assert_eq!(view.hold_step(None, start), HoldStep::Accept);
        assert_eq!(
            view.hold_step(Some(Held::TooFew), Instant::now()),
            HoldStep::Start(Held::TooFew)
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        // A different reason while held: still the one hold.
        assert_eq!(
            view.hold_step(Some(Held::SelfMissing), Instant::now()),
            HoldStep::Holding
        );
        assert!(!HoldStep::Holding.accepts());
        tokio::time::advance(Duration::from_secs(3)).await;
        let end = view.hold_step(None, Instant::now());
        assert_eq!(
            end,
            HoldStep::End {
                reason: Held::TooFew,
                held: Duration::from_secs(7)
            }
        );
        assert!(end.accepts());
        assert_eq!(view.hold, None);
    }

    #[test]
    fn wait_for_self_holds_only_before_the_first_render() {
        let mut view = PeerView::default();
        // No answer yet: held whatever the settings.
        assert!(view.held_for_self(false, false));
        view.peers = Some(PeerSet::default());
        assert!(view.held_for_self(true, false));
        assert!(!view.held_for_self(true, true));
        assert!(!view.held_for_self(false, false));
        view.rendered = true;
        assert!(!view.held_for_self(true, false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_for_self_is_noted_when_it_starts_and_when_it_ends() {
        let mut view = PeerView::default();
        assert_eq!(view.self_wait(true, Instant::now()), Some(None));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(view.self_wait(true, Instant::now()), None);
        assert_eq!(
            view.self_wait(false, Instant::now()),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(view.self_wait(false, Instant::now()), None);
    }
}
