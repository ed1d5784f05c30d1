//! `stt file`: stream a WAV at real-time pace (or, with `--no-realtime`, as
//! fast as the server takes it) and print results as they arrive. This file
//! only decides what to send; streaming and printing live elsewhere.

use std::path::PathBuf;

use super::render::Format;
use super::session::{check_chunk_ms, load_client_file, SessionSettings};
use super::{Sending, StreamOutcome};
use crate::cli::FileArgs;
use crate::config::ClientFile;
use crate::UsageError;

/// `--chunk-ms` when neither flag nor YAML sets it.
pub const DEFAULT_CHUNK_MS: u64 = 100;

/// What `stt file` will do, flags merged over the YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePlan {
    pub audio: PathBuf,
    pub sending: Sending,
    pub metrics: bool,
    pub format: Format,
}

impl FilePlan {
    /// Flags over YAML over defaults.
    pub fn resolve(args: &FileArgs, file: &ClientFile) -> Result<Self, UsageError> {
        let chunk_ms = check_chunk_ms(args.chunk_ms.or(file.chunk_ms).unwrap_or(DEFAULT_CHUNK_MS))?;
        // `--no-realtime` can only switch pacing off; without it the YAML decides.
        let realtime = !args.no_realtime && file.realtime.unwrap_or(true);
        Ok(Self {
            audio: audio_path(args.audio.as_ref(), file)?,
            sending: if realtime {
                Sending::Realtime { chunk_ms }
            } else {
                Sending::Burst { chunk_ms }
            },
            metrics: args.metrics || file.metrics.unwrap_or(false),
            format: if args.json {
                Format::Json
            } else {
                Format::Text
            },
        })
    }
}

/// The WAV to send: the positional argument, else the YAML's `audio_path`.
pub(crate) fn audio_path(arg: Option<&PathBuf>, file: &ClientFile) -> Result<PathBuf, UsageError> {
    arg.or(file.audio_path.as_ref()).cloned().ok_or_else(|| {
        UsageError(
            "no audio file: pass a WAV path, or set `audio_path` in the -c YAML \
             (e.g. -c config/client/file.yaml)"
                .into(),
        )
    })
}

/// Runs `stt file`.
pub async fn run(args: FileArgs) -> anyhow::Result<StreamOutcome> {
    let yaml = load_client_file(&args.session)?;
    let plan = FilePlan::resolve(&args, &yaml)?;
    let session = SessionSettings::resolve(&args.session, &yaml, "file", None)?;
    super::run_command(
        session,
        &plan.audio,
        plan.sending,
        plan.format,
        plan.metrics,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cli::SessionArgs;

    fn args() -> FileArgs {
        FileArgs {
            session: SessionArgs::default(),
            audio: None,
            chunk_ms: None,
            no_realtime: false,
            metrics: false,
            json: false,
        }
    }

    fn yaml(text: &str) -> ClientFile {
        ClientFile::parse(text, Path::new("f.yaml")).expect("valid")
    }

    #[test]
    fn defaults() {
        let p = FilePlan::resolve(
            &FileArgs {
                audio: Some("a.wav".into()),
                ..args()
            },
            &ClientFile::default(),
        )
        .expect("valid");
        assert_eq!(p.audio, PathBuf::from("a.wav"));
        assert_eq!(p.sending, Sending::Realtime { chunk_ms: 100 });
        assert!(!p.metrics);
        assert_eq!(p.format, Format::Text);
    }

    #[test]
    fn flags_over_yaml_over_defaults() {
        let file = yaml("audio_path: y.wav\nchunk_ms: 250\nrealtime: false\nmetrics: true\n");
        let p = FilePlan::resolve(&args(), &file).expect("valid");
        assert_eq!(p.audio, PathBuf::from("y.wav"));
        assert_eq!(p.sending, Sending::Burst { chunk_ms: 250 });
        assert!(p.metrics);
        let a = FileArgs {
            audio: Some("cli.wav".into()),
            chunk_ms: Some(40),
            json: true,
            ..args()
        };
        let p = FilePlan::resolve(&a, &yaml("audio_path: y.wav\nchunk_ms: 250\n")).expect("valid");
        assert_eq!(p.audio, PathBuf::from("cli.wav"));
        assert_eq!(p.sending, Sending::Realtime { chunk_ms: 40 });
        assert_eq!(p.format, Format::Json);
        let a = FileArgs {
            no_realtime: true,
            ..args()
        };
        let p = FilePlan::resolve(&a, &yaml("audio_path: y.wav\nrealtime: true\n")).expect("valid");
        assert_eq!(p.sending, Sending::Burst { chunk_ms: 100 });
    }

    #[test]
    fn missing_audio_and_bad_chunk_are_usage_errors() {
        let err = FilePlan::resolve(&args(), &ClientFile::default()).expect_err("no audio");
        assert!(err.0.contains("audio_path"), "{}", err.0);
        let a = FileArgs {
            audio: Some("a.wav".into()),
            chunk_ms: Some(0),
            ..args()
        };
        assert!(FilePlan::resolve(&a, &ClientFile::default()).is_err());
    }
}
