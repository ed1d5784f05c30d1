//! `stt transcribe`: offline transcription of WAV files with the same VAD and
//! engine code the server runs — VAD splits the file into utterances, each is
//! decoded, and segments are printed with file-relative timestamps. It is the
//! accuracy and cost baseline for the streaming path.

mod bench;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::audio::decode::read_audio;
use crate::audio::wav::Clip;
use crate::cli::TranscribeArgs;
use crate::config::{load_yaml, ModelFile};
use crate::engine::{DecodeParams, Engine, EngineConfig, ModelSource, Task};
use crate::models::store;
use crate::vad::{endpoint, EndpointConfig, VadConfig, VadPool};
use crate::UsageError;

/// One printed segment.
#[derive(Debug, Serialize)]
pub struct TimedText {
    pub start_sec: f64,
    pub end_sec: f64,
    pub text: String,
    /// With `--words`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<TimedWord>,
}

/// One word of a segment, in seconds of the file.
#[derive(Debug, Serialize)]
pub struct TimedWord {
    pub word: String,
    pub start_sec: f64,
    pub end_sec: f64,
    pub probability: f32,
}

/// Everything said in one file.
#[derive(Debug, Serialize)]
pub struct FileTranscript {
    pub file: PathBuf,
    pub duration_sec: f64,
    pub language: String,
    pub language_probability: f32,
    pub segments: Vec<TimedText>,
    pub text: String,
}

/// Runs the command.
pub fn run(args: TranscribeArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let models = load_model_config(&args.model_config)?;
    let params = decode_params(&args, &models)?;
    let threads = args
        .threads
        .unwrap_or_else(|| crate::engine::default_threads(1));
    let mut cfg = EngineConfig::new(ModelSource::resolve(&args.model, args.engine));
    cfg.threads = threads;
    cfg.compute_type = args.compute_type.clone();
    let engine = Engine::start(cfg).context("starting the decode engine")?;
    let rss_after_load = bench::rss_bytes();
    let vad = if args.no_vad {
        None
    } else {
        Some(start_vad()?)
    };

    if args.bench {
        let clip = read_audio(&args.files[0])?;
        let r = bench::run(&engine, vad.as_ref(), &clip, &params, &args, rss_after_load);
        engine.shutdown();
        return r;
    }

    for file in &args.files {
        let clip = read_audio(file)?;
        let t = transcribe_clip(&engine, vad.as_ref(), &clip, &params, &args, file)?;
        if args.json {
            println!("{}", serde_json::to_string(&t)?);
        } else {
            print_text(&t, args.files.len() > 1);
        }
    }
    engine.shutdown();
    Ok(())
}

/// Reads the model YAML; the default path may be absent (running outside the
/// checkout), an explicit one must exist.
fn load_model_config(path: &Path) -> anyhow::Result<ModelFile> {
    if path == Path::new("config/model.yaml") && !path.exists() {
        return Ok(ModelFile::default());
    }
    let f: ModelFile = load_yaml(path).map_err(|e| UsageError(e.to_string()))?;
    f.validate(path).map_err(|e| UsageError(e.to_string()))?;
    Ok(f)
}

fn decode_params(args: &TranscribeArgs, models: &ModelFile) -> anyhow::Result<DecodeParams> {
    let Some(profile) = models.decode_profiles.get(&args.decode_profile) else {
        let known: Vec<_> = models.decode_profiles.keys().cloned().collect();
        return Err(UsageError(format!(
            "unknown decode profile {:?} (known: {})",
            args.decode_profile,
            known.join(", ")
        ))
        .into());
    };
    let Some(task) = Task::parse(&args.task) else {
        return Err(UsageError(format!(
            "--task must be transcribe or translate, got {:?}",
            args.task
        ))
        .into());
    };
    let language = match args.language.as_deref() {
        None | Some("auto") | Some("") => None,
        Some(code) => Some(code.to_ascii_lowercase()),
    };
    Ok(DecodeParams {
        profile: profile.clone(),
        language,
        candidates: None,
        task,
        audio_ctx: args.audio_ctx,
        speech_sec: None,
        // Offline segments are independent; each detects its own language.
        detection: None,
        word_timestamps: args.words,
        prompt: args.prompt.as_deref().map(Arc::from),
    })
}

