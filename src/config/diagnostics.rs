//! Turning what went wrong into a message that names the line and the fix:
//! serde_yaml's errors with the location first and a "did you mean" for a
//! misspelt key, and [`line_of`] for errors about keys that parsed fine but
//! do not fit together.

use std::path::Path;

use super::model::ConfigError;

/// Turns a serde_yaml error into one that names the line, and suggests the
/// right key for a misspelt one.
pub(super) fn yaml_error(e: serde_yaml::Error, path: &Path) -> ConfigError {
    let location = e.location();
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; we print the location first.
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    if let Some(hint) = did_you_mean(&message) {
        message.push_str(&hint);
    }
    ConfigError {
        path: path.to_path_buf(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}

/// For "unknown field `destinaton`, expected one of `source`, `destination`",
/// suggests the closest expected key.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .min()?;
    (best.0 <= 2.max(unknown.len() / 3) && best.0 < unknown.len())
        .then(|| format!("; did you mean `{}`?", best.1))
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
        let (line, indent) = text.lines().enumerate().skip(start).find_map(|(n, line)| {
            let body = line.trim_start_matches([' ', '-']);
            let indent = line.len() - body.len();
            let matches = body.strip_prefix(key).is_some_and(|r| r.starts_with(':'));
            (matches && indent >= min_indent).then_some((n, indent))
        })?;
        found = Some(line + 1);
        start = line + 1;
        min_indent = indent + 1;
    }
    found
}
