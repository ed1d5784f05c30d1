//! The `stt` binary: parse the command line, set up logging, run the
//! subcommand, and turn an error into a readable message and an exit code
//! (0 ok, 1 runtime failure, 2 usage or configuration error).

use std::process::ExitCode;

use clap::Parser;
use stt::cli::{Cli, Command};

fn main() -> ExitCode {
    stt::env::set_process_defaults();
    let cli = Cli::parse();
    // `serve` sets logging up from its config file; the rest log at info.
    if !matches!(cli.command, Command::Serve(_)) {
        stt::telemetry::init("info", None);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let hint = stt::models::hint_for(&err)
                .or_else(|| stt::client::hint_for(&err))
                .or_else(|| stt::bench::hint_for(&err))
                .or_else(|| stt::dashboard::hint_for(&err));
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            let usage = err.chain().any(|e| {
                e.is::<stt::UsageError>()
                    || e.is::<stt::config::ConfigError>()
                    || e.downcast_ref::<stt::client::mic::MicError>()
                        .is_some_and(|m| m.is_usage())
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Transcribe(args) => stt::transcribe::run(args),
        Command::Models(args) => stt::models::run(args),
        Command::Keys(args) => stt::auth::command::run(args),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(stt::server::run(args)),
        Command::File(args) => block_on(stt::client::file::run(args)),
        Command::Mic(args) => block_on(stt::client::mic::run(args)),
        Command::Batch(args) => block_on(stt::client::batch::run(args)),
        // Many concurrent streams: worth the threads a single client skips.
        Command::Bench(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(stt::bench::run(*args))
            .map(|_| ()),
        Command::Dashboard(args) => block_on(stt::dashboard::run(args)),
    }
}

/// Runs a client on a single-threaded runtime: a client drives one stream,
/// so more threads would only add start-up cost.
fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(fut)
        .map(|_| ())
}
