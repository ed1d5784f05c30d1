//! What a bench run will do: flags merged over the client YAML, checked, and
//! the audio read once up front so a bad WAV fails before any session
//! starts. No network here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audio::decode::{has_audio_extension, read_audio};
use crate::cli::{BenchArgs, SessionLogFormat};
use crate::client::session::check_chunk_ms;
use crate::client::Sending;
use crate::config::ClientFile;
use crate::UsageError;

/// `--chunk-ms` when neither flag nor YAML sets it.
pub const DEFAULT_CHUNK_MS: u64 = 100;

/// The bundled clip, relative to the repository root (where the README's
/// commands run).
pub const DEFAULT_AUDIO: &str = "assets/audio/hello.wav";

/// The validated run: how many sessions, when they start, what they send.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchPlan {
    pub channels: usize,
    pub iterations: usize,
    pub warmup_iterations: usize,
    /// Batches the channels start in (at most `channels`).
    pub ramp_steps: usize,
    pub ramp_interval: Duration,
    pub sending: Sending,
    /// A WAV, or a directory of WAVs.
    pub audio: PathBuf,
    /// Where and how the logs go.
    pub stdout_log: Option<(SessionLogFormat, usize)>,
    pub file_log: Option<(PathBuf, SessionLogFormat)>,
    pub json_summary: Option<PathBuf>,
}

impl BenchPlan {
    /// Flags over YAML over defaults; impossible values are usage errors.
    pub fn resolve(args: &BenchArgs, file: &ClientFile) -> Result<Self, UsageError> {
        let at_least_one = |flag: &str, n: usize| {
            if n == 0 {
                Err(UsageError(format!("{flag} must be at least 1")))
            } else {
                Ok(n)
            }
        };
        let channels = at_least_one("--channels", args.channels)?;
        let ramp_interval = args.ramp_interval_sec;
        if !ramp_interval.is_finite() || !(0.0..=3600.0).contains(&ramp_interval) {
            return Err(UsageError(format!(
                "--ramp-interval-sec must be between 0 and 3600, got {ramp_interval}"
            )));
        }
        let chunk_ms = check_chunk_ms(args.chunk_ms.or(file.chunk_ms).unwrap_or(DEFAULT_CHUNK_MS))?;
        // The command line's format serves stdout; the file's extension
        // decides only where no format was named.
        let named = args.session_log_format;
        Ok(Self {
            channels,
            iterations: at_least_one("--iterations", args.iterations)?,
            warmup_iterations: args.warmup_iterations,
            ramp_steps: at_least_one("--ramp-steps", args.ramp_steps)?.min(channels),
            ramp_interval: Duration::from_secs_f64(ramp_interval),
            sending: if args.realtime {
                Sending::Realtime { chunk_ms }
            } else {
                Sending::Burst { chunk_ms }
            },
            audio: args
                .audio
                .clone()
                .or_else(|| file.audio_path.clone())
                .unwrap_or_else(default_audio),
            stdout_log: args
                .log_sessions
                .then(|| (named.unwrap_or_default(), args.max_session_logs)),
            file_log: args.session_log_path.clone().map(|path| {
                let format = named
                    .or_else(|| SessionLogFormat::from_path(&path))
                    .unwrap_or_default();
                (path, format)
            }),
            json_summary: args.json_summary.clone(),
        })
    }

    /// Sessions each channel runs, warm-ups included.
    pub fn sessions_per_channel(&self) -> usize {
        self.warmup_iterations + self.iterations
    }

    /// When `channel` starts, relative to the bench's start: the channels
    /// are cut into `ramp_steps` equal batches (the last may be smaller),
    /// one batch per `ramp_interval`.
    pub fn ramp_delay(&self, channel: usize) -> Duration {
        let per_step = self.channels.div_ceil(self.ramp_steps);
        self.ramp_interval * (channel / per_step) as u32
    }
}

/// The bundled clip from the working directory, else from the source tree
/// this binary was built from (so `stt bench` works from anywhere in a
/// checkout's build).
fn default_audio() -> PathBuf {
    let relative = PathBuf::from(DEFAULT_AUDIO);
    if relative.is_file() {
        return relative;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_AUDIO);
    if built.is_file() {
        built
    } else {
        relative
    }
}

/// One WAV, read and resampled once, shared by every session that sends it.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The file name, for the logs.
    pub name: String,
    /// 16 kHz mono samples.
    pub samples: Arc<[f32]>,
}

