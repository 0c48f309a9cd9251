//! The config file exactly as written: serde structs that reject unknown
//! keys, and the value parsers (durations, modes, signals, addresses) that
//! check each value as it is read, so serde_yaml's error points at its line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) identity: RawIdentity,
    pub(super) peers: Option<RawPeers>,
    #[serde(default)]
    pub(super) wait: RawWait,
    #[serde(default)]
    pub(super) templates: Vec<RawTemplate>,
    /// `reload:`: one action, or `false` for none (also `None`).
    #[serde(default, deserialize_with = "single_action")]
    pub(super) reload: Option<RawAction>,
    /// `reloads:`, in the order written (the order actions run in).
    #[serde(default, deserialize_with = "ordered_actions")]
    pub(super) reloads: Option<Vec<(String, RawAction)>>,
    pub(super) hooks: Option<RawHooks>,
    #[serde(default)]
    pub(super) seed: Vec<RawSeed>,
    #[serde(default)]
    pub(super) vars: serde_yaml::Mapping,
    pub(super) http: Option<RawHttp>,
    pub(super) leader: Option<RawLeader>,
    #[serde(default)]
    pub(super) render: RawRender,
    /// `state:`: the state file (install records, the last leader).
    pub(super) state: Option<PathBuf>,
    /// `prune:`: remove outputs of templates no longer in the config.
    #[serde(default)]
    pub(super) prune: bool,
}

/// `render:`: defaults for every template.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRender {
    /// Strip the spaces before a block tag on its line (Jinja's `lstrip_blocks`).
    #[serde(default)]
    pub(super) lstrip_blocks: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) hostname: Option<String>,
    pub(super) namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeers {
    pub(super) dns: Option<RawDns>,
    #[serde(rename = "static")]
    pub(super) static_: Option<Vec<String>>,
    pub(super) file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub(super) wait_for_self: bool,
    #[serde(default, deserialize_with = "duration")]
    pub(super) timeout: Duration,
    pub(super) min: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) service: Option<String>,
    pub(super) cluster_domain: Option<String>,
    pub(super) name: Option<String>,
    #[serde(default, deserialize_with = "nameservers")]
    pub(super) nameservers: Vec<SocketAddr>,
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub(super) interval: Duration,
    #[serde(default = "sixty_seconds", deserialize_with = "duration")]
    pub(super) refresh: Duration,
    #[serde(default)]
    pub(super) addresses: bool,
    pub(super) ready_service: Option<String>,
    #[serde(default)]
    pub(super) any_target: bool,
    /// `port_name`: ask `_<port_name>._tcp.<service>...`, the SRV name
    /// Kubernetes publishes per named port.
    pub(super) port_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWait {
    #[serde(default, deserialize_with = "duration")]
    pub(super) min: Duration,
    #[serde(default, deserialize_with = "duration")]
    pub(super) max: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    pub(super) source: PathBuf,
    /// None: a partial, only included or imported by other templates.
    pub(super) destination: Option<PathBuf>,
    #[serde(default, deserialize_with = "mode")]
    pub(super) mode: Option<u32>,
    #[serde(default)]
    pub(super) create_only: bool,
    #[serde(default, deserialize_with = "command")]
    pub(super) check: Option<Vec<String>>,
    pub(super) reload: Option<RawReloadRef>,
    #[serde(default, deserialize_with = "size")]
    pub(super) max_size: Option<u64>,
    pub(super) fuel: Option<u64>,
    pub(super) lstrip_blocks: Option<bool>,
    #[serde(default)]
    pub(super) log_output: bool,
}

/// A template's `reload:`: `true`, `false` or an action's name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(super) enum RawReloadRef {
    Flag(bool),
    Name(String),
}

impl Default for RawReloadRef {
    fn default() -> RawReloadRef {
        RawReloadRef::Flag(true)
    }
}

/// One reload action: the single `reload:` or an entry of `reloads:`.
/// Exactly one of a signal target (`process`, `pid_file`), `http` or
/// `exec` (checked in `resolve`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAction {
    #[serde(default, deserialize_with = "some_signal")]
    pub(super) signal: Option<nix::sys::signal::Signal>,
    pub(super) process: Option<String>,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) verify: Option<RawVerify>,
    #[serde(default, deserialize_with = "some_duration")]
    pub(super) verify_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    pub(super) min_age: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    pub(super) catch_wait: Option<Duration>,
    pub(super) http: Option<RawHttpAction>,
    #[serde(default, deserialize_with = "command")]
    pub(super) exec: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some_duration")]
    pub(super) timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub(super) min_interval: Duration,
}

/// `verify:` of a signal action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawVerify {
    /// The signalled process starts a new child (nginx, HAProxy master-worker).
    Children,
}

/// `http:` of an action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpAction {
    pub(super) url: String,
    #[serde(default = "post")]
    pub(super) method: String,
    #[serde(default = "five_seconds", deserialize_with = "duration")]
    pub(super) timeout: Duration,
    #[serde(default = "three")]
    pub(super) retries: u32,
}

fn post() -> String {
    "POST".into()
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn three() -> u32 {
    3
}

/// The top-level `reload:`: an action (a map), or `false` for no reload (as
/// a template's `reload: false` reads); `true` names no action, so it is an
/// error that says what to write.
fn single_action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RawAction>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<RawAction>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an action like {signal: HUP, process: nginx}, or false for no reload")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            if v {
                Err(E::custom(
                    "true names no action; give one, like reload: {signal: HUP, process: nginx}, or write reload: false for no reload",
                ))
            } else {
                Ok(None)
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            RawAction::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(Visitor)
}

