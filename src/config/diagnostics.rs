//! Turning what went wrong into a message that names the line and the fix:
//! serde_yaml's errors with the location first and a "did you mean" for a
//! misspelt key, and [`line_of`] for errors about keys that parsed fine but
//! do not fit together.

use std::path::Path;

use super::model::ConfigError;
use super::raw::DURATION_ERROR;

/// Turns a serde_yaml error into one that names the line, and suggests the
/// fix: the right key for a misspelt one, the right indentation for a key
/// that is there but misaligned, the key's own line for a bad duration, and
/// a hint for a tab or an unclosed quote. `text` is the file's text.
pub(super) fn yaml_error(e: serde_yaml::Error, path: &Path, text: &str) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; we print the location first.
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    let mut line = location.as_ref().map(|l| l.line());
    let mut column = location.as_ref().map(|l| l.column());
    if let Some(m) = misaligned(text) {
        if line.is_none_or(|l| m.line <= l + 1) {
            let error = ConfigError {
                path: path.to_path_buf(),
                line: Some(m.line),
                column: Some(m.column),
                message: format!(
                    "`{}` is there but at the wrong indentation: it starts in column {}, and `{}` on line {} (the key it belongs beside) in column {}; indent it like `{}` (the YAML parser says: {message})",
                    m.key, m.column, m.sibling, m.sibling_line, m.sibling_column, m.sibling
                ),
            };
            return error;
        }
    }
    if let Some(at) = message.find(DURATION_ERROR) {
        // serde_yaml points at the map that holds the key; find the key.
        let written = message[at + DURATION_ERROR.len()..]
            .split('"')
            .nth(1)
            .unwrap_or_default()
            .to_string();
        if let Some((n, key)) = line.and_then(|from| key_with_value(text, from, &written)) {
            let section = message[..at].trim_end_matches([':', ' ']).to_string();
            let rest = message[at..].to_string();
            message = if section.is_empty() {
                format!("{key}: {rest}")
            } else {
                format!("{section}.{key}: {rest}")
            };
            line = Some(n);
            column = text
                .lines()
                .nth(n - 1)
                .map(|l| l.len() - l.trim_start().len() + 1);
        }
    }
    message = plain_type_names(&message);
    if let Some(hint) = did_you_mean(&message) {
        message.push_str(&hint);
    }
    if let Some((n, hint)) = line.and_then(|l| syntax_hint(text, l)) {
        message.push_str(&hint);
        line = Some(n);
        column = None;
    }
    ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// serde names the Rust type it expected ("expected struct RawAction",
