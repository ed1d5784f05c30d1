//! `stt mic`: capture an input device with cpal, stream it live, show the
//! partial line and print finals. This file decides what to capture and
//! wires capture to the shared stream path; `device` picks the device and
//! format, `capture` owns the audio thread, and the client library streams
//! and renders.
//!
//! Audio is resampled to 16 kHz here, before it is chunked: the wire would
//! take the device rate (`AudioChunk.sample_rate`) and the server would
//! resample, but then chunk sizes, `--chunk-ms` and the latency bookkeeping
//! would all depend on the device.

pub mod capture;
pub mod device;

use tokio_util::sync::CancellationToken;

use super::render::Format;
use super::session::{check_chunk_ms, load_client_file, SessionSettings};
use super::{render_stream, stop_on_ctrl_c, Source, StreamOutcome};
use crate::cli::MicArgs;
use crate::config::ClientFile;
use crate::UsageError;
use capture::Capture;

/// `--chunk-ms` when neither flag nor YAML sets it.
pub const DEFAULT_CHUNK_MS: u64 = 100;

/// What can go wrong with the input device. Device lists travel in the
/// error, so the message can show what there is.
#[derive(Debug, thiserror::Error)]
pub enum MicError {
    #[error("no input device matches `{wanted}`; {}", device_list(.available))]
    NoSuchDevice {
        wanted: String,
        available: Vec<String>,
    },
    #[error("there is no default input device; {}", device_list(.available))]
    NoDefaultDevice { available: Vec<String> },
    #[error("cannot list audio devices: {0}")]
    Host(String),
    #[error("cannot capture from input device `{device}`: {cause}; {}", device_list(.available))]
    Open {
        device: String,
        cause: String,
        available: Vec<String>,
    },
    #[error("input device `{device}` stopped: {cause}")]
    Stopped { device: String, cause: String },
}

impl MicError {
    /// A device the user named that is not there is a usage error (exit 2);
    /// the rest are runtime failures.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::NoSuchDevice { .. })
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::NoSuchDevice { .. } | Self::NoDefaultDevice { .. } | Self::Open { .. } => {
                "pass --device with a name or index from `stt mic --list-devices`; \
                 on a machine without a sound card, ALSA can capture from a file \
                 (README, `stt mic`)"
            }
            Self::Host(_) => {
                "is ALSA installed (libasound2)? `stt mic --list-devices` shows what it sees"
            }
            Self::Stopped { .. } => {
                "was the device unplugged? `stt mic --list-devices` shows what is there now"
            }
        }
    }
}

fn device_list(available: &[String]) -> String {
    if available.is_empty() {
        return "there are no input devices (no sound card found)".into();
    }
    let mut s = String::from("input devices:");
    for d in available {
        s.push_str("\n  ");
        s.push_str(d);
    }
    s
}

/// What `stt mic` will do, flags merged over the YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct MicPlan {
    /// Name or index; `None` = the system default.
    pub device: Option<String>,
    /// Capture rate; `None` = the device's default.
    pub sample_rate: Option<u32>,
    pub chunk_ms: u64,
    pub metrics: bool,
    pub format: Format,
}

impl MicPlan {
    /// Flags over YAML over defaults.
    pub fn resolve(args: &MicArgs, file: &ClientFile) -> Result<Self, UsageError> {
        let chunk_ms = check_chunk_ms(args.chunk_ms.or(file.chunk_ms).unwrap_or(DEFAULT_CHUNK_MS))?;
        let sample_rate = args.sample_rate.or(file.sample_rate);
        if let Some(rate) = sample_rate {
            crate::audio::check_rate(rate.into())
                .map_err(|e| UsageError(format!("--sample-rate: {e}")))?;
        }
        let device = args
            .device
            .clone()
            .or_else(|| file.device.as_ref().map(|d| d.0.clone()))
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty());
        Ok(Self {
            device,
            sample_rate,
            chunk_ms,
            metrics: args.metrics || file.metrics.unwrap_or(false),
            format: if args.json {
                Format::Json
            } else {
                Format::Text
            },
        })
    }
}

