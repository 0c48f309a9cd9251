//! What the loop tells the outside: health, readiness and metrics over HTTP.
//!
//! [`Status`] is shared by the loop and its workers, which count into it;
//! [`serve`] answers `/healthz` (200 while the loop runs), `/readyz` (503
//! until every template has rendered successfully once, then 200; the
//! startup probe that holds the app back until its config exists) and
//! `/metrics` (OpenMetrics text, encoded by prometheus-client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Label values, written the way Prometheus queries expect them
/// (lower_snake_case), from enums so a typo cannot invent a new series.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];

            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

label_values!(
    /// How a DNS poll went.
    Lookup { Answer => "answer", Failure => "failure" }
);
label_values!(
    /// How a template's render and install went.
    Render { Changed => "changed", Unchanged => "unchanged", Failed => "failed" }
);
label_values!(
    /// How a reload went.
    Reload { Signalled => "signalled", NoProcess => "no_process", Failed => "failed" }
);
label_values!(
    /// How a hook run went.
    Hook { Ok => "ok", Failed => "failed", Timeout => "timeout" }
);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenderLabels {
    template: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TemplateLabels {
    template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The loop's state as the outside sees it. Cheap to update from any thread.
#[derive(Debug)]
pub struct Status {
    ready: AtomicBool,
    registry: Registry,
    peers: Gauge,
    lookups: Family<LookupLabels, Counter>,
    renders: Family<RenderLabels, Counter>,
    checks_failed: Family<TemplateLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    hooks: Family<HookLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
}

impl Default for Status {
    fn default() -> Status {
        Status::new()
    }
}

impl Status {
    pub fn new() -> Status {
        let mut registry = Registry::with_prefix("peerplate");
        let peers = Gauge::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let renders = Family::<RenderLabels, Counter>::default();
        let checks_failed = Family::<TemplateLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let hooks = Family::<HookLabels, Counter>::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register("peers", "Peers in the current peer set", peers.clone());
        registry.register("dns_lookups", "DNS SRV lookups, by result", lookups.clone());
        registry.register(
            "renders",
            "Template renders, by template and result",
            renders.clone(),
        );
        registry.register(
            "checks_failed",
            "Outputs that failed their check, by template",
            checks_failed.clone(),
        );
        registry.register("reloads", "Reload signals, by result", reloads.clone());
        registry.register("hook_runs", "Hook runs, by hook and result", hooks.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last cycle in which every template rendered and installed",
            last_success.clone(),
        );
        registry.register("build_info", "peerplate's version", build.clone());
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        Status {
            ready: AtomicBool::new(false),
            registry,
            peers,
            lookups,
            renders,
            checks_failed,
            reloads,
            hooks,
            last_success,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn peers(&self, count: usize) {
        self.peers.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Creates every series the config can produce, at zero, so that
    /// `increase()` sees the first failure after a restart and dashboards
    /// show 0 rather than "no data".
    pub fn expect(&self, templates: &[String], dns: bool, reload: bool, hooks: &[&str]) {
        for template in templates {
            for result in Render::ALL {
                let _ = self
                    .renders
                    .get_or_create(&render_labels(template, *result));
            }
            let _ = self.checks_failed.get_or_create(&TemplateLabels {
                template: template.clone(),
            });
        }
        if dns {
            for result in Lookup::ALL {
                let _ = self.lookups.get_or_create(&LookupLabels {
                    result: result.as_str(),
                });
            }
        }
        if reload {
            for result in Reload::ALL {
                let _ = self.reloads.get_or_create(&ReloadLabels {
                    result: result.as_str(),
                });
            }
        }
        for hook in hooks {
            for result in Hook::ALL {
                let _ = self.hooks.get_or_create(&hook_labels(hook, *result));
            }
        }
    }

    pub fn lookup(&self, result: Lookup) {
        self.lookups
            .get_or_create(&LookupLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn render(&self, template: &str, result: Render) {
        self.renders
            .get_or_create(&render_labels(template, result))
            .inc();
    }

    pub fn check_failed(&self, template: &str) {
        self.checks_failed
            .get_or_create(&TemplateLabels {
                template: template.into(),
            })
            .inc();
    }

    pub fn reload(&self, result: Reload) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn hook(&self, hook: &str, result: Hook) {
        self.hooks.get_or_create(&hook_labels(hook, result)).inc();
    }

    pub fn cycle_succeeded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_success.set(now);
    }

    /// The metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn render_labels(template: &str, result: Render) -> RenderLabels {
    RenderLabels {
        template: template.into(),
        result: result.as_str(),
    }
}

fn hook_labels(hook: &str, result: Hook) -> HookLabels {
    HookLabels {
        hook: hook.into(),
        result: result.as_str(),
    }
}

/// Binds `listen` now (so a taken port fails the start), then answers until
/// `shutdown` is cancelled.
pub async fn serve(
    listen: SocketAddr,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            path: format!("http.listen {listen}").into(),
            source,
        })?;
    tracing::info!(listen = %listen, "serving /healthz, /readyz and /metrics");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!("admin accept: {e}");
                        continue;
                    }
                },
            };
            let status = Arc::clone(&status);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| answer(req, Arc::clone(&status)));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // A scrape that hangs up early is not our problem.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    }))
}

async fn answer(
    req: Request<Incoming>,
    status: Arc<Status>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (code, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (&hyper::Method::GET, "/readyz") if status.is_ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        (&hyper::Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: not every template has rendered yet\n".to_string(),
        ),
        (&hyper::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            status.encode(),
        ),
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz, /readyz or /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
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
