//! The HTTP side: `/healthz`, `/readyz`, `/metrics`, `/leader` and
//! `/status` (what has converged and what is pending, [`crate::status`]).
//!
//! [`State`] is what the loop publishes and this server reads: liveness
//! (`/healthz`: 200 while the loop and every worker run, 503 once one has
//! stopped, so kubelet restarts a sidecar that can no longer follow its
//! peers), readiness (`/readyz`: 503 until every template has rendered
//! successfully once; the startup probe that holds the app back until its
//! config exists), and the metrics (OpenMetrics text, encoded by
//! prometheus-client). Readiness and liveness are apart on purpose: a pod
//! whose templates failed is alive but not ready; a pod whose DNS worker
//! ended is not alive. `/leader` tells peers (and people) who this pod
//! thinks leads, as JSON; `sticky` pods ask each other there, and a
//! resigning leader tells them `POST /leader/resign` ([`crate::resign`]: a
//! notice with no authority, screened here and checked with the leader by
//! the leader worker).
//!
//! The listener is bounded: [`MAX_CONNECTIONS`] at once (a new one closes
//! the oldest), [`HEADER_TIMEOUT`] to send the headers, at most
//! [`MAX_HEADER_BYTES`] of them buffered per connection, and a growing pause
//! after a failed accept (out of file descriptors) instead of a busy loop.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::resign::{self, Notice};
use crate::status::{Owing, Status};

/// What `GET /leader` says.
#[derive(Debug, Clone)]
struct LeaderBody {
    leader: Option<String>,
    policy: String,
    since: SystemTime,
    /// `probe`: since when the leader no longer answers 2xx.
    unconfirmed_since: Option<SystemTime>,
    /// Set by a leader that resigned: its own name (`leader` is then its
    /// successor).
    resigned: Option<String>,
}

/// What the loop publishes for the admin endpoints.
#[derive(Debug)]
pub struct State {
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// Why the loop is no longer whole (a worker ended), if it is not.
    broken: Mutex<Option<String>>,
    /// What `GET /leader` answers.
    leader: Mutex<LeaderBody>,
    /// How many `GET /leader` were answered (a resigning leader waits for
    /// the peers it told to ask).
    leader_asks: AtomicU64,
    /// Where screened resignation notices go (the leader worker, `sticky`).
    notices: Mutex<Option<mpsc::Sender<Notice>>>,
    /// What the loop last published for `GET /status`.
    status: Mutex<Status>,
    /// The hooks owed, by hook, as their queues publish them.
    hooks_owed: Mutex<BTreeMap<&'static str, Owing>>,
    /// At most one `/status` body is built at a time.
    status_flight: Semaphore,
}

impl State {
    pub fn new(metrics: Arc<Metrics>) -> State {
        State {
            metrics,
            ready: AtomicBool::new(false),
            broken: Mutex::new(None),
            leader: Mutex::new(LeaderBody {
                leader: None,
                policy: String::new(),
                since: SystemTime::now(),
                unconfirmed_since: None,
                resigned: None,
            }),
            leader_asks: AtomicU64::new(0),
            notices: Mutex::new(None),
            status: Mutex::new(Status::default()),
            hooks_owed: Mutex::new(BTreeMap::new()),
            status_flight: Semaphore::new(1),
        }
    }

    /// What the loop knows now, for `GET /status` (the hooks owed are kept
    /// apart: their queues publish them).
    pub fn set_status(&self, status: Status) {
        if let Ok(mut slot) = self.status.lock() {
            *slot = status;
        }
    }

    /// Hook `which` is owed (`Some`) or done (`None`).
    pub fn set_hook_owed(&self, which: &'static str, owing: Option<Owing>) {
        if let Ok(mut hooks) = self.hooks_owed.lock() {
            match owing {
                Some(o) => hooks.insert(which, o),
                None => hooks.remove(which),
            };
            self.metrics
                .pending(crate::metrics::Pending::Hook, hooks.len());
        }
    }

