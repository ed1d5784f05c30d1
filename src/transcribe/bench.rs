//! `stt transcribe --bench`: the offline cost baseline — whole-clip decode
//! time at 1 and 2 threads (with and without language detection on a
//! multilingual model), the effect of a smaller encoder window
//! (audio_ctx 384/768), Silero cost per 32 ms frame, and resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::audio::wav::Clip;
use crate::cli::TranscribeArgs;
use crate::engine::{DecodeParams, Engine, EngineConfig, EngineKind, Transcript};
use crate::vad::VadPool;

/// Prints the measurements for `clip`.
pub(super) fn run(
    engine: &Engine,
    vad: Option<&VadPool>,
    clip: &Clip,
    params: &DecodeParams,
    args: &TranscribeArgs,
    rss_after_load: Option<u64>,
) -> anyhow::Result<()> {
    let runs = args.bench_runs.max(1);
    let audio: Arc<[f32]> = clip.samples.clone().into();
    println!(
        "clip: {:.2} s, model {} ({}), profile {}, {} run(s) each",
        clip.duration_sec(),
        engine.model_path().display(),
        engine.model().kind.as_str(),
        args.decode_profile,
        runs
    );
    if let Some(rss) = rss_after_load {
        println!(
            "RSS after loading the model with one state: {:.1} MB",
            rss as f64 / 1e6
        );
    }
    let mut detected = None;
    // A decode here is timed as a final: the full encoder window, unless
    // --audio-ctx says otherwise (whisper.cpp only).
    for threads in [1, 2] {
        let mut cfg = EngineConfig::new(engine.model().clone());
        cfg.threads = threads;
        cfg.compute_type = args.compute_type.clone();
        let e = Engine::start(cfg).context("starting a measurement engine")?;
        let (best, mean, t) = time_decode(&e, &audio, params, runs)?;
        let detecting = e.multilingual() && params.language.is_none();
        let mode = if detecting {
            format!(
                ", auto-detect ({} {:.2})",
                t.language, t.language_probability
            )
        } else {
            String::new()
        };
        println!(
            "{} window, {threads} thread(s){mode}: best {:.3} s, mean {:.3} s, RTF {:.3} | {}",
            window_label(params),
            best.as_secs_f64(),
            mean.as_secs_f64(),
            best.as_secs_f64() / clip.duration_sec(),
            t.text()
        );
        if detecting {
            // The same decode with the detected language forced: the
            // difference is what detection (an extra encoder pass) costs.
            let mut forced = params.clone();
            forced.language = Some(t.language.clone());
            let (f_best, f_mean, _) = time_decode(&e, &audio, &forced, runs)?;
            println!(
                "{} window, {threads} thread(s), forced {}: best {:.3} s, mean {:.3} s (detection +{:.3} s)",
                window_label(params),
                t.language,
                f_best.as_secs_f64(),
                f_mean.as_secs_f64(),
                best.saturating_sub(f_best).as_secs_f64()
            );
            detected = Some(t.language.clone());
        }
        e.shutdown();
    }
    // Fitted windows are whisper.cpp's alone (CTranslate2 always encodes
    // 30 s); windows too small for the clip only show it looping.
    let fit = crate::engine::fit_audio_ctx(audio.len());
    let fitted: &[usize] = match engine.model().kind {
        EngineKind::WhisperCpp => &[1024, 768, 512],
        EngineKind::CTranslate2 => &[],
    };
    for &ctx in fitted.iter().filter(|&&c| fit != 0 && c >= fit) {
        let mut p = params.clone();
        p.audio_ctx = Some(ctx);
        // The window only changes the decode; leave detection out of it.
        let forced = match &detected {
            Some(lang) => {
                p.language = Some(lang.clone());
                format!(", forced {lang}")
            }
            None => String::new(),
        };
        let (best, mean, t) = time_decode(engine, &audio, &p, runs)?;
        println!(
            "audio_ctx {ctx}, {} thread(s){forced}: best {:.3} s, mean {:.3} s | {}",
            engine.threads(),
            best.as_secs_f64(),
            mean.as_secs_f64(),
            t.text()
        );
    }
    if let Some(vad) = vad {
        let mut stream = vad.acquire()?;
        let mut probs = Vec::new();
        let started = Instant::now();
        stream.push(&clip.samples, &mut probs)?;
        let per_frame = started.elapsed().as_secs_f64() / probs.len().max(1) as f64;
        println!(
            "Silero VAD: {:.3} ms per 32 ms frame ({} frames)",
            per_frame * 1e3,
            probs.len()
        );
    }
    if let Some(rss) = rss_bytes() {
        println!("RSS at the end: {:.1} MB", rss as f64 / 1e6);
    }
    Ok(())
}

/// "full" or the window --audio-ctx asked for.
fn window_label(params: &DecodeParams) -> String {
    match params.audio_ctx {
        Some(n) if n > 0 => format!("audio_ctx {n}"),
        _ => "full".into(),
    }
}

fn time_decode(
    engine: &Engine,
    audio: &Arc<[f32]>,
    params: &DecodeParams,
    runs: usize,
) -> anyhow::Result<(Duration, Duration, Transcript)> {
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    let mut last = Transcript::default();
    for _ in 0..runs {
        let t = engine.decode_blocking(audio.clone(), params.clone())?;
        best = best.min(t.inference);
        total += t.inference;
        last = t;
    }
    Ok((best, total / runs as u32, last))
}

/// Resident set size of this process (Linux), in bytes.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
