//! Logging: a tracing subscriber writing human-readable lines to stderr.
//! whisper.cpp and ggml logs arrive through whisper-rs's tracing hooks under
//! their own targets, so their level is set separately.

use tracing_subscriber::EnvFilter;

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

/// Installs the global subscriber. `RUST_LOG` wins when set.
/// `engine_level` applies to whisper.cpp / ggml logs (default warn).
pub fn init(level: &str, engine_level: Option<&str>) {
    let engine = engine_level.map_or("warn", level_name);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},whisper_rs={engine},ort={},h2=warn,hyper=warn,tower=warn",
            level_name(level),
            "warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