    /// The body of `GET /status`, built now; `None` while another one is
    /// being built (at most one in flight).
    pub fn status_json(&self) -> Option<String> {
        let _permit = self.status_flight.try_acquire().ok()?;
        let mut status = self.status.lock().ok()?.clone();
        status.hooks = self
            .hooks_owed
            .lock()
            .map(|h| h.values().cloned().collect())
            .unwrap_or_default();
        status.converged = !status.pending();
        serde_json::to_string_pretty(&status).ok().map(|mut body| {
            body.push('\n');
            body
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Every template has rendered and installed at least once.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The loop can no longer do its job (`/healthz` turns 503 with `why`).
    pub fn set_broken(&self, why: String) {
        if let Ok(mut broken) = self.broken.lock() {
            broken.get_or_insert(why);
        }
    }

    /// What `GET /leader` answers: `{"leader": FQDN or null, "policy": ...,
    /// "since": RFC 3339 time}`, plus `"unconfirmed_since"` (`probe`) and
    /// `"resigned"` when set.
    pub fn set_leader(&self, leader: Option<&str>, policy: &str, since: SystemTime) {
        if let Ok(mut slot) = self.leader.lock() {
            slot.leader = leader.map(str::to_string);
            slot.policy = policy.to_string();
            slot.since = since;
        }
    }

    /// `probe`: since when the leader no longer answers 2xx (`None`: it does).
    pub fn set_unconfirmed(&self, since: Option<SystemTime>) {
        if let Ok(mut slot) = self.leader.lock() {
            slot.unconfirmed_since = since;
        }
    }

    /// This pod, the leader `me`, resigned for `successor`: `GET /leader`
    /// names the successor and says `"resigned": me` until the process ends.
    pub fn set_resigned(&self, me: &str, successor: &str) {
        if let Ok(mut slot) = self.leader.lock() {
            slot.leader = Some(successor.to_string());
            slot.resigned = Some(me.to_string());
            slot.since = SystemTime::now();
        }
    }

    /// How many `GET /leader` have been answered so far.
    pub fn leader_asks(&self) -> u64 {
        self.leader_asks.load(Ordering::Relaxed)
    }

    /// Where notices that pass the screen go (`None`: this pod does not
    /// follow a `sticky` leader, every notice is refused).
    pub fn set_notices(&self, to: Option<mpsc::Sender<Notice>>) {
        if let Ok(mut slot) = self.notices.lock() {
            *slot = to;
        }
    }

    fn leader_json(&self) -> String {
        self.leader_asks.fetch_add(1, Ordering::Relaxed);
        let Ok(body) = self.leader.lock().map(|l| l.clone()) else {
            return String::new();
        };
        let stamp = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let mut json = serde_json::json!({
            "leader": body.leader,
            "policy": body.policy,
            "since": stamp(body.since),
        });
        if let Some(t) = body.unconfirmed_since {
            json["unconfirmed_since"] = stamp(t).into();
        }
        if let Some(me) = body.resigned {
            json["resigned"] = me.into();
        }
        format!("{json}\n")
    }

    /// Screens a resignation notice and hands it to the leader worker.
    fn take_notice(
        &self,
        body: Result<Notice, resign::Ignored>,
    ) -> Result<String, (StatusCode, String)> {
        let refuse = |code: StatusCode, why: String| {
            self.metrics.resignation_ignored();
            tracing::debug!(why = %why, "ignored a resignation notice");
            Err((code, format!("ignored: {why}\n")))
        };
        let notice = match body {
            Ok(n) => n,
            Err(e @ resign::Ignored::TooLarge) => {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let following = self.leader.lock().ok().and_then(|l| l.leader.clone());
        if let Err(e) = resign::screen(&notice, following.as_deref()) {
            return refuse(StatusCode::CONFLICT, e.to_string());
        }
        let sent = self.notices.lock().ok().and_then(|n| {
            n.as_ref().map(|tx| match tx.try_send(notice.clone()) {
                // Full: a notice waits for the worker, which checks with the
                // same leader (the pace keeps the latest): nothing is lost.
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            })
        });
        match sent {
            Some(true) => Ok(format!(
                "checking with {} whether it resigned\n",
                notice.leader
            )),
            Some(false) => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the leader worker is not running".into(),
            ),
            None => refuse(
                StatusCode::CONFLICT,
                "this pod's leader.policy is not sticky".into(),
            ),
        }
    }

    /// `None` while healthy, else why not.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().ok().and_then(|b| b.clone())
    }
}

/// Binds the admin listener now, so a taken port fails the start.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(listen = %listen, "serving /healthz, /readyz, /metrics, /leader and /status");
    Ok(listener)
}

/// At most this many connections are served at once. A new connection
/// beyond it closes the oldest one, so an idle flood cannot hold the
/// listener (or the memory) and a probe always gets its answer.
pub const MAX_CONNECTIONS: usize = 64;

/// A client has this long to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a connection may buffer of a request: its line and headers
/// (hyper answers 431 and closes beyond it). hyper's default, about 400 KB,
/// let 64 slow clients hold 26 MB; the admin paths need a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// No connection lives longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between failed accepts (out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The connections being served, oldest first: each with what closes it,
/// and a handle that is dead once it has ended.
type Live = VecDeque<(CancellationToken, Weak<()>)>;

/// Answers on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut live: Live = VecDeque::new();
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors: free one (the oldest
                    // connection), and never spin on the error.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    tracing::debug!(retry_in_ms = crate::log::ms(backoff), error = %e, "admin accept failed");
                    evict_oldest(&mut live);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            },
        };
        backoff = Duration::ZERO;
        live.retain(|(_, alive)| alive.strong_count() > 0);
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                evict_oldest(&mut live);
                let waited = tokio::time::timeout(
                    Duration::from_millis(100),
                    Arc::clone(&permits).acquire_owned(),
                )
                .await;
                match waited {
                    Ok(Ok(permit)) => permit,
                    // Dropping the stream closes it.
                    _ => continue,
                }
            }
        };
        let close = shutdown.child_token();
        let alive = Arc::new(());
        live.push_back((close.clone(), Arc::downgrade(&alive)));
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _held = (permit, alive);
            let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&state)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scrape that hangs up early is not our problem.
            tokio::select! {
                _ = close.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
            }
        });
    }
}

