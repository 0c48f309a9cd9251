//! What the DNS poller asks next, and when: the SOA-serial check (fetch the
//! SRV set only when the serial moved, for a window after a move, and at
//! least every `refresh`; distrust a serial that missed a change), and how
//! long an A/AAAA lookup is kept (its TTL, clamped). Plain data and pure
//! decisions over the time given; the poller (`super`) does the socket I/O.

use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::Name;

/// After the serial moved, the SRV set is fetched every poll for at least
/// this long (and at least two intervals): a serial that is the Unix second
/// of the last change is shared by every change in that second.
pub(super) const MOVE_WINDOW: Duration = Duration::from_secs(2);

/// Refresh periods the serial is not trusted after it missed a change.
pub(super) const DISTRUST_REFRESHES: u32 = 10;

/// How long a lookup with no TTL to go by (no records, no SOA) is kept.
pub(super) const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// The shortest and the longest time an A/AAAA lookup is kept.
const ADDRESS_TTL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// The SOA-serial change detection (see the poller's module docs): whether
/// a poll must fetch the SRV set.
#[derive(Debug, Clone)]
pub(super) struct SerialCheck {
    /// The name whose SOA is asked (`Dns::soa_query`).
    pub query: Name,
    pub refresh: Duration,
    /// max([`MOVE_WINDOW`], two intervals).
    window: Duration,
    /// The serial seen last.
    last: Option<u32>,
    /// Fetch every poll until then: the window after a move.
    moved_until: Option<Instant>,
    /// The next fetch a quiet serial still gets.
    next_refresh: Option<Instant>,
    /// The serial missed a change: fetch every poll until then.
    distrust_until: Option<Instant>,
    /// The fallback was logged (once per process).
    told: bool,
}

/// Why a poll fetches the SRV set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetch {
    /// No serial check (`refresh: 0s`, or the serial is not trusted now).
    Always,
    /// Nothing sent yet, the last fetch failed, or addresses are pending.
    Unsettled,
    /// The SOA gave no serial (no answer, no SOA record).
    NoSerial,
    /// The serial moved, or moved less than the window ago.
    Moved,
    /// `refresh` passed since the last fetch.
    Refresh,
}

impl Fetch {
    /// Why the SRV set is fetched, for the log.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Fetch::Always => "every poll",
            Fetch::Unsettled => "unsettled",
            Fetch::NoSerial => "no SOA serial",
            Fetch::Moved => "serial moved",
            Fetch::Refresh => "refresh",
        }
    }
}

/// A refresh found a change the serial did not announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Distrusted {
    /// How long the SRV set is fetched every poll without the SOA.
    pub off: Duration,
    /// The first time in this process (warned once, then at debug).
    pub first: bool,
}

impl SerialCheck {
    /// A check of `query`'s serial with `peers.dns.refresh` and
    /// `peers.dns.interval`.
    pub(super) fn new(query: Name, refresh: Duration, interval: Duration) -> SerialCheck {
        SerialCheck {
            query,
            refresh,
            window: MOVE_WINDOW.max(interval * 2),
            last: None,
            moved_until: None,
            next_refresh: None,
            distrust_until: None,
            told: false,
        }
    }

    /// Whether the serial is distrusted at `now` (fetch every poll, ask no
    /// SOA); a distrust that ran out is forgotten.
    pub(super) fn distrusted(&mut self, now: Instant) -> bool {
        match self.distrust_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.distrust_until = None;
                false
            }
            None => false,
        }
    }

    /// After the SOA answered `serial` (`None`: no answer or no SOA record)
    /// at `now`: whether this poll fetches the SRV set, and why.
    /// `unsettled`: nothing sent yet, the last fetch failed, or addresses
    /// are still to be looked up.
    pub(super) fn after_soa(
        &mut self,
        serial: Option<u32>,
        unsettled: bool,
        now: Instant,
    ) -> Option<Fetch> {
        let Some(serial) = serial else {
            return Some(Fetch::NoSerial);
        };
        if self.last != Some(serial) {
            self.last = Some(serial);
            self.moved_until = Some(now + self.window);
            return Some(Fetch::Moved);
        }
        if unsettled {
            return Some(Fetch::Unsettled);
        }
        if self.moved_until.is_some_and(|until| now < until) {
            return Some(Fetch::Moved);
        }
        if self.next_refresh.is_none_or(|at| now >= at) {
            return Some(Fetch::Refresh);
        }
        None
    }

    /// A fetch at `now` went through: the next refresh is due `refresh`
    /// later.
    pub(super) fn fetched(&mut self, now: Instant) {
        self.next_refresh = Some(crate::limits::later_std(now, self.refresh));
    }

    /// A refresh at `now` found a change the serial stood still over:
    /// fetch every poll for [`DISTRUST_REFRESHES`] refresh periods, and
    /// take the next serial seen as a move.
    pub(super) fn missed_change(&mut self, now: Instant) -> Distrusted {
        let off = self.refresh * DISTRUST_REFRESHES;
        self.distrust_until = Some(now + off);
        self.last = None;
        let first = !self.told;
        self.told = true;
        Distrusted { off, first }
    }
}

