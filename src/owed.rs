//! What is owed and not yet done, as plain data: an item (a reload action
//! for the bytes installed, a hook for the latest peer set or leader, a
//! rollback, a config that did not load) whose last try failed, with the
//! time of its next try.
//!
//! The loop is level-triggered: it keeps what should be done until it is
//! done or a newer desired state replaces it, never dropping it after N
//! tries. The delays follow one rule, the one Kubernetes controllers use
//! for their work queues: capped, jittered exponential backoff (0.5 s,
//! doubling, at most 30 s, each delay +-20 % so that pods restarted together
//! do not retry in step). A newer desired state replaces what is owed but
//! keeps the backoff step (an app that keeps failing is not hammered
//! because its inputs keep changing); only an answer (accepted or
//! rejected) ends the item and with it its backoff.
//!
//! Every decision here is a pure function of the data and the time given
//! to it, unit-tested with tokio's paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// The first delay after a failed try.
pub const FIRST: Duration = Duration::from_millis(500);
/// The longest delay between two tries.
pub const CAP: Duration = Duration::from_secs(30);
/// Each delay is its step times a factor in `1 +- JITTER`.
pub const JITTER: f64 = 0.2;

/// The delays of capped exponential backoff: [`FIRST`], doubling, at most
/// [`CAP`], before jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The next delay, scaled by `jitter` (a factor, `1.0` for none; see
    /// [`jitter`]), and the step after it doubled up to [`CAP`].
    pub fn step(&mut self, jitter: f64) -> Duration {
        let delay = self.next.mul_f64(jitter.clamp(1.0 - JITTER, 1.0 + JITTER));
        self.next = (self.next * 2).min(CAP);
        delay
    }

    /// The step the next delay is based on (before jitter).
    #[cfg(test)]
    pub fn current(&self) -> Duration {
        self.next
    }
}

/// A random factor in `[1 - JITTER, 1 + JITTER]`.
pub fn jitter() -> f64 {
    1.0 - JITTER + fastrand::f64() * 2.0 * JITTER
}

/// One item owed: what is wanted (`T`), since when it has not been done,
/// when to try next, how many tries failed and why the last one did.
#[derive(Debug, Clone)]
pub struct Owed<T> {
    /// What is to be done (the latest desired state).
    pub want: T,
    /// Since when this item has been owed (kept when `want` is replaced).
    pub since: Instant,
    /// The next try is due at this instant.
    pub due: Instant,
    /// Failed tries so far.
    pub failures: u32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    backoff: Backoff,
}

impl<T> Owed<T> {
    /// An item owed from `now`, due at once.
    pub fn new(want: T, now: Instant) -> Owed<T> {
        Owed {
            want,
            since: now,
            due: now,
            failures: 0,
            last_error: None,
            backoff: Backoff::default(),
        }
    }

    /// A newer desired state: `want` replaces what was owed; the next try
    /// stays when it was (a newer state never shortens a backoff step).
    pub fn replace(&mut self, want: T) {
        self.want = want;
    }

    /// Whether the next try is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due <= now
    }

    /// A try failed at `now` with `error`: the next one is due after the
    /// next backoff step (times `jitter`); returns that delay.
    pub fn failed(&mut self, now: Instant, error: String, jitter: f64) -> Duration {
        let delay = self.backoff.step(jitter);
        self.due = now + delay;
        self.failures += 1;
        self.last_error = Some(error);
        delay
    }

    /// The step the next failure will wait (before jitter).
    #[cfg(test)]
    pub fn step(&self) -> Duration {
        self.backoff.current()
    }
}

/// The earliest due time of `items`, for the loop's one timer.
pub fn earliest<'a, T: 'a>(items: impl IntoIterator<Item = &'a Owed<T>>) -> Option<Instant> {
    items.into_iter().map(|o| o.due).min()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::owed::{earliest, jitter, Backoff, Owed, CAP, FIRST, JITTER};

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty() {
        let mut b = Backoff::default();
        let steps: Vec<u64> = (0..9).map(|_| b.step(1.0).as_millis() as u64).collect();
        assert_eq!(
            steps,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((1.0 - JITTER..=1.0 + JITTER).contains(&j), "{j}");
        }
        let mut b = Backoff::default();
        assert_eq!(b.step(1.2), Duration::from_millis(600));
        assert_eq!(b.step(0.8), Duration::from_millis(800));
        // Out-of-range factors are clamped.
        assert_eq!(b.step(5.0), Duration::from_millis(2400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_item_is_retried_forever_at_the_cap() {
        let start = Instant::now();
        let mut owed = Owed::new("v1", start);
        assert!(owed.is_due(start), "due at once");
        for n in 0..100 {
            assert!(owed.is_due(Instant::now()));
            let delay = owed.failed(Instant::now(), format!("try {n}"), 1.0);
            assert!(delay <= CAP);
            assert!(!owed.is_due(Instant::now()));
            tokio::time::advance(delay).await;
        }
        assert_eq!(owed.failures, 100, "never dropped");
        assert_eq!(owed.last_error.as_deref(), Some("try 99"));
        assert_eq!(owed.step(), CAP);
        assert_eq!(owed.since, start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_state_replaces_the_bytes_but_not_the_backoff_step() {
        let start = Instant::now();
        let mut owed = Owed::new(vec![1u8], start);
        owed.failed(start, "503".into(), 1.0);
        owed.failed(start + FIRST, "503".into(), 1.0);
        let due = owed.due;
        assert_eq!(due, start + FIRST + Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(100)).await;
        owed.replace(vec![2u8]);
        assert_eq!(owed.want, [2u8], "old bytes are never replayed");
        assert_eq!(owed.due, due, "the current step is not shortened");
        assert_eq!(owed.step(), Duration::from_secs(2));
        assert_eq!(owed.since, start, "still owed since the first");
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_is_the_first_due() {
        let now = Instant::now();
        let mut a = Owed::new((), now);
        let b = Owed::new((), now + Duration::from_secs(1));
        a.failed(now, "x".into(), 1.0);
        assert_eq!(earliest([&a, &b]), Some(now + FIRST));
        assert_eq!(earliest::<()>([]), None);
    }
}
