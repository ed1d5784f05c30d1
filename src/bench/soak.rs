//! `stt bench --duration SEC`: the soak. Every channel streams real-time
//! sessions back to back, each on a new connection, until the time is up.
//! Every `--report-every-sec` a row is printed: the server's RSS, open files,
//! threads and sessions (from its `/system` and `/metrics.json`), and the
//! sessions, errors and end of speech → final percentiles of that interval.
//! At the end [`judge`] passes the run when, after the warm-up, RSS drifted
//! no more than the limit, open files and threads did not grow, and no
//! session failed.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::plan::{BenchPlan, Clip};
use super::record::error_code;
use super::stats::{round3, Distribution};
use crate::cli::BenchArgs;
use crate::client::{stream_audio, Sending, SessionSettings, StreamOptions};
use crate::dashboard::poll::Poller;
use crate::UsageError;

/// The validated soak.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakPlan {
    pub duration: Duration,
    pub every: Duration,
    pub warmup: Duration,
    pub max_rss_drift_percent: f64,
    pub system_url: String,
    pub metrics_url: String,
}

impl SoakPlan {
    pub fn resolve(args: &BenchArgs, duration: f64) -> Result<Self, UsageError> {
        let check = |flag: &str, v: f64, min: f64, max: f64| {
            if v.is_finite() && (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(UsageError(format!(
                    "{flag} must be between {min} and {max}, got {v}"
                )))
            }
        };
        // A week is longer than anyone watches a soak; the bound only
        // keeps the arithmetic finite.
        let duration = check("--duration", duration, 1.0, 7.0 * 86_400.0)?;
        let every = check("--report-every-sec", args.report_every_sec, 0.5, duration)?;
        let warmup = check("--soak-warmup-sec", args.soak_warmup_sec, 0.0, duration)?;
        if duration - warmup < 2.0 * every {
            return Err(UsageError(format!(
                "a soak of {duration} s with {warmup} s of warm-up leaves fewer than two \
                 report rows of {every} s to compare: lengthen --duration or shorten \
                 --soak-warmup-sec"
            )));
        }
        Ok(Self {
            duration: Duration::from_secs_f64(duration),
            every: Duration::from_secs_f64(every),
            warmup: Duration::from_secs_f64(warmup),
            max_rss_drift_percent: check(
                "--max-rss-drift-percent",
                args.max_rss_drift_percent,
                0.0,
                1000.0,
            )?,
            system_url: args.system_url.clone(),
            metrics_url: args.metrics_url.clone(),
        })
    }
}

/// One report row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the soak started.
    pub at_sec: f64,
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    /// Sessions the server holds open.
    pub server_sessions: Option<u64>,
    /// Why the server's figures are missing from this row.
    pub poll_error: Option<String>,
    /// Sessions that ended during the interval.
    pub sessions_ok: usize,
    pub errors: usize,
    pub error_codes: Vec<String>,
    /// End of speech → final over the finals of the interval.
    pub final_latency_sec: Option<Distribution>,
}

/// What the sessions of one interval did.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    error_codes: Vec<String>,
    latencies: Vec<f64>,
}

/// The pass/fail of a whole soak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Growth of RSS from the start to the end of the measured part, in
    /// percent (each end the median of up to three rows).
    pub rss_drift_percent: Option<f64>,
    pub open_fds_growth: Option<i64>,
    pub threads_growth: Option<i64>,
    pub errors: usize,
    pub passed: bool,
    /// Each failed check, in words.
    pub failures: Vec<String>,
}

/// The soak's JSON summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoakReport {
    pub server: String,
    pub channels: usize,
    pub duration_sec: f64,
    pub warmup_sec: f64,
    pub report_every_sec: f64,
    pub sessions_ok: usize,
    pub errors: usize,
    pub final_latency_sec: Option<Distribution>,
    pub samples: Vec<Sample>,
    pub verdict: Verdict,
}

/// The soak ran but did not pass.
#[derive(Debug, thiserror::Error)]
#[error("the soak failed: {}", .0.join("; "))]
pub struct SoakFailed(pub Vec<String>);