/// Closes the oldest connection still open.
fn evict_oldest(live: &mut Live) {
    while let Some((close, alive)) = live.pop_front() {
        if alive.strong_count() > 0 {
            close.cancel();
            return;
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // HEAD is GET without the body (hyper leaves the body out for HEAD).
    let method = match *req.method() {
        hyper::Method::HEAD => hyper::Method::GET,
        ref m => m.clone(),
    };
    if method == hyper::Method::POST && req.uri().path() == resign::PATH {
        // At most MAX_BODY + 1 bytes are read: one more says "too large".
        let body = match Limited::new(req.into_body(), resign::MAX_BODY + 1)
            .collect()
            .await
        {
            Ok(bytes) => resign::parse(&bytes.to_bytes()),
            Err(_) => Err(resign::Ignored::TooLarge),
        };
        let (code, text) = match state.take_notice(body) {
            Ok(text) => (StatusCode::ACCEPTED, text),
            Err(refused) => refused,
        };
        return Ok(reply(code, "text/plain", text));
    }
    let (code, content_type, body) = match (&method, req.uri().path()) {
        (&hyper::Method::GET, "/healthz") => match state.broken() {
            None => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not healthy: {why}\n"),
            ),
        },
        (&hyper::Method::GET, "/readyz") if state.is_ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        (&hyper::Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: not every template has rendered yet\n".to_string(),
        ),
        (&hyper::Method::GET, "/leader") => {
            (StatusCode::OK, "application/json", state.leader_json())
        }
        (&hyper::Method::GET, "/status") => match state.status_json() {
            Some(body) => (StatusCode::OK, "application/json", body),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "another /status is being built; try again\n".to_string(),
            ),
        },
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz, /readyz, /metrics, /leader or /status\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n".to_string(),
        ),
    };
    Ok(reply(code, content_type, body))
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
