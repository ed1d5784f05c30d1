//! Logging: a tracing subscriber writing human-readable lines to stderr and,
//! when `logging.file` / `--log-file` is set, the same lines (without colour)
//! appended to that file. whisper.cpp and ggml logs arrive through
//! whisper-rs's tracing hooks under their own targets, so their level is set
//! separately.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

/// Maps the original's level names (Python's, e.g. WARNING, CRITICAL) to
/// tracing's.
pub fn level_name(level: &str) -> &'static str {
    match level.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "WARN" | "WARNING" => "warn",
        "ERROR" | "CRITICAL" => "error",
        "OFF" => "off",
        _ => "info",
    }
}

fn filter(level: &str, engine_level: Option<&str>) -> EnvFilter {
    let engine = engine_level.map_or("warn", level_name);
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            // symphonia (every symphonia_* crate: targets match by prefix)
            // logs each format reader's refusal while probing as an error;
            // the one error that matters reaches the user as ours.
            "{},whisper_rs={engine},ort=warn,h2=warn,hyper=warn,tower=warn,symphonia=off",
            level_name(level),
        ))
    })
}

/// Colour only for a person at a terminal: piped or redirected logs (files,
/// journald, log shippers) stay plain text.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Installs the global subscriber for stderr only. `RUST_LOG` wins when
/// set. `engine_level` applies to whisper.cpp / ggml logs (default warn).
pub fn init(level: &str, engine_level: Option<&str>) {
    let _ = fmt()
        .with_env_filter(filter(level, engine_level))
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false)
        .try_init();
}

/// Like [`init`], and also appends every line to `file` (created with its
/// parent directories if missing).
pub fn init_with_file(
    level: &str,
    engine_level: Option<&str>,
    file: &Path,
) -> Result<(), crate::UsageError> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            crate::UsageError(format!(
                "cannot create the log directory {} (logging.file / --log-file): {e}",
                dir.display()
            ))
        })?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| {
            crate::UsageError(format!(
                "cannot open the log file {} (logging.file / --log-file): {e}",
                file.display()
            ))
        })?;
    let _ = tracing_subscriber::registry()
        .with(filter(level, engine_level))
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour())
                .with_target(false),
        )
        .with(
            fmt::layer()
                .with_writer(Arc::new(out))
                .with_ansi(false)
                .with_target(false),
        )
        .try_init();
    Ok(())
}
