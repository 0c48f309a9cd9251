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

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};

use crate::config::{Config, Template};
use crate::peers::{Identity, Peer, PeerSet};

/// A template that could not be read, compiled or rendered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct RenderError {
    /// The template's name (its file name, or its path when two share a name).
    pub template: String,
    pub line: Option<usize>,
    pub message: String,
}

/// The compiled templates of a config, one slot per `templates` entry.
pub struct Renderer {
    env: Environment<'static>,
    /// Per template: its name, or why it failed to load.
    slots: Vec<Result<String, RenderError>>,
    /// What `file()` read during the current render.
    files: Arc<Mutex<FileReads>>,
}

/// A file a render read with `file()`: its path (absolute, or as the
/// config's folder makes it) and its text, `None` when it could not be read
/// (it is watched all the same, so its arrival re-renders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    pub text: Option<String>,
}

/// `file()`'s state: where relative paths start, and what it read.
#[derive(Debug, Default)]
struct FileReads {
    base: PathBuf,
    read: Vec<Input>,
}

impl Renderer {
    /// Reads and compiles every template. A template that fails keeps its
    /// error in its slot (so the others still render); [`Renderer::errors`]
    /// lists them for callers that must stop instead.
    pub fn load(templates: &[Template]) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .keep_trailing_newline(true)
            .build();
        // The builder only fails on clashing custom delimiters; we set none.
        if let Ok(syntax) = syntax {
            env.set_syntax(syntax);
        }
        env.add_function("env", env_function);
        let files = Arc::new(Mutex::new(FileReads::default()));
        let reads = Arc::clone(&files);
        env.add_function("file", move |path: String| file_function(&reads, &path));
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
        let slots = templates
            .iter()
            .zip(names)
            .map(|(t, name)| {
                let source = std::fs::read_to_string(&t.source).map_err(|e| RenderError {
                    template: name.clone(),
                    line: None,
                    message: format!("cannot read {}: {e}", t.source.display()),
                })?;
                if env.get_template(&name).is_err() {
                    env.add_template_owned(name.clone(), source)
                        .map_err(|e| convert(&name, &e))?;
                }
                Ok(name)
            })
            .collect();
        Renderer { env, slots, files }
    }

    /// Relative `file()` paths start at `base` (the config's folder).
    pub fn with_base(self, base: &Path) -> Renderer {
        if let Ok(mut files) = self.files.lock() {
            files.base = base.to_path_buf();
        }
        self
    }

    /// Every template that failed to load.
    pub fn errors(&self) -> Vec<&RenderError> {
        self.slots.iter().filter_map(|s| s.as_ref().err()).collect()
    }

    /// The display name of the `i`th template.
    pub fn name(&self, i: usize) -> &str {
        match &self.slots[i] {
            Ok(name) => name,
            Err(e) => &e.template,
        }
    }

    /// Renders the `i`th template with `context`.
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
        }
        let result = self.slots[i]
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|name| {
                let template = self.env.get_template(name).map_err(|e| convert(name, &e))?;
                template.render(context).map_err(|e| convert(name, &e))
            });
        let inputs = self
            .files
            .lock()
            .map(|mut f| std::mem::take(&mut f.read))
            .unwrap_or_default();
        (result, inputs)
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

/// minijinja's error, reduced to template, line and a message that quotes
/// the offending line so the fix is obvious from a log line.
fn convert(name: &str, e: &minijinja::Error) -> RenderError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let (Some(source), Some(line)) = (e.template_source(), e.line()) {
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            message.push_str(&format!(" (the line reads: {})", text.trim()));
        }
    }
    RenderError {
        template: e.name().unwrap_or(name).to_string(),
        line: e.line(),
        message,
    }
}

