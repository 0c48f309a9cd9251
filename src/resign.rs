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
//! this pod follows, a body of at most [`MAX_BODY`] bytes), then asks that
//! leader's own `GET /leader`, at the address this pod's DNS view gives, and
//! believes only what the leader answers there ([`confirmed`]). A forged
//! notice from a follower therefore changes nothing: the real leader answers
//! that it still leads. The asking is paced ([`Pace`]: at most one check per
//! [`CHECK_EVERY`] of a leader), but a notice inside the pace is remembered,
//! not dropped, and checked when the second is over: a forged notice must
//! not make the real one that follows it go unheard. What was ignored is
//! counted in `peerplate_leader_resignations_ignored_total`.
//!
//! A pod remembers the leaders it confirmed as resigned
//! ([`crate::leader::Leadership::resigned_peers`]) and never names one as
//! successor, nor adopts one named by another: a pod that resigned is still
//! listed ready by DNS for a moment, and a second resignation right after
//! the first must not hand leadership back to the pod already stopping.

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

/// Telling the peers never takes longer than this (a peer that hangs is
/// given up on), so with the runtime's own stop SIGTERM still exits within
/// one second when no told peer has to be waited for.
pub const BUDGET: Duration = Duration::from_millis(750);

/// How long a resigning leader keeps answering `GET /leader` for the peers
/// that accepted its notice and have not checked yet. It equals
/// [`CHECK_EVERY`] on purpose: a peer that checked with this leader just
/// before it resigned (a forged notice) checks again at most one second
/// later, while this leader still answers.
pub const CHECK_WAIT: Duration = Duration::from_secs(1);

/// At most this many peers are told (the successor first, then in ordinal
/// order); the others learn it at their next round of asking.
pub const MAX_TOLD: usize = 32;

/// A receiver checks with a leader at most once per this long.
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
/// other than itself and other than a leader it confirmed as resigned
/// (`resigned`, FQDNs), from its own view; `None` when there is none (then
/// nobody is told and the followers' own rule decides).
pub fn successor<'a>(peers: &'a PeerSet, me: &Identity, resigned: &[String]) -> Option<&'a Peer> {
    peers
        .ready()
        .find(|p| !me.is_self(p) && !resigned.contains(&p.fqdn))
}

/// Whom a resigning leader tells: the successor first, then the other
/// ready peers in ordinal order (not itself, not a pod it confirmed as
/// resigned: it is stopping), at most [`MAX_TOLD`].
pub fn recipients<'a>(
    peers: &'a PeerSet,
    me: &Identity,
    successor: &str,
    resigned: &[String],
) -> Vec<&'a Peer> {
    let first = peers.get(successor).into_iter();
    let rest = peers
        .ready()
        .filter(|p| !me.is_self(p) && p.fqdn != successor && !resigned.contains(&p.fqdn));
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
}

/// Whether a notice is worth a check with the leader this pod follows
/// (`following`). Pure; the admin handler calls it and hands the notice to
/// the leader worker when it passes, which paces the checks ([`Pace`]).
pub fn screen(notice: &Notice, following: Option<&str>) -> Result<(), Ignored> {
    if notice.leader == notice.successor {
        return Err(Ignored::SameName);
    }
    if following != Some(notice.leader.as_str()) {
        return Err(Ignored::NotMyLeader {
            named: notice.leader.clone(),
            following: following.unwrap_or("none").to_string(),
        });
    }
    Ok(())
}

/// The pace of the checks a receiver makes: at most one per
/// [`CHECK_EVERY`] of a leader, the notice that arrives meanwhile kept
/// (the latest wins: every notice that passed the screen asks the same
/// question, "did the leader followed resign?", and the answer comes from
/// that leader, not from the notice) and checked as soon as the second is
/// over. Pure: the leader worker feeds it notices and the time.
#[derive(Debug, Default)]
pub struct Pace {
    /// The notice waiting for its check.
    pending: Option<Notice>,
    /// The leader last checked with, and when the check started.
    last: Option<(String, Instant)>,
}

impl Pace {
    /// A screened notice arrived: it replaces any one still waiting.
    /// Returns whether one was replaced (nothing is lost: the check to come
    /// asks the same leader).
    pub fn offer(&mut self, notice: Notice) -> bool {
        self.pending.replace(notice).is_some()
    }