/// How long an A/AAAA lookup is kept: the smallest TTL of its records (or,
/// for an empty answer, the SOA's negative TTL, RFC 2308 5), else
/// [`NEGATIVE_TTL`]; between 1 s and 1 h.
pub(super) fn address_ttl(smallest: Option<u32>) -> Duration {
    let ttl = smallest.map_or(NEGATIVE_TTL, |t| Duration::from_secs(u64::from(t)));
    ttl.clamp(ADDRESS_TTL_BOUNDS.0, ADDRESS_TTL_BOUNDS.1)
}

/// Whether a lookup that expires at `expires` must be asked again at `now`.
pub(super) fn expired(expires: Instant, now: Instant) -> bool {
    now >= expires
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The poller runs on a thread of its own with std's clock; the tests
    /// drive tokio's paused clock and read it as std instants.
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
    }

    fn check(refresh: u64) -> SerialCheck {
        SerialCheck::new(
            Name::from_ascii("cluster.local.").unwrap_or_else(|_| Name::root()),
            Duration::from_secs(refresh),
            Duration::from_millis(200),
        )
    }

    /// One poll of a poller with a settled set: the fetch it makes (and
    /// its success), as the poller does it.
    fn poll(check: &mut SerialCheck, serial: u32) -> Option<Fetch> {
        let at = now();
        if check.distrusted(at) {
            return Some(Fetch::Always);
        }
        let fetch = check.after_soa(Some(serial), false, at);
        if fetch.is_some() {
            check.fetched(at);
        }
        fetch
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_serial_costs_one_fetch_per_refresh() {
        let mut check = check(10);
        assert_eq!(poll(&mut check, 7), Some(Fetch::Moved));
        // 30 s of polls every 200 ms: the window after the first serial,
        // then only the refreshes.
        let mut fetches = Vec::new();
        for _ in 0..150 {
            advance(Duration::from_millis(200)).await;
            if let Some(why) = poll(&mut check, 7) {
                fetches.push(why);
            }
        }
        let moved = fetches.iter().filter(|f| **f == Fetch::Moved).count();
        let refreshes = fetches.iter().filter(|f| **f == Fetch::Refresh).count();
        // The window is 2 s (ten polls, the first one counted above); each
        // fetch puts the next refresh 10 s later: at 11.8 s and 21.8 s.
        assert_eq!(moved, 9, "{fetches:?}");
        assert_eq!(refreshes, 2, "{fetches:?}");
        assert_eq!(fetches.len(), 11, "150 SOA polls, 11 SRV fetches");
    }

    #[tokio::test(start_paused = true)]
    async fn a_moved_serial_fetches_at_once_and_for_the_window_after() {
        let mut check = check(60);
        poll(&mut check, 1);
        advance(Duration::from_secs(5)).await;
        assert_eq!(poll(&mut check, 1), None);
        // Any difference is a move, even a smaller serial (two CoreDNS
        // replicas keep serials of their own).
        advance(Duration::from_millis(200)).await;
        assert_eq!(poll(&mut check, 0), Some(Fetch::Moved));
        advance(Duration::from_millis(1900)).await;
        assert_eq!(poll(&mut check, 0), Some(Fetch::Moved));
        advance(Duration::from_millis(200)).await;
        assert_eq!(poll(&mut check, 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_serial_or_an_unsettled_set_fetches_every_poll() {
        let mut check = check(60);
        assert_eq!(check.after_soa(None, false, now()), Some(Fetch::NoSerial));
        check.after_soa(Some(3), false, now());
        advance(Duration::from_secs(5)).await;
        assert_eq!(
            check.after_soa(Some(3), true, now()),
            Some(Fetch::Unsettled)
        );
        assert_eq!(check.after_soa(Some(3), false, now()), Some(Fetch::Refresh));
    }

    #[tokio::test(start_paused = true)]
    async fn a_serial_that_missed_a_change_is_distrusted_for_ten_refreshes() {
        let mut check = check(3);
        poll(&mut check, 5);
        advance(Duration::from_secs(3)).await;
        assert_eq!(poll(&mut check, 5), Some(Fetch::Refresh));
        // That refresh found a new set: distrusted, said once.
        let d = check.missed_change(now());
        assert_eq!(
            d,
            Distrusted {
                off: Duration::from_secs(30),
                first: true
            }
        );
        advance(Duration::from_millis(29_800)).await;
        assert_eq!(poll(&mut check, 5), Some(Fetch::Always));
        advance(Duration::from_millis(200)).await;
        // Trusted again: the serial seen next is a new baseline.
        assert_eq!(poll(&mut check, 5), Some(Fetch::Moved));
        assert!(!check.missed_change(now()).first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_is_kept_for_its_ttl_within_bounds() {
        assert_eq!(address_ttl(Some(30)), Duration::from_secs(30));
        assert_eq!(address_ttl(None), NEGATIVE_TTL);
        assert_eq!(address_ttl(Some(0)), Duration::from_secs(1));
        assert_eq!(address_ttl(Some(86_400)), Duration::from_secs(3600));
        let expires = now() + address_ttl(Some(30));
        advance(Duration::from_millis(29_999)).await;
        assert!(!expired(expires, now()));
        advance(Duration::from_millis(1)).await;
        assert!(expired(expires, now()));
    }
}