/// "untagged enum Size"): words a user never wrote. Each becomes what to
/// write instead.
fn plain_type_names(message: &str) -> String {
    /// What each internal type is, as the config file shows it.
    fn shape(name: &str) -> &'static str {
        match name {
            "RawConfig" => "a map of sections (peers:, templates:, reload:, ...)",
            "RawAction" => "an action: a map like {signal: HUP, process: nginx}",
            "RawPeers" => "a map with one source, like {dns: {service: nginx}}",
            "RawDns" => "a map like {service: nginx, interval: 1s}",
            "RawTemplate" => "a map like {source: app.conf.j2, destination: /conf/app.conf}",
            "RawReloadRef" => "true, false or the name of an action under reloads:",
            "RawHttpAction" => "a map like {url: \"http://127.0.0.1:9090/-/reload\"}",
            "RawLeader" => "a map like {policy: sticky}",
            "RawPolicy" => "one of ordinal, sticky, probe",
            "RawVerify" => "children",
            "Size" => "a size like 1MiB, 512KiB or a number of bytes",
            "Mode" => "an octal mode in quotes, like \"0644\"",
            "Sig" => "a signal name like HUP or a number",
            _ => "a map of keys",
        }
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = ["struct ", "untagged enum ", "enum "]
        .iter()
        .filter_map(|kind| rest.find(kind).map(|i| (i, kind.len())))
        .min()
    {
        let (i, len) = at;
        let after = &rest[i + len..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push_str(&rest[..i + len]);
            rest = after;
            continue;
        }
        let head = &rest[..i];
        // "data did not match any variant of untagged enum X" says nothing
        // a user can act on: say what fits instead.
        match head.strip_suffix("data did not match any variant of ") {
            Some(before) => {
                out.push_str(before);
                out.push_str("expected ");
            }
            None => out.push_str(head),
        }
        out.push_str(shape(name));
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// A key that is present but misaligned with its siblings.
#[derive(Debug, PartialEq, Eq)]
struct Misaligned {
    key: String,
    line: usize,
    column: usize,
    sibling: String,
    sibling_line: usize,
    sibling_column: usize,
}

/// One line of a block-style YAML file that holds a key: its key, the key's
/// column (0-based; after `- ` for a list item) and whether it has a value
/// on the line (else it opens a block).
fn key_line(line: &str) -> Option<(String, usize, bool)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let mut body = &line[indent..];
    let mut column = indent;
    while let Some(rest) = body.strip_prefix("- ") {
        let skipped = body.len() - rest.trim_start_matches(' ').len();
        column += skipped;
        body = &body[skipped..];
    }
    let (key, value) = body.split_once(':')?;
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !plain || !(value.is_empty() || value.starts_with(' ')) {
        return None;
    }
    let value = value.split(" #").next().unwrap_or_default().trim();
    Some((key.to_string(), column, !value.is_empty()))
}

/// The first key that is indented differently from every block it could
/// belong to: one or two spaces off is the usual slip, and YAML then reads
/// another structure (a missing field, or no mapping allowed here).
fn misaligned(text: &str) -> Option<Misaligned> {
    // Open blocks: (key column, the last key of that block, its line).
    let mut levels: Vec<(usize, String, usize)> = Vec::new();
    let mut opens = true;
    let mut block_scalar: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim_start();
        let indent = raw.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        if let Some(at) = block_scalar {
            if indent > at {
                continue;
            }
            block_scalar = None;
        }
        let Some((key, column, inline)) = key_line(raw) else {
            continue;
        };
        let value = raw
            .split_once(':')
            .map(|(_, v)| v.trim())
            .unwrap_or_default();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar = Some(indent);
        }
        if value.starts_with(['{', '[']) && !(value.ends_with('}') || value.ends_with(']')) {
            // A flow collection over several lines: not checked.
            return None;
        }
        let last = levels.last().map(|l| l.0);
        if opens && last.is_none_or(|c| column > c) {
            levels.push((column, key, n));
        } else {
            let mut popped = None;
            while levels.last().is_some_and(|l| l.0 > column) {
                popped = levels.pop();
            }
            match levels.last_mut() {
                Some(level) if level.0 == column => {
                    level.1 = key;
                    level.2 = n;
                }
                _ => {
                    // Too deep (under a key with a value), or between levels.
                    let (sibling_column, sibling, sibling_line) = popped
                        .or_else(|| levels.last().cloned())
                        .unwrap_or((0, String::new(), 0));
                    if sibling.is_empty() {
                        return None;
                    }
                    return Some(Misaligned {
                        key,
                        line: n,
                        column: column + 1,
                        sibling,
                        sibling_line,
                        sibling_column: sibling_column + 1,
                    });
                }
            }
        }
        opens = !inline;
    }
    None
}

/// The line (at or after `from`) of a key whose value is `written`, and the
/// key: where a bad duration really is.
fn key_with_value(text: &str, from: usize, written: &str) -> Option<(usize, String)> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, line)| {
            let (key, _, _) = key_line(line)?;
            let value = line.split_once(':')?.1.split(" #").next()?.trim();
            (value.trim_matches(['"', '\'']) == written).then(|| (i + 1, key))
        })
}

