//! Turning templates and a peer set into bytes.
//!
//! Templates are Jinja, compiled by minijinja with strict undefined (a typo
//! is an error, never an empty string), no auto-escaping (these are config
//! files, not HTML), `trim_blocks` on (a block tag's own newline is dropped,
//! as in Ansible) and the template's trailing newline kept. The context is
//! exactly the spec's: `peers`, `pod`, `leader`, `vars`, `nameservers` and
//! the `env()` function, plus `file(PATH)` (a mounted Secret or ConfigMap
//! key; every file a render read is reported as an [`Input`], so the loop
//! watches it, hides it from the log and installs the output 0600) and the
//! filters `b64encode`, `b64decode`, `sha256`, `tojson` (minijinja's) and
//! `toyaml`.
//!
//! A render is bounded: minijinja's fuel (`templates[].fuel`) charges every
//! instruction and every 64 bytes a template creates, checking sizes such as
//! `"x" * n`, `indent(n)` and `join` before it allocates, so no template can
//! loop forever or push the daemon past its memory limit; the output stops
//! at `templates[].max_size`. Printing `none` (`{{ }}` or `join`) is an
//! error, never the word `none` in a config. [`render_detached`] runs a
//! render on a thread of its own, which a shutdown simply abandons.
//!
//! Templates with no `destination` are partials: compiled under their
//! source path as written and, when no other template shares it, their file
//! name, for `{% include %}` and `{% import %}`; never rendered alone.
//! `lstrip_blocks` is set per template (`render.lstrip_blocks` the default).
//!
//! An error names the fix ([`hints`]: "did you mean", the block left open);
//! [`lint`] finds what compiles but is likely wrong (unused `vars`, a value
//! that may print none).
//!
//! The context is built in [`context()`], the functions and filters live in
//! `functions`, and minijinja's errors become a [`RenderError`] in `errors`.

mod context;
mod errors;
mod functions;
pub mod hints;
pub mod lint;

use std::path::Path;
use std::sync::{Arc, Mutex};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::config::{Config, Partial, Template};
use crate::limits;

pub use context::context;
use context::PEER_KEYS;
pub use errors::RenderError;
use errors::{convert, convert_with_fuel};
use functions::{
    b64decode, default, env_function, env_placeholder, fail_function, file_function, join,
    printed_none, toyaml, FileReads,
};
pub use functions::{Input, Mode};

/// One template of the renderer: its name and limits.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    fuel: u64,
    max_size: u64,
}

/// The compiled templates of a config, one slot per `templates` entry
/// (partials are compiled too, and have no slot).
pub struct Renderer {
    env: Environment<'static>,
    /// Per template: its name and limits, or why it failed to load.
    slots: Vec<Result<Slot, RenderError>>,
    /// What `file()` read during the current render (renders run one at a
    /// time).
    files: Arc<Mutex<FileReads>>,
    /// Partials that failed to load.
    partial_errors: Vec<RenderError>,
    /// Per template: the `env()` variables (name, value) its last render
    /// read, so their values are kept out of the log.
    env_reads: Mutex<Vec<Vec<(String, String)>>>,
}

/// The syntax every template shares, with its own `lstrip_blocks`.
fn syntax(lstrip_blocks: bool) -> Option<SyntaxConfig> {
    // The builder only fails on clashing custom delimiters; we set none.
    SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(lstrip_blocks)
        .keep_trailing_newline(true)
        .build()
        .ok()
}

/// Reads a template file as text, or says why it cannot be.
fn read_source(name: &str, source: &Path) -> Result<String, RenderError> {
    let bytes =
        limits::read_regular(source, limits::TEMPLATE_MAX_BYTES).map_err(|e| RenderError {
            template: name.to_string(),
            line: None,
            message: format!("cannot read {}: {e}", source.display()),
        })?;
    String::from_utf8(bytes).map_err(|_| RenderError {
        template: name.to_string(),
        line: None,
        message: format!("{} is not UTF-8 text", source.display()),
    })
}

impl Renderer {
    /// Reads and compiles every template and partial of `config`. A
    /// template that fails keeps its error in its slot (so the others still
    /// render); [`Renderer::errors`] lists them for callers that must stop
    /// instead.
    pub fn load(config: &Config) -> Renderer {
        Renderer::load_for(config, Mode::Pod)
    }