/// Runs `stt mic`: lists devices, or captures until Ctrl-C (or an auto-end
/// session ends) and returns what the stream produced.
pub async fn run(args: MicArgs) -> anyhow::Result<Option<StreamOutcome>> {
    if args.list_devices {
        let text = device::list_text(&device::host())?;
        print!("{text}");
        return Ok(None);
    }
    let yaml = load_client_file(&args.session)?;
    let plan = MicPlan::resolve(&args, &yaml)?;
    let session = SessionSettings::resolve(&args.session, &yaml, "mic", None)?;

    // The device first: a wrong --device fails before any network work.
    let (capture, audio, shown) = open(&plan)?;
    eprintln!("listening on {shown}; Ctrl-C to stop");
    let stop = CancellationToken::new();
    stop_on_ctrl_c(stop.clone());
    let source = Source::Live {
        audio,
        chunk_ms: plan.chunk_ms,
    };
    let outcome = render_stream(&session, source, stop, plan.format, plan.metrics).await;
    let report = capture.stop();
    if report.dropped_sec > 0.0 {
        eprintln!(
            "warning: {:.2} s of audio were dropped because the stream fell behind",
            report.dropped_sec
        );
    }
    let outcome = outcome?;
    if let Some(cause) = report.failure {
        return Err(MicError::Stopped {
            device: shown,
            cause,
        }
        .into());
    }
    Ok(Some(outcome))
}

/// Picks the device and format and starts capturing; returns the capture,
/// its 16 kHz blocks and a description for the user.
fn open(
    plan: &MicPlan,
) -> Result<(Capture, tokio::sync::mpsc::Receiver<Vec<f32>>, String), MicError> {
    use cpal::traits::DeviceTrait;

    let host = device::host();
    let (id, dev) = device::pick(&host, plan.device.as_deref())?;
    let open_err = |cause: String| MicError::Open {
        device: id.clone(),
        // cpal's messages end with a full stop; ours go on after them.
        cause: cause.trim_end_matches('.').to_string(),
        available: device::input_devices(&host)
            .map(|list| list.iter().map(|(e, _)| e.label()).collect())
            .unwrap_or_default(),
    };
    let ranges: Vec<_> = dev
        .supported_input_configs()
        .map_err(|e| open_err(e.to_string()))?
        .collect();
    let default_rate = dev.default_input_config().ok().map(|c| c.sample_rate());
    let format =
        device::choose(&ranges, default_rate, plan.sample_rate, plan.chunk_ms).map_err(open_err)?;
    let (capture, audio) = Capture::start(dev, format).map_err(open_err)?;
    let shown = format!(
        "`{id}` ({} ch, {} Hz, {})",
        format.config.channels, format.config.sample_rate, format.sample_format
    );
    Ok((capture, audio, shown))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cli::SessionArgs;

    fn args() -> MicArgs {
        MicArgs {
            session: SessionArgs::default(),
            list_devices: false,
            device: None,
            sample_rate: None,
            chunk_ms: None,
            metrics: false,
            json: false,
        }
    }

    fn yaml(text: &str) -> ClientFile {
        ClientFile::parse(text, Path::new("m.yaml")).expect("valid")
    }

    #[test]
    fn defaults() {
        let p = MicPlan::resolve(&args(), &ClientFile::default()).expect("valid");
        assert_eq!(p.device, None);
        assert_eq!(p.sample_rate, None);
        assert_eq!(p.chunk_ms, 100);
        assert!(!p.metrics);
        assert_eq!(p.format, Format::Text);
    }

    #[test]
    fn flags_over_yaml() {
        let file = yaml("device: 2\nsample_rate: 44100\nchunk_ms: 200\nmetrics: true\n");
        let p = MicPlan::resolve(&args(), &file).expect("valid");
        assert_eq!(p.device.as_deref(), Some("2"));
        assert_eq!(p.sample_rate, Some(44100));
        assert_eq!(p.chunk_ms, 200);
        assert!(p.metrics);
        let a = MicArgs {
            device: Some("sttmic".into()),
            sample_rate: Some(16000),
            chunk_ms: Some(40),
            json: true,
            ..args()
        };
        let p = MicPlan::resolve(&a, &file).expect("valid");
        assert_eq!(p.device.as_deref(), Some("sttmic"));
        assert_eq!(p.sample_rate, Some(16000));
        assert_eq!(p.chunk_ms, 40);
        assert_eq!(p.format, Format::Json);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let a = MicArgs {
            sample_rate: Some(10),
            ..args()
        };
        let err = MicPlan::resolve(&a, &ClientFile::default()).expect_err("10 Hz");
        assert!(err.0.contains("--sample-rate"), "{}", err.0);
        let a = MicArgs {
            chunk_ms: Some(0),
            ..args()
        };
        assert!(MicPlan::resolve(&a, &ClientFile::default()).is_err());
    }

    #[test]
    fn device_errors_list_what_there_is() {
        let e = MicError::NoSuchDevice {
            wanted: "usb".into(),
            available: vec!["0: null".into(), "1: default".into()],
        };
        assert_eq!(
            e.to_string(),
            "no input device matches `usb`; input devices:\n  0: null\n  1: default"
        );
        assert!(e.is_usage());
        let e = MicError::NoDefaultDevice { available: vec![] };
        assert!(e.to_string().contains("no input devices"), "{e}");
        assert!(!e.is_usage());
        assert!(e.hint().contains("--list-devices"));
    }
}
