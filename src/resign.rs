//! Resigning on shutdown (`sticky`): a leader that is stopped on purpose (a
//! rolling update, a scale-down, `kubectl delete`) names its successor at
//! once instead of leaving its followers to wait out `leader.grace`.
//!
//! The leader's side: on SIGTERM it picks the first ready peer in ordinal
//! order other than itself ([`successor`], from its own view), answers
//! `GET /leader` with that successor (and `"resigned": its own name`), and
//! tells its ready peers with `POST /leader/resign` ([`tell`]), all inside
//! [`BUDGET`] so shutdown never waits past a second.
//!
//! A notice carries no authority (anyone who reaches the admin port can
//! send one): the receiver screens it ([`screen`]: it must name the leader
//! this pod follows, at most one check per [`CHECK_EVERY`], a body of at
//! most [`MAX_BODY`] bytes), then asks that leader's own `GET /leader`, at
//! the address this pod's DNS view gives, and believes only what the leader
//! answers there ([`confirmed`]). A forged notice from a follower therefore
//! changes nothing: the real leader answers that it still leads. What was
//! ignored is counted in `peerplate_leader_resignations_ignored_total`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::http_client;
use crate::peers::{Identity, Peer, PeerSet};

/// Where a resignation is sent (the admin port, beside `GET /leader`).
pub const PATH: &str = "/leader/resign";

/// The largest notice body read, in bytes.
pub const MAX_BODY: usize = 1024;

/// The whole resignation (telling, then waiting for the peers to check)
/// never takes longer than this, so with the runtime's own stop SIGTERM
/// still exits within one second.
pub const BUDGET: Duration = Duration::from_millis(750);

/// At most this many peers are told (the successor first, then in ordinal
/// order); the others learn it at their next round of asking.
pub const MAX_TOLD: usize = 32;

/// A receiver checks with its leader at most once per this long.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The body of `POST /leader/resign` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// The resigning leader, FQDN as peers list it.
    pub leader: String,
    /// The successor it chose, FQDN.
    pub successor: String,
}

/// The successor of the leader `me`: the first ready peer in ordinal order
/// other than itself, from its own view; `None` when no other peer is ready
/// (then nobody is told and the followers' own rule decides).
pub fn successor<'a>(peers: &'a PeerSet, me: &Identity) -> Option<&'a Peer> {
    peers.ready().find(|p| !me.is_self(p))
}

/// Whom a resigning leader tells: the successor first, then the other
/// ready peers in ordinal order (not itself), at most [`MAX_TOLD`].
pub fn recipients<'a>(peers: &'a PeerSet, me: &Identity, successor: &str) -> Vec<&'a Peer> {
    let first = peers.get(successor).into_iter();
    let rest = peers
        .ready()
        .filter(|p| !me.is_self(p) && p.fqdn != successor);
    first.chain(rest).take(MAX_TOLD).collect()
}

/// Why a notice was not acted on (the answer's text and a log line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("the body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the body is not {{\"leader\": NAME, \"successor\": NAME}}: {0}")]
    Malformed(String),
    #[error("it names {named} as the resigning leader, but this pod follows {following}")]
    NotMyLeader { named: String, following: String },
    #[error("it names itself as its successor")]
    SameName,
    #[error("this pod checked with that leader less than 1s ago")]
    TooSoon,
}

/// Whether a notice is worth a check with the leader this pod follows
/// (`following`), given which leader it last checked and when. Pure; the
/// admin handler calls it and records the check when it passes.
///
/// The pace is one check per second of the leader followed: a flood of
/// notices (they must name that leader) makes at most one request a second
/// to it, while a genuine hand-over right after another (a rolling update
/// stopping web-0, then web-1) is checked at once, since the leader
/// followed changed and only a confirmed resignation changes it.
pub fn screen(
    notice: &Notice,
    following: Option<&str>,
    last_check: Option<(&str, Instant)>,
    now: Instant,
) -> Result<(), Ignored> {
    if notice.leader == notice.successor {
        return Err(Ignored::SameName);
    }
    if following != Some(notice.leader.as_str()) {
        return Err(Ignored::NotMyLeader {
            named: notice.leader.clone(),
            following: following.unwrap_or("none").to_string(),
        });
    }
    if last_check.is_some_and(|(leader, at)| {
        leader == notice.leader && now.saturating_duration_since(at) < CHECK_EVERY
    }) {
        return Err(Ignored::TooSoon);
    }
    Ok(())
}

/// Parses a notice body already cut at [`MAX_BODY`] + 1 bytes.
pub fn parse(body: &[u8]) -> Result<Notice, Ignored> {
    if body.len() > MAX_BODY {
        return Err(Ignored::TooLarge);
    }
    serde_json::from_slice(body).map_err(|e| Ignored::Malformed(e.to_string()))
}

/// The successor, if the `GET /leader` answer of `asked` says that `asked`
/// itself resigned (`"resigned": asked`) and names another leader.
pub fn confirmed(answer: &[u8], asked: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(answer).ok()?;
    if json.get("resigned")?.as_str()? != asked {
        return None;
    }
    let successor = json.get("leader")?.as_str()?;
    (successor != asked).then(|| successor.to_string())
}

