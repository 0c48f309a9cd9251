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
    pub(super) reload: Option<RawReload>,
    pub(super) hooks: Option<RawHooks>,
    #[serde(default)]
    pub(super) seed: Vec<RawSeed>,
    #[serde(default)]
    pub(super) vars: serde_yaml::Mapping,
    pub(super) http: Option<RawHttp>,
    pub(super) leader: Option<RawLeader>,
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
    pub(super) destination: PathBuf,
    #[serde(default, deserialize_with = "mode")]
    pub(super) mode: Option<u32>,
    #[serde(default)]
    pub(super) create_only: bool,
    #[serde(default, deserialize_with = "command")]
    pub(super) check: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub(super) reload: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    #[serde(default = "hup", deserialize_with = "signal")]
    pub(super) signal: nix::sys::signal::Signal,
    pub(super) process: Option<String>,
    pub(super) pid_file: Option<PathBuf>,
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
fn hup() -> nix::sys::signal::Signal {
    nix::sys::signal::Signal::SIGHUP
}

// ---- values checked as they are read ---------------------------------------

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like 250ms, 1s or 2m"
        ))
    })
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
