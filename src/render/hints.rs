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
            let best = undefined(expr, source, known)?;
            // A near name from vars may be the misspelt one (vars: lisen
            // while the template reads vars.listen): never tell the author
            // to copy it, say that one of the two is wrong.
            if expr.starts_with("vars.") {
                return Some(format!(
                    "; vars sets `{best}`, not `{expr}`: one of the two names is misspelt; fix that one (this template, or the key under vars: in peerplate.yaml)"
                ));
            }
            best
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

/// A better message for a syntax or lookup error than minijinja's own, with
/// the line it belongs to: `(line, message)`; `None` keeps minijinja's.
///
/// - `unknown statement endif` where an `{% endif %}` closes a `{% for %}`:
///   which block is open, where, and the tag it needs;
/// - `expected end of variable block` (or `of block`) where a `{{` (or
///   `{%`) is never closed: minijinja reads on into the next line and
///   reports there; the useful line is the one with the open delimiter;
/// - `missing argument`: which filter or function lacks it;
/// - `tried to include non-existing template`: how to declare a partial.
///
/// `line` is minijinja's line, `expression` the text its error points at.
pub fn rewrite(
    kind: ErrorKind,
    detail: &str,
    source: &str,
    line: Option<usize>,
    expression: &str,
) -> Option<(Option<usize>, String)> {
    if kind == ErrorKind::SyntaxError {
        if let Some(end) = detail.strip_prefix("unknown statement ") {
            let line = line?;
            return Some((Some(line), stray_end(source, line, end.trim())?));
        }
        for (expected, open, close, what) in [
            ("expected end of variable block", "{{", "}}", "expression"),
            ("expected end of block", "{%", "%}", "tag"),
        ] {
            if detail.contains(expected) {
                let at = unclosed_delimiter(source, line?, open, close)?;
                return Some((
                    Some(at),
                    format!("syntax error: the {open} on line {at} is never closed: add {close} at the end of the {what} (minijinja read on and stopped at: {detail})"),
                ));
            }
        }
        return None;
    }
    if kind == ErrorKind::MissingArgument {
        let text = line
            .and_then(|l| source.lines().nth(l.checked_sub(1)?))
            .unwrap_or_default();
        let mut called = called_name(expression).or_else(|| called_name(text))?;
        // minijinja points at `replace("a")` alone: a filter if the line
        // pipes into that name.
        if let Some(name) = called
            .strip_prefix("the function `")
            .and_then(|n| n.strip_suffix("()`"))
        {
            let compact: String = text.split_whitespace().collect();
            if compact.contains(&format!("|{name}(")) || compact.contains(&format!("|{name}")) {
                called = format!("the filter `{name}`");
            }
        }
        return Some((
            line,
            format!(
                "missing argument: {called} needs more arguments than given; {}",
                usage(&called)
            ),
        ));
    }
    if kind == ErrorKind::TemplateNotFound {
        let name = between(detail, "non-existing template '", "'")
            .or_else(|| between(detail, "template '", "'"))?;
        return Some((
            line,
            format!(
                "template not found: {name} is not declared; a file that is only included or imported is a partial: list it under templates: with no destination (templates: [{{source: {name}}}]), as a path relative to peerplate.yaml",
            ),
        ));
    }
    None
}

/// For `{% endif %}` (`end`) on `line` with another block open: which one,
/// where, and what closes it; with none open, that it closes nothing.
fn stray_end(source: &str, line: usize, end: &str) -> Option<String> {
    let opener = BLOCKS
        .iter()
        .find(|(_, e)| *e == end)
        .map(|(start, _)| *start)
        .or_else(|| (end == "endset").then_some("set"))?;
    let word = |tag: &str| {
        tag.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let before: String = source
        .lines()
        .take(line.saturating_sub(1))
        .collect::<Vec<_>>()
        .join("\n");
    let open = unclosed_blocks(&before);
    Some(match open.first() {
        Some((at, tag, needs)) => format!(
            "syntax error: {{% {end} %}} on line {line} closes a {{% {opener} %}}, but the block open here is the {{% {} %}} of line {at}, which needs {{% {needs} %}}; write {{% {needs} %}} in its place (or open the {{% {opener} ... %}} it was meant to close)",
            word(tag)
        ),
        None => format!(
            "syntax error: {{% {end} %}} on line {line} closes no block: no {{% {opener} %}} is open there; remove it, or add the {{% {opener} ... %}} it closes"
        ),
    })
}

/// The last line at or before `line` whose last `open` has no `close` after
/// it on that line.
fn unclosed_delimiter(source: &str, line: usize, open: &str, close: &str) -> Option<usize> {
    source
        .lines()
        .enumerate()
        .take(line)
        .filter(|(_, text)| {
            text.rfind(open)
                .is_some_and(|at| !text[at + open.len()..].contains(close))
        })
        .map(|(i, _)| i + 1)
        .last()
}

/// The filter or function an expression calls last: `replace` in
/// `"a" | replace("a")`, `range` in `range()`.
fn called_name(expression: &str) -> Option<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(at) = expression.rfind('|') {
        let name = ident(expression[at + 1..].trim_start());
        if !name.is_empty() {
            return Some(format!("the filter `{name}`"));
        }
    }
    let open = expression.find('(')?;
    let head = expression[..open].trim_end();
    let start = head
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &head[start..];
    (!name.is_empty()).then(|| format!("the function `{name}()`"))
}

/// How the common filters and functions are called.
fn usage(called: &str) -> String {
    let name = called
        .split('`')
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches("()");
    let example = match name {
        "replace" => "replace(\"old\", \"new\")",
        "indent" => "indent(4)",
        "split" => "split(\",\")",
        "default" | "d" => "default(80)",
        "format" => "\"%s:%d\" | format(host, port)",
        "attr" => "attr(\"name\")",
        "batch" => "batch(3)",
        "slice" => "slice(3)",
        "selectattr" | "rejectattr" => "selectattr(\"ready\")",
        "map" => "map(attribute=\"fqdn\")",
        "env" => "env(\"NAME\", \"default\")",
        "file" => "file(\"/path/to/file\")",
        "range" => "range(3)",
        _ => return "see its arguments in the minijinja documentation (the filters and functions it lists)".into(),
    };
    format!("call it like {example}")
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
    fn rewrites_name_the_line_and_the_fix() {
        let endif = rewrite(
            ErrorKind::SyntaxError,
            "unknown statement endif",
            "{% for p in peers %}\n{{ p }}\n{% endif %}\n",
            Some(3),
            "",
        )
        .unwrap();
        assert_eq!(endif.0, Some(3));
        assert!(
            endif
                .1
                .contains("the {% for %} of line 1, which needs {% endfor %}"),
            "{}",
            endif.1
        );
        let open = rewrite(
            ErrorKind::SyntaxError,
            "unexpected identifier, expected end of variable block",
            "a\nlisten {{ vars.listen\nb\n",
            Some(3),
            "",
        )
        .unwrap();
        assert_eq!(open.0, Some(2));
        assert_eq!(
            called_name("\"a\" | replace(\"a\")").as_deref(),
            Some("the filter `replace`")
        );
        assert_eq!(
            called_name("range()").as_deref(),
            Some("the function `range()`")
        );
    }

    #[test]
    fn finds_bound_names_and_loop_sources() {
        let source = "{% for p in peers if p.ready %}{% set n = 1 %}{% macro up(x) %}{% endmacro %}{% endfor %}";
        assert_eq!(bound_names(source), ["p", "n", "up"]);
        assert_eq!(loop_source(source, "p").as_deref(), Some("peers"));
    }
}
