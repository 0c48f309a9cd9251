//! The `peerplate` binary: parse the command line, set up logging and the
//! shutdown signal, run the command, and turn its outcome into an exit code
//! (0 ok, 1 runtime failure, 2 bad usage/config/template, 3 `once` timed out).

use std::process::ExitCode;

use clap::Parser;
use peerplate::cli::{Cli, Command, LogFormat};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    // Installed as `peer-finder` (a symlink), the binary is the drop-in,
    // flags and all, so existing StatefulSet manifests keep working.
    // args_os: an argument that is not UTF-8 is a message, never a panic.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("peer-finder")) {
        let mut utf8 = Vec::new();
        for arg in args {
            match arg.into_string() {
                Ok(arg) => utf8.push(arg),
                Err(arg) => {
                    // Go's flag package would fail the same way: exit 2.
                    if peerplate::log::json_from_env() {
                        peerplate::log::json_line(
                            tracing::Level::ERROR,
                            "invalid argument: not UTF-8 text",
                            &[
                                ("argument", arg.to_string_lossy().into()),
                                ("exit_code", 2.into()),
                            ],
                        );
                    } else {
                        eprintln!(
                            "invalid argument {:?}: not UTF-8 text\n{}",
                            arg.to_string_lossy(),
                            peerplate::peer_finder::USAGE
                        );
                    }
                    return ExitCode::from(2);
                }
            }
        }
        return run_peer_finder(&utf8);
    }

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(
        cli.log_format,
        match (&cli.command, cli.verbose) {
            // The drop-in prints its own Go-style lines; only trouble
            // comes through tracing, as under the `peer-finder` name.
            (Command::PeerFinder { .. }, 0) => LevelFilter::WARN,
            (_, 0) => LevelFilter::INFO,
            (_, 1) => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        },
    );

    let Some(runtime) = start_runtime("peerplate") else {
        return ExitCode::from(1);
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        listen_for_shutdown(shutdown.clone())?;
        ignore_reload_signals(matches!(cli.command, Command::Run))?;
        peerplate::process::reap_orphans();
        peerplate::cli::execute(&cli, shutdown).await
    });
    // Dropping a runtime waits for its blocking work (a DNS lookup, a
    // render); the exit never does for longer than this.
    runtime.shutdown_timeout(SHUTDOWN_BOUND);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(peerplate::Error::Exit(code)) => exit_code(code),
        Err(e) => {
            let code = e.exit_code();
            match (&cli.command, cli.log_format) {
                // Every command reports through its log in JSON, so a JSON
                // log stays JSON to the last line.
                (_, LogFormat::Json) => {
                    tracing::error!(exit_code = code, error = %e, "exiting on an error")
                }
                // Each line escaped as the text log escapes values (an
                // error may quote a name from DNS or an app's output); the
                // lines of a multi-template error stay lines.
                _ => {
                    let text = e.to_string();
                    let lines: Vec<_> = text.lines().map(peerplate::log::escape).collect();
                    eprintln!("error: {}", lines.join("\n"))
                }
            }
            exit_code(code)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run_peer_finder(args: &[String]) -> ExitCode {
    // peer-finder prints its own Go-style lines (JSON lines under
    // PEERPLATE_LOG_FORMAT=json); only trouble comes through tracing.
    let format = if peerplate::log::json_from_env() {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    init_logging(format, LevelFilter::WARN);
    let Some(runtime) = start_runtime("peer-finder") else {
        return ExitCode::from(1);
    };
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if listen_for_shutdown(shutdown.clone()).is_err() || ignore_reload_signals(false).is_err() {
            return ExitCode::from(1);
        }
        peerplate::process::reap_orphans();
        exit_code(peerplate::peer_finder::main(args, shutdown).await)
    });
    runtime.shutdown_timeout(SHUTDOWN_BOUND);
    code
}

/// How long the exit waits for the runtime's blocking work.
const SHUTDOWN_BOUND: std::time::Duration = std::time::Duration::from_millis(200);

/// File descriptors that must be free before the runtime is built: its own
/// (epoll, a waker, the signal pipe pair; tokio panics instead of returning
/// an error when it cannot make that pair) and a margin for the first
/// sockets, the file watcher and a hook's pipes.
const MIN_FREE_FDS: usize = 16;

