//! The log: text for a person, or one JSON object a line for a pipeline
//! (`--log-format json`, `PEERPLATE_LOG_FORMAT=json`).
//!
//! # JSON shape
//!
//! `{"timestamp": "...", "level": "INFO", "message": "...", <fields>}`: the
//! message is a stable text with no values in it; every value is a field.
//! Numbers and booleans are JSON numbers and booleans; a duration is a
//! number with its unit in the field name (`elapsed_ms`, see [`ms`]); a
//! list is a JSON array.
//!
//! `tracing` hands a subscriber lists only as text (`valuable` support
//! needs `--cfg tracing_unstable`, which every build would have to carry),
//! so the JSON format here is a small [`FormatEvent`] of its own: a field
//! whose text is a JSON array or object (what [`list`] and [`json`] record)
//! is written as that JSON value, anything else as a string. Fields recorded
//! as `&str` are always strings.
//!
//! # Text shape
//!
//! tracing-subscriber's full format (`TIME LEVEL message key=value ...`),
//! with every message and field value escaped by [`escape`]: values come
//! from outside (DNS names, peers' `/leader` answers, an app's output), and
//! a newline, an ANSI escape or a bidi control in one must not forge or hide
//! a log line. The JSON format escapes through JSON itself.
//!
//! The layer below every other: it imports nothing from the crate.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether the log is JSON: lines printed outside `tracing` (the
/// `peer-finder` drop-in's, an error before exit) follow it.
pub fn json_enabled() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// `PEERPLATE_LOG_FORMAT=json` (any case), for the drop-in, which takes Go
/// flags only; the other commands read it through clap.
pub fn json_from_env() -> bool {
    std::env::var("PEERPLATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Installs the global subscriber on stderr.
pub fn init(json: bool, level: LevelFilter) {
    JSON.store(json, Ordering::Relaxed);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        // A closed stderr (a log shipper gone) must not kill the sidecar:
        // tracing would report the failed write with eprintln!, which panics.
        .log_internal_errors(false);
    if json {
        builder.event_format(JsonFormat).init();
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(text_field).delimited(" "))
            .init();
    }
}

/// The longest text one field of a log line carries, in bytes: 16 KiB. A
/// longer value (a 1 MB "host name" from a peers file) keeps its first
/// 16 KiB and says how much was cut, so no input makes a log line of
/// megabytes.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;

/// `text` cut to [`MAX_FIELD_BYTES`] at a character boundary, with
/// `... [N bytes cut]` after it when anything was cut.
pub fn capped(text: String) -> String {
    if text.len() <= MAX_FIELD_BYTES {
        return text;
    }
    let mut end = MAX_FIELD_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} bytes cut]", &text[..end], text.len() - end)
}

/// One field of a text log line, its value [`escape`]d: the message bare,
/// any other `name=value`.
fn text_field(out: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let text = capped(format!("{value:?}"));
    if field.name() == "message" {
        out.write_str(&escape(&text))
    } else {
        write!(out, "{}={}", field.name(), escape(&text))
    }
}

/// Whether `c` is written as an escape in text logs: every control
/// character (C0, DEL, C1), the line and paragraph separators U+2028 and
/// U+2029, and the bidi controls (U+061C, U+200E, U+200F, U+202A..U+202E,
/// U+2066..U+2069; Unicode TR9), which reorder what a terminal shows.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character [`must_escape`] says written as an escape:
/// `\n`, `\r`, `\t`, `\x1b` (ASCII and C1 as `\xNN`), `\u{2028}`; the rest
/// as is. A text with nothing to escape is returned unchanged (borrowed).
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) && u32::from(c) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)))
            }
            c if must_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A duration in milliseconds, to the microsecond, for `*_ms` fields.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A list field: written as a JSON array in both formats
/// (`peers=["web-0","web-1"]` in text).
pub fn list<I, T>(items: I) -> Json
where
    I: IntoIterator<Item = T>,
    T: serde::Serialize,
{
    json(&items.into_iter().collect::<Vec<_>>())
}

/// Any serializable value as a field written as JSON.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Json {
    Json(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// A value's JSON text; record it with `?` or `%`.
#[derive(Clone, PartialEq, Eq)]
pub struct Json(String);

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes one JSON line on stderr outside `tracing` (its shape is the
/// subscriber's): for the drop-in's own lines and errors before exit.
pub fn json_line(level: Level, message: &str, fields: &[(&str, Value)]) {
    let mut line = String::new();
    let _ = write_line(
        &mut line,
        level,
        message,
        fields.iter().map(|(k, v)| (*k, v)),
    );
    line.push('\n');
    // A closed stderr is no reason to panic.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn write_line<'a>(
    out: &mut String,
    level: Level,
    message: &str,
    fields: impl Iterator<Item = (&'a str, &'a Value)>,
) -> fmt::Result {
    let mut stamp = String::new();
    SystemTime.format_time(&mut Writer::new(&mut stamp))?;
    let str = |s: &str| Value::String(s.to_owned()).to_string();
    out.push_str(&format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{}",
        str(&stamp),
        str(level.as_str()),
        str(message)
    ));
    for (name, value) in fields {
        out.push_str(&format!(",{}:{}", str(name), value));
    }
    out.push('}');
    Ok(())
}

/// The JSON event format (see the module's documentation).
pub struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = String::new();
        write_line(
            &mut line,
            *event.metadata().level(),
            &fields.message,
            fields.values.iter().map(|(k, v)| (*k, v)),
        )?;
        writeln!(writer, "{line}")
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let value = match value {
            Value::String(s) => Value::String(capped(s)),
            other => other,
        };
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.values.push((field.name(), value));
        }
    }
}

/// A field's text as JSON: an array or object when it is one, else a string.
pub fn parse_field(text: String) -> Value {
    if text.starts_with('[') || text.starts_with('{') {
        if let Ok(value @ (Value::Array(_) | Value::Object(_))) = serde_json::from_str(&text) {
            return value;
        }
    }
    Value::String(text)
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.put(field, Value::String(text));
        } else {
            self.put(field, parse_field(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_arrays_and_text_is_a_string() {
        assert_eq!(
            parse_field(list(["a", "b"]).to_string()),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(
            parse_field("[not json".into()),
            Value::String("[not json".into())
        );
        assert_eq!(parse_field("12".into()), Value::String("12".into()));
    }

    #[test]
    fn long_values_are_capped_at_a_character_boundary() {
        assert_eq!(capped("short".into()), "short");
        let long = format!("é{}", "b".repeat(MAX_FIELD_BYTES + 10));
        let cut = capped(long.clone());
        assert!(
            cut.ends_with("... [12 bytes cut]"),
            "{}",
            &cut[cut.len() - 30..]
        );
        assert!(long.starts_with(&cut[..MAX_FIELD_BYTES - 1]));
    }

    #[test]
    fn controls_separators_and_bidi_are_escaped() {
        assert_eq!(escape("plain text ünï"), "plain text ünï");
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31m\u{7f}\u{85}"),
            "a\\nb\\r\\tc\\x1b[31m\\x7f\\x85"
        );
        assert_eq!(
            escape("x\u{2028}y\u{2029}\u{202e}z\u{2066}"),
            "x\\u{2028}y\\u{2029}\\u{202e}z\\u{2066}"
        );
    }

    #[test]
    fn ms_keeps_microseconds() {
        assert_eq!(ms(Duration::from_micros(1347)), 1.347);
    }
}
