//! A drop-in for Kubernetes' `peer-finder` (kubernetes/contrib), built on
//! peerplate's DNS poller and hooks.
//!
//! Same flags (`-on-start`, `-on-change`, `-service`, `-ns`, `-domain`, each as
//! `-flag=value` or `-flag value`, one or two dashes, like Go's `flag`), same
//! messages on stderr in Go's log format, same exit codes, scripts run through
//! `bash -c` as the original does (`sh -c` in an image without bash) with the
//! peers on stdin. Deliberate differences, each fixing a
//! known problem of the original: peers in ordinal order (web-2 before web-10)
//! with a trailing newline, and "Have not found myself" logged once, not
//! every second.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Dns, ResolvConf};
use crate::peers::dns::{LookupFailure, Poller};
use crate::peers::PeerSet;

/// The shell the original runs scripts with (`exec.Command("bash", "-c",
/// script)` in kubernetes/contrib's peer-finder.go), where it is on `path`
/// (a `PATH`-style list); else `sh`, which every image with a shell has.
pub fn script_shell(path: Option<&std::ffi::OsStr>) -> &'static str {
    use std::os::unix::fs::PermissionsExt;
    let has_bash = path.is_some_and(|path| {
        std::env::split_paths(path).any(|dir| {
            std::fs::metadata(dir.join("bash"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if has_bash {
        "bash"
    } else {
        "sh"
    }
}

/// The original polls every second.
const POLL_PERIOD: Duration = Duration::from_secs(1);

/// The drop-in's usage text, as the Go peer-finder prints it.
pub const USAGE: &str = "Usage of peer-finder:
  -domain string
    \tThe Cluster Domain which is used by the Cluster, if not set tries to determine it from /etc/resolv.conf file.
  -ns string
    \tThe namespace this pod is running in. If unspecified, the POD_NAMESPACE env var is used.
  -on-change string
    \tScript to run on change, must accept a new line separated list of peers via stdin.
  -on-start string
    \tScript to run on start, must accept a new line separated list of peers via stdin.
  -service string
    \tGoverning service responsible for the DNS records of the domain this pod is in.";

/// The parsed flags.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub on_start: String,
    pub on_change: String,
    pub service: String,
    pub ns: String,
    pub domain: String,
}

/// Parses Go-`flag`-style arguments. `Err((message, code))` is what to print
/// and the exit code (2 for a bad flag, 0 for -h).
pub fn parse_flags(args: &[String]) -> Result<Flags, (String, i32)> {
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break; // Go's flag stops at the first non-flag argument.
        }
        let body = arg.trim_start_matches('-');
        if arg.starts_with("---") || body.is_empty() {
            return Err((format!("bad flag syntax: {arg}\n{USAGE}"), 2));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if matches!(name, "h" | "help") {
            return Err((USAGE.to_string(), 0));
        }
        let slot = match name {
            "on-start" => &mut flags.on_start,
            "on-change" => &mut flags.on_change,
            "service" => &mut flags.service,
            "ns" => &mut flags.ns,
            "domain" => &mut flags.domain,
            _ => {
                return Err((
                    format!("flag provided but not defined: -{name}\n{USAGE}"),
                    2,
                ))
            }
        };
        *slot = match inline {
            Some(v) => v,
            None if i < args.len() => {
                i += 1;
                args[i - 1].clone()
            }
            None => return Err((format!("flag needs an argument: -{name}\n{USAGE}"), 2)),
        };
    }
    Ok(flags)
}

/// Logs like Go's `log.Printf`: `2009/11/10 23:00:00 message` on stderr
/// (UTC); in JSON mode (`PEERPLATE_LOG_FORMAT=json`, `--log-format json`)
/// one JSON line with a stable `message` and the values as `fields`.
fn log(go: &str, message: &str, fields: &[(&str, Value)]) {
    if crate::log::json_enabled() {
        crate::log::json_line(tracing::Level::INFO, message, fields);
        return;
    }
    let message = go;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // "2026-11-25T13:40:00Z" -> "2026/11/25 13:40:00"
    let stamp = stamp
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
        .replace('-', "/");
    eprintln!("{stamp} {message}");
}

/// Go prints a string slice as `[a b c]`.
fn go_list(peers: &PeerSet) -> String {
    format!("[{}]", peers.names().join(" "))
}

/// Runs peer-finder with `args` (without the program name) and returns the
/// exit code.
pub async fn main(args: &[String], shutdown: CancellationToken) -> i32 {
    let flags = match parse_flags(args) {
        Ok(flags) => flags,
        Err((message, code)) => {
            if crate::log::json_enabled() {
                let first = message.lines().next().unwrap_or_default();
                crate::log::json_line(
                    tracing::Level::ERROR,
                    "invalid flags",
                    &[("error", first.into()), ("exit_code", code.into())],
                );
            } else {
                eprintln!("{message}");
            }
            return code;
        }
    };
    let ns = if flags.ns.is_empty() {
        std::env::var("POD_NAMESPACE").unwrap_or_default()
    } else {
        flags.ns.clone()
    };
    log("Peer finder enter", "Peer finder enter", &[]);
    if flags.service.is_empty()
        || ns.is_empty()
        || (flags.on_change.is_empty() && flags.on_start.is_empty())
    {
        let text = "Incomplete args, require -on-change and/or -on-start, -service and -ns or an env var for POD_NAMESPACE.";
        log(text, text, &[("exit_code", 1.into())]);
        return 1;
    }
    let resolv = ResolvConf::load();
    let domain = if flags.domain.is_empty() {
        resolv
            .cluster_domain()
            .unwrap_or_else(|| "cluster.local".into())
    } else {
        flags.domain.trim_matches('.').to_string()
    };
    let query = format!("{}.{ns}.svc.{domain}", flags.service);
    let hostname = crate::config::default_hostname().unwrap_or_default();
    let my_name = format!("{hostname}.{query}");

    let dns = Dns {
        service: Some(flags.service.clone()),
        soa_query: domain.clone(),
        cluster_domain: domain,
        query: query.clone(),
        nameservers: resolv.nameservers.clone(),
        interval: POLL_PERIOD,
        refresh: crate::peers::dns::DEFAULT_REFRESH,
        addresses: false,
        ready_query: None,
        any_target: false,
        port_name: None,
    };
    let mut poller = match Poller::new(&dns, &resolv.nameservers) {
        Ok(p) => p,
        Err(e) => {
            log(
                &e.to_string(),
                "cannot start the DNS client",
                &[("error", e.to_string().into()), ("exit_code", 1.into())],
            );
            return 1;
        }
    };

    let mut script = flags.on_start.clone();
    if script.is_empty() {
        script = flags.on_change.clone();
        log(
            &format!("No on-start supplied, on-change {script} will be applied on start."),
            "No on-start supplied, on-change will be applied on start.",
            &[("script", script.as_str().into())],
        );
    }
    let mut peers = PeerSet::default();
    let mut latest = PeerSet::default();
    let mut told_waiting = false;
    while !script.is_empty() {
        let polled = match poller.poll_on_thread().await {
            Ok((back, polled)) => {
                poller = back;
                polled
            }
            Err(e) => {
                log(
                    &format!("lookup {query}: {e}"),
                    "lookup failed",
                    &[
                        ("query", query.as_str().into()),
                        ("error", e.to_string().into()),
                        ("exit_code", 1.into()),
                    ],
                );
                return 1;
            }
        };
        match polled {
            Err(LookupFailure(reason)) => log(
                &format!("lookup {query}: {reason}"),
                "lookup failed",
                &[
                    ("query", query.as_str().into()),
                    ("error", reason.to_string().into()),
                ],
            ),
            Ok(answer) => {
                if let Some(set) = answer {
                    latest = set;
                }
                let found = latest.iter().any(|p| p.fqdn == my_name);
                if !found && !told_waiting {
                    log(
                        &format!(
                            "Have not found myself in list yet.\nMy Hostname: {my_name}\nHosts in list: {}",
                            latest.names().join(", ")
                        ),
                        "Have not found myself in list yet.",
                        &[
                            ("hostname", my_name.as_str().into()),
                            ("peers", latest.names().into()),
                        ],
                    );
                    told_waiting = true;
                }
                if found && latest != peers {
                    log(
                        &format!(
                            "Peer list updated\nwas {}\nnow {}",
                            go_list(&peers),
                            go_list(&latest)
                        ),
                        "Peer list updated",
                        &[
                            ("was", peers.names().into()),
                            ("now", latest.names().into()),
                        ],
                    );
                    let hook = if peers.is_empty() && script == flags.on_start {
                        "on_start"
                    } else {
                        "on_change"
                    };
                    if let Err(e) = crate::hooks::run_in(
                        script_shell(std::env::var_os("PATH").as_deref()),
                        hook,
                        &script,
                        &latest,
                        Duration::from_secs(3600),
                    )
                    .await
                    {
                        log(
                            &format!("Failed to execute {script}: {e}"),
                            "Failed to execute",
                            &[
                                ("script", script.as_str().into()),
                                ("error", e.to_string().into()),
                                ("exit_code", 1.into()),
                            ],
                        );
                        return 1;
                    }
                    peers = latest.clone();
                    script = flags.on_change.clone();
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(POLL_PERIOD) => {}
        }
    }
    log("Peer finder exiting", "Peer finder exiting", &[]);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_flag_forms() {
        let f = parse_flags(&args(&[
            "-on-start=tee",
            "--service",
            "nginx",
            "-ns",
            "default",
            "--domain=k.local",
        ]))
        .unwrap();
        assert_eq!(f.on_start, "tee");
        assert_eq!(f.service, "nginx");
        assert_eq!(f.ns, "default");
        assert_eq!(f.domain, "k.local");
        let f = parse_flags(&args(&["-on-change", "cat > file", "stray", "-ns", "x"])).unwrap();
        assert_eq!(f.on_change, "cat > file");
        assert_eq!(f.ns, "", "parsing stops at the first non-flag argument");
        let (msg, code) = parse_flags(&args(&["-bogus=1"])).unwrap_err();
        assert_eq!(code, 2);
        assert!(msg.starts_with("flag provided but not defined: -bogus"));
        assert_eq!(parse_flags(&args(&["-service"])).unwrap_err().1, 2);
    }
}
