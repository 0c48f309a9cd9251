//! What a template error should add so its fix is obvious: a "did you mean"
//! for an undefined name, attribute, filter, test or function, and for a
//! block that is never closed, the tag still open and the line it opened on.
//!
//! Everything here reads the error, the template's text and the render
//! context; nothing here renders.

use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};

use crate::config::closest;

/// minijinja's built-in filters (ours, `default`/`d`/`join`, among them);
/// a name is offered only when the environment really has it (`is filter`).
const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
];

/// minijinja's built-in tests; offered only when `is test` says so.
const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "int",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// `loop`'s attributes inside a `for`.
const LOOP_KEYS: &[&str] = &[
    "index",
    "index0",
    "revindex",
    "revindex0",
    "first",
    "last",
    "length",
    "cycle",
    "changed",
    "previtem",
    "nextitem",
    "depth",
    "depth0",
];

/// What a render knows that can name the fix: the environment (filters,
/// tests, functions), the context and the attributes of a value whose type
/// cannot be told from the error alone (a loop variable over peers).
pub struct Known<'a> {
    pub env: &'a Environment<'static>,
    pub context: Option<&'a Value>,
    /// The attributes offered for a value that cannot be evaluated here.
    pub fallback_keys: &'a [&'a str],
}

/// "; did you mean `p.fqdn`?" for an unknown name, attribute, filter, test
/// or function, when a known one is close; `None` otherwise.
pub fn did_you_mean(e: &minijinja::Error, known: &Known<'_>) -> Option<String> {
    let detail = e.detail()?;
    let source = e.template_source().unwrap_or_default();
    let best = match e.kind() {
        ErrorKind::UndefinedError => {
            let expr = between(detail, "`", "` is undefined")?;
            undefined(expr, source, known)?
        }
        ErrorKind::UnknownFilter => {
            let name = between(detail, "filter ", " is unknown")?;
            let names = existing(known.env, FILTERS, "filter");
            closest(name, names.iter().map(String::as_str))?.to_string()
        }
        ErrorKind::UnknownTest => {
            let name = between(detail, "test ", " is unknown")?;
            let names = existing(known.env, TESTS, "test");
            closest(name, names.iter().map(String::as_str))?.to_string()
        }
        ErrorKind::UnknownFunction => {
            let name = detail.strip_suffix(" is unknown")?;
            let names: Vec<&str> = known.env.globals().map(|(n, _)| n).collect();
            closest(name, names)?.to_string()
        }
        _ => return None,
    };
    Some(format!("; did you mean `{best}`?"))
}

/// The text between `start` and `end` in `text`.
fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let from = text.find(start)? + start.len();
    let to = from + text.get(from..)?.find(end)?;
    text.get(from..to)
}

/// The names of `list` that `env` really has, asked with `is filter` or
/// `is test`.
fn existing(env: &Environment<'static>, list: &[&str], kind: &str) -> Vec<String> {
    list.iter()
        .filter(|name| {
            env.compile_expression_owned(format!("{name:?} is {kind}"))
                .and_then(|e| e.eval(()))
                .is_ok_and(|v| v.is_true())
        })
        .map(|name| (*name).to_string())
        .collect()
}

/// The closest known expression to the undefined `expr` (`p.fdqn`,
/// `vars.lisen`, `nope`), as an expression (`p.fqdn`).
fn undefined(expr: &str, source: &str, known: &Known<'_>) -> Option<String> {
    match expr.rsplit_once('.') {
        Some((parent, attr)) => {
            let keys = attribute_keys(parent, source, known);
            let best = closest(attr, keys.iter().map(String::as_str))?;
            Some(format!("{parent}.{best}"))
        }
        None => {
            let mut names: Vec<String> = known.env.globals().map(|(n, _)| n.to_string()).collect();
            if let Some(context) = known.context {
                names.extend(keys_of(context));
            }
            names.extend(bound_names(source));
            names.push("loop".into());
            closest(expr, names.iter().map(String::as_str)).map(String::from)
        }
    }
}

/// The attributes of `parent`: evaluated in the context when it can be
/// (`pod`, `vars.tls`, `leader`), else the items of the `for` that binds it
/// (`for p in peers`), else the fallback keys.
fn attribute_keys(parent: &str, source: &str, known: &Known<'_>) -> Vec<String> {
    if parent == "loop" {
        return LOOP_KEYS.iter().map(|k| (*k).to_string()).collect();
    }
    let eval = |expr: &str| -> Option<Value> {
        let context = known.context?;
        let value = known
            .env
            .compile_expression_owned(expr.to_string())
            .ok()?
            .eval(context)
            .ok()?;
        (!value.is_undefined() && !value.is_none()).then_some(value)
    };
    if let Some(value) = eval(parent) {
        let keys = keys_of(&value);
        if !keys.is_empty() {
            return keys;
        }
    }
    if let Some(items) = loop_source(source, parent).and_then(|expr| eval(&expr)) {
        if let Some(first) = items.try_iter().ok().and_then(|mut i| i.next()) {
            let keys = keys_of(&first);
            if !keys.is_empty() {
                return keys;
            }
        }
    }
    known
        .fallback_keys
        .iter()
        .map(|k| (*k).to_string())
        .collect()
}

