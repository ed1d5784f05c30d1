//! Any rate → 16 kHz mono, on rubato's FFT resampler (band-limited, so 44.1
//! and 48 kHz speech loses nothing Whisper needs and 8 kHz telephony is
//! upsampled without imaging).
//!
//! Two shapes: [`resample_to_16k`] for a whole clip in memory, and
//! [`StreamResampler`] for audio that arrives in chunks of any size, whose
//! output is sample-exact with the one-shot version's length.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use super::{AudioError, TARGET_RATE};

/// Input frames per FFT block: large enough to be efficient, small enough that
/// a streaming session's latency stays around 20–60 ms.
const CHUNK: usize = 1024;

fn build(rate: u32) -> Result<Fft<f32>, AudioError> {
    Fft::<f32>::new(
        rate as usize,
        TARGET_RATE as usize,
        CHUNK,
        1,
        FixedSync::Input,
    )
    .map_err(|e| AudioError::Resample {
        from: rate,
        to: TARGET_RATE,
        detail: e.to_string(),
    })
}

fn resample_error(rate: u32, e: impl std::fmt::Display) -> AudioError {
    AudioError::Resample {
        from: rate,
        to: TARGET_RATE,
        detail: e.to_string(),
    }
}

/// Samples live in [-1, 1]. A float WAV or a sound card can hand us
/// anything, and a single NaN or 1e38 would poison the FFT (rubato panics
/// on it) and then Whisper: out-of-range values are clipped, non-finite
/// ones become silence.
fn sanitize(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// Resamples a whole mono clip at `rate` Hz to 16 kHz.
pub fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    if rate == TARGET_RATE || samples.is_empty() {
        return Ok(samples.iter().copied().map(sanitize).collect());
    }
    let mut stream = StreamResampler::new(rate)?;
    let mut out = Vec::with_capacity(expected_len(samples.len(), rate) + CHUNK);
    stream.push(samples, &mut out)?;
    stream.finish(&mut out)?;
    Ok(out)
}

/// Output length for `n` input samples at `rate` Hz.
fn expected_len(n: usize, rate: u32) -> usize {
    (n as u64 * TARGET_RATE as u64).div_ceil(rate as u64) as usize
}

/// Incremental resampler for one stream: feed chunks of any length, get 16 kHz
/// samples out as soon as a block is complete. The resampler's start-up delay
/// is trimmed, so output sample `i` lines up with input time `i / 16000` s.
pub struct StreamResampler {
    rate: u32,
    /// `None` when the input is already 16 kHz (pass-through).
    inner: Option<Fft<f32>>,
    /// Input not yet processed (less than one block).
    pending: Vec<f32>,
    /// Output frames still to drop at the start (the filter delay).
    delay_left: usize,
    /// Scratch output block, reused.
    scratch: Vec<f32>,
    total_in: usize,
    total_out: usize,
}

impl StreamResampler {
    /// A resampler from `rate` Hz to 16 kHz.
    pub fn new(rate: u32) -> Result<Self, AudioError> {
        let inner = if rate == TARGET_RATE {
            None
        } else {
            Some(build(rate)?)
        };
        let (delay_left, scratch) = match &inner {
            Some(r) => (r.output_delay(), vec![0.0; r.output_frames_max()]),
            None => (0, Vec::new()),
        };
        Ok(Self {
            rate,
            inner,
            pending: Vec::new(),
            delay_left,
            scratch,
            total_in: 0,
            total_out: 0,
        })
    }

    /// The input rate this resampler was built for.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Resamples what can be resampled of `input`, appending to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.total_in += input.len();
        let Some(inner) = self.inner.as_mut() else {
            out.extend(input.iter().copied().map(sanitize));
            self.total_out += input.len();
            return Ok(());
        };
        self.pending.extend(input.iter().copied().map(sanitize));
        let mut consumed = 0;
        while self.pending.len() - consumed >= inner.input_frames_next() {
            let need = inner.input_frames_next();
            let block = &self.pending[consumed..consumed + need];
            let produced = process_block(inner, self.rate, block, &mut self.scratch, None)?;
            consumed += need;
            emit(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.total_out,
                out,
            );
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    /// Flushes the tail: whatever input is pending plus the filter delay, so
    /// the total output is exactly `ceil(n_in * 16000 / rate)` samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let want = expected_len(self.total_in, self.rate);
        // Each block of CHUNK input frames yields CHUNK·16000/rate output
        // frames on average, but rubato holds them back until a whole FFT
        // frame is in: for a rate with no common factor with 16000 that is
        // one second of input (`rate` frames). The delay and the tail take
        // that many blocks; past it something is wrong.
        let owed = (self.delay_left + want - self.total_out) as u64;
        let per_block = (CHUNK as u64 * u64::from(TARGET_RATE) / u64::from(self.rate)).max(1);
        let limit = owed.div_ceil(per_block) + u64::from(self.rate).div_ceil(CHUNK as u64) + 64;
        let mut guard = 0;
        while self.total_out < want {
            let partial = self.pending.len();
            let need = inner.input_frames_next();
            let mut block = std::mem::take(&mut self.pending);
            block.resize(need, 0.0);
            let indexing = Indexing {
                input_offset: 0,
                output_offset: 0,
                active_channels_mask: None,
                partial_len: Some(partial),
            };
            let produced =
                process_block(inner, self.rate, &block, &mut self.scratch, Some(&indexing))?;
            let room = want - self.total_out;
            let mut kept = Vec::new();
            emit(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.total_out,
                &mut kept,
            );
            kept.truncate(room);
            self.total_out = self.total_out.min(want);
            out.extend_from_slice(&kept);
            guard += 1;
            if guard > limit {
                return Err(resample_error(self.rate, "flush did not converge"));
            }
        }
        inner.reset();
        self.delay_left = inner.output_delay();
        self.total_in = 0;
        self.total_out = 0;
        Ok(())
    }
}

