//! The reload actions: `reload:` (one action, named `default`) or
//! `reloads:` (named, in the order written), and which action each
//! template's output triggers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diagnostics::line_of;
use super::model::{Action, ActionKind, ConfigError, HttpAction, Reload, ReloadTarget};
use super::ranges::{within_named, Range};
use super::raw::{RawAction, RawReloadRef, RawVerify};

/// The most `http.retries` an action may have (each waits up to 2 s).
pub const MAX_RETRIES: u32 = 100;

/// The name the single `reload:` goes by (the `action` label).
pub const DEFAULT_ACTION: &str = "default";

/// Resolves `reload:` (one action, `default`) or `reloads:` (named, in the
/// order written); giving both is an error.
pub(super) fn actions(
    single: Option<RawAction>,
    named: Option<Vec<(String, RawAction)>>,
    at: &dyn Fn(PathBuf) -> PathBuf,
    fail: &dyn Fn(&[&str], String) -> ConfigError,
) -> Result<Vec<Action>, ConfigError> {
    let raw: Vec<(String, RawAction, Vec<&str>)> = match (single, named) {
        (Some(_), Some(_)) => {
            return Err(fail(
                &["reloads"],
                "give either reload: (one action) or reloads: (named actions), not both; move the reload: entry under reloads: with a name".into(),
            ))
        }
        (Some(r), None) => vec![(DEFAULT_ACTION.to_string(), r, vec!["reload"])],
        (None, Some(list)) => list.into_iter().map(|(n, r)| (n, r, vec!["reloads"])).collect(),
        (None, None) => Vec::new(),
    };
    let mut out = Vec::new();
    for (name, r, base) in raw {
        let mut keys = base.clone();
        if base[0] == "reloads" {
            keys.push(name.as_str());
        }
        let key = if base[0] == "reloads" {
            format!("reloads.{name}")
        } else {
            "reload".to_string()
        };
        let signal_target = r.process.is_some() || r.pid_file.is_some();
        let kinds = [signal_target, r.http.is_some(), r.exec.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(fail(
                &keys,
                format!(
                    "{key}: give exactly one of: a signal target (process, a process name like nginx; pid_file; or both, then the pid in the file is signalled only when its name matches), http (a URL to call, like {{url: \"http://127.0.0.1:9090/-/reload\"}}) or exec (a command, like \"/usr/local/bin/app reload\")"
                ),
            ));
        }
        let misplaced = |what: &str| fail(&keys, format!("{key}: {what}"));
        let in_range = |sub: &[&str], value: Duration, range: Range| {
            within_named(fail, &[keys.as_slice(), sub].concat(), value, range)
        };
        in_range(&["min_interval"], r.min_interval, Range::MIN_INTERVAL)?;
        let kind = if signal_target {
            if r.timeout.is_some() {
                return Err(misplaced("timeout is for exec; a signal action waits verify_timeout (with verify: children)"));
            }
            let target = match (r.process, r.pid_file) {
                (Some(name), None) => ReloadTarget::Process(name),
                (process, Some(file)) => ReloadTarget::PidFile {
                    path: at(file),
                    process,
                },
                (None, None) => unreachable!("a signal target was checked above"),
            };
            let verify = match (r.verify, r.verify_timeout) {
                (Some(RawVerify::Children), t) => {
                    let t = t.unwrap_or(Duration::from_secs(5));
                    if t.is_zero() {
                        return Err(misplaced("verify_timeout must be more than 0s, like 5s"));
                    }
                    in_range(&["verify_timeout"], t, Range::VERIFY_TIMEOUT)?;
                    Some(t)
                }
                (None, Some(_)) => return Err(misplaced("verify_timeout needs verify: children")),
                (None, None) => None,
            };
            ActionKind::Signal {
                reload: Reload {
                    signal: r.signal.unwrap_or(nix::sys::signal::Signal::SIGHUP),
                    target,
                    min_age: r.min_age.unwrap_or(Duration::from_secs(2)),
                    catch_wait: r.catch_wait.unwrap_or(Duration::from_secs(30)),
                },
                verify,
            }
        } else {
            if r.signal.is_some()
                || r.verify.is_some()
                || r.verify_timeout.is_some()
                || r.min_age.is_some()
                || r.catch_wait.is_some()
            {
                return Err(misplaced("signal, verify, verify_timeout, min_age and catch_wait are for a signal action (process or pid_file); http and exec are verified by their answer"));
            }
            if let Some(http) = r.http {
                if r.timeout.is_some() {
                    return Err(misplaced(
                        "timeout goes under http: (http: {url: ..., timeout: 5s})",
                    ));
                }
                let url = http.url.trim().to_string();
                let scheme_ok = url.starts_with("http://")
                    || (cfg!(feature = "https") && url.starts_with("https://"));
                let parsed = url.parse::<hyper::Uri>();
                let host_ok = parsed
                    .as_ref()
                    .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
                if !scheme_ok || !host_ok {
                    let https = if url.starts_with("https://") && !cfg!(feature = "https") {
                        " (this build has no https: build with --features https)"
                    } else {
                        ""
                    };
                    return Err(fail(
                        &[keys.as_slice(), &["http", "url"]].concat(),
                        format!(
                            "{key}.http.url {url:?} must be an http:// URL with a host{https}, like \"http://127.0.0.1:9090/-/reload\""
                        ),
                    ));
                }
                let method = http.method.trim().to_ascii_uppercase();
                if hyper::Method::from_bytes(method.as_bytes()).is_err() || method.is_empty() {
                    return Err(fail(
                        &[keys.as_slice(), &["http", "method"]].concat(),
                        format!(
                            "{key}.http.method {:?} is not an HTTP method; write POST, PUT or GET",
                            http.method
                        ),
                    ));
                }
                if http.timeout.is_zero() {
                    return Err(fail(
                        &[keys.as_slice(), &["http", "timeout"]].concat(),
                        format!("{key}.http.timeout must be more than 0s, like 5s"),
                    ));
                }
                in_range(&["http", "timeout"], http.timeout, Range::HTTP_TIMEOUT)?;
                if http.retries > MAX_RETRIES {
                    return Err(fail(
                        &[keys.as_slice(), &["http", "retries"]].concat(),
                        format!(
                            "{key}.http.retries {} is out of range; give a number from 0 to {MAX_RETRIES}",
                            http.retries
                        ),
                    ));
                }
                ActionKind::Http(HttpAction {
                    url,
                    method,
                    timeout: http.timeout,
                    retries: http.retries,
                })
            } else {
                let command = r.exec.unwrap_or_default();
                let timeout = r.timeout.unwrap_or(Duration::from_secs(10));
                if timeout.is_zero() {
                    return Err(misplaced("timeout must be more than 0s, like 10s"));
                }
                in_range(&["timeout"], timeout, Range::EXEC_TIMEOUT)?;
                ActionKind::Exec { command, timeout }
            }
        };
        out.push(Action {
            name,
            kind,
            min_interval: r.min_interval,
        });
    }
    Ok(out)
}