/// `reloads:` as a list of (name, action) in the order written; serde_yaml
/// keeps each value's errors at its line.
fn ordered_actions<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, RawAction)>>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<(String, RawAction)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(
                "a map of action names to actions, like nginx: {signal: HUP, process: nginx}",
            )
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, RawAction)> = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                let action = map.next_value::<RawAction>()?;
                if out.iter().any(|(n, _)| *n == name) {
                    return Err(serde::de::Error::custom(format!(
                        "reloads: the action {name:?} is given twice"
                    )));
                }
                out.push((name, action));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor).map(Some)
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn some_signal<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<nix::sys::signal::Signal>, D::Error> {
    signal(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) on_start: Option<String>,
    pub(super) on_change: Option<String>,
    pub(super) on_leader_change: Option<String>,
    #[serde(default = "sixty_seconds", deserialize_with = "duration")]
    pub(super) timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeed {
    pub(super) from: PathBuf,
    pub(super) to: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(deserialize_with = "socket_addr")]
    pub(super) listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeader {
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub(super) grace: Duration,
    pub(super) probe: Option<RawProbe>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawPolicy {
    #[default]
    Ordinal,
    Sticky,
    Probe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) url: String,
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub(super) timeout: Duration,
    #[serde(default = "two_seconds", deserialize_with = "duration")]
    pub(super) interval: Duration,
    #[serde(default)]
    pub(super) fallback: RawFallback,
}

/// `leader.probe.fallback`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawFallback {
    #[default]
    Sticky,
    None,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

fn yes() -> bool {
    true
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

// ---- values checked as they are read ---------------------------------------

/// A duration with its unit (`250ms`, `5s`, `2m`). A bare number is an
/// error that says which unit to add, and the message starts with
/// [`DURATION_ERROR`] and the text as written, so `diagnostics` can find the
/// key's own line (serde_yaml points at the enclosing map).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(serde::de::Error::custom(format!(
            "{DURATION_ERROR}{text:?}: durations need a unit: {trimmed}s (or {trimmed}ms, {trimmed}m)"
        )));
    }
    let parsed = humantime::parse_duration(trimmed).map_err(|e| {
        let why = e.to_string();
        // humantime's own examples ("5sec") read as another format; ours only.
        let why = match why.split_once(", for example") {
            Some((head, _)) => head.to_string(),
            None => why,
        };
        serde::de::Error::custom(format!(
            "{DURATION_ERROR}{text:?} ({why}); write it like 250ms, 1s or 2m"
        ))
    })?;
    // The one checked conversion every duration key goes through: nothing
    // longer than any key accepts, so no clock arithmetic can overflow.
    if parsed > super::ranges::Range::LARGEST {
        return Err(serde::de::Error::custom(format!(
            "{DURATION_ERROR}{text:?} (longer than any duration key accepts: at most {}); see the README, \"Durations\"",
            humantime::format_duration(super::ranges::Range::LARGEST)
        )));
    }
    Ok(parsed)
}

/// How every duration error starts; followed by the value as written, quoted.
pub(super) const DURATION_ERROR: &str = "invalid duration ";

/// A size in bytes: a number of bytes, or with a unit (`512KiB`, `4MiB`,
/// `1MB`), as `bytesize` reads it.
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Text(String),
        Number(u64),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(Some(n)),
        Size::Text(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|s| Some(s.as_u64()))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid size {text:?} ({e}); write it like 1MiB, 512KiB or a number of bytes"
                ))
            }),
    }
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Text(String),
        Number(u64),
    }
    match Mode::deserialize(d)? {
        Mode::Text(text) => match u32::from_str_radix(text.trim().trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid mode {text:?}; write an octal mode in quotes, like mode: \"0644\""
            ))),
        },
        Mode::Number(n) => Err(serde::de::Error::custom(format!(
            "mode {n} is a number, which YAML may read as decimal; write it in quotes, like mode: \"0644\""
        ))),
    }
}

fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let text = String::deserialize(d)?;
    match shlex::split(&text) {
        Some(words) if !words.is_empty() => Ok(Some(words)),
        _ => Err(serde::de::Error::custom(format!(
            "cannot split the command {text:?} into words (an unclosed quote?); it is split like a shell would, with no shell features"
        ))),
    }
}

fn signal<'de, D: Deserializer<'de>>(d: D) -> Result<nix::sys::signal::Signal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sig {
        Name(String),
        Number(i32),
    }
    match Sig::deserialize(d)? {
        Sig::Name(name) => parse_signal(&name),
        Sig::Number(n) => nix::sys::signal::Signal::try_from(n).map_err(|_| format!("{n}")),
    }
    .map_err(|what| {
        serde::de::Error::custom(format!(
            "unknown signal {what:?}; use a name like HUP, SIGHUP or USR2, or a number"
        ))
    })
}

/// Accepts `HUP`, `SIGHUP`, `hup` and `1`.
pub fn parse_signal(name: &str) -> Result<nix::sys::signal::Signal, String> {
    let trimmed = name.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| name.to_string());
    }
    let upper = trimmed.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().map_err(|_| name.to_string())
}

fn nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            parse_nameserver(s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid nameserver {s:?}; write an IP address, optionally with a port: 10.96.0.10, 127.0.0.1:5353 or [::1]:53"
                ))
            })
        })
        .collect()
}

pub(super) fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid listen address {text:?}; write IP:PORT, like 0.0.0.0:9090 or [::]:9090"
        ))
    })
}