/// Runs the soak, printing each row to stdout as it is taken.
pub async fn run(
    soak: &SoakPlan,
    plan: &BenchPlan,
    base: &SessionSettings,
    clips: Arc<[Clip]>,
    stop: CancellationToken,
) -> anyhow::Result<SoakReport> {
    let poller = Poller::new(
        &soak.metrics_url,
        &soak.system_url,
        base.server.tls.as_ref(),
    )?;
    let first = take_sample(&poller, 0.0, Tally::default()).await;
    if let Some(e) = &first.poll_error {
        anyhow::bail!(
            "the soak needs the server's figures: {e} (pass --system-url and --metrics-url)"
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "soak: {} real-time streams for {} s on {}, each session on a new connection; \
         a row every {} s; the first {} s are warm-up",
        plan.channels,
        soak.duration.as_secs_f64(),
        base.server.shown,
        soak.every.as_secs_f64(),
        soak.warmup.as_secs_f64(),
    )?;
    writeln!(out, "{}", HEADER)?;
    writeln!(out, "{}", row(&first))?;
    drop(out);

    let tally = Arc::new(Mutex::new(Tally::default()));
    let all_latencies = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let deadline = t0 + soak.duration;
    let sending = match plan.sending {
        Sending::Realtime { chunk_ms } | Sending::Burst { chunk_ms } => {
            Sending::Realtime { chunk_ms }
        }
        Sending::Whole => Sending::Realtime {
            chunk_ms: super::plan::DEFAULT_CHUNK_MS,
        },
    };
    let mut tasks = JoinSet::new();
    for channel in 0..plan.channels {
        tasks.spawn(run_channel(Channel {
            index: channel,
            start: t0 + plan.ramp_delay(channel),
            deadline,
            base: base.clone(),
            clips: clips.clone(),
            sending,
            stop: stop.clone(),
            tally: tally.clone(),
            all_latencies: all_latencies.clone(),
        }));
    }

    let mut samples = vec![first];
    let mut next = t0 + soak.every;
    // Rows on schedule until every channel has finished its last session
    // (which may end after the deadline), then one for the remainder.
    while !tasks.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                let done = std::mem::take(&mut *lock(&tally));
                let s = take_sample(&poller, t0.elapsed().as_secs_f64(), done).await;
                println!("{}", row(&s));
                samples.push(s);
                next += soak.every;
            }
            _ = tasks.join_next() => {}
        }
    }
    let rest = std::mem::take(&mut *lock(&tally));
    if rest.ok + rest.error_codes.len() > 0 {
        let s = take_sample(&poller, t0.elapsed().as_secs_f64(), rest).await;
        println!("{}", row(&s));
        samples.push(s);
    }
    if stop.is_cancelled() {
        anyhow::bail!(
            "interrupted after {:.0} of {} s",
            t0.elapsed().as_secs_f64(),
            soak.duration.as_secs_f64()
        );
    }

    let verdict = judge(
        &samples,
        soak.warmup.as_secs_f64(),
        plan.channels as u64,
        soak.max_rss_drift_percent,
    );
    let latencies = std::mem::take(&mut *lock(&all_latencies));
    Ok(SoakReport {
        server: base.server.shown.clone(),
        channels: plan.channels,
        duration_sec: soak.duration.as_secs_f64(),
        warmup_sec: soak.warmup.as_secs_f64(),
        report_every_sec: soak.every.as_secs_f64(),
        sessions_ok: samples.iter().map(|s| s.sessions_ok).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
        final_latency_sec: Distribution::of(latencies).map(Distribution::rounded),
        samples,
        verdict,
    })
}

/// A poisoned tally still counts: a panicking channel must not hide the
/// others' sessions.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one channel task needs.
struct Channel {
    index: usize,
    start: Instant,
    deadline: Instant,
    base: SessionSettings,
    clips: Arc<[Clip]>,
    sending: Sending,
    stop: CancellationToken,
    tally: Arc<Mutex<Tally>>,
    all_latencies: Arc<Mutex<Vec<f64>>>,
}

/// Sessions back to back until the deadline; none starts after it.
async fn run_channel(ch: Channel) {
    tokio::select! {
        _ = ch.stop.cancelled() => return,
        _ = tokio::time::sleep_until(ch.start.into()) => {}
    }
    let mut k = 0usize;
    while Instant::now() < ch.deadline && !ch.stop.is_cancelled() {
        let mut session = ch.base.clone();
        session.session_id = format!("{}-soak-c{}-s{k}", ch.base.session_id, ch.index);
        let clip = &ch.clips[(ch.index + k) % ch.clips.len()];
        let result = stream_audio(StreamOptions {
            session,
            audio: clip.samples.clone(),
            sending: ch.sending,
            stop: ch.stop.child_token(),
        })
        .await;
        match result {
            Ok(outcome) => {
                let finals: Vec<f64> = outcome
                    .results
                    .iter()
                    .zip(&outcome.timings)
                    .filter(|(r, _)| r.is_final)
                    .filter_map(|(_, t)| t.latency_sec)
                    .collect();
                lock(&ch.all_latencies).extend_from_slice(&finals);
                let mut t = lock(&ch.tally);
                t.ok += 1;
                t.latencies.extend(finals);
            }
            Err(err) => lock(&ch.tally).error_codes.push(error_code(&err)),
        }
        k += 1;
    }
}

