//! The range each duration key accepts (README, "Durations"), and the
//! error that names the key, its line and the range.

use std::time::Duration;

use super::model::ConfigError;

/// The range a duration key accepts (README, "Durations"): from `min` to
/// `max`, or exactly zero where zero has a meaning of its own.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The key as written, like `wait.min`.
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
    /// What `0s` means for this key, when it means something.
    pub zero: Option<&'static str>,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Range {
    pub const WAIT_MIN: Range = Range {
        key: "wait.min",
        min: Duration::ZERO,
        max: HOUR,
        zero: None,
    };
    pub const WAIT_MAX: Range = Range {
        key: "wait.max",
        min: ms(1),
        max: DAY,
        zero: Some("no limit"),
    };
    pub const PEERS_TIMEOUT: Range = Range {
        key: "peers.timeout",
        min: ms(1),
        max: DAY,
        zero: Some("wait forever"),
    };
    pub const DNS_INTERVAL: Range = Range {
        key: "peers.dns.interval",
        min: ms(100),
        max: HOUR,
        zero: None,
    };
    pub const HOOKS_TIMEOUT: Range = Range {
        key: "hooks.timeout",
        min: ms(100),
        max: DAY,
        zero: None,
    };
    pub const LEADER_GRACE: Range = Range {
        key: "leader.grace",
        min: ms(100),
        max: DAY,
        zero: None,
    };
    pub const PROBE_TIMEOUT: Range = Range {
        key: "leader.probe.timeout",
        min: ms(10),
        max: Duration::from_secs(60),
        zero: None,
    };
    pub const PROBE_INTERVAL: Range = Range {
        key: "leader.probe.interval",
        min: ms(100),
        max: HOUR,
        zero: None,
    };

    pub const DNS_REFRESH: Range = Range {
        key: "peers.dns.refresh",
        min: ms(100),
        max: DAY,
        zero: Some("fetch the SRV set every interval"),
    };
    pub const MIN_INTERVAL: Range = Range {
        key: "reloads.NAME.min_interval",
        min: Duration::ZERO,
        max: DAY,
        zero: None,
    };
    pub const VERIFY_TIMEOUT: Range = Range {
        key: "reloads.NAME.verify_timeout",
        min: ms(10),
        max: HOUR,
        zero: None,
    };
    pub const EXEC_TIMEOUT: Range = Range {
        key: "reloads.NAME.timeout",
        min: ms(10),
        max: HOUR,
        zero: None,
    };
    pub const HTTP_TIMEOUT: Range = Range {
        key: "reloads.NAME.http.timeout",
        min: ms(10),
        max: HOUR,
        zero: None,
    };

    /// Every duration key, for the README's table; a duration key not in
    /// it cannot be read (see [`Range::LARGEST`]).
    pub const ALL: [Range; 13] = [
        Range::WAIT_MIN,
        Range::WAIT_MAX,
        Range::PEERS_TIMEOUT,
        Range::DNS_INTERVAL,
        Range::HOOKS_TIMEOUT,
        Range::LEADER_GRACE,
        Range::PROBE_TIMEOUT,
        Range::PROBE_INTERVAL,
        Range::DNS_REFRESH,
        Range::MIN_INTERVAL,
        Range::VERIFY_TIMEOUT,
        Range::EXEC_TIMEOUT,
        Range::HTTP_TIMEOUT,
    ];

    /// The largest duration any key accepts: the reader refuses anything
    /// longer before a key's own range is checked, so a key whose range
    /// someone forgot still cannot overflow a clock.
    pub const LARGEST: Duration = DAY;

    /// Whether `value` is in range.
    pub fn contains(&self, value: Duration) -> bool {
        (value.is_zero() && self.zero.is_some()) || (self.min..=self.max).contains(&value)
    }

    /// `from 100ms to 1h`, with `, or 0s (no limit)` where zero means something.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "from {} to {}",
            humantime::format_duration(self.min),
            humantime::format_duration(self.max)
        );
        if let Some(zero) = self.zero {
            text.push_str(&format!(", or 0s ({zero})"));
        }
        text
    }
}

/// Fails unless `value` is in `range`, naming the key as written
/// (`reloads.prom.min_interval`), its line and the range.
pub(super) fn within_named(
    fail: &dyn Fn(&[&str], String) -> ConfigError,
    keys: &[&str],
    value: Duration,
    range: Range,
) -> Result<(), ConfigError> {
    out_of_range(fail, keys, &keys.join("."), value, range)
}

/// Fails unless `value` is in `range`, naming the key's line and the range.
pub(super) fn within(
    fail: &dyn Fn(&[&str], String) -> ConfigError,
    keys: &[&str],
    value: Duration,
    range: Range,
) -> Result<(), ConfigError> {
    out_of_range(fail, keys, range.key, value, range)
}

/// The error for `value` outside `range` under the name `shown`, at the
/// line of `keys`; `Ok` when it is inside.
fn out_of_range(
    fail: &dyn Fn(&[&str], String) -> ConfigError,
    keys: &[&str],
    shown: &str,
    value: Duration,
    range: Range,
) -> Result<(), ConfigError> {
    if range.contains(value) {
        return Ok(());
    }
    Err(fail(
        keys,
        format!(
            "{shown} {} is out of range; give a duration {}",
            humantime::format_duration(value),
            range.describe()
        ),
    ))
}
