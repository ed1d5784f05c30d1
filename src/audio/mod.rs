//! Shared audio handling: PCM16 bytes ↔ f32, resampling to 16 kHz, WAV read
//! and crash-safe WAV write. Everything downstream (VAD, engine) sees 16 kHz
//! mono f32 in [-1, 1]; this module is the only place that knows other formats.

pub mod decode;
pub mod pcm;
pub mod resample;
pub mod wav;

/// The sample rate Whisper and Silero VAD expect.
pub const TARGET_RATE: u32 = 16_000;

/// Lowest input rate we accept; below it speech is not intelligible anyway.
pub const MIN_RATE: u32 = 4_000;
/// Highest input rate we accept (covers 384 kHz studio gear).
pub const MAX_RATE: u32 = 384_000;

/// What went wrong with a piece of audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("PCM16 payload has an odd length ({0} bytes); samples are 2 bytes each")]
    OddLength(usize),
    #[error("PCM16 payload of {got} bytes exceeds the limit of {limit} bytes")]
    TooLarge { got: usize, limit: usize },
    #[error("sample rate {0} Hz is outside the supported range {MIN_RATE}..={MAX_RATE} Hz")]
    BadRate(i64),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable WAV file: {source}")]
    Wav {
        path: String,
        #[source]
        source: hound::Error,
    },
    #[error("{path}: {detail}")]
    Format { path: String, detail: String },
    #[error("{path}: unsupported WAV format: {detail}")]
    Unsupported { path: String, detail: String },
    #[error("{path}: the WAV file holds no audio samples")]
    Empty { path: String },
    #[error("resampling {from} Hz → {to} Hz failed: {detail}")]
    Resample { from: u32, to: u32, detail: String },
}

/// Checks that `rate` (as a client sent it) is one we can resample.
pub fn check_rate(rate: i64) -> Result<u32, AudioError> {
    if (MIN_RATE as i64..=MAX_RATE as i64).contains(&rate) {
        Ok(rate as u32)
    } else {
        Err(AudioError::BadRate(rate))
    }
}

/// Seconds of audio in `samples` at 16 kHz.
pub fn seconds(samples: usize) -> f64 {
    samples as f64 / TARGET_RATE as f64
}
