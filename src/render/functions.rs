//! The functions and filters templates call besides minijinja's own:
//! `env()`, `file()`, `fail()`, `default` and `join` that refuse to print
//! none, `b64decode` and `toyaml`; where a render runs ([`Mode`]) and what
//! `file()` read ([`Input`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use minijinja::value::{Kwargs, StringInput, Value};
use minijinja::{ErrorKind, State};

use crate::limits;

/// Where a [`Renderer`] renders: in the pod, or in `check`, outside it,
/// where `env()` without a default gives a placeholder and a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `run`, `once`, `render`: `env()` reads the environment.
    Pod,
    /// `check`: a missing variable is `<NAME>` and a warning.
    Check,
}

/// A file a render read with `file()`: its path (absolute, or as the
/// config's folder makes it) and its text, `None` when it could not be read
/// (it is watched all the same, so its arrival re-renders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    pub text: Option<String>,
}

/// `file()`'s state: where relative paths start, and what it read; and
/// the `env()` variables a render read (name, value).
#[derive(Debug, Default)]
pub(super) struct FileReads {
    pub(super) base: PathBuf,
    pub(super) read: Vec<Input>,
    pub(super) env: Vec<(String, String)>,
}

pub(super) fn printed_none() -> minijinja::Error {
    minijinja::Error::new(
        ErrorKind::InvalidOperation,
        "this prints none (a value that is not there), which would write \"none\" into the config; give a fallback with | default(...), like {{ peer.port | default(80) }}, or test it with {% if ... is not none %}",
    )
}

/// `default`, which also replaces none (Jinja's replaces only undefined):
/// `{{ peer.port | default(80) }}` is the fix for printing none. With a
/// second argument `true`, every false value is replaced, as in Jinja.
pub(super) fn default(
    value: &Value,
    other: Option<Value>,
    lax: Option<bool>,
) -> Result<Value, minijinja::Error> {
    let other = other.unwrap_or_else(|| Value::from(""));
    if value.is_undefined() || value.is_none() || (lax == Some(true) && !value.is_true()) {
        Ok(other)
    } else {
        Ok(value.clone())
    }
}

/// `join`, except that an item that is none is an error (as printing it is).
pub(super) fn join(
    state: &mut State,
    value: &Value,
    joiner: Option<StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, minijinja::Error> {
    if let Ok(items) = value.try_iter() {
        for item in items {
            let item = match attribute {
                Some(path) => path
                    .split('.')
                    .try_fold(item, |v, part| v.get_attr(part))
                    .unwrap_or_default(),
                None => item,
            };
            if item.is_none() {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "join over a list with none in it would write \"none\" into the config; drop it first with | reject(\"none\"), or give each item a fallback",
                ));
            }
        }
    }
    minijinja::filters::join(state, value, joiner, attribute, kwargs)
}

/// `fail(message)`: a template's own error, for what it cannot render
/// (`myid.j2` for a pod without an ordinal).
pub(super) fn fail_function(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `env()` in `check`: a variable that is not set where `check` runs is a
/// placeholder and a warning, not an error (it is set in the pod).
pub(super) fn env_placeholder(
    name: String,
    default: Option<String>,
) -> Result<String, minijinja::Error> {
    match (std::env::var(&name), default) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(default)) => Ok(default),
        (Err(_), None) => {
            tracing::warn!(variable = %name, placeholder = %format!("<{name}>"), "env() variable is not set here; rendering with the placeholder, as the pod must set it");
            Ok(format!("<{name}>"))
        }
    }
}

pub(super) fn env_function(
    name: String,
    default: Option<String>,
) -> Result<String, minijinja::Error> {
    match (std::env::var(&name), default) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(default)) => Ok(default),
        (Err(_), None) => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("environment variable {name} is not set; set it, or give a default: env(\"{name}\", \"...\")"),
        )),
    }
}

/// `file(PATH)`: the file's text; relative to the config's folder. A file
/// that cannot be read is an error naming the path.
pub(super) fn file_function(
    reads: &Mutex<FileReads>,
    path: &str,
    mode: Mode,
) -> Result<String, minijinja::Error> {
    let mut reads = reads
        .lock()
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "file(): state lost"))?;
    let given = Path::new(path);
    let full = if given.is_relative() {
        reads.base.join(given)
    } else {
        given.to_path_buf()
    };
    let read = limits::read_regular(&full, limits::TEMPLATE_MAX_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text (use a text key, or base64 it in the Secret and b64decode it here)".to_string())
    });
    if !reads.read.iter().any(|i| i.path == full) {
        reads.read.push(Input {
            path: full.clone(),
            text: read.as_ref().ok().cloned(),
        });
    }
    if mode == Mode::Check {
        if let Err(why) = &read {
            // Outside the pod the Secret is not mounted: a placeholder.
            tracing::warn!(path = %full.display(), file = %path, error = %why, placeholder = %format!("<file {path}>"), "file() input cannot be read here; `check` renders the placeholder in its place");
            return Ok(format!("<file {path}>"));
        }
    }
    read.map_err(|why| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("file({path:?}): cannot read {}: {why}", full.display()),
        )
    })
}

pub(super) fn b64decode(text: String) -> Result<String, minijinja::Error> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("b64decode: not base64 ({e})"),
            )
        })?;
    String::from_utf8(bytes).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "b64decode: the decoded bytes are not UTF-8 text",
        )
    })
}

pub(super) fn toyaml(value: Value) -> Result<String, minijinja::Error> {
    serde_yaml::to_string(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("toyaml: {e}")))
}
