//! The HTTP side: `/healthz`, `/readyz`, `/metrics` and `/leader`.
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
//! thinks leads, as JSON; `sticky` pods ask each other there.
//!
//! The listener is bounded: [`MAX_CONNECTIONS`] at once (a new one closes
//! the oldest), [`HEADER_TIMEOUT`] to send the headers, at most
//! [`MAX_HEADER_BYTES`] of them buffered per connection, and a growing pause
//! after a failed accept (out of file descriptors) instead of a busy loop.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the loop publishes for the admin endpoints.
#[derive(Debug)]
pub struct State {
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// Why the loop is no longer whole (a worker ended), if it is not.
    broken: Mutex<Option<String>>,
    /// The body of `GET /leader` (JSON).
    leader: Mutex<String>,
}

impl State {
    pub fn new(metrics: Arc<Metrics>) -> State {
        State {
            metrics,
            ready: AtomicBool::new(false),
            broken: Mutex::new(None),
            leader: Mutex::new("{\"leader\":null}\n".into()),
        }
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
    /// "since": RFC 3339 time}`.
    pub fn set_leader(&self, leader: Option<&str>, policy: &str, since: std::time::SystemTime) {
        let body = serde_json::json!({
            "leader": leader,
            "policy": policy,
            "since": humantime::format_rfc3339_seconds(since).to_string(),
        });
        if let Ok(mut slot) = self.leader.lock() {
            *slot = format!("{body}\n");
        }
    }

    fn leader_json(&self) -> String {
        self.leader.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `None` while healthy, else why not.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().ok().and_then(|b| b.clone())
    }
}

/// Binds the admin listener now, so a taken port fails the start.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(listen = %listen, "serving /healthz, /readyz, /metrics and /leader");
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
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz, /readyz, /metrics or /leader\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}
