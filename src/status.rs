//! Convergence you can see: what `GET /status` answers and `peerplate
//! status` prints, as plain data.
//!
//! The loop (and the hook queues) publish a [`Status`] whenever what they
//! know changes; the admin listener turns it into JSON per request (at most
//! one at a time), and `peerplate status` fetches that JSON and prints it
//! for a person ([`text`]). Per template: the desired and the installed
//! content hash (SHA-256 of the bytes), the action's last verdict, what is
//! pending since when, the last error; then the hooks owed, the rollbacks
//! and the config re-read owed, the peer set and the leader. Texts that
//! came from outside (an app's complaint, a file name) are escaped as the
//! log escapes them: no control characters reach a terminal.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::owed::Owed;

/// Everything `/status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Whether everything has converged: nothing pending anywhere.
    pub converged: bool,
    pub templates: Vec<TemplateStatus>,
    /// Hooks owed (failed, to run again), by hook name.
    pub hooks: Vec<Owing>,
    /// Rollbacks owed (one failed; the refused bytes are still on disk).
    pub rollbacks: Vec<Owing>,
    /// A config file that did not load, read again with backoff.
    pub config: Option<Owing>,
    /// The peer set (FQDNs).
    pub peers: Vec<String>,
    /// The chosen leader (FQDN).
    pub leader: Option<String>,
}

/// One template's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateStatus {
    pub template: String,
    pub destination: String,
    /// SHA-256 (hex) of the last render.
    pub desired_sha256: Option<String>,
    /// SHA-256 (hex) of what peerplate installed (or found equal) there.
    pub installed_sha256: Option<String>,
    /// Its reload action, if any.
    pub action: Option<String>,
    /// The action's last verdict (`accepted: ...`, `rejected: ...`).
    pub verdict: Option<String>,
    /// What is owed for it, if anything.
    pub pending: Option<Owing>,
    /// The last error of its render, check or install.
    pub last_error: Option<String>,
}

/// One item owed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Owing {
    /// What is owed (`reload nginx`, `on_leader_change for web-1...`).
    pub what: String,
    /// Since when (RFC 3339, seconds).
    pub since: String,
    /// Failed tries so far.
    pub tries: u32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// The next try, in milliseconds from when the status was built.
    pub next_try_in_ms: Option<u64>,
}

impl Owing {
    /// The status of `owed`, described as `what`, at `now`.
    pub fn of<T>(what: String, owed: &Owed<T>, now: tokio::time::Instant) -> Owing {
        Owing {
            what,
            since: rfc3339(ago(now.saturating_duration_since(owed.since))),
            tries: owed.failures,
            last_error: owed.last_error.clone(),
            next_try_in_ms: Some(owed.due.saturating_duration_since(now).as_millis() as u64),
        }
    }
}

/// The wall-clock time `d` ago.
pub fn ago(d: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// `t` as RFC 3339 (seconds, UTC).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Status {
    /// Whether anything is pending.
    pub fn pending(&self) -> bool {
        self.templates.iter().any(|t| t.pending.is_some())
            || !self.hooks.is_empty()
            || !self.rollbacks.is_empty()
            || self.config.is_some()
    }
}

/// `text` escaped exactly as the text log writes it ([`crate::log::escape`]:
/// controls, U+2028/U+2029 and the bidi controls).
pub fn escape(text: &str) -> String {
    crate::log::escape(text).into_owned()
}

/// The first 12 hex digits of a hash, or `-`.
fn short(hash: Option<&String>) -> String {
    hash.map_or_else(|| "-".into(), |h| h.chars().take(12).collect())
}

fn owing_line(o: &Owing) -> String {
    let mut line = format!(
        "{} — pending since {}, {} failed tr{}",
        escape(&o.what),
        o.since,
        o.tries,
        if o.tries == 1 { "y" } else { "ies" }
    );
    if let Some(ms) = o.next_try_in_ms {
        line.push_str(&format!(", next try in {:.1} s", ms as f64 / 1000.0));
    }
    if let Some(e) = &o.last_error {
        line.push_str(&format!("; last error: {}", escape(e)));
    }
    line
}

