//! What compiles but is likely wrong, found without rendering: `vars` keys
//! that no template reads (a misspelt key falls through a `default`
//! silently), and templates whose meaning changed in this release
//! (CHANGELOG.md): a printed value that may be none, and a template that
//! handles an empty peer set that `peers.min` now holds back.

use std::collections::BTreeSet;

use crate::config::{closest, Config, PeerSource};

use crate::render::hints::block_tags;

/// Every `{{ ... }}` of `source`: (line, expression), whitespace markers
/// removed.
fn expressions(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    while let Some(at) = rest.find("{{") {
        let Some(len) = rest[at + 2..].find("}}") else {
            break;
        };
        let body = rest[at + 2..at + 2 + len]
            .trim_matches(['-', '+', '~'])
            .trim();
        let line = source[..offset + at].matches('\n').count() + 1;
        found.push((line, body.to_string()));
        let advance = at + 2 + len + 2;
        offset += advance;
        rest = &rest[advance..];
    }
    found
}

/// One finding: which template (or `vars` key) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `vars.lisen`, or a template's name with its line (`t.j2 line 3`).
    pub what: String,
    pub message: String,
}

/// `vars` keys that no template reads, each with a "did you mean" among
/// the names the templates do read. `referenced` is every template's
/// undeclared variables, dotted (`vars.tls.on`); none at all when a
/// template reads `vars` (or the map holding a key) as a whole.
pub fn unused_vars(vars: &serde_yaml::Mapping, referenced: &BTreeSet<String>) -> Vec<Finding> {
    let mut found = Vec::new();
    walk(vars, "vars", referenced, &mut found);
    found
}

fn walk(
    map: &serde_yaml::Mapping,
    path: &str,
    referenced: &BTreeSet<String>,
    out: &mut Vec<Finding>,
) {
    // Read as a whole (`vars|items`, `vars[key]`, `vars.tls|tojson`): every key may be used.
    if referenced.contains(path) {
        return;
    }
    let prefix = format!("{path}.");
    // The names read one level below `path`, for the suggestion.
    let siblings: BTreeSet<&str> = referenced
        .iter()
        .filter_map(|r| r.strip_prefix(&prefix))
        .map(|r| r.split('.').next().unwrap_or(r))
        .collect();
    for (key, value) in map {
        let Some(key) = key.as_str() else { continue };
        let full = format!("{prefix}{key}");
        let below = format!("{full}.");
        let read = referenced
            .iter()
            .any(|r| *r == full || r.starts_with(&below));
        if !read {
            // Either name may be the misspelt one: say both, suggest neither.
            let hint = closest(key, siblings.iter().copied().filter(|s| !map.contains_key(*s)))
                .map(|best| format!("; a template reads {prefix}{best}, which vars does not set: one of the two names is misspelt; fix that one (this key, or the template)"))
                .unwrap_or_else(|| {
                    "; remove it, or check its name where a template reads it (a misspelt name is silent behind a default)".into()
                });
            out.push(Finding {
                what: full,
                message: format!("set in vars, but no template reads it{hint}"),
            });
        } else if let serde_yaml::Value::Mapping(inner) = value {
            walk(inner, &full, referenced, out);
        }
    }
}

