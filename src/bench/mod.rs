//! `stt bench`: the gRPC load tester. Plans the run from flags and the
//! client YAML, checks the server answers, runs the channels, then writes
//! the session logs and the summary. Streaming goes through the shared
//! client ([`crate::client::stream_audio`]); this module only schedules and
//! counts.
//!
//! - [`capacity`] and [`conversation`]: the `--conversations` capacity
//!   sweep and its per-utterance latency.
//! - [`plan`]: flags → a validated [`plan::BenchPlan`], audio read once.
//! - [`runner`]: channel tasks, ramp, warm-ups, progress bars.
//! - [`record`]: one session as a log row, and the column definitions.
//! - [`log`]: jsonl / csv / tsv / markdown writers.
//! - [`stats`]: percentiles, RTF, throughput.
//! - [`summary`]: the end-of-run table and its JSON.
//! - [`soak`]: `--duration`, hours of real-time sessions watched for leaks.

pub mod capacity;
pub mod conversation;
pub mod log;
pub mod plan;
pub mod record;
pub mod runner;
pub mod soak;
pub mod stats;
pub mod summary;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::cli::BenchArgs;
use crate::client;
use crate::client::session::{load_client_file, SessionSettings};
use log::{write_log, LogMeta};
use plan::{load_clips, BenchPlan, Clip};
use runner::RunOutput;
use summary::Summary;

/// Some measured sessions failed: the run itself worked, but a CI gate
/// must see a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} sessions failed ({codes})")]
pub struct SessionsFailed {
    pub failed: usize,
    pub total: usize,
    pub codes: String,
}

/// Runs `stt bench`: returns the summary, or an error when the bench could
/// not run, was interrupted, or any measured session failed (the logs and
/// summary are written first in the last two cases).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.conversations.is_some() {
        return run_capacity(args).await;
    }
    if let Some(duration) = args.duration {
        return run_soak(args.clone(), duration).await;
    }
    run_sessions(args).await.map(|_| ())
}

/// The capacity sweep (`--conversations`).
async fn run_capacity(args: BenchArgs) -> anyhow::Result<()> {
    let yaml = load_client_file(&args.session)?;
    let chunk_ms = crate::client::session::check_chunk_ms(
        args.chunk_ms
            .or(yaml.chunk_ms)
            .unwrap_or(plan::DEFAULT_CHUNK_MS),
    )?;
    let plan = capacity::CapacityPlan::resolve(&args, chunk_ms)?;
    let dir = args.conversations.clone().unwrap_or_default();
    let convs: Arc<[conversation::Conversation]> = conversation::load(&dir, plan.joining)?.into();
    let base = SessionSettings::resolve(&args.session, &yaml, "capacity", None)?;
    client::connect(&base.server).await?;
    let stop = CancellationToken::new();
    client::stop_on_ctrl_c(stop.clone());
    let report = capacity::run(&plan, &base, convs, stop).await?;
    io::stdout()
        .lock()
        .write_all(report.table().as_bytes())
        .context("writing the table to stdout")?;
    if let Some(path) = &args.json_summary {
        write_file(path, |w| {
            serde_json::to_writer_pretty(&mut *w, &report)?;
            writeln!(w)
        })
        .with_context(|| format!("writing the JSON summary {}", path.display()))?;
    }
    Ok(())
}

/// The soak (`--duration`).
async fn run_soak(args: BenchArgs, duration: f64) -> anyhow::Result<()> {
    let yaml = load_client_file(&args.session)?;
    let plan = BenchPlan::resolve(&args, &yaml)?;
    let soak_plan = soak::SoakPlan::resolve(&args, duration)?;
    let base = SessionSettings::resolve(&args.session, &yaml, "soak", None)?;
    let clips: Arc<[Clip]> = load_clips(&plan.audio)?.into();
    client::connect(&base.server).await?;
    let stop = CancellationToken::new();
    client::stop_on_ctrl_c(stop.clone());
    let report = soak::run(&soak_plan, &plan, &base, clips, stop).await?;
    print!("{}", report.verdict_text());
    if let Some(path) = &plan.json_summary {
        write_file(path, |w| {
            serde_json::to_writer_pretty(&mut *w, &report)?;
            writeln!(w)
        })
        .with_context(|| format!("writing the JSON summary {}", path.display()))?;
    }
    if !report.verdict.passed {
        return Err(soak::SoakFailed(report.verdict.failures).into());
    }
    Ok(())
}

/// The session bench: channels × iterations of one clip or a directory.
pub async fn run_sessions(args: BenchArgs) -> anyhow::Result<Summary> {
    let yaml = load_client_file(&args.session)?;
    let plan = BenchPlan::resolve(&args, &yaml)?;
    let base = SessionSettings::resolve(&args.session, &yaml, "bench", None)?;
    let clips: Arc<[Clip]> = load_clips(&plan.audio)?.into();

    // One connection up front: a dead address then fails once, with the
    // client's hint, instead of once per session.
    client::connect(&base.server).await?;

    let stop = CancellationToken::new();
    client::stop_on_ctrl_c(stop.clone());
    let run = runner::run(&plan, &base, clips, stop).await;
    let summary = Summary::build(&plan, &base.server.shown, &run);
    report(&plan, &run, &summary, &base.server.shown)?;

    if run.interrupted {
        anyhow::bail!(
            "interrupted: {} of {} measured sessions ran",
            summary.sessions,
            plan.channels * plan.iterations
        );
    }
    if summary.sessions_failed > 0 {
        return Err(SessionsFailed {
            failed: summary.sessions_failed,
            total: summary.sessions,
            codes: summary.errors_text(),
        }
        .into());
    }
    Ok(summary)
}

/// Writes the session logs, the table and the JSON summary where the plan
/// says. stdout holds either the session logs or the table, so it stays
/// parseable when it carries logs.
fn report(
    plan: &BenchPlan,
    run: &RunOutput,
    summary: &Summary,
    server: &str,
) -> anyhow::Result<()> {
    let meta = LogMeta {
        started: run.started,
        finished: run.finished,
        server: server.to_string(),
        total_sessions: run.records.len(),
    };
    if let Some((path, format)) = &plan.file_log {
        write_file(path, |w| write_log(w, *format, &run.records, &meta))
            .with_context(|| format!("writing the session log {}", path.display()))?;
    }
    let table = summary.table();
    if let Some((format, max)) = plan.stdout_log {
        let shown = if max == 0 {
            run.records.len()
        } else {
            max.min(run.records.len())
        };
        write_log(
            &mut io::stdout().lock(),
            format,
            &run.records[..shown],
            &meta,
        )
        .context("writing session logs to stdout")?;
        eprint!("{table}");
    } else {
        io::stdout()
            .lock()
            .write_all(table.as_bytes())
            .context("writing the summary to stdout")?;
    }
    if let Some(path) = &plan.json_summary {
        write_file(path, |w| {
            serde_json::to_writer_pretty(&mut *w, summary)?;
            writeln!(w)
        })
        .with_context(|| format!("writing the JSON summary {}", path.display()))?;
    }
    Ok(())
}

/// What the user can do about failed sessions (connection and session
/// errors get theirs from [`client::hint_for`]).
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain().any(|e| e.is::<SessionsFailed>()).then(|| {
        "each failure's code and message are in the session log's `error_code` and \
         `error` columns (--log-sessions or --session-log-path)"
            .into()
    })
}

/// Creates `path` (and its parent directories) and writes it through `body`.
fn write_file(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = BufWriter::new(File::create(path)?);
    body(&mut w)?;
    w.flush()?;
    Ok(())
}