/// Starts a one-stream VAD pool from the provisioned files.
pub fn start_vad() -> anyhow::Result<VadPool> {
    let cfg = VadConfig {
        model_path: store::silero_model(None),
        runtime_path: store::ort_library(None),
        pool_size: 1,
        prewarm: 1,
        growth_factor: 1.0,
        max_sessions: 1,
    };
    Ok(VadPool::new(cfg)?)
}

/// Speech regions of a clip, in samples.
pub fn speech_regions(
    vad: &VadPool,
    clip: &Clip,
    threshold: f64,
    silence: f64,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut stream = vad.acquire()?;
    let mut probs = Vec::with_capacity(clip.samples.len() / 512 + 1);
    stream.push(&clip.samples, &mut probs)?;
    Ok(endpoint::regions(
        &probs,
        EndpointConfig::new(threshold, silence),
    ))
}

fn transcribe_clip(
    engine: &Engine,
    vad: Option<&VadPool>,
    clip: &Clip,
    params: &DecodeParams,
    args: &TranscribeArgs,
    file: &Path,
) -> anyhow::Result<FileTranscript> {
    let regions = match vad {
        Some(v) => speech_regions(v, clip, args.vad_threshold, args.vad_silence)?,
        None => vec![(0, clip.samples.len() as u64)],
    };
    let bar = progress(regions.len() as u64, file);
    let mut segments = Vec::new();
    let mut language = String::new();
    let mut probability = 0.0;
    for (start, end) in regions {
        let audio: Arc<[f32]> = clip.samples[start as usize..end as usize].into();
        let t = engine
            .decode_blocking(audio, params.clone())
            .with_context(|| {
                format!(
                    "decoding {} at {:.2} s",
                    file.display(),
                    start as f64 / 16_000.0
                )
            })?;
        if language.is_empty() {
            language = t.language.clone();
            probability = t.language_probability;
        }
        let offset = start as f64 / 16_000.0;
        let region_end = end as f64 / 16_000.0;
        for s in t.segments {
            let text = s.text.trim().to_string();
            if text.is_empty() {
                continue;
            }
            segments.push(TimedText {
                start_sec: round2(offset + s.start_sec),
                end_sec: round2(
                    (offset + s.end_sec)
                        .min(region_end)
                        .max(offset + s.start_sec),
                ),
                text,
                words: s
                    .words
                    .iter()
                    .map(|w| TimedWord {
                        word: w.word.clone(),
                        start_sec: round2(offset + w.start_sec),
                        end_sec: round2(offset + w.end_sec),
                        probability: w.probability,
                    })
                    .collect(),
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(FileTranscript {
        file: file.to_path_buf(),
        duration_sec: round2(clip.duration_sec()),
        language,
        language_probability: probability,
        segments,
        text,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn progress(len: u64, file: &Path) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} segments {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(file.display().to_string());
    bar
}

fn print_text(t: &FileTranscript, with_name: bool) {
    if with_name {
        println!("{}", t.file.display());
    }
    for s in &t.segments {
        println!("[{} → {}] {}", clock(s.start_sec), clock(s.end_sec), s.text);
        if !s.words.is_empty() {
            let words: Vec<String> = s
                .words
                .iter()
                .map(|w| format!("{}@{:.2}", w.word, w.start_sec))
                .collect();
            println!("    {}", words.join(" "));
        }
    }
}

/// `mm:ss.cc`.
fn clock(sec: f64) -> String {
    let cs = (sec * 100.0).round() as u64;
    format!("{:02}:{:02}.{:02}", cs / 6000, (cs / 100) % 60, cs % 100)
}

/// Rejects argument combinations clap cannot express.
pub fn check_args(args: &TranscribeArgs) -> anyhow::Result<()> {
    if args.bench && args.files.len() != 1 {
        bail!(UsageError("--bench measures exactly one file".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_format() {
        assert_eq!(clock(0.0), "00:00.00");
        assert_eq!(clock(61.25), "01:01.25");
    }
}
