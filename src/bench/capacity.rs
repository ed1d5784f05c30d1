//! `stt bench --conversations DIR --levels 1,2,4,…`: how many people can
//! talk to the server at once before their results come late. For each
//! level N, N streams play conversation audio in real time, all starting
//! together (or `--stagger-sec` apart), through the real client. Each
//! utterance's end → final is measured on the audio timeline
//! ([`conversation::match_finals`]); the server's CPU and RSS come from its
//! `/system`. A level passes with p95 within `--max-p95-sec`, no errors and
//! no utterance without a final; the largest passing level is the capacity.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::conversation::{self, Conversation, FinalSeen, Joining};
use super::record::error_code;
use super::stats::{percentile, round3};
use crate::cli::BenchArgs;
use crate::client::{stream_audio_with, Sending, SessionSettings, StreamOptions};
use crate::dashboard::poll::Poller;
use crate::UsageError;

/// How often the server's `/system` is read during a level.
const SYSTEM_EVERY: Duration = Duration::from_secs(1);

/// The validated sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityPlan {
    /// Stream counts, ascending, without repeats.
    pub levels: Vec<usize>,
    /// Delay between two streams' starts within a level.
    pub stagger: Duration,
    /// Rounds per level; round r gives stream i conversation i + r·N.
    pub rounds: usize,
    pub chunk_ms: u64,
    /// A level passes with p95 end of utterance → final at most this.
    pub max_p95_sec: f64,
    pub joining: Joining,
    pub system_url: String,
}

impl CapacityPlan {
    pub fn resolve(args: &BenchArgs, chunk_ms: u64) -> Result<Self, UsageError> {
        let mut levels = args.levels.clone();
        if levels.is_empty() || levels.contains(&0) {
            return Err(UsageError(
                "--levels needs stream counts of at least 1, e.g. --levels 1,2,4,8".into(),
            ));
        }
        levels.sort_unstable();
        levels.dedup();
        let check = |flag: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(v)
            } else {
                Err(UsageError(format!(
                    "{flag} must be between 0 and {max}, got {v}"
                )))
            }
        };
        let stagger = check("--stagger-sec", args.stagger_sec, 600.0)?;
        let gap = check("--gap-sec", args.gap_sec, 60.0)?;
        let max_p95_sec = check("--max-p95-sec", args.max_p95_sec, 3600.0)?;
        if args.rounds == 0 {
            return Err(UsageError("--rounds must be at least 1".into()));
        }
        if args.utterances_per_stream == 0 {
            return Err(UsageError(
                "--utterances-per-stream must be at least 1".into(),
            ));
        }
        Ok(Self {
            levels,
            stagger: Duration::from_secs_f64(stagger),
            rounds: args.rounds,
            chunk_ms,
            max_p95_sec,
            joining: Joining {
                utterances_per_stream: args.utterances_per_stream,
                gap_sec: gap,
            },
            system_url: args.system_url.clone(),
        })
    }
}

/// Percentiles of one latency, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self {
            p50: round3(percentile(&v, 50.0)),
            p95: round3(percentile(&v, 95.0)),
            max: round3(v[v.len() - 1]),
        })
    }
}

/// One level's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    pub streams: usize,
    pub utterances: usize,
    /// Utterances a final closed after their end.
    pub answered: usize,
    /// Utterances no final covered.
    pub missing: usize,
    /// Utterances whose closing final came before their reference end.
    pub early: usize,
    /// Streams that failed, and their error codes.
    pub errors: usize,
    pub error_codes: Vec<String>,
    pub end_of_utterance_to_final_sec: Option<Spread>,
    /// Stream start of speech → first result (partial or final).
    pub first_result_sec: Option<Spread>,
    /// The server process's CPU, 100 = one core (from `/system`).
    pub cpu_percent_mean: Option<f64>,
    pub cpu_percent_max: Option<f64>,
    pub rss_bytes_max: Option<u64>,
    pub passed: bool,
}

/// The whole sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityReport {
    pub server: String,
    pub conversations: usize,
    pub max_p95_sec: f64,
    pub stagger_sec: f64,
    pub levels: Vec<Level>,
    /// The largest level that passed; 0 when none did.
    pub capacity: usize,
}