/// A template's `reload:` as an index into the actions: `true` means the
/// only action (none when there is none), a name means that action.
pub(super) fn template_action(
    i: usize,
    given: &RawReloadRef,
    actions: &[Action],
    text: &str,
    path: &Path,
) -> Result<Option<usize>, ConfigError> {
    let names = || {
        actions
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fail = |value: &str, message: String| ConfigError {
        path: path.to_path_buf(),
        line: line_of_template_key(text, i, "reload", value)
            .or_else(|| line_of(text, &["templates"])),
        column: None,
        message,
    };
    match given {
        RawReloadRef::Flag(false) => Ok(None),
        RawReloadRef::Flag(true) => match actions.len() {
            0 | 1 => Ok((!actions.is_empty()).then_some(0)),
            _ => Err(fail(
                "true",
                format!(
                    "templates[{i}]: there are several reload actions ({}); say which one this output triggers, like reload: {}, or reload: false",
                    names(),
                    actions[0].name
                ),
            )),
        },
        RawReloadRef::Name(name) => match actions.iter().position(|a| a.name == *name) {
            Some(k) => Ok(Some(k)),
            None => Err(fail(
                name,
                format!(
                    "templates[{i}].reload: no action named {name:?}; {}",
                    if actions.is_empty() {
                        "there are none: define it under reloads:, or write reload: true or false".to_string()
                    } else {
                        format!("the actions are: {}", names())
                    }
                ),
            )),
        },
    }
}

/// The line of `key: value` in the `i`th entry of `templates:` (block or
/// flow style); `None` when it is not written there.
fn line_of_template_key(text: &str, i: usize, key: &str, value: &str) -> Option<usize> {
    let start = line_of(text, &["templates"])?;
    let mut entry = None;
    let mut count = 0;
    for (n, line) in text.lines().enumerate().skip(start) {
        let body = line.trim_start();
        if !line.starts_with(' ') && !line.starts_with('-') && !body.is_empty() && n >= start {
            break; // the next top-level key
        }
        if body.starts_with("- ") || body == "-" {
            if count == i {
                entry = Some(n);
            } else if entry.is_some() {
                break;
            }
            count += 1;
        }
        if entry.is_some() {
            let plain = format!("{key}: {value}");
            let quoted = format!("{key}: \"{value}\"");
            if body.contains(&plain) || body.contains(&quoted) {
                return Some(n + 1);
            }
        }
    }
    entry.map(|n| n + 1)
}