/// Templates whose meaning changed in this release, as far as the text
/// tells reliably (CHANGELOG.md): `templates` is (name, source).
///
/// - `{{ x.port }}` with no `default`, while the peers come from `file`
///   (no ports): printing none is now an error, not the word. Not for a
///   non-empty `static` list: `check` renders with it and its error says
///   the same, to a first-time author too, for whom nothing "changed".
/// - `{{ leader }}` (or an attribute of it) with no `default` and no `if
///   leader` in the template, while `peers.min` is 0: with no peers it is
///   none, now an error.
/// - A template that handles an empty peer set (`{% else %}` of a `for`
///   over `peers`, `not peers`, `peers|length == 0`) while the source is
///   `dns` or `file` and `peers.min` is not written: an empty set is now
///   held (the last output stays) instead of rendered.
pub fn changed_meaning(config: &Config, templates: &[(String, String)]) -> Vec<Finding> {
    let mut found = Vec::new();
    let portless = match &config.peers.source {
        PeerSource::Dns(_) => false,
        PeerSource::Static(names) => names.is_empty(),
        PeerSource::File(_) => true,
    };
    let holds_empty = matches!(
        config.peers.source,
        PeerSource::Dns(_) | PeerSource::File(_)
    ) && !config.peers.min_given;
    for (name, source) in templates {
        let guards_leader = block_tags(source)
            .iter()
            .any(|(_, tag)| tag.starts_with("if leader") || tag.contains("leader is not none"));
        for (line, expr) in expressions(source) {
            let unfiltered = !expr.contains('|') && !expr.contains(" if ");
            let is_port = expr.ends_with(".port")
                && expr[..expr.len() - ".port".len()]
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '[' || c == ']');
            // `{% if leader.port %}...{{ leader.port }}` cannot print none.
            let guarded = block_tags(source).iter().any(|(_, tag)| {
                tag.strip_prefix("if ")
                    .or_else(|| tag.strip_prefix("elif "))
                    .is_some_and(|cond| cond.split_whitespace().any(|w| w == expr))
            });
            if unfiltered && is_port && portless && !guarded {
                found.push(Finding {
                    what: format!("{name} line {line}"),
                    message: format!(
                        "{{{{ {expr} }}}} prints none for peers without a port (peers.static, peers.file, render --peer NAME): that is now an error, not the word none; write {{{{ {expr} | default(80) }}}} with your port"
                    ),
                });
            }
            let is_leader = expr == "leader" || expr.starts_with("leader.");
            if unfiltered && is_leader && !guards_leader && config.peers.min == 0 {
                found.push(Finding {
                    what: format!("{name} line {line}"),
                    message: format!(
                        "{{{{ {expr} }}}} is none while there are no peers: that is now an error, not the word none; test it first ({{% if leader %}}) or give a default"
                    ),
                });
            }
        }
        if holds_empty {
            if let Some(line) = handles_empty_peers(source) {
                found.push(Finding {
                    what: format!("{name} line {line}"),
                    message: "handles an empty peer set, but with a dns or file source peerplate now holds an empty set after the first render (peers.min defaults to 1) and keeps the last output; set peers.min: 0 to render it as before".into(),
                });
            }
        }
    }
    found
}

/// The line where a template handles an empty peer set, if it does.
fn handles_empty_peers(source: &str) -> Option<usize> {
    let compact = |s: &str| s.split_whitespace().collect::<String>();
    // The open blocks: (tag word, whether it is a `for` over `peers`).
    let mut open: Vec<(&str, bool)> = Vec::new();
    for (line, tag) in block_tags(source) {
        let word = tag.split_whitespace().next().unwrap_or_default();
        match word {
            "for" => {
                let over_peers = tag
                    .split_once(" in ")
                    .is_some_and(|(_, it)| it.trim().starts_with("peers") && !it.contains('.'));
                open.push(("for", over_peers));
            }
            "if" => open.push(("if", false)),
            "endfor" | "endif" => {
                open.pop();
            }
            "else" if open.last() == Some(&("for", true)) => return Some(line),
            _ => {}
        }
        let text = compact(&tag);
        if (word == "if" || word == "elif")
            && (text.contains("notpeers")
                || text.contains("peers|length==0")
                || text.contains("peers|length<1")
                || text.contains("peers|count==0"))
        {
            return Some(line);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_keys_and_suggestions() {
        let vars: serde_yaml::Mapping =
            serde_yaml::from_str("{lisen: 9090, tls: {on: true, cert: x}}").unwrap();
        let read: BTreeSet<String> = ["vars.listen", "vars.tls.on"]
            .into_iter()
            .map(String::from)
            .collect();
        let found = unused_vars(&vars, &read);
        let what: Vec<&str> = found.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(what, ["vars.lisen", "vars.tls.cert"]);
        assert!(
            found[0]
                .message
                .contains("a template reads vars.listen, which vars does not set"),
            "{}",
            found[0].message
        );
        assert!(!found[0].message.contains("did you mean"));
        let whole: BTreeSet<String> = ["vars".to_string()].into();
        assert!(unused_vars(&vars, &whole).is_empty());
    }

    #[test]
    fn empty_peer_handling() {
        assert_eq!(
            handles_empty_peers("{% for p in peers %}\nx\n{% else %}\nnone\n{% endfor %}\n"),
            Some(3)
        );
        assert_eq!(
            handles_empty_peers("{% if not peers %}x{% endif %}"),
            Some(1)
        );
        assert_eq!(
            handles_empty_peers(
                "{% for p in peers %}{% if p %}a{% else %}b{% endif %}{% endfor %}"
            ),
            None
        );
    }
}