/// Runs every level in turn (stopping early on Ctrl-C).
pub async fn run(
    plan: &CapacityPlan,
    base: &SessionSettings,
    convs: Arc<[Conversation]>,
    stop: CancellationToken,
) -> anyhow::Result<CapacityReport> {
    let poller = Poller::new(&plan.system_url, &plan.system_url, base.server.tls.as_ref())?;
    if let Err(e) = poller.system().await {
        eprintln!("warning: no server CPU and RSS figures: {e} (pass --system-url)");
    }
    let mut levels = Vec::with_capacity(plan.levels.len());
    for (i, &n) in plan.levels.iter().enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let level = run_level(
            plan,
            base,
            &convs,
            n,
            (i + 1, plan.levels.len()),
            &poller,
            &stop,
        )
        .await;
        eprintln!("{}", level_line(&level));
        levels.push(level);
    }
    if stop.is_cancelled() {
        anyhow::bail!(
            "interrupted after {} of {} levels",
            levels.len(),
            plan.levels.len()
        );
    }
    Ok(CapacityReport {
        server: base.server.shown.clone(),
        conversations: convs.len(),
        max_p95_sec: plan.max_p95_sec,
        stagger_sec: plan.stagger.as_secs_f64(),
        capacity: levels
            .iter()
            .filter(|l| l.passed)
            .map(|l| l.streams)
            .max()
            .unwrap_or(0),
        levels,
    })
}

/// What one stream brought back.
struct StreamDone {
    matched: conversation::Matched,
    utterances: usize,
    first_result: Option<f64>,
    error: Option<String>,
}

async fn run_level(
    plan: &CapacityPlan,
    base: &SessionSettings,
    convs: &Arc<[Conversation]>,
    n: usize,
    (index, of): (usize, usize),
    poller: &Poller,
    stop: &CancellationToken,
) -> Level {
    let mut done = Vec::with_capacity(n * plan.rounds);
    let (mut cpu, mut rss) = (Vec::new(), None);
    for round in 0..plan.rounds {
        if stop.is_cancelled() {
            break;
        }
        let label = format!("level {index}/{of}, round {}/{}", round + 1, plan.rounds);
        let mut r = run_round(plan, base, convs, n, round, &label, poller, stop).await;
        done.append(&mut r.0);
        cpu.append(&mut r.1);
        rss = rss.max(r.2);
    }
    summarise(plan, n, done, &cpu, rss)
}

/// One round of a level: `n` streams, then their results, CPU samples and
/// the largest RSS seen.
#[allow(clippy::too_many_arguments)]
async fn run_round(
    plan: &CapacityPlan,
    base: &SessionSettings,
    convs: &Arc<[Conversation]>,
    n: usize,
    round: usize,
    label: &str,
    poller: &Poller,
    stop: &CancellationToken,
) -> (Vec<StreamDone>, Vec<f64>, Option<u64>) {
    let pick = |i: usize| &convs[(i + round * n) % convs.len()];
    let longest = (0..n)
        .map(|i| {
            crate::audio::seconds(pick(i).samples.len()) + plan.stagger.as_secs_f64() * i as f64
        })
        .fold(0.0, f64::max);
    let bar = progress_bar(label, n, longest);
    let finals = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let conv = pick(i).clone();
        let mut session = base.clone();
        session.session_id = format!("{}-n{n}-r{round}-s{i}", base.session_id);
        let opts = StreamOptions {
            session,
            audio: conv.samples.clone(),
            sending: Sending::Realtime {
                chunk_ms: plan.chunk_ms,
            },
            stop: stop.child_token(),
        };
        let delay = plan.stagger * i as u32;
        let finals = finals.clone();
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut seen = |r: &crate::pb::SttResult, _: &crate::client::ResultTiming| {
                if r.is_final {
                    finals.fetch_add(1, Ordering::Relaxed);
                }
            };
            stream_done(&conv, stream_audio_with(opts, &mut seen).await)
        });
    }
    let started = Instant::now();
    let mut cpu = Vec::new();
    let mut rss_max: Option<u64> = None;
    let mut every = tokio::time::interval(SYSTEM_EVERY);
    // The first /system read only starts the CPU measurement window.
    let _ = poller.system().await;
    every.tick().await;
    let mut done = Vec::with_capacity(n);
    while done.len() < n {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(d)) => done.push(d),
                // A stream task panicking is a bench bug; count it as an error.
                Some(Err(e)) => done.push(StreamDone {
                    matched: Default::default(),
                    utterances: 0,
                    first_result: None,
                    error: Some(format!("stream task failed: {e}")),
                }),
                None => break,
            },
            _ = every.tick() => {
                if let Ok(s) = poller.system().await {
                    if let Some(p) = s.process {
                        cpu.push(p.cpu_percent);
                        rss_max = Some(rss_max.unwrap_or(0).max(p.rss_bytes));
                    }
                }
                bar.set_position(started.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{} finals, {} streams done",
                    finals.load(Ordering::Relaxed),
                    done.len()
                ));
            }
        }
    }
    bar.finish_and_clear();
    (done, cpu, rss_max)
}