/// Reads `path` (an audio file, or every audio file in a directory, by name).
pub fn load_clips(path: &Path) -> anyhow::Result<Vec<Clip>> {
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| {
            anyhow::anyhow!("cannot read the audio directory {}: {e}", path.display())
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && has_audio_extension(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(UsageError(format!(
                "no audio files in {}: point --audio at an audio file (WAV, FLAC, MP3, …) or a directory of them",
                path.display()
            ))
            .into());
        }
        files
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        return Err(UsageError(format!(
            "audio {} not found: pass --audio <WAV or directory> (the bundled clip is \
             {DEFAULT_AUDIO} in the repository)",
            path.display()
        ))
        .into());
    };
    files
        .iter()
        .map(|f| -> anyhow::Result<Clip> {
            // Flattened to its message: `AudioError` already names the file
            // and its cause.
            let clip = read_audio(f).map_err(|e| UsageError(e.to_string()))?;
            Ok(Clip {
                name: f
                    .file_name()
                    .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into()),
                samples: clip.samples.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["stt", "bench"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("valid").command {
            Command::Bench(a) => *a,
            other => panic!("not bench: {other:?}"),
        }
    }

    fn plan(extra: &[&str]) -> Result<BenchPlan, UsageError> {
        BenchPlan::resolve(&args(extra), &ClientFile::default())
    }

    #[test]
    fn defaults() {
        let p = plan(&[]).expect("valid");
        assert_eq!((p.channels, p.iterations, p.warmup_iterations), (1, 1, 0));
        assert_eq!(p.sending, Sending::Burst { chunk_ms: 100 });
        assert!(p.audio.ends_with(DEFAULT_AUDIO));
        assert_eq!(p.stdout_log, None);
        assert_eq!(p.file_log, None);
    }

    #[test]
    fn flags() {
        let p = plan(&[
            "--channels",
            "8",
            "--iterations",
            "3",
            "--warmup-iterations",
            "2",
            "--realtime",
            "--chunk-ms",
            "40",
            "--log-sessions",
            "--max-session-logs",
            "5",
            "--session-log-path",
            "out.csv",
            "--server",
            "h:1",
        ])
        .expect("valid");
        assert_eq!((p.channels, p.iterations, p.warmup_iterations), (8, 3, 2));
        assert_eq!(p.sessions_per_channel(), 5);
        assert_eq!(p.sending, Sending::Realtime { chunk_ms: 40 });
        assert_eq!(p.stdout_log, Some((SessionLogFormat::Jsonl, 5)));
        assert_eq!(
            p.file_log,
            Some((PathBuf::from("out.csv"), SessionLogFormat::Csv))
        );
        // A named format wins over the extension.
        let p = plan(&[
            "--session-log-path",
            "out.csv",
            "--session-log-format",
            "md",
        ])
        .expect("valid");
        assert_eq!(
            p.file_log,
            Some((PathBuf::from("out.csv"), SessionLogFormat::Markdown))
        );
    }

    #[test]
    fn impossible_values_are_usage_errors() {
        assert!(plan(&["--channels", "0"]).is_err());
        assert!(plan(&["--iterations", "0"]).is_err());
        assert!(plan(&["--ramp-steps", "0"]).is_err());
        assert!(plan(&["--ramp-interval-sec", "-1"]).is_err());
        assert!(plan(&["--ramp-interval-sec", "NaN"]).is_err());
        assert!(plan(&["--chunk-ms", "0"]).is_err());
    }

    #[test]
    fn ramp_cuts_channels_into_batches() {
        let p = plan(&[
            "--channels",
            "5",
            "--ramp-steps",
            "2",
            "--ramp-interval-sec",
            "1.5",
        ])
        .expect("valid");
        let delays: Vec<f64> = (0..5).map(|c| p.ramp_delay(c).as_secs_f64()).collect();
        assert_eq!(delays, vec![0.0, 0.0, 0.0, 1.5, 1.5]);
        // More steps than channels: one channel per step.
        let p = plan(&["--channels", "2", "--ramp-steps", "9"]).expect("valid");
        assert_eq!(p.ramp_steps, 2);
        assert_eq!(p.ramp_delay(1), Duration::from_secs(1));
        // One step: everyone at once.
        let p = plan(&["--channels", "3"]).expect("valid");
        assert_eq!(p.ramp_delay(2), Duration::ZERO);
    }

    #[test]
    fn missing_audio_is_a_usage_error() {
        let err = load_clips(Path::new("/nonexistent/x.wav")).expect_err("missing");
        assert!(err.is::<UsageError>());
        assert!(err.to_string().contains("--audio"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_clips(dir.path()).expect_err("empty");
        assert!(err.to_string().contains("no audio files"), "{err}");
    }

    #[test]
    fn a_directory_gives_its_wavs_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_AUDIO);
        std::fs::copy(&bundled, dir.path().join("b.wav")).expect("copy");
        std::fs::copy(&bundled, dir.path().join("a.WAV")).expect("copy");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let clips = load_clips(dir.path()).expect("clips");
        let names: Vec<&str> = clips.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["a.WAV", "b.wav"]);
        assert!(clips[0].samples.len() > 16_000);
    }
}