    /// When the waiting notice may be checked (`None`: none waits): `now`,
    /// or one [`CHECK_EVERY`] after the last check of the same leader.
    pub fn due(&self, now: Instant) -> Option<Instant> {
        let notice = self.pending.as_ref()?;
        let earliest = match &self.last {
            Some((leader, at)) if *leader == notice.leader => {
                crate::limits::later(*at, CHECK_EVERY)
            }
            // Never checked, or another leader: the pace is per leader.
            _ => now,
        };
        Some(earliest)
    }

    /// The notice to check now, if one waits and its time has come; the
    /// check is recorded as started at `now`.
    pub fn take(&mut self, now: Instant) -> Option<Notice> {
        if self.due(now)? > now {
            return None;
        }
        let notice = self.pending.take()?;
        self.last = Some((notice.leader.clone(), now));
        Some(notice)
    }
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

/// What telling the peers came to: how many accepted (202: they will
/// check), how many answered otherwise or failed, and how many had not
/// answered when the time was up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub accepted: usize,
    pub refused: usize,
    pub unanswered: usize,
}

/// How one told peer answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 202: it will check.
    Accepted,
    /// Another status, or no connection at all.
    Refused,
    /// Nothing within the time given (a peer that hangs).
    Silent,
}

/// Counts `asks` as they complete, until all did or `deadline`: what
/// completed is counted whatever happens to the rest (a peer that hangs
/// must not hide the others' answers), and the rest are `unanswered`.
pub async fn tally<F>(asks: impl IntoIterator<Item = F>, deadline: Instant) -> Tally
where
    F: std::future::Future<Output = Reply>,
{
    use futures_util::StreamExt;
    let mut pending: futures_util::stream::FuturesUnordered<F> = asks.into_iter().collect();
    let mut tally = Tally {
        unanswered: pending.len(),
        ..Tally::default()
    };
    while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, pending.next()).await {
        match reply {
            Reply::Accepted => tally.accepted += 1,
            Reply::Refused => tally.refused += 1,
            // Still unanswered.
            Reply::Silent => continue,
        }
        tally.unanswered -= 1;
    }
    tally
}