fn stream_done(
    conv: &Conversation,
    result: Result<crate::client::StreamOutcome, crate::client::ClientError>,
) -> StreamDone {
    let utterances = conv.utterances.len();
    match result {
        Err(e) => StreamDone {
            matched: Default::default(),
            utterances,
            first_result: None,
            error: Some(error_code(&e)),
        },
        Ok(outcome) => {
            let finals: Vec<FinalSeen> = outcome
                .results
                .iter()
                .zip(&outcome.timings)
                .filter(|(r, _)| r.is_final)
                .filter_map(|(r, t)| {
                    Some(FinalSeen {
                        start_sec: r.start_sec,
                        end_sec: r.end_sec,
                        latency_sec: t.latency_sec?,
                    })
                })
                .collect();
            let speech_start = conv.utterances.first().map_or(0.0, |u| u.0);
            StreamDone {
                matched: conversation::match_finals(&conv.utterances, &finals),
                utterances,
                first_result: outcome
                    .timings
                    .iter()
                    .map(|t| t.received_sec)
                    .reduce(f64::min)
                    .map(|t| t - speech_start),
                error: None,
            }
        }
    }
}

fn summarise(
    plan: &CapacityPlan,
    n: usize,
    done: Vec<StreamDone>,
    cpu: &[f64],
    rss_bytes_max: Option<u64>,
) -> Level {
    let mut latencies = Vec::new();
    let mut firsts = Vec::new();
    let mut error_codes: Vec<String> = Vec::new();
    let (mut utterances, mut missing, mut early, mut errors) = (0, 0, 0, 0);
    for d in done {
        utterances += d.utterances;
        if let Some(code) = d.error {
            errors += 1;
            if !error_codes.contains(&code) {
                error_codes.push(code);
            }
            // A failed stream's utterances have no finals to count on.
            missing += d.utterances;
            continue;
        }
        missing += d.matched.missing;
        early += d.matched.early;
        latencies.extend(d.matched.latencies);
        firsts.extend(d.first_result);
    }
    let e2f = Spread::of(&latencies);
    let passed = errors == 0 && missing == 0 && e2f.is_some_and(|s| s.p95 <= plan.max_p95_sec);
    let mean = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);
    Level {
        streams: n,
        utterances,
        answered: latencies.len(),
        missing,
        early,
        errors,
        error_codes,
        end_of_utterance_to_final_sec: e2f,
        first_result_sec: Spread::of(&firsts),
        cpu_percent_mean: mean.map(|m| (m * 10.0).round() / 10.0),
        cpu_percent_max: cpu.iter().copied().reduce(f64::max),
        rss_bytes_max,
        passed,
    }
}