/// One row: the server's figures now, and the interval's sessions.
async fn take_sample(poller: &Poller, at_sec: f64, done: Tally) -> Sample {
    let poll = poller.poll().await;
    let mut errors = Vec::new();
    let process = match poll.system {
        Ok(sys) => sys.process,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let server_sessions = match poll.metrics {
        Ok(m) => Some(m.active_sessions),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let mut codes = done.error_codes.clone();
    codes.sort();
    codes.dedup();
    Sample {
        at_sec: round3(at_sec),
        rss_bytes: process.as_ref().map(|p| p.rss_bytes),
        open_fds: process.as_ref().and_then(|p| p.open_fds),
        threads: process.as_ref().and_then(|p| p.threads),
        server_sessions,
        poll_error: (!errors.is_empty()).then(|| errors.join("; ")),
        sessions_ok: done.ok,
        errors: done.error_codes.len(),
        error_codes: codes,
        final_latency_sec: Distribution::of(done.latencies).map(Distribution::rounded),
    }
}

const HEADER: &str = "  elapsed    rss MB   fds  threads  sessions     ok  errors  \
                      final p50   p90    p99    max";

fn row(s: &Sample) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let lat = s.final_latency_sec.map_or_else(
        || format!("{:>9} {:>5} {:>6} {:>6}", "-", "-", "-", "-"),
        |d| {
            format!(
                "{:>9.3} {:>5.3} {:>6.3} {:>6.3}",
                d.p50, d.p90, d.p99, d.max
            )
        },
    );
    let mut line = format!(
        "{:>7.0} s {:>9} {:>5} {:>8} {:>9} {:>6} {:>7}  {lat}",
        s.at_sec,
        s.rss_bytes
            .map_or_else(|| "-".into(), |b| format!("{:.1}", b as f64 / 1e6)),
        opt(s.open_fds),
        opt(s.threads),
        opt(s.server_sessions),
        s.sessions_ok,
        s.errors,
    );
    if !s.error_codes.is_empty() {
        line.push_str(&format!("  [{}]", s.error_codes.join(", ")));
    }
    if let Some(e) = &s.poll_error {
        line.push_str(&format!("  (no server figures: {e})"));
    }
    line
}

/// The middle value of up to three, ignoring missing ones.
fn median3(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let mut v: Vec<u64> = values.flatten().collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Passes a soak: no session failed, and between the first and the last
/// rows after `warmup_sec` (the median of up to three at each end, so one
/// row caught mid-reconnect cannot decide) RSS grew at most
/// `max_drift_percent` and open files and threads grew by at most `slack`
/// (one connection per stream in flight).
pub fn judge(samples: &[Sample], warmup_sec: f64, slack: u64, max_drift_percent: f64) -> Verdict {
    let mut failures = Vec::new();
    let errors: usize = samples.iter().map(|s| s.errors).sum();
    if errors > 0 {
        let mut codes: Vec<&str> = samples
            .iter()
            .flat_map(|s| s.error_codes.iter().map(String::as_str))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        failures.push(format!("{errors} sessions failed ({})", codes.join(", ")));
    }
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.at_sec >= warmup_sec).collect();
    let blind = measured.iter().filter(|s| s.poll_error.is_some()).count();
    if blind > 0 {
        failures.push(format!("{blind} rows without the server's figures"));
    }
    let ends = |f: fn(&Sample) -> Option<u64>| {
        let n = measured.len().min(3);
        if measured.len() < 2 {
            return None;
        }
        let head = median3(measured[..n].iter().map(|s| f(s)));
        let tail = median3(measured[measured.len() - n..].iter().map(|s| f(s)));
        head.zip(tail)
    };
    if measured.len() < 2 {
        failures.push(format!(
            "fewer than two rows after the {warmup_sec} s warm-up: nothing to compare"
        ));
    }
    let rss = ends(|s| s.rss_bytes);
    let rss_drift_percent =
        rss.map(|(a, b)| round3((b as f64 - a as f64) / (a.max(1) as f64) * 100.0));
    if let Some(d) = rss_drift_percent.filter(|d| *d > max_drift_percent) {
        failures.push(format!(
            "RSS grew {d:.1} % after the warm-up (limit {max_drift_percent} %)"
        ));
    }
    let growth = |pair: Option<(u64, u64)>| pair.map(|(a, b)| b as i64 - a as i64);
    let open_fds_growth = growth(ends(|s| s.open_fds));
    let threads_growth = growth(ends(|s| s.threads));
    for (what, g) in [("open files", open_fds_growth), ("threads", threads_growth)] {
        match g {
            Some(g) if g > slack as i64 => failures.push(format!(
                "{what} grew by {g} after the warm-up (more than the {slack} streams in flight)"
            )),
            None if measured.len() >= 2 => {
                failures.push(format!("the server did not report its {what}"))
            }
            _ => {}
        }
    }
    Verdict {
        rss_drift_percent,
        open_fds_growth,
        threads_growth,
        errors,
        passed: failures.is_empty(),
        failures,
    }
}

impl SoakReport {
    /// The closing lines under the rows.
    pub fn verdict_text(&self) -> String {
        let v = &self.verdict;
        let opt = |x: Option<i64>| x.map_or_else(|| "-".into(), |x| format!("{x:+}"));
        let lat = self.final_latency_sec.map_or_else(
            || "-".into(),
            |d| format!("p50 {:.3} s, p90 {:.3} s, p99 {:.3} s", d.p50, d.p90, d.p99),
        );
        let mut text = format!(
            "sessions {} ok, {} failed; end of speech → final {lat}\n\
             after warm-up: RSS {}, open files {}, threads {}\n",
            self.sessions_ok,
            self.errors,
            v.rss_drift_percent
                .map_or_else(|| "-".into(), |d| format!("{d:+.1} %")),
            opt(v.open_fds_growth),
            opt(v.threads_growth),
        );
        if v.passed {
            text.push_str("PASS\n");
        } else {
            for f in &v.failures {
                text.push_str(&format!("FAIL: {f}\n"));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(n: usize, rss: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                at_sec: i as f64 * 60.0,
                rss_bytes: Some(rss(i)),
                open_fds: Some(40),
                threads: Some(20),
                server_sessions: Some(4),
                sessions_ok: 10,
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn a_steady_run_passes_and_warm_up_growth_is_left_out() {
        // RSS doubles during the first two minutes, then holds.
        let s = steady(10, |i| if i < 2 { 100 << 20 } else { 200 << 20 });
        let v = judge(&s, 120.0, 4, 5.0);
        assert!(v.passed, "{:?}", v.failures);
        assert_eq!(v.rss_drift_percent, Some(0.0));
        assert_eq!((v.open_fds_growth, v.threads_growth), (Some(0), Some(0)));
    }

    #[test]
    fn rss_drift_over_the_limit_fails() {
        // 2 % a minute: the medians of minutes 2–4 and 7–9 are 9.4 % apart.
        let s = steady(10, |i| (1000 + 20 * i as u64) << 20);
        let v = judge(&s, 120.0, 4, 5.0);
        assert!(!v.passed);
        assert!(v.failures[0].starts_with("RSS grew"), "{:?}", v.failures);
        assert!(judge(&s, 120.0, 4, 10.0).passed);
    }

    #[test]
    fn growing_open_files_or_threads_fail_beyond_the_streams_in_flight() {
        let mut s = steady(10, |_| 100 << 20);
        for (i, x) in s.iter_mut().enumerate() {
            x.open_fds = Some(40 + i as u64);
        }
        let v = judge(&s, 0.0, 4, 5.0);
        assert_eq!(v.open_fds_growth, Some(7));
        assert!(!v.passed);
        assert!(judge(&s, 0.0, 8, 5.0).passed);
        let mut s = steady(10, |_| 100 << 20);
        s[9].threads = Some(30);
        s[8].threads = Some(30);
        let v = judge(&s, 0.0, 4, 5.0);
        assert_eq!(v.threads_growth, Some(10));
        assert!(
            v.failures[0].starts_with("threads grew"),
            "{:?}",
            v.failures
        );
    }

    #[test]
    fn any_error_or_missing_figure_fails() {
        let mut s = steady(6, |_| 100 << 20);
        s[1].errors = 1;
        s[1].error_codes = vec!["ERR2002".into()];
        let v = judge(&s, 0.0, 4, 5.0);
        assert_eq!(v.errors, 1);
        assert_eq!(v.failures, vec!["1 sessions failed (ERR2002)".to_string()]);
        let mut s = steady(6, |_| 100 << 20);
        s[3].poll_error = Some("connection refused".into());
        s[3].rss_bytes = None;
        assert!(!judge(&s, 0.0, 4, 5.0).passed);
        // Nothing after the warm-up: nothing proven.
        assert!(!judge(&steady(3, |_| 1), 600.0, 4, 5.0).passed);
    }

    #[test]
    fn median_of_three_ignores_missing_values() {
        assert_eq!(median3([Some(5), Some(1), Some(9)].into_iter()), Some(5));
        assert_eq!(median3([None, Some(7)].into_iter()), Some(7));
        assert_eq!(median3([None, None].into_iter()), None);
    }
}
