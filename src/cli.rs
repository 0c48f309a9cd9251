//! The command line: its definition (clap) and what each command does.
//!
//! `run` and `once` hand over to [`crate::cycle`]; `render` and `check` are
//! the template author's tools and live here, because they are thin: load the
//! config, pick templates and peers, render, print.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, PeerSource, Template};
use crate::error::Error;
use crate::peers::PeerSet;
use crate::render::{self, Renderer};

/// What `peerplate --version` prints after the name: the version, the
/// build profile (`release` when built without debug assertions, as
/// `scripts/build-release.sh` and the image build it; `debug` otherwise)
/// and the optional features compiled in (`https`, or `none`). The test
/// suite reads it to refuse, under `CI=true`, any binary but the one that
/// ships.
pub const VERSION: &str = {
    macro_rules! version {
        ($profile:literal, $features:literal) => {
            concat!(
                env!("CARGO_PKG_VERSION"),
                " (",
                $profile,
                ", features: ",
                $features,
                ")"
            )
        };
    }
    #[cfg(all(not(debug_assertions), feature = "https"))]
    let v = version!("release", "https");
    #[cfg(all(not(debug_assertions), not(feature = "https")))]
    let v = version!("release", "none");
    #[cfg(all(debug_assertions, feature = "https"))]
    let v = version!("debug", "https");
    #[cfg(all(debug_assertions, not(feature = "https")))]
    let v = version!("debug", "none");
    v
};

/// Renders config files from a StatefulSet's peers and reloads the app.
#[derive(Debug, Parser)]
#[command(name = "peerplate", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// The config file [default: $PEERPLATE_CONFIG, then /etc/peerplate/peerplate.yaml]
    #[arg(long, global = true, env = "PEERPLATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// How logs are written to stderr (every command, errors before exit included)
    #[arg(long, global = true, value_enum, env = "PEERPLATE_LOG_FORMAT", ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail: -v for debug, -vv for trace
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The sidecar loop: watch peers and templates, re-render, reload
    Run,
    /// Render everything once and exit (init containers)
    Once,
    /// Print what the templates would render; writes nothing, signals nothing
    Render(RenderArgs),
    /// Validate the config and compile every template; exit 0 or explain
    Check(CheckArgs),
    /// Print what has converged and what is pending (GET /status of the running sidecar)
    Status(StatusArgs),
    /// Drop-in for Kubernetes' peer-finder (its flags, stdin, logs, exit codes)
    #[command(disable_help_flag = true)]
    PeerFinder {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Also fail (exit 2) on every warning about something `run` refuses:
    /// no DNS server to ask, leader.policy sticky without http.listen
    #[arg(long)]
    pub strict: bool,
}

/// `peerplate status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Ask this URL instead of the config's http.listen, like http://127.0.0.1:9090/status
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Print the JSON as served
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Render with this peer set instead of the config's source (repeatable);
    /// NAME:PORT sets the peer's port
    #[arg(long = "peer", value_name = "NAME[:PORT]")]
    pub peers: Vec<String>,
    /// Render as this pod
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Render in this namespace (pod.namespace, and pod.fqdn with a dns source)
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Set vars.KEY (dotted keys nest: a.b=1); VALUE is read as YAML (8080 a
    /// number, false a bool, '"8080"' a string); repeatable
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Print only this template: its file name, source path or destination
    /// as written in the config, or the path of any template file (relative
    /// to the working directory, unlike the config's paths, which are
    /// relative to the config file)
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Render with this peer as the leader (its FQDN or host name), whatever
    /// the policy would choose
    #[arg(long, value_name = "NAME")]
    pub leader: Option<String>,
    /// Render with this peer not ready (FQDN or host name; repeatable)
    #[arg(long = "not-ready", value_name = "NAME")]
    pub not_ready: Vec<String>,
}

impl Cli {
    /// The config path, and whether the user named it (a named file must
    /// exist; the default may be absent for `render`).
    fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(config::DEFAULT_PATH), false),
        }
    }

    fn load_config(&self, required: bool) -> Result<Config, Error> {
        let (path, named) = self.config_path();
        Ok(Config::load(&path, required || named)?)
    }
}