/// A hint for what YAML parsers word badly: a tab in the indentation, a
/// quote never closed. Looks at the lines up to `line` (where the parser
/// noticed), and names the line at fault.
fn syntax_hint(text: &str, line: usize) -> Option<(usize, String)> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    for (i, l) in lines.iter().enumerate() {
        let indent: String = l.chars().take_while(|c| c.is_whitespace()).collect();
        if indent.contains('\t') {
            return Some((
                i + 1,
                format!(
                    "; line {} is indented with a tab, and YAML allows only spaces: replace the tab with spaces",
                    i + 1
                ),
            ));
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let Some((_, value)) = l.split_once(": ") else {
            continue;
        };
        let value = value.trim();
        for quote in ['"', '\''] {
            if value.starts_with(quote) {
                let closed = value.len() > 1 && {
                    let inner = &value[1..];
                    let escaped = quote == '"';
                    let mut prev_backslash = false;
                    let mut found = false;
                    for c in inner.chars() {
                        if c == quote && !(escaped && prev_backslash) {
                            found = true;
                            break;
                        }
                        prev_backslash = c == '\\' && !prev_backslash;
                    }
                    found
                };
                if !closed {
                    return Some((
                        i + 1,
                        format!(
                            "; line {} opens a quote ({quote}) that is not closed on that line: close it, or YAML reads on to the end of the file",
                            i + 1
                        ),
                    ));
                }
            }
        }
    }
    None
}

/// For "unknown field `destinaton`, expected one of `source`, `destination`",
/// suggests the closest expected key.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let best = closest(unknown, expected.split('`').skip(1).step_by(2))?;
    Some(format!("; did you mean `{best}`?"))
}

/// The candidate closest to `word` by edit distance, when it is close
/// enough to be a misspelling (at most 2 edits, or a third of the word) and
/// is not `word` itself; ties go to the first.
pub fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let d = edit_distance(word, candidate);
        if d > 0 && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    let (d, candidate) = best?;
    let len = word.chars().count();
    (d <= 2.max(len / 3) && d < len).then_some(candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Finds the line of a nested key (`["peers", "dns"]`) in YAML text, by
/// indentation: good enough for messages about keys that parsed fine but
/// do not fit together.
pub fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let mut found = None;
    let mut min_indent = 0;
    let mut start = 0;
    for key in keys {
        let block = text.lines().enumerate().skip(start).find_map(|(n, line)| {
            let body = line.trim_start_matches([' ', '-']);
            let indent = line.len() - body.len();
            let matches = body.strip_prefix(key).is_some_and(|r| r.starts_with(':'));
            (matches && indent >= min_indent).then_some((n, indent))
        });
        let Some((line, indent)) = block else {
            // Flow style (`leader: {policy: sticky, grace: 0s}`): the key on
            // its parent's line, or on a line of the flow map after it.
            let parent = found?;
            let flow = text
                .lines()
                .enumerate()
                .skip(parent - 1)
                .take(20)
                .find_map(|(n, line)| {
                    let hit = line.match_indices(key).any(|(at, _)| {
                        let before = line[..at].chars().last();
                        let after = &line[at + key.len()..];
                        matches!(before, Some('{' | ',' | ' ')) && after.starts_with(':')
                    });
                    hit.then_some(n + 1)
                });
            return flow.or(Some(parent));
        };
        found = Some(line + 1);
        start = line + 1;
        min_indent = indent + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::plain_type_names;

    #[test]
    fn no_internal_type_name_reaches_the_user() {
        assert_eq!(
            plain_type_names("reload: invalid type: integer `5`, expected struct RawAction"),
            "reload: invalid type: integer `5`, expected an action: a map like {signal: HUP, process: nginx}"
        );
        assert_eq!(
            plain_type_names(
                "templates[0]: data did not match any variant of untagged enum RawReloadRef"
            ),
            "templates[0]: expected true, false or the name of an action under reloads:"
        );
        assert_eq!(plain_type_names("a struct of words"), "a struct of words");
    }
}