fn env_function(name: String, default: Option<String>) -> Result<String, minijinja::Error> {
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
fn file_function(reads: &Mutex<FileReads>, path: &str) -> Result<String, minijinja::Error> {
    let mut reads = reads
        .lock()
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "file(): state lost"))?;
    let given = Path::new(path);
    let full = if given.is_relative() {
        reads.base.join(given)
    } else {
        given.to_path_buf()
    };
    let read = std::fs::read(&full).map_err(|e| e.to_string()).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text (use a text key, or base64 it in the Secret and b64decode it here)".to_string())
    });
    if !reads.read.iter().any(|i| i.path == full) {
        reads.read.push(Input {
            path: full.clone(),
            text: read.as_ref().ok().cloned(),
        });
    }
    read.map_err(|why| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("file({path:?}): cannot read {}: {why}", full.display()),
        )
    })
}

fn b64decode(text: String) -> Result<String, minijinja::Error> {
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

fn toyaml(value: Value) -> Result<String, minijinja::Error> {
    serde_yaml::to_string(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("toyaml: {e}")))
}

/// Builds the template context for `peers` as seen by the pod in `config`.
///
/// `leader` is the chosen leader (see `leader`): its last known record,
/// which may be missing from `peers` for a while; none while there are no
/// peers.
pub fn context(config: &Config, peers: &PeerSet, leader: Option<&Peer>) -> Value {
    let me = Identity::of(config);
    let leader = leader.filter(|_| !peers.is_empty());
    let leads = |p: &Peer| leader.is_some_and(|l| l.fqdn == p.fqdn);
    let values: Vec<Value> = peers
        .iter()
        .map(|p| {
            Value::from_object(PeerValue {
                peer: p.clone(),
                is_self: me.is_self(p),
                is_leader: leads(p),
            })
        })
        .collect();
    let is_leader = leader.is_some_and(|l| me.is_self(l));
    let leader = match leader {
        Some(l) => Value::from_object(PeerValue {
            peer: l.clone(),
            is_self: me.is_self(l),
            is_leader: true,
        }),
        None => Value::from(()),
    };
    let own = peers.iter().find(|p| me.is_self(p));
    let fqdn = me
        .fqdn
        .clone()
        .or_else(|| own.map(|p| p.fqdn.clone()))
        .unwrap_or_else(|| me.hostname.clone());
    let ordinal = me.ordinal;
    let pod = minijinja::context! {
        hostname => config.identity.hostname.as_str(),
        fqdn => fqdn,
        ordinal => ordinal,
        namespace => config.identity.namespace.as_str(),
        is_leader => is_leader,
    };
    let nameservers: Vec<String> = config.nameservers.iter().map(nameserver_text).collect();
    minijinja::context! {
        peers => values,
        leader => leader,
        pod => pod,
        vars => Value::from(Serde(&config.vars)),
        nameservers => nameservers,
    }
}

/// `10.96.0.10`, `127.0.0.1:5353`, `[fd00::10]`: the form nginx's `resolver`
/// and most other configs take.
fn nameserver_text(addr: &SocketAddr) -> String {
    match (addr.ip(), addr.port()) {
        (std::net::IpAddr::V4(ip), 53) => ip.to_string(),
        (std::net::IpAddr::V6(ip), 53) => format!("[{ip}]"),
        _ => addr.to_string(),
    }
}

/// A peer as templates see it: prints as its FQDN, and has the parts as
/// attributes. Unknown attributes are undefined, so strict mode catches typos.
#[derive(Debug)]
struct PeerValue {
    peer: Peer,
    is_self: bool,
    is_leader: bool,
}

const PEER_KEYS: &[&str] = &[
    "fqdn",
    "hostname",
    "ordinal",
    "port",
    "is_self",
    "is_leader",
    "ready",
    "addresses",
];

impl Object for PeerValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let p = &self.peer;
        Some(match key.as_str()? {
            "fqdn" => Value::from(p.fqdn.as_str()),
            "hostname" => Value::from(p.hostname.as_str()),
            "ordinal" => Value::from(p.ordinal),
            "port" => Value::from(p.port),
            "is_self" => Value::from(self.is_self),
            "is_leader" => Value::from(self.is_leader),
            "ready" => Value::from(p.ready),
            "addresses" => Value::from(
                p.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            ),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(PEER_KEYS)
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer.fqdn)
    }
}