/// Asks the leader `leader` (at the first address this pod's DNS view gives
/// it) whether it resigned; the successor it names when it did.
///
/// # Errors
/// Why no confirmation came: no address, no answer, or an answer that does
/// not say it resigned (a forged notice).
pub async fn check(leader: &Peer, port: u16, timeout: Duration) -> Result<String, String> {
    let addr = leader
        .addresses
        .first()
        .ok_or_else(|| format!("{} has no address in this pod's view", leader.fqdn))?;
    let (status, body) = http_client::get(
        SocketAddr::new(*addr, port),
        &leader.fqdn,
        "/leader",
        timeout,
    )
    .await?;
    if status != 200 {
        return Err(format!("GET /leader of {} answered {status}", leader.fqdn));
    }
    confirmed(&body, &leader.fqdn).ok_or_else(|| {
        let says = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|j| j.get("leader").and_then(|l| l.as_str()).map(String::from))
            .unwrap_or_else(|| "nothing readable".into());
        format!(
            "{} does not say it resigned (its GET /leader names {says})",
            leader.fqdn
        )
    })
}

/// Tells `peers` (at most [`MAX_TOLD`]) that `notice.leader` resigned, in
/// parallel, each request bounded by `timeout` and the whole by `deadline`.
/// Returns how many accepted it (answered 202: they will check).
pub async fn tell(
    peers: &[&Peer],
    notice: &Notice,
    port: u16,
    timeout: Duration,
    deadline: Instant,
) -> usize {
    let body = serde_json::to_vec(notice).unwrap_or_default();
    let asks = peers.iter().take(MAX_TOLD).map(|peer| {
        let body = body.clone();
        async move {
            let addr = *peer.addresses.first()?;
            let reply = http_client::post_json(
                SocketAddr::new(addr, port),
                &peer.fqdn,
                PATH,
                body,
                timeout,
            )
            .await;
            match reply {
                Ok((202, _)) => Some(()),
                Ok((status, answer)) => {
                    tracing::debug!(peer = %peer.fqdn, status, answer = %String::from_utf8_lossy(&answer).trim(), "POST /leader/resign");
                    None
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.fqdn, error = %e, "POST /leader/resign");
                    None
                }
            }
        }
    });
    let all = futures_util::future::join_all(asks);
    match tokio::time::timeout_at(deadline, all).await {
        Ok(answers) => answers.into_iter().flatten().count(),
        Err(_) => 0,
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
                    let mut p = Peer::parse(n, None).expect("name");
                    p.ready = *ready;
                    p
                })
                .collect(),
        )
    }

    fn me(host: &str) -> Identity {
        Identity {
            hostname: host.into(),
            namespace: "default".into(),
            fqdn: None,
            ordinal: None,
        }
    }

    #[test]
    fn the_successor_is_the_first_ready_peer_other_than_the_leader() {
        let peers = set(&[("web-0.s", true), ("web-1.s", false), ("web-2.s", true)]);
        assert_eq!(
            successor(&peers, &me("web-0")).map(|p| p.fqdn.as_str()),
            Some("web-2.s")
        );
        assert_eq!(
            successor(&peers, &me("web-2")).map(|p| p.fqdn.as_str()),
            Some("web-0.s")
        );
        let alone = set(&[("web-0.s", true), ("web-1.s", false)]);
        assert_eq!(successor(&alone, &me("web-0")), None);
        let told: Vec<&str> = recipients(&peers, &me("web-1"), "web-2.s")
            .iter()
            .map(|p| p.fqdn.as_str())
            .collect();
        assert_eq!(told, ["web-2.s", "web-0.s"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_notice_is_checked_only_for_the_leader_followed_once_a_second() {
        let n = Notice {
            leader: "web-0.s".into(),
            successor: "web-1.s".into(),
        };
        let t0 = Instant::now();
        assert_eq!(screen(&n, Some("web-0.s"), None, t0), Ok(()));
        assert_eq!(
            screen(&n, Some("web-2.s"), None, t0),
            Err(Ignored::NotMyLeader {
                named: "web-0.s".into(),
                following: "web-2.s".into()
            })
        );
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(
            screen(&n, Some("web-0.s"), Some(("web-0.s", t0)), Instant::now()),
            Err(Ignored::TooSoon)
        );
        // The next leader's resignation, right after a hand-over: at once.
        let next = Notice {
            leader: "web-1.s".into(),
            successor: "web-2.s".into(),
        };
        assert_eq!(
            screen(
                &next,
                Some("web-1.s"),
                Some(("web-0.s", t0)),
                Instant::now()
            ),
            Ok(())
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            screen(&n, Some("web-0.s"), Some(("web-0.s", t0)), Instant::now()),
            Ok(())
        );
        let same = Notice {
            leader: "web-0.s".into(),
            successor: "web-0.s".into(),
        };
        assert_eq!(
            screen(&same, Some("web-0.s"), None, t0),
            Err(Ignored::SameName)
        );
    }

    #[test]
    fn bodies_are_bounded_and_strict() {
        assert_eq!(
            parse(br#"{"leader":"a","successor":"b"}"#),
            Ok(Notice {
                leader: "a".into(),
                successor: "b".into()
            })
        );
        assert_eq!(parse(&[b' '; MAX_BODY + 1]), Err(Ignored::TooLarge));
        assert!(matches!(
            parse(br#"{"leader":"a","successor":"b","extra":1}"#),
            Err(Ignored::Malformed(_))
        ));
    }

    #[test]
    fn only_the_leader_saying_it_resigned_confirms() {
        let resigned = br#"{"leader":"web-1.s","policy":"sticky","resigned":"web-0.s"}"#;
        assert_eq!(confirmed(resigned, "web-0.s").as_deref(), Some("web-1.s"));
        // A forged notice: the leader still names itself.
        assert_eq!(
            confirmed(br#"{"leader":"web-0.s","policy":"sticky"}"#, "web-0.s"),
            None
        );
        // Another pod's resignation is not this leader's.
        assert_eq!(confirmed(resigned, "web-2.s"), None);
        assert_eq!(confirmed(b"not json", "web-0.s"), None);
    }
}