fn process_block(
    inner: &mut Fft<f32>,
    rate: u32,
    block: &[f32],
    scratch: &mut [f32],
    indexing: Option<&Indexing>,
) -> Result<usize, AudioError> {
    let input =
        InterleavedSlice::new(block, 1, block.len()).map_err(|e| resample_error(rate, e))?;
    let frames = scratch.len();
    let mut output =
        InterleavedSlice::new_mut(scratch, 1, frames).map_err(|e| resample_error(rate, e))?;
    let (_, produced) = inner
        .process_into_buffer(&input, &mut output, indexing)
        .map_err(|e| resample_error(rate, e))?;
    Ok(produced)
}

/// Appends `block` to `out` after dropping what is left of the start-up delay.
fn emit(block: &[f32], delay_left: &mut usize, total_out: &mut usize, out: &mut Vec<f32>) {
    let skip = (*delay_left).min(block.len());
    *delay_left -= skip;
    out.extend_from_slice(&block[skip..]);
    *total_out += block.len() - skip;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Dominant-frequency check by zero crossings: robust and dependency-free.
    fn zero_crossing_freq(samples: &[f32], rate: u32) -> f32 {
        let crossings = samples
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        crossings as f32 / 2.0 / (samples.len() as f32 / rate as f32)
    }

    /// Found by the fuzzer (src/fuzz/audio.rs): at rates sharing no factor
    /// with 16 kHz rubato holds output back for a second of input, and the
    /// flush gave up first.
    #[test]
    fn flush_converges_at_rates_sharing_no_factor_with_16k() {
        for rate in [90_537, 259_182, 4_913] {
            let y = resample_to_16k(&[0.0], rate).unwrap();
            assert_eq!(y.len(), expected_len(1, rate), "rate {rate}");
        }
    }

    /// Found by the fuzzer: rubato panicked on NaN and on 1e38.
    #[test]
    fn non_finite_and_huge_samples_are_silenced_or_clipped() {
        let x = [f32::NAN, 2.87e38, -1e30, 0.5, f32::INFINITY, -0.25];
        for rate in [4_913, 16_000, 48_000] {
            let y = resample_to_16k(&x, rate).unwrap();
            assert_eq!(y.len(), expected_len(x.len(), rate));
            assert!(
                y.iter().all(|s| s.is_finite() && s.abs() <= 1.5),
                "rate {rate}: {y:?}"
            );
        }
        assert_eq!(
            resample_to_16k(&x, 16_000).unwrap(),
            [0.0, 1.0, -1.0, 0.5, 0.0, -0.25]
        );
    }

    #[test]
    fn passthrough_at_16k() {
        let x = sine(16_000, 440.0, 0.1);
        assert_eq!(resample_to_16k(&x, 16_000).unwrap(), x);
    }

    #[test]
    fn lengths_and_pitch_are_kept() {
        for rate in [8_000, 22_050, 44_100, 48_000] {
            let x = sine(rate, 440.0, 1.0);
            let y = resample_to_16k(&x, rate).unwrap();
            assert_eq!(y.len(), expected_len(x.len(), rate), "rate {rate}");
            let f = zero_crossing_freq(&y[1600..14400], 16_000);
            assert!((f - 440.0).abs() < 5.0, "rate {rate}: {f} Hz");
        }
    }

    #[test]
    fn start_is_aligned_after_delay_trim() {
        // A tone starting at 0.5 s must start at 0.5 s in the output too.
        let rate = 48_000;
        let mut x = vec![0.0; rate as usize / 2];
        x.extend(sine(rate, 440.0, 0.5));
        let y = resample_to_16k(&x, rate).unwrap();
        let first = y.iter().position(|s| s.abs() > 0.1).unwrap();
        assert!((first as i64 - 8000).abs() < 40, "onset at sample {first}");
    }

    #[test]
    fn streaming_matches_one_shot() {
        let rate = 44_100;
        let x = sine(rate, 300.0, 0.7);
        let whole = resample_to_16k(&x, rate).unwrap();
        let mut s = StreamResampler::new(rate).unwrap();
        let mut out = Vec::new();
        for chunk in x.chunks(333) {
            s.push(chunk, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        assert_eq!(out.len(), whole.len());
        for (a, b) in out.iter().zip(&whole) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