/// The keys of a map (or a map-like object), none for anything else.
fn keys_of(value: &Value) -> Vec<String> {
    if value.kind() != minijinja::value::ValueKind::Map {
        return Vec::new();
    }
    value
        .try_iter()
        .map(|keys| keys.filter_map(|k| k.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The block tags of `source`, in order: (line, tag body) with the
/// delimiters and whitespace markers removed. Comments and `raw` blocks
/// are skipped.
pub fn block_tags(source: &str) -> Vec<(usize, String)> {
    let mut tags = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    let mut raw = false;
    loop {
        let open_tag = rest.find("{%");
        let open_comment = rest.find("{#");
        let (at, comment) = match (open_tag, open_comment) {
            (Some(t), Some(c)) if c < t => (c, true),
            (Some(t), _) => (t, false),
            (None, Some(c)) => (c, true),
            (None, None) => break,
        };
        let close = if comment { "#}" } else { "%}" };
        let Some(len) = rest[at + 2..].find(close) else {
            break;
        };
        let body = &rest[at + 2..at + 2 + len];
        let line = source[..offset + at].matches('\n').count() + 1;
        let advance = at + 2 + len + 2;
        offset += advance;
        rest = &rest[advance..];
        if comment {
            continue;
        }
        let body = body.trim_matches(['-', '+', '~']).trim().to_string();
        let word = body.split_whitespace().next().unwrap_or_default();
        if raw {
            if word == "endraw" {
                raw = false;
            }
            continue;
        }
        if word == "raw" {
            raw = true;
            continue;
        }
        tags.push((line, body));
    }
    tags
}

/// Tags that open a block and the tag that closes it.
const BLOCKS: &[(&str, &str)] = &[
    ("if", "endif"),
    ("for", "endfor"),
    ("macro", "endmacro"),
    ("call", "endcall"),
    ("filter", "endfilter"),
    ("with", "endwith"),
    ("block", "endblock"),
    ("autoescape", "endautoescape"),
];

/// For "unexpected end of input": the blocks still open at the end,
/// innermost first, as (its line, its tag as written, the closing tag it
/// needs).
pub fn unclosed_blocks(source: &str) -> Vec<(usize, String, &'static str)> {
    let mut open: Vec<(usize, String, &'static str)> = Vec::new();
    for (line, body) in block_tags(source) {
        let word = body.split_whitespace().next().unwrap_or_default();
        if let Some((_, end)) = BLOCKS.iter().find(|(start, _)| *start == word) {
            // `{% set x %}...{% endset %}` and `{% set x = 1 %}` differ; only
            // block-opening forms are pushed.
            open.push((line, body.clone(), end));
        } else if word == "set" && !body.contains('=') {
            open.push((line, body.clone(), "endset"));
        } else if BLOCKS.iter().any(|(_, end)| *end == word) || word == "endset" {
            open.pop();
        }
    }
    open.reverse();
    open
}

/// The names a template binds itself: `for` targets, `set`, macros,
/// imports.
fn bound_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let ident = |w: &str| {
        let w = w.trim_matches([',', '(', ')', ' ']);
        (!w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_')).then(|| w.to_string())
    };
    for (_, body) in block_tags(source) {
        let mut words = body.split_whitespace();
        match words.next() {
            Some("for") => names.extend(words.take_while(|w| *w != "in").filter_map(ident)),
            Some("set") => {
                let target = body["set".len()..].split('=').next().unwrap_or_default();
                names.extend(target.split(',').filter_map(ident));
            }
            Some("macro") => {
                let name = body["macro".len()..].split('(').next().unwrap_or_default();
                names.extend(ident(name));
            }
            Some("import") | Some("from") => {
                let after = body.rsplit(" as ").next();
                if body.contains(" as ") {
                    names.extend(after.and_then(ident));
                }
                if let Some(list) = body.split(" import ").nth(1) {
                    names.extend(
                        list.split(',')
                            .filter_map(|w| ident(w.split(" as ").last().unwrap_or(w))),
                    );
                }
            }
            _ => {}
        }
    }
    names
}

/// The iterable of the `for` that binds `name` (`peers` for `p` in
/// `{% for p in peers %}`).
fn loop_source(source: &str, name: &str) -> Option<String> {
    block_tags(source).into_iter().find_map(|(_, body)| {
        let rest = body.strip_prefix("for ")?;
        let (targets, iterable) = rest.split_once(" in ")?;
        targets.split(',').any(|t| t.trim() == name).then(|| {
            // `for p in peers if p.ready` and `... recursive`: the iterable only.
            let iterable = iterable.split(" if ").next().unwrap_or(iterable);
            iterable.trim_end_matches("recursive").trim().to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_open_block() {
        let source = "a\n{% if x %}\n{% for p in peers %}\n{{ p }}\n{% endfor %}\n{# {% if %} #}\n";
        assert_eq!(unclosed_blocks(source), [(2, "if x".to_string(), "endif")]);
        assert!(unclosed_blocks("{% set a = 1 %}{% if a %}{% endif %}").is_empty());
    }

    #[test]
    fn finds_bound_names_and_loop_sources() {
        let source = "{% for p in peers if p.ready %}{% set n = 1 %}{% macro up(x) %}{% endmacro %}{% endfor %}";
        assert_eq!(bound_names(source), ["p", "n", "up"]);
        assert_eq!(loop_source(source, "p").as_deref(), Some("peers"));
    }
}
