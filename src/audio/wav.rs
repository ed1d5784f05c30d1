//! WAV files: read any rate, mono or multi-channel, 8/16/24/32-bit integer or
//! 32-bit float into 16 kHz mono f32; write 16 kHz PCM16 WAVs whose header is
//! valid after every append, so a capture survives a crash or SIGKILL.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::resample::resample_to_16k;
use super::{AudioError, TARGET_RATE};

/// A decoded clip: 16 kHz mono f32, plus what the file was.
#[derive(Debug, Clone)]
pub struct Clip {
    pub samples: Vec<f32>,
    /// The file's own sample rate and channel count, for reporting.
    pub source_rate: u32,
    pub source_channels: u16,
}

impl Clip {
    /// Duration in seconds.
    pub fn duration_sec(&self) -> f64 {
        super::seconds(self.samples.len())
    }
}

/// Reads `path` and converts it to 16 kHz mono f32 (channels are averaged).
pub fn read_wav(path: &Path) -> Result<Clip, AudioError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| AudioError::Io {
        path: shown.clone(),
        source,
    })?;
    let reader =
        hound::WavReader::new(std::io::BufReader::new(file)).map_err(|source| AudioError::Wav {
            path: shown.clone(),
            source,
        })?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(AudioError::Unsupported {
            path: shown,
            detail: "zero channels".into(),
        });
    }
    let interleaved = read_samples(reader, &shown)?;
    let channels = spec.channels as usize;
    let mono: Vec<f32> = if channels == 1 {
        interleaved
    } else {
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect()
    };
    if mono.is_empty() {
        return Err(AudioError::Empty { path: shown });
    }
    let rate = super::check_rate(spec.sample_rate as i64).map_err(|_| AudioError::Unsupported {
        path: shown.clone(),
        detail: format!("sample rate {} Hz", spec.sample_rate),
    })?;
    Ok(Clip {
        samples: resample_to_16k(&mono, rate)?,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
    })
}

fn read_samples(
    reader: hound::WavReader<std::io::BufReader<File>>,
    path: &str,
) -> Result<Vec<f32>, AudioError> {
    let spec = reader.spec();
    let wav_err = |source| AudioError::Wav {
        path: path.to_string(),
        source,
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(wav_err),
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(wav_err)
        }
        (format, bits) => Err(AudioError::Unsupported {
            path: path.to_string(),
            detail: format!("{bits}-bit {format:?} samples"),
        }),
    }
}

/// Writes a whole 16 kHz mono clip as PCM16 (test fixtures, tools).
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<(), AudioError> {
    let mut w = CaptureWriter::create(path)?;
    w.append(samples)?;
    w.finish()
}

/// PCM16 16 kHz mono WAV writer that checkpoints the header after each
/// append (hound's `flush`), so the file on disk is always a valid WAV holding
/// everything appended so far — even if the process dies before `finish`.
pub struct CaptureWriter {
    path: PathBuf,
    inner: hound::WavWriter<BufWriter<File>>,
    samples: u64,
}

impl CaptureWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, AudioError> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: TARGET_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let inner = hound::WavWriter::create(path, spec).map_err(|source| AudioError::Wav {
            path: path.display().to_string(),
            source,
        })?;
        let mut w = Self {
            path: path.to_path_buf(),
            inner,
            samples: 0,
        };
        // A valid (empty) WAV from the first moment on.
        w.checkpoint()?;
        Ok(w)
    }

    /// Appends samples and rewrites the header sizes.
    pub fn append(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        {
            let mut w = self.inner.get_i16_writer(samples.len() as u32);
            for &s in samples {
                w.write_sample(super::pcm::f32_to_i16(s));
            }
            w.flush().map_err(|source| self.wav_error(source))?;
        }
        self.samples += samples.len() as u64;
        self.checkpoint()
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    fn checkpoint(&mut self) -> Result<(), AudioError> {
        self.inner.flush().map_err(|source| AudioError::Wav {
            path: self.path.display().to_string(),
            source,
        })
    }

    fn wav_error(&self, source: hound::Error) -> AudioError {
        AudioError::Wav {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Finalises the file.
    pub fn finish(self) -> Result<(), AudioError> {
        let path = self.path.display().to_string();
        self.inner
            .finalize()
            .map_err(|source| AudioError::Wav { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect()
    }

    #[test]
    fn reads_stereo_24bit_48k_as_16k_mono() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for s in tone(48_000, 0.5) {
            let v = (s * 8_388_607.0) as i32;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let clip = read_wav(&path).unwrap();
        assert_eq!(clip.source_rate, 48_000);
        assert_eq!(clip.source_channels, 2);
        assert_eq!(clip.samples.len(), 8000);
    }

    #[test]
    fn reads_float_wav() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for s in tone(16_000, 0.25) {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let clip = read_wav(&path).unwrap();
        assert_eq!(clip.samples.len(), 4000);
    }

    #[test]
    fn empty_and_non_wav_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e.wav");
        CaptureWriter::create(&empty).unwrap().finish().unwrap();
        assert!(matches!(read_wav(&empty), Err(AudioError::Empty { .. })));
        let text = dir.path().join("t.wav");
        std::fs::write(&text, "not audio").unwrap();
        assert!(matches!(read_wav(&text), Err(AudioError::Wav { .. })));
    }

    #[test]
    fn capture_is_readable_without_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wav");
        let mut w = CaptureWriter::create(&path).unwrap();
        w.append(&tone(16_000, 0.5)).unwrap();
        w.append(&tone(16_000, 0.25)).unwrap();
        // Simulate a crash: the writer is leaked, never finalised.
        std::mem::forget(w);
        let clip = read_wav(&path).unwrap();
        assert_eq!(clip.samples.len(), 12_000);
    }
}
