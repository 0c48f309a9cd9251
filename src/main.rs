//! The `peerplate` binary: parse the command line, set up logging and the
//! shutdown signal, run the command, and turn its outcome into an exit code
//! (0 ok, 1 runtime failure, 2 bad usage/config/template, 3 `once` timed out).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use peerplate::cli::{Cli, Command, LogFormat};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::level_filters::LevelFilter;

fn main() -> ExitCode {
    // Installed as `peer-finder` (a symlink), the binary is the drop-in,
    // flags and all, so existing StatefulSet manifests keep working.
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new("peer-finder")) {
        let args: Vec<String> = args.collect();
        return run_peer_finder(&args);
    }

    let cli = Cli::parse();
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

    // One thread is plenty for a sidecar that mostly sleeps, and it keeps
    // the resident set small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peerplate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        listen_for_shutdown(shutdown.clone())?;
        ignore_reload_signals(matches!(cli.command, Command::Run))?;
        peerplate::process::reap_orphans();
        peerplate::cli::execute(&cli, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(peerplate::Error::Exit(code)) => exit_code(code),
        Err(e) => {
            let code = e.exit_code();
            match (&cli.command, cli.log_format) {
                // The daemon commands report through their log, so a JSON log
                // stays JSON to the last line.
                (Command::Run | Command::Once, LogFormat::Json) => {
                    tracing::error!(exit_code = code, "{e}")
                }
                _ => eprintln!("error: {e}"),
            }
            exit_code(code)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run_peer_finder(args: &[String]) -> ExitCode {
    // peer-finder prints its own Go-style lines; only trouble comes through tracing.
    init_logging(LogFormat::Text, LevelFilter::WARN);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-finder: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if listen_for_shutdown(shutdown.clone()).is_err() || ignore_reload_signals(false).is_err() {
            return ExitCode::from(1);
        }
        peerplate::process::reap_orphans();
        exit_code(peerplate::peer_finder::main(args, shutdown).await)
    })
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
        tracing::info!("{name}: shutting down");
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
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        // A closed stderr (a log shipper gone) must not kill the sidecar:
        // tracing would report the failed write with eprintln!, which panics.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