/// `status` for a person: one block per template, then what else is owed,
/// the peers and the leader.
pub fn text(status: &Status) -> String {
    let mut out = String::new();
    out.push_str(if status.converged {
        "converged: every output, reload and hook is done\n"
    } else {
        "NOT converged: something is pending (below)\n"
    });
    for t in &status.templates {
        let same = t.desired_sha256.is_some() && t.desired_sha256 == t.installed_sha256;
        out.push_str(&format!(
            "\ntemplate {} -> {}\n  desired {}  installed {}{}\n",
            escape(&t.template),
            escape(&t.destination),
            short(t.desired_sha256.as_ref()),
            short(t.installed_sha256.as_ref()),
            if same { " (same)" } else { "" }
        ));
        if let Some(action) = &t.action {
            out.push_str(&format!(
                "  action {}: {}\n",
                escape(action),
                t.verdict
                    .as_deref()
                    .map_or_else(|| "no run yet".into(), escape)
            ));
        }
        if let Some(p) = &t.pending {
            out.push_str(&format!("  pending: {}\n", owing_line(p)));
        }
        if let Some(e) = &t.last_error {
            out.push_str(&format!("  last error: {}\n", escape(e)));
        }
    }
    for (title, items) in [
        ("hooks owed", &status.hooks),
        ("rollbacks owed", &status.rollbacks),
    ] {
        if !items.is_empty() {
            out.push_str(&format!("\n{title}:\n"));
            for o in items {
                out.push_str(&format!("  {}\n", owing_line(o)));
            }
        }
    }
    if let Some(c) = &status.config {
        out.push_str(&format!("\nconfig: {}\n", owing_line(c)));
    }
    out.push_str(&format!(
        "\nleader: {}\npeers ({}):\n",
        status
            .leader
            .as_deref()
            .map_or_else(|| "none".into(), escape),
        status.peers.len()
    ));
    for p in &status.peers {
        out.push_str(&format!("  {}\n", escape(p)));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::status::{escape, sha256, text, Owing, Status, TemplateStatus};

    #[test]
    fn a_person_reads_what_is_pending_and_nothing_escapes_the_terminal() {
        let status = Status {
            converged: false,
            templates: vec![TemplateStatus {
                template: "nginx.conf.j2".into(),
                destination: "/etc/nginx/nginx.conf".into(),
                desired_sha256: Some(sha256(b"a")),
                installed_sha256: Some(sha256(b"a")),
                action: Some("nginx".into()),
                verdict: Some("no_process: \u{1b}[31mred\u{7}".into()),
                pending: Some(Owing {
                    what: "reload nginx".into(),
                    since: "2026-12-06T06:00:00Z".into(),
                    tries: 3,
                    last_error: Some("HTTP 503".into()),
                    next_try_in_ms: Some(1500),
                }),
                last_error: None,
            }],
            leader: Some("web-0.nginx.default.svc.cluster.local".into()),
            peers: vec!["web-0.nginx.default.svc.cluster.local".into()],
            ..Status::default()
        };
        let shown = text(&status);
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "NOT converged: something is pending (below)\n\
             \ntemplate nginx.conf.j2 -> /etc/nginx/nginx.conf\n  desired ca978112ca1b  installed ca978112ca1b (same)\n\
             \x20 action nginx: no_process: \\x1b[31mred\\x07\n\
             \x20 pending: reload nginx — pending since 2026-12-06T06:00:00Z, 3 failed tries, next try in 1.5 s; last error: HTTP 503\n\
             \nleader: web-0.nginx.default.svc.cluster.local\npeers (1):\n  web-0.nginx.default.svc.cluster.local\n"
        );
        assert_eq!(escape("a\nb\u{202e}"), "a\\nb\\u{202e}");
    }
}