/// Builds the runtime, or says why it cannot (on stderr, as `name`) and
/// returns `None`: a resource missing at start is an error and exit 1,
/// never a panic.
fn start_runtime(name: &str) -> Option<tokio::runtime::Runtime> {
    if let Err(why) = free_fds() {
        start_error(name, "cannot start", &why);
        return None;
    }
    // One thread is plenty for a sidecar that mostly sleeps, and it keeps
    // the resident set small.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            start_error(name, "cannot start the async runtime", &e.to_string());
            None
        }
    }
}

/// A failure before the runtime: `name: what: why`, or a JSON line.
fn start_error(name: &str, what: &str, why: &str) {
    if peerplate::log::json_enabled() {
        tracing::error!(program = name, error = why, exit_code = 1, "{}", what);
    } else {
        eprintln!("{name}: {what}: {why}");
    }
}

/// A command line clap rejects: its own text, or in JSON mode (the flag
/// or the environment) one JSON line; help and version print as they are.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    // args_os: an argument that is not UTF-8 may be what clap rejected.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let json = peerplate::log::json_from_env()
        || args
            .iter()
            .any(|a| a.eq_ignore_ascii_case("--log-format=json"))
        || args
            .windows(2)
            .any(|w| w[0] == "--log-format" && w[1].eq_ignore_ascii_case("json"));
    if !json
        || matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        e.exit();
    }
    let code = e.exit_code();
    peerplate::log::json_line(
        tracing::Level::ERROR,
        "invalid command line",
        &[
            ("error", e.kind().to_string().into()),
            ("detail", e.render().to_string().trim_end().into()),
            ("exit_code", code.into()),
        ],
    );
    exit_code(code)
}

/// Checks that [`MIN_FREE_FDS`] descriptors can be opened, by opening (and
/// closing) them; nothing else runs yet, so what was free stays free.
fn free_fds() -> Result<(), String> {
    let mut held = Vec::with_capacity(MIN_FREE_FDS / 2);
    while held.len() * 2 < MIN_FREE_FDS {
        match std::os::unix::net::UnixStream::pair() {
            Ok(pair) => held.push(pair),
            Err(e) => {
                let free = held.len() * 2;
                drop(held); // reading the limit needs one of them
                let limit = open_files_limit()
                    .map(|n| format!(" (ulimit -n is {n})"))
                    .unwrap_or_default();
                return Err(format!(
                    "too few free file descriptors{limit}: peerplate needs {MIN_FREE_FDS} at start, only {free} could be opened ({e}); raise the open-files limit (ulimit -n, or the container runtime's nofile limit)"
                ));
            }
        }
    }
    Ok(())
}

/// The soft open-files limit (`Max open files` in `/proc/self/limits`).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// SIGTERM (kubelet stopping the pod) and SIGINT (Ctrl-C) cancel `shutdown`.
fn listen_for_shutdown(shutdown: CancellationToken) -> Result<(), peerplate::Error> {
    let io = |source| peerplate::Error::Io {
        path: "<signal handler>".into(),
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        // Cancel first: nothing, not even a log line that cannot be
        // written, may stand between the signal and the shutdown.
        shutdown.cancel();
        tracing::info!(signal = name, "shutting down");
    });
    Ok(())
}

/// SIGHUP, SIGUSR1 and SIGUSR2 never end peerplate (their default action
/// would): USR1/USR2 are logged and ignored; SIGHUP re-renders in `run`
/// (the loop listens for it too) and is logged and ignored elsewhere.
fn ignore_reload_signals(run: bool) -> Result<(), peerplate::Error> {
    let io = |source| peerplate::Error::Io {
        path: "<signal handler>".into(),
        source,
    };
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(io)?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(io)?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                Some(()) = hup.recv() => {
                    if run {
                        continue;
                    }
                    "SIGHUP"
                }
                Some(()) = usr1.recv() => "SIGUSR1",
                Some(()) = usr2.recv() => "SIGUSR2",
                else => return,
            };
            tracing::info!(
                signal = name,
                "ignored: only SIGTERM and SIGINT stop peerplate; SIGHUP re-renders in `run`"
            );
        }
    });
    Ok(())
}

fn init_logging(format: LogFormat, level: LevelFilter) {
    peerplate::log::init(format == LogFormat::Json, level);
}
