//! A small HTTP/1.1 client on hyper: one request per connection
//! (`Connection: close`), bounded by a timeout as a whole, the body read up
//! to a limit. The leader worker asks peers with it ([`get`]); the `http`
//! reload action calls apps with it ([`request`]), following redirects on
//! the same host only. `https://` needs the `https` cargo feature (rustls,
//! the webpki roots).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// The most of a body that is read.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// No connection: refused, unreachable, the name does not resolve.
    #[error("{0}")]
    Connect(String),
    /// No complete answer within the timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Connected, but the exchange failed (a reset, a malformed answer).
    #[error("{0}")]
    Exchange(String),
    /// The URL cannot be used.
    #[error("{0}")]
    Url(String),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Location` header, for redirects.
    pub location: Option<String>,
    /// At most [`BODY_LIMIT`] bytes.
    pub body: Vec<u8>,
}

/// One HTTP/1.1 GET to `addr` with `Host: host`, bounded by `timeout` as a
/// whole; the status and body (at most 64 KiB).
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let target = Target {
        tls: false,
        host: host.to_string(),
        port: addr.port(),
        addr: Some(addr),
    };
    exchange(&target, &hyper::Method::GET, path, Bytes::new(), timeout)
        .await
        .map(|r| (r.status, r.body))
        .map_err(|e| match e {
            HttpError::Connect(why) => format!("connect {addr}: {why}"),
            other => other.to_string(),
        })
}

/// One HTTP/1.1 POST of a JSON `body` to `addr` with `Host: host`, bounded
/// by `timeout` as a whole; the status and body (at most 64 KiB).
pub async fn post_json(
    addr: SocketAddr,
    host: &str,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let target = Target {
        tls: false,
        host: host.to_string(),
        port: addr.port(),
        addr: Some(addr),
    };
    exchange(
        &target,
        &hyper::Method::POST,
        path,
        Bytes::from(body),
        timeout,
    )
    .await
    .map(|r| (r.status, r.body))
    .map_err(|e| match e {
        HttpError::Connect(why) => format!("connect {addr}: {why}"),
        other => other.to_string(),
    })
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// A fixed address (peers), else `host` is resolved.
    addr: Option<SocketAddr>,
}

impl Target {
    fn of(uri: &hyper::Uri) -> Result<Target, HttpError> {
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => {
                return Err(HttpError::Url(format!(
                    "unsupported scheme {other:?} in {uri}"
                )))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| HttpError::Url(format!("no host in {uri}")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Target {
            tls,
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            host,
            addr: None,
        })
    }

    /// What the `Host` header says.
    fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `method url`, following redirects (301, 302, 303, 307, 308) no further
/// than the same scheme, host and port, at most 5 of them; each hop bounded
/// by `timeout`. A redirect elsewhere is an error, not followed.
pub async fn request(method: &str, url: &str, timeout: Duration) -> Result<Response, HttpError> {
    let method = hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| HttpError::Url(format!("{method:?} is not an HTTP method")))?;
    let mut uri: hyper::Uri = url
        .parse()
        .map_err(|e| HttpError::Url(format!("{url:?} is not a URL: {e}")))?;
    let first = Target::of(&uri)?;
    for _ in 0..=5 {
        let target = Target::of(&uri)?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let response = exchange(&target, &method, &path, Bytes::new(), timeout).await?;
        let redirect = matches!(response.status, 301 | 302 | 303 | 307 | 308);
        let Some(location) = response.location.clone().filter(|_| redirect) else {
            return Ok(response);
        };
        let next = resolve_location(&uri, &location)?;
        let next_target = Target::of(&next)?;
        if next_target != first {
            return Err(HttpError::Url(format!(
                "{} redirects to {location}, another host; only redirects on the same host ({}) are followed: put the final URL in the config",
                uri,
                first.host_header()
            )));
        }
        uri = next;
    }
    Err(HttpError::Url(format!(
        "{url}: more than 5 redirects; put the final URL in the config"
    )))
}

/// A `Location` (absolute, or a path on the same host) against `base`.
fn resolve_location(base: &hyper::Uri, location: &str) -> Result<hyper::Uri, HttpError> {
    let bad = |e: String| HttpError::Url(format!("a redirect to {location:?}: {e}"));
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().map_err(|e| bad(format!("{e}")));
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    format!("{scheme}://{authority}{path}")
        .parse()
        .map_err(|e| bad(format!("{e}")))
}

/// A boxed connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn connect(target: &Target) -> Result<Box<dyn Io>, HttpError> {
    let stream = match target.addr {
        Some(addr) => tokio::net::TcpStream::connect(addr).await,
        None => tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await,
    }
    .map_err(|e| HttpError::Connect(format!("connect {}: {e}", target.host_header())))?;
    // Small requests: do not wait for more bytes before sending.
    let _ = stream.set_nodelay(true);
    if target.tls {
        return tls::wrap(stream, &target.host).await;
    }
    Ok(Box::new(stream))
}

async fn exchange(
    target: &Target,
    method: &hyper::Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let work = async {
        let io = connect(target).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| HttpError::Exchange(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let mut request = hyper::Request::builder().method(method.clone());
        if !body.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .uri(path)
            .header(hyper::header::HOST, target.host_header())
            .header(hyper::header::CONNECTION, "close")
            .header(
                hyper::header::USER_AGENT,
                concat!("peerplate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| HttpError::Url(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| HttpError::Exchange(e.to_string()))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A body larger than the limit is cut, not an error: the start of
        // it is what is logged.
        let mut body = Vec::new();
        let mut incoming = response.into_body();
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                let room = BODY_LIMIT.saturating_sub(body.len());
                body.extend_from_slice(&data[..data.len().min(room)]);
                if body.len() >= BODY_LIMIT {
                    break;
                }
            }
        }
        conn.abort();
        Ok(Response {
            status,
            location,
            body,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

#[cfg(not(feature = "https"))]
mod tls {
    use super::{HttpError, Io};

    pub(super) async fn wrap(
        _stream: tokio::net::TcpStream,
        host: &str,
    ) -> Result<Box<dyn Io>, HttpError> {
        Err(HttpError::Url(format!(
            "https://{host}: this build has no https (build with --features https)"
        )))
    }
}

#[cfg(feature = "https")]
mod tls {
    use std::sync::{Arc, OnceLock};

    use super::{HttpError, Io};

    /// The client config (the webpki roots, ring), built once.
    fn config() -> Result<Arc<rustls::ClientConfig>, HttpError> {
        static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| HttpError::Url(format!("TLS setup: {e}")))
    }

    pub(super) async fn wrap(
        stream: tokio::net::TcpStream,
        host: &str,
    ) -> Result<Box<dyn Io>, HttpError> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| HttpError::Url(format!("{host}: not a TLS server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(config()?)
            .connect(name, stream)
            .await
            .map_err(|e| HttpError::Connect(format!("TLS with {host}: {e}")))?;
        Ok(Box::new(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: hyper::Uri = "http://127.0.0.1:9090/-/reload".parse().unwrap();
        assert_eq!(
            resolve_location(&base, "/x").unwrap().to_string(),
            "http://127.0.0.1:9090/x"
        );
        assert_eq!(
            resolve_location(&base, "y").unwrap().to_string(),
            "http://127.0.0.1:9090/-/y"
        );
        let t = Target::of(&base).unwrap();
        assert_eq!(t.host_header(), "127.0.0.1:9090");
        let other = Target::of(&"http://127.0.0.1:9091/".parse().unwrap()).unwrap();
        assert_ne!(t, other);
    }
}