/// Runs the parsed command. `shutdown` ends `run` (and interrupts `once`).
pub async fn execute(cli: &Cli, shutdown: CancellationToken) -> Result<(), Error> {
    match &cli.command {
        Command::Run | Command::Once => {
            let config = cli.load_config(true)?;
            if let Some(refused) = config.run_refuses.first() {
                return Err(Error::Usage(refused.clone()));
            }
            // `once` (an init container) must not succeed without its
            // outputs: a template that cannot compile stops it. `run` starts
            // anyway (alive, not ready), logs and counts the error, and
            // renders once the template is fixed: exiting would be a crash
            // loop whose back-off delays the recovery.
            let renderer = Renderer::load(&config);
            if matches!(cli.command, Command::Once) {
                let errors: Vec<_> = renderer.errors().into_iter().cloned().collect();
                if !errors.is_empty() {
                    return Err(Error::Templates(errors));
                }
            }
            warn_unused_vars(&renderer, &config);
            drop(renderer);
            if matches!(cli.command, Command::Run) {
                if !config.seed.is_empty() {
                    // The same ConfigMap often serves the init container
                    // (`once`) and the sidecar (`run`): say so, don't fail.
                    tracing::warn!(
                        "seed runs with `once` (an init container) only; `run` leaves it alone"
                    );
                }
                crate::cycle::run(config, shutdown).await
            } else {
                // Seeds first, so templates may render into seeded folders.
                crate::seed::run(&config.seed)?;
                crate::cycle::once(config, shutdown).await
            }
        }
        Command::Check(args) => check(cli, args),
        Command::Status(args) => status_command(cli, args).await,
        Command::Render(args) => render_command(cli, args).await,
        Command::PeerFinder { args } => match crate::peer_finder::main(args, shutdown).await {
            0 => Ok(()),
            code => Err(Error::Exit(code)),
        },
    }
}