fn progress_bar(label: &str, n: usize, seconds: f64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some((seconds * 1000.0) as u64),
        ProgressDrawTarget::stderr(),
    );
    let template =
        format!("{label}: {n} streams {{bar:30}} {{elapsed_precise}} of ~{seconds:.0} s {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// One line per level, printed as it finishes.
fn level_line(l: &Level) -> String {
    let e = l.end_of_utterance_to_final_sec;
    format!(
        "{} streams: end of utterance → final p50 {} p95 {} max {} s, {} of {} answered, \
         {} missing, {} errors, CPU {}%: {}",
        l.streams,
        secs(e.map(|s| s.p50)),
        secs(e.map(|s| s.p95)),
        secs(e.map(|s| s.max)),
        l.answered,
        l.utterances,
        l.missing,
        l.errors,
        l.cpu_percent_mean
            .map_or_else(|| "-".into(), |c| format!("{c:.0}")),
        if l.passed { "pass" } else { "FAIL" },
    )
}

impl CapacityReport {
    /// The table printed at the end.
    pub fn table(&self) -> String {
        let mut out = format!(
            "capacity sweep against {}: {} conversations, streams start {}\n\n",
            self.server,
            self.conversations,
            if self.stagger_sec > 0.0 {
                format!("{:.1} s apart", self.stagger_sec)
            } else {
                "together".into()
            }
        );
        out.push_str(
            "streams  utts  answered  missing  early  errors  e2f p50  e2f p95  e2f max  first p50  cpu mean  cpu max  rss max  verdict\n",
        );
        for l in &self.levels {
            let e = l.end_of_utterance_to_final_sec;
            let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |c| format!("{c:.0}%"));
            out.push_str(&format!(
                "{:>7}  {:>4}  {:>8}  {:>7}  {:>5}  {:>6}  {:>7}  {:>7}  {:>7}  {:>9}  {:>8}  {:>7}  {:>7}  {}\n",
                l.streams,
                l.utterances,
                l.answered,
                l.missing,
                l.early,
                if l.error_codes.is_empty() {
                    l.errors.to_string()
                } else {
                    format!("{} ({})", l.errors, l.error_codes.join(","))
                },
                secs(e.map(|s| s.p50)),
                secs(e.map(|s| s.p95)),
                secs(e.map(|s| s.max)),
                secs(l.first_result_sec.map(|s| s.p50)),
                pct(l.cpu_percent_mean),
                pct(l.cpu_percent_max),
                l.rss_bytes_max
                    .map_or_else(|| "-".into(), |b| format!("{} MB", b / 1_000_000)),
                if l.passed { "pass" } else { "FAIL" },
            ));
        }
        out.push_str(&format!(
            "\ncapacity: {} streams (largest level with p95 end of utterance → final ≤ {:.2} s, \
             no errors, no utterance without a final)\n",
            self.capacity, self.max_p95_sec
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation::Matched;

    fn plan() -> CapacityPlan {
        CapacityPlan {
            levels: vec![1, 2],
            stagger: Duration::ZERO,
            rounds: 1,
            chunk_ms: 100,
            max_p95_sec: 1.5,
            joining: Joining {
                utterances_per_stream: 4,
                gap_sec: 1.0,
            },
            system_url: "http://127.0.0.1:8000/system".into(),
        }
    }

    fn ok(latencies: Vec<f64>, missing: usize) -> StreamDone {
        StreamDone {
            utterances: latencies.len() + missing,
            matched: Matched {
                latencies,
                missing,
                early: 0,
            },
            first_result: Some(0.8),
            error: None,
        }
    }

    #[test]
    fn a_level_passes_only_within_p95_without_errors_or_missing_finals() {
        let good = summarise(
            &plan(),
            2,
            vec![ok(vec![0.5; 10], 0), ok(vec![0.6; 10], 0)],
            &[150.0],
            None,
        );
        assert!(good.passed, "{good:?}");
        assert_eq!(good.cpu_percent_mean, Some(150.0));
        let slow = summarise(&plan(), 1, vec![ok(vec![0.5, 0.5, 2.0, 2.0], 0)], &[], None);
        assert!(!slow.passed);
        let missing = summarise(&plan(), 1, vec![ok(vec![0.5; 4], 1)], &[], None);
        assert!(!missing.passed);
        assert_eq!(missing.missing, 1);
        let failed = StreamDone {
            matched: Matched::default(),
            utterances: 3,
            first_result: None,
            error: Some("ERR1008".into()),
        };
        let refused = summarise(&plan(), 2, vec![ok(vec![0.5; 4], 0), failed], &[], None);
        assert!(!refused.passed);
        assert_eq!((refused.errors, refused.missing), (1, 3));
        assert_eq!(refused.error_codes, vec!["ERR1008".to_string()]);
    }

    #[test]
    fn levels_are_sorted_and_checked() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["stt", "bench", "--conversations", "/tmp"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("valid").command {
                Command::Bench(a) => CapacityPlan::resolve(&a, 100),
                other => panic!("not bench: {other:?}"),
            }
        };
        let p = parse(&["--levels", "4,1,2,4"]).expect("valid");
        assert_eq!(p.levels, vec![1, 2, 4]);
        assert!(parse(&["--levels", "0,2"]).is_err());
        assert!(parse(&["--stagger-sec", "-1"]).is_err());
    }
}