/// Tells `peers` (at most [`MAX_TOLD`]) that `notice.leader` resigned, in
/// parallel, each request bounded by `timeout` and the whole by `deadline`.
pub async fn tell(
    peers: &[&Peer],
    notice: &Notice,
    port: u16,
    timeout: Duration,
    deadline: Instant,
) -> Tally {
    let body = serde_json::to_vec(notice).unwrap_or_default();
    let asks = peers.iter().take(MAX_TOLD).map(|peer| {
        let body = body.clone();
        async move {
            let Some(addr) = peer.addresses.first() else {
                return Reply::Refused;
            };
            // Our own timeout, so that a silent peer is told apart from a
            // failing one; the client's, a little longer, is a backstop.
            let reply = tokio::time::timeout(
                timeout,
                http_client::post_json(
                    SocketAddr::new(*addr, port),
                    &peer.fqdn,
                    PATH,
                    body,
                    timeout + Duration::from_secs(1),
                ),
            )
            .await;
            match reply {
                Ok(Ok((202, _))) => Reply::Accepted,
                Ok(Ok((status, answer))) => {
                    tracing::debug!(peer = %peer.fqdn, status, answer = %String::from_utf8_lossy(&answer).trim(), "POST /leader/resign");
                    Reply::Refused
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer.fqdn, error = %e, "POST /leader/resign");
                    Reply::Refused
                }
                Err(_) => {
                    tracing::debug!(peer = %peer.fqdn, "POST /leader/resign: no answer in time");
                    Reply::Silent
                }
            }
        }
    });
    tally(asks, deadline).await
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
            successor(&peers, &me("web-0"), &[]).map(|p| p.fqdn.as_str()),
            Some("web-2.s")
        );
        assert_eq!(
            successor(&peers, &me("web-2"), &[]).map(|p| p.fqdn.as_str()),
            Some("web-0.s")
        );
        let alone = set(&[("web-0.s", true), ("web-1.s", false)]);
        assert_eq!(successor(&alone, &me("web-0"), &[]), None);
        let told: Vec<&str> = recipients(&peers, &me("web-1"), "web-2.s", &[])
            .iter()
            .map(|p| p.fqdn.as_str())
            .collect();
        assert_eq!(told, ["web-2.s", "web-0.s"]);
    }

    #[test]
    fn a_leader_confirmed_as_resigned_is_never_the_successor_nor_told() {
        // web-0 resigned a moment ago and DNS still lists it ready: web-1,
        // resigning in turn, names web-2 and does not tell web-0.
        let peers = set(&[("web-0.s", true), ("web-1.s", true), ("web-2.s", true)]);
        let gone = ["web-0.s".to_string()];
        assert_eq!(
            successor(&peers, &me("web-1"), &gone).map(|p| p.fqdn.as_str()),
            Some("web-2.s")
        );
        let told: Vec<&str> = recipients(&peers, &me("web-1"), "web-2.s", &gone)
            .iter()
            .map(|p| p.fqdn.as_str())
            .collect();
        assert_eq!(told, ["web-2.s"]);
        let two = set(&[("web-0.s", true), ("web-1.s", true)]);
        assert_eq!(successor(&two, &me("web-1"), &gone), None);
    }

    fn notice(leader: &str, successor: &str) -> Notice {
        Notice {
            leader: leader.into(),
            successor: successor.into(),
        }
    }

    #[test]
    fn a_notice_is_screened_for_the_leader_followed() {
        let n = notice("web-0.s", "web-1.s");
        assert_eq!(screen(&n, Some("web-0.s")), Ok(()));
        assert_eq!(
            screen(&n, Some("web-2.s")),
            Err(Ignored::NotMyLeader {
                named: "web-0.s".into(),
                following: "web-2.s".into()
            })
        );
        assert_eq!(
            screen(&notice("web-0.s", "web-0.s"), Some("web-0.s")),
            Err(Ignored::SameName)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_notice_inside_the_pace_waits_for_its_check_and_is_not_dropped() {
        let mut pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(pace.due(t0), None);
        // A forged notice: checked at once.
        assert!(!pace.offer(notice("web-0.s", "web-2.s")));
        assert_eq!(pace.take(t0), Some(notice("web-0.s", "web-2.s")));
        // The real one, 0.2 s later: kept, due when the second is over.
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!pace.offer(notice("web-0.s", "web-1.s")));
        let now = Instant::now();
        assert_eq!(pace.due(now), Some(t0 + CHECK_EVERY));
        assert_eq!(pace.take(now), None);
        // A flood meanwhile replaces it (the latest wins): still one check.
        for _ in 0..100 {
            assert!(pace.offer(notice("web-0.s", "web-2.s")));
        }
        tokio::time::advance(Duration::from_millis(799)).await;
        assert_eq!(pace.take(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        let t1 = Instant::now();
        assert_eq!(pace.take(t1), Some(notice("web-0.s", "web-2.s")));
        assert_eq!(pace.take(t1), None);
        assert_eq!(pace.due(t1), None);
        // The next leader's resignation, right after a hand-over: at once
        // (the pace is per leader).
        assert!(!pace.offer(notice("web-1.s", "web-2.s")));
        assert_eq!(pace.due(t1), Some(t1));
        assert_eq!(pace.take(t1), Some(notice("web-1.s", "web-2.s")));
        tokio::time::advance(Duration::from_millis(10)).await;
        pace.offer(notice("web-1.s", "web-0.s"));
        assert_eq!(pace.due(Instant::now()), Some(t1 + CHECK_EVERY));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_hangs_does_not_hide_the_answers_already_counted() {
        let t0 = Instant::now();
        let ask = |after_ms: u64, reply: Reply| async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            reply
        };
        // One accepts at 10 ms, one refuses at 20 ms, one times out at the
        // deadline, one hangs past it (750 ms).
        let asks = vec![
            Box::pin(ask(10, Reply::Accepted)),
            Box::pin(ask(20, Reply::Refused)),
            Box::pin(ask(750, Reply::Silent)),
            Box::pin(ask(60_000, Reply::Accepted)),
        ];
        let counted = tally(asks, t0 + BUDGET).await;
        assert_eq!(
            counted,
            Tally {
                accepted: 1,
                refused: 1,
                unanswered: 2
            }
        );
        assert_eq!(Instant::now(), t0 + BUDGET);
        // All answer: no waiting for the deadline.
        let t1 = Instant::now();
        let asks = vec![
            Box::pin(ask(5, Reply::Accepted)),
            Box::pin(ask(7, Reply::Accepted)),
        ];
        assert_eq!(
            tally(asks, t1 + BUDGET).await,
            Tally {
                accepted: 2,
                refused: 0,
                unanswered: 0
            }
        );
        assert_eq!(Instant::now(), t1 + Duration::from_millis(7));
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