/// How long `status` waits for the answer.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `status`: fetches `/status` from the admin listener (`--url`, or the
/// config's `http.listen`, the only key read, so it works while the rest of
/// the config is broken; 0.0.0.0 and :: mean this host's loopback) and
/// prints it for a person (or as JSON with `--json`).
async fn status_command(cli: &Cli, args: &StatusArgs) -> Result<(), Error> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let (path, _) = cli.config_path();
            format!("http://{}/status", admin_address(&path)?)
        }
    };
    let response = crate::http_client::request("GET", &url, STATUS_TIMEOUT)
        .await
        .map_err(|e| {
            Error::Incomplete(format!(
                "{url}: {e} (is `peerplate run` running with this config? pass --url to ask another address)"
            ))
        })?;
    if response.status != 200 {
        return Err(Error::Incomplete(format!(
            "{url}: HTTP {}: {}",
            response.status,
            crate::status::escape(String::from_utf8_lossy(&response.body).trim())
        )));
    }
    let out = if args.json {
        String::from_utf8_lossy(&response.body).into_owned()
    } else {
        let status: crate::status::Status =
            serde_json::from_slice(&response.body).map_err(|e| {
                Error::Incomplete(format!("{url}: not a peerplate /status answer: {e}"))
            })?;
        crate::status::text(&status)
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

/// `http.listen` of the config at `path`, read alone; an unspecified
/// address (0.0.0.0, ::) becomes the loopback of its family.
fn admin_address(path: &Path) -> Result<std::net::SocketAddr, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: cannot read http.listen: {e}; pass --url, like --url http://127.0.0.1:9090/status",
            path.display()
        ))
    })?;
    let listen = yaml
        .get("http")
        .and_then(|h| h.get("listen"))
        .and_then(|l| l.as_str())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: no http.listen, so peerplate serves no /status; set http.listen (like 0.0.0.0:9090) or pass --url",
                path.display()
            ))
        })?;
    let mut addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        Error::Usage(format!(
            "{}: http.listen {listen:?} is not an address like 0.0.0.0:9090; pass --url",
            path.display()
        ))
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// `check`: the config resolves, every template compiles, and every
/// template renders once, with the configured peers (`static`, a readable
/// peers file) or else a sample set of three peers that includes this pod.
/// Outside the pod, `env()` without a default gives a placeholder and a
/// warning; only errors of a template's own logic fail.
fn check(cli: &Cli, args: &CheckArgs) -> Result<(), Error> {
    let mut config = cli.load_config(true)?;
    // What `run` refuses: a warning here (check runs anywhere: CI, a
    // laptop without a network), an error with --strict.
    let mut refused = config.run_refuses.clone();
    if let crate::config::Policy::Sticky { port: 0, .. } = config.leader.policy {
        refused.push(format!(
            "{}: leader.policy sticky without http.listen: `once` accepts it (it cannot ask the peers), `run` refuses to start; set http.listen, like 0.0.0.0:9090",
            config.path.display()
        ));
    }
    for why in &refused {
        tracing::warn!(detail = %why, "`run` would refuse this config");
    }
    if args.strict {
        if let Some(first) = refused.first() {
            return Err(Error::Usage(format!(
                "check --strict: {first}{}",
                if refused.len() > 1 {
                    format!(" (and {} more warnings above)", refused.len() - 1)
                } else {
                    String::new()
                }
            )));
        }
    }
    let renderer = Renderer::load_for(&config, render::Mode::Check);
    // Every broken template is reported, not only the first: those that do
    // not compile, then each one that compiles but fails to render.
    let compile_errors: Vec<_> = renderer.errors().into_iter().cloned().collect();
    if compile_errors.is_empty() {
        warn_unused_vars(&renderer, &config);
        for finding in renderer.changed_meaning(&config) {
            tracing::warn!(
                template = %finding.what,
                detail = %finding.message,
                "a template's meaning changed (CHANGELOG.md)"
            );
        }
    }
    let (peers, with) = match check_peers(&mut config) {
        Ok(found) => found,
        Err(_) if !compile_errors.is_empty() => return Err(Error::Templates(compile_errors)),
        Err(e) => return Err(e),
    };
    let leader = crate::leader::by_rule(&config.leader, &peers);
    let context = render::context(&config, &peers, leader.as_ref());
    let mut errors = compile_errors;
    for i in 0..config.templates.len() {
        if let Err(e) = renderer.render(i, &context) {
            if !errors.iter().any(|c| c.to_string() == e.to_string()) {
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Templates(errors));
    }
    println!(
        "{}: ok, {} template(s) compile and render with {with}",
        config.path.display(),
        config.templates.len()
    );
    Ok(())
}

/// Warns about each `vars` key no template reads (`run`, `once`, `check`).
fn warn_unused_vars(renderer: &Renderer, config: &Config) {
    for finding in renderer.unused_vars(config) {
        tracing::warn!(key = %finding.what, detail = %finding.message, "a vars key no template reads");
    }
}

/// The peers `check` renders with, and how to say which they are.
fn check_peers(config: &mut Config) -> Result<(PeerSet, String), Error> {
    match &config.peers.source {
        PeerSource::Static(names) => {
            let set = PeerSet::from_names(names.iter().map(String::as_str), "peers.static");
            let with = format!("the {} peer(s) of peers.static", set.len());
            return Ok((set, with));
        }
        PeerSource::File(path) => {
            match crate::limits::read_regular(path, crate::limits::PEERS_FILE_MAX_BYTES) {
                Ok(bytes) => {
                    let origin = path.display().to_string();
                    let set = crate::peers::file::parse(&String::from_utf8_lossy(&bytes), &origin)
                        .map_err(Error::Usage)?;
                    let with = format!("the {} peer(s) of {origin}", set.len());
                    return Ok((set, with));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the peers file here; rendering with a sample peer set");
                }
            }
        }
        PeerSource::Dns(_) => {}
    }
    Ok((sample_peers(config), "a sample set of 3 peers".into()))
}

/// Three peers that include this pod, named as the source names them:
/// `<stem>-0`, `<stem>-1`, `<stem>-2` (this pod's ordinal instead of 2 when
/// it is larger). A host name without an ordinal stands for `<name>-1`.
fn sample_peers(config: &mut Config) -> PeerSet {
    let hostname = config.identity.hostname.clone();
    let (stem, own) = match crate::peers::model::ordinal_of(&hostname) {
        Some(n) => {
            let stem = hostname
                .strip_suffix(&format!("-{n}"))
                .unwrap_or(&hostname)
                .to_string();
            (stem, n)
        }
        None => {
            config.set_hostname(&format!("{hostname}-1"));
            (hostname, 1)
        }
    };
    let mut ordinals = vec![0, 1, 2];
    if own > 2 {
        ordinals[2] = own;
    }
    let (suffix, port, addresses) = match &config.peers.source {
        PeerSource::Dns(dns) => {
            let suffix = match &dns.service {
                Some(service) => format!(
                    ".{service}.{}.svc.{}",
                    config.identity.namespace, dns.cluster_domain
                ),
                None => format!(".{}", dns.query),
            };
            (suffix, Some(SAMPLE_PORT), dns.addresses)
        }
        _ => (String::new(), None, false),
    };
    let peers = ordinals
        .into_iter()
        .filter_map(|k| {
            let mut peer = crate::peers::Peer::parse(&format!("{stem}-{k}{suffix}"), port).ok()?;
            if addresses {
                let last = u8::try_from(k % 250 + 1).unwrap_or(1);
                peer.addresses = vec![std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    192, 0, 2, last,
                ))];
            }
            Some(peer)
        })
        .collect();
    PeerSet::new(peers)
}