    /// [`Renderer::load`] for `mode`.
    pub fn load_for(config: &Config, mode: Mode) -> Renderer {
        let templates = &config.templates;
        let mut env = Environment::new();
        // minijinja turns its debug info on only under debug_assertions;
        // without it an error loses the names ("`nope` is undefined") the
        // hints need, so the shipped (release) build sets it explicitly.
        // Its Debug forms print variables' values: only the one-line
        // form ([`convert`]) is ever logged.
        env.set_debug(true);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_formatter(|out, state, value| {
            if value.is_none() {
                return Err(printed_none());
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_filter("join", join);
        env.add_filter("default", default);
        env.add_filter("d", default);
        env.add_function("fail", fail_function);
        let files = Arc::new(Mutex::new(FileReads::default()));
        let reads = Arc::clone(&files);
        env.add_function("env", move |name: String, default: Option<String>| {
            let value = match mode {
                Mode::Pod => env_function(name.clone(), default),
                Mode::Check => env_placeholder(name.clone(), default),
            }?;
            if let Ok(mut reads) = reads.lock() {
                if !reads.env.iter().any(|(n, _)| *n == name) {
                    reads.env.push((name, value.clone()));
                }
            }
            Ok::<String, minijinja::Error>(value)
        });
        let reads = Arc::clone(&files);
        env.add_function("file", move |path: String| {
            file_function(&reads, &path, mode)
        });
        env.add_filter("b64encode", |text: String| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(text)
        });
        env.add_filter("b64decode", b64decode);
        env.add_filter("sha256", |text: String| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(text.as_bytes());
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        env.add_filter("toyaml", toyaml);

        let names = display_names(templates);
        let add = |env: &mut Environment<'static>,
                   name: &str,
                   source: String,
                   lstrip: bool|
         -> Result<(), RenderError> {
            if env.get_template(name).is_ok() {
                return Ok(());
            }
            if let Some(syntax) = syntax(lstrip) {
                env.set_syntax(syntax);
            }
            env.add_template_owned(name.to_string(), source)
                .map_err(|e| convert(name, &e, None))
        };
        let slots: Vec<Result<Slot, RenderError>> = templates
            .iter()
            .zip(names)
            .map(|(t, name)| {
                let source = read_source(&name, &t.source)?;
                add(&mut env, &name, source, t.lstrip_blocks)?;
                Ok(Slot {
                    name,
                    fuel: t.fuel,
                    max_size: t.max_size,
                })
            })
            .collect();
        let mut partial_errors = Vec::new();
        for partial in &config.partials {
            for name in partial_names(partial, config) {
                let loaded = read_source(&name, &partial.source)
                    .and_then(|source| add(&mut env, &name, source, partial.lstrip_blocks));
                if let Err(e) = loaded {
                    partial_errors.push(e);
                    break;
                }
            }
        }
        let env_reads = Mutex::new(vec![Vec::new(); slots.len()]);
        Renderer {
            env,
            slots,
            files,
            partial_errors,
            env_reads,
        }
    }

    /// Relative `file()` paths start at `base` (the config's folder).
    pub fn with_base(self, base: &Path) -> Renderer {
        if let Ok(mut files) = self.files.lock() {
            files.base = base.to_path_buf();
        }
        self
    }

    /// What [`hints`] needs to name the fix of a render error.
    fn known<'a>(&'a self, context: Option<&'a Value>) -> hints::Known<'a> {
        hints::Known {
            env: &self.env,
            context,
            fallback_keys: PEER_KEYS,
        }
    }

    /// Every template that failed to load.
    pub fn errors(&self) -> Vec<&RenderError> {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().err())
            .chain(&self.partial_errors)
            .collect()
    }

    /// Every compiled template and partial: (name, source text).
    fn sources(&self) -> Vec<(String, String)> {
        self.env
            .templates()
            .map(|(name, t)| (name.to_string(), t.source().to_string()))
            .collect()
    }

    /// `vars` keys that no template or partial reads (see [`lint`]).
    pub fn unused_vars(&self, config: &Config) -> Vec<lint::Finding> {
        let referenced = self
            .env
            .templates()
            .flat_map(|(_, t)| t.undeclared_variables(true))
            .collect();
        lint::unused_vars(&config.vars, &referenced)
    }

    /// Templates whose meaning changed in this release (see [`lint`]).
    pub fn changed_meaning(&self, config: &Config) -> Vec<lint::Finding> {
        lint::changed_meaning(config, &self.sources())
    }

    /// The display name of the `i`th template.
    pub fn name(&self, i: usize) -> &str {
        match &self.slots[i] {
            Ok(slot) => &slot.name,
            Err(e) => &e.template,
        }
    }

    /// Renders the `i`th template with `context`, within its fuel and
    /// `max_size`.
    pub fn render(&self, i: usize, context: &Value) -> Result<String, RenderError> {
        self.render_with_inputs(i, context).0
    }

    /// Renders the `i`th template with `context`, and says which files it
    /// read with `file()` (also when the render failed, so a missing file
    /// is watched until it appears).
    pub fn render_with_inputs(
        &self,
        i: usize,
        context: &Value,
    ) -> (Result<String, RenderError>, Vec<Input>) {
        if let Ok(mut files) = self.files.lock() {
            files.read.clear();
            files.env.clear();
        }
        let result = self.render_bounded(i, context);
        let (inputs, env) = self
            .files
            .lock()
            .map(|mut f| (std::mem::take(&mut f.read), std::mem::take(&mut f.env)))
            .unwrap_or_default();
        if let Ok(mut reads) = self.env_reads.lock() {
            if let Some(slot) = reads.get_mut(i) {
                *slot = env;
            }
        }
        (result, inputs)
    }

    /// The `env()` variables (name, value) the last render of template `i`
    /// read: secrets as much as `file()` inputs.
    pub fn env_read(&self, i: usize) -> Vec<(String, String)> {
        self.env_reads
            .lock()
            .ok()
            .and_then(|r| r.get(i).cloned())
            .unwrap_or_default()
    }

    fn render_bounded(&self, i: usize, context: &Value) -> Result<String, RenderError> {
        let slot = self.slots[i].as_ref().map_err(Clone::clone)?;
        // Fuel is the environment's; a clone (shared templates) per render
        // gives each template its own budget.
        let mut env = self.env.clone();
        env.set_fuel(Some(slot.fuel));
        let name = slot.name.as_str();
        let template = env
            .get_template(name)
            .map_err(|e| convert(name, &e, None))?;
        let mut out = Capped {
            bytes: Vec::new(),
            max: usize::try_from(slot.max_size).unwrap_or(usize::MAX),
            over: false,
        };
        let rendered = template.render_captured_to(context, &mut out).map(drop);
        match rendered {
            Ok(()) => String::from_utf8(out.bytes).map_err(|_| RenderError {
                template: name.to_string(),
                line: None,
                message: "the output is not UTF-8".into(),
            }),
            Err(_) if out.over => Err(RenderError {
                template: name.to_string(),
                line: None,
                message: format!(
                    "the output is larger than max_size {} ({} bytes); a loop that runs too often, or raise templates[].max_size",
                    bytesize::ByteSize::b(slot.max_size).display().iec(),
                    slot.max_size
                ),
            }),
            Err(e) => Err(convert_with_fuel(
                name,
                &e,
                slot.fuel,
                &self.known(Some(context)),
            )),
        }
    }
}

/// Renders template `i` of `renderer` on a thread of its own, so the
/// runtime thread (the admin listener, signals, the other templates) never
/// waits for it. Dropping the future abandons the render: its thread runs
/// out its fuel and ends, and its output goes nowhere.
pub async fn render_detached(
    renderer: Arc<Renderer>,
    i: usize,
    context: Value,
) -> (Result<String, RenderError>, Vec<Input>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = renderer.name(i).to_string();
    let spawned = std::thread::Builder::new()
        .name("render".into())
        .spawn(move || {
            // The receiver is gone when the render was abandoned.
            let _ = tx.send(renderer.render_with_inputs(i, &context));
        });
    if let Err(e) = spawned {
        let failed = RenderError {
            template: name,
            line: None,
            message: format!("cannot start a render thread: {e}"),
        };
        return (Err(failed), Vec::new());
    }
    rx.await.unwrap_or_else(|_| {
        let failed = RenderError {
            template: name,
            line: None,
            message: "the render thread ended without a result".into(),
        };
        (Err(failed), Vec::new())
    })
}

/// The output of a render, up to `max` bytes; a write past it fails (and
/// with it the render) before the bytes are kept.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.max {
            self.over = true;
            return Err(std::io::Error::other("larger than max_size"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Names templates by file name, unless two share one, then by full path.
fn display_names(templates: &[Template]) -> Vec<String> {
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    templates
        .iter()
        .map(|t| {
            let name = file_name(&t.source);
            let shared = templates
                .iter()
                .any(|o| o.source != t.source && file_name(&o.source) == name);
            if shared {
                t.source.display().to_string()
            } else {
                name
            }
        })
        .collect()
}

/// The names a partial is included by: its source path as written, and its
/// file name when no other template or partial has that file name.
fn partial_names(partial: &Partial, config: &Config) -> Vec<String> {
    let mut names = vec![partial.written.clone()];
    if let Some(file) = partial.source.file_name() {
        let shared = config
            .templates
            .iter()
            .map(|t| &t.source)
            .chain(config.partials.iter().map(|p| &p.source))
            .filter(|s| s.file_name() == Some(file))
            .count()
            > 1;
        let file = file.to_string_lossy().into_owned();
        if !shared && file != partial.written {
            names.push(file);
        }
    }
    names
}