/// The SRV port of `check`'s sample peers (a placeholder).
const SAMPLE_PORT: u16 = 65535;

async fn render_command(cli: &Cli, args: &RenderArgs) -> Result<(), Error> {
    let mut config = cli.load_config(false)?;
    // No config (the default path is absent) and no template file: nothing
    // to render is a mistake, as in `check` and `once`.
    if config.path.as_os_str().is_empty() && args.template.is_none() {
        return Err(Error::Usage(format!(
            "nothing to render: no config file was read ({} does not exist); give one with --config (or $PEERPLATE_CONFIG), or a template file with --template FILE",
            config::DEFAULT_PATH
        )));
    }
    if let Some(hostname) = &args.hostname {
        config.set_hostname(hostname);
    }
    if let Some(namespace) = &args.namespace {
        config.set_namespace(namespace);
    }
    for var in &args.vars {
        let (key, value) = var.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "--var {var}: write KEY=VALUE, like --var listen=8080"
            ))
        })?;
        config
            .set_var(key, value)
            .map_err(|why| Error::Usage(format!("--var {var}: {why}")))?;
    }
    if let Some(wanted) = &args.template {
        config.templates = vec![pick_template(&config, wanted)?];
    }
    let peers = if args.peers.is_empty() {
        configured_peers(&config).await?
    } else {
        let peers = flag_peers(&args.peers)?;
        let me = crate::peers::Identity::of(&config);
        if !me.is_in(&peers) {
            tracing::warn!(
                hostname = %me.name(),
                "this pod is not among the --peer names, so no peer is_self and pod.is_leader is false; give its name with --peer, or pick another with --hostname"
            );
        }
        peers
    };
    let peers = mark_not_ready(peers, &args.not_ready)?;
    let leader = match &args.leader {
        Some(name) => Some(
            peers
                .iter()
                .find(|p| p.fqdn == *name || p.hostname == *name)
                .cloned()
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--leader {name}: no such peer; the peers are: {}",
                        listed(&peers)
                    ))
                })?,
        ),
        // What the policy decides from the set alone (no peers to ask here).
        None => {
            if config.leader.policy != crate::config::Policy::Ordinal {
                tracing::info!(
                    policy = config.leader.policy.name(),
                    "render takes the leader from the peer set alone (the first ready peer); run and once also ask the peers or the app, so they may choose another: try it with --leader NAME"
                );
            }
            crate::leader::by_rule(&config.leader, &peers)
        }
    };
    let base = config
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let renderer = Renderer::load(&config).with_base(&base);
    let context = render::context(&config, &peers, leader.as_ref());
    let mut out = Vec::new();
    let headers = config.templates.len() > 1;
    for (i, template) in config.templates.iter().enumerate() {
        let (text, inputs) = renderer.render_with_inputs(i, &context);
        let text = text?;
        if !inputs.is_empty() {
            let paths: Vec<String> = inputs
                .iter()
                .map(|i| i.path.display().to_string())
                .collect();
            eprintln!(
                "warning: {} reads {} with file(): the output printed below holds their contents (peerplate installs such outputs with mode 0600 and never logs them)",
                template.source.display(),
                paths.join(", ")
            );
        }
        if headers {
            if i > 0 {
                out.push(b'\n');
            }
            writeln!(out, "==> {} <==", template.destination.display()).ok();
        }
        out.extend_from_slice(text.as_bytes());
    }
    std::io::stdout()
        .write_all(&out)
        .map_err(|source| Error::Io {
            path: PathBuf::from("<stdout>"),
            source,
        })
}

/// `--peer NAME[:PORT]`: every name must be a valid host name (exit 2
/// otherwise, never a render of fewer peers).
fn flag_peers(flags: &[String]) -> Result<PeerSet, Error> {
    let mut peers = Vec::with_capacity(flags.len());
    for flag in flags {
        let (name, port) = match flag.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(())
                    .map_err(|_| {
                        Error::Usage(format!(
                        "--peer {flag}: {port:?} is not a port (1-65535); write NAME or NAME:PORT"
                    ))
                    })?;
                (name, Some(port))
            }
            None => (flag.as_str(), None),
        };
        let peer = crate::peers::Peer::parse(name, port).map_err(|why| {
            Error::Usage(format!(
                "--peer {flag}: not a valid host name ({why}); write a DNS name like web-0.nginx.default.svc.cluster.local"
            ))
        })?;
        peers.push(peer);
    }
    Ok(PeerSet::new(peers))
}

fn listed(peers: &PeerSet) -> String {
    if peers.is_empty() {
        "none".into()
    } else {
        peers.names().join(", ")
    }
}

/// `render --not-ready NAME`: those peers are not ready.
fn mark_not_ready(peers: PeerSet, names: &[String]) -> Result<PeerSet, Error> {
    if names.is_empty() {
        return Ok(peers);
    }
    for name in names {
        if !peers.iter().any(|p| p.fqdn == *name || p.hostname == *name) {
            return Err(Error::Usage(format!(
                "--not-ready {name}: no such peer; the peers are: {}",
                listed(&peers)
            )));
        }
    }
    let ready = peers
        .iter()
        .filter(|p| !names.iter().any(|n| *n == p.fqdn || *n == p.hostname))
        .map(|p| p.hostname.clone())
        .collect();
    Ok(peers.with_ready(&ready))
}

/// A template of the config by file name, source or destination; else any
/// template file, rendered with the config's context.
fn pick_template(config: &Config, wanted: &str) -> Result<Template, Error> {
    let wanted_path = Path::new(wanted);
    let found = config.templates.iter().find(|t| {
        t.source == wanted_path
            || t.destination == wanted_path
            || t.source.file_name() == Some(wanted_path.as_os_str())
    });
    if let Some(t) = found {
        return Ok(t.clone());
    }
    let partial = config.partials.iter().find(|p| {
        p.source == wanted_path
            || p.written == wanted
            || p.source.file_name() == Some(wanted_path.as_os_str())
    });
    if let Some(p) = partial {
        return Err(Error::Usage(format!(
            "--template {wanted}: {} is a partial (a template with no destination): it is rendered only where another template includes or imports it; pick that template",
            p.written
        )));
    }
    if wanted_path.is_file() {
        let mut preview = Template::preview(wanted_path.to_path_buf());
        preview.lstrip_blocks = config.lstrip_blocks;
        return Ok(preview);
    }
    let known: Vec<String> = config
        .templates
        .iter()
        .map(|t| t.source.display().to_string())
        .collect();
    let cwd = std::env::current_dir()
        .map(|d| d.join(wanted_path).display().to_string())
        .unwrap_or_else(|_| wanted.to_string());
    let config_part = if config.path.as_os_str().is_empty() {
        format!(
            "no config file was read ({} does not exist; give one with --config)",
            config::DEFAULT_PATH
        )
    } else {
        format!(
            "{} has no such template (it has: {})",
            config.path.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )
    };
    Err(Error::Usage(format!(
        "--template {wanted}: {config_part}, and there is no file {cwd} (a --template path is relative to the working directory)"
    )))
}

/// The peers the config's source lists right now, for a preview.
async fn configured_peers(config: &Config) -> Result<PeerSet, Error> {
    match &config.peers.source {
        PeerSource::Static(names) => Ok(PeerSet::from_names(
            names.iter().map(String::as_str),
            "peers.static",
        )),
        PeerSource::File(path) => {
            let bytes = crate::limits::read_regular(path, crate::limits::PEERS_FILE_MAX_BYTES)
                .map_err(|source| Error::Io {
                    path: format!("cannot read the peers file {}", path.display()).into(),
                    source,
                })?;
            let text = String::from_utf8_lossy(&bytes);
            crate::peers::file::parse(&text, &path.display().to_string()).map_err(Error::Usage)
        }
        PeerSource::Dns(dns) => {
            // No server to ask: say where (FILE:LINE) and how to render
            // anyway, as `run` would refuse it (exit 2, a usage error).
            if config.nameservers.is_empty() {
                if let Some(refused) = config.run_refuses.first() {
                    return Err(Error::Usage(format!(
                        "{refused}; to render without DNS, give the peers with --peer NAME"
                    )));
                }
            }
            let poller = crate::peers::dns::Poller::new(dns, &config.nameservers)?;
            let (poller, polled) = poller
                .poll_on_thread()
                .await
                .map_err(|e| Error::Lookup(format!("DNS lookup: cannot start its thread: {e}")))?;
            polled.map(Option::unwrap_or_default).map_err(|e| {
                Error::Lookup(format!(
                    "DNS lookup of {} failed: {}; give the peers with --peer NAME to render without DNS",
                    poller.query(),
                    e.0
                ))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap checks a command's definition (conflicting flags, bad
    /// defaults) only in debug builds, at parse time; the suite drives the
    /// release binary, so the check runs here.
    #[test]
    fn the_command_line_definition_is_sound() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_names_the_profile_and_the_features() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(VERSION.contains("(debug, features: "), "{VERSION}");
    }
}
