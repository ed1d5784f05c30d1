//! Whisper's log-mel spectrogram, computed here because CTranslate2 takes
//! features, not audio: a 400-point STFT (periodic Hann window, hop 160,
//! reflect-padded, last frame dropped) of each 30 s window, power spectrum,
//! the Slaney mel filterbank of [`crate::models::mel`], `log10`, clamped to
//! 8 below the window's peak, then `(x + 4) / 4` — as OpenAI's
//! `log_mel_spectrogram` does. ct2rs's ready-made mel normalises per frame
//! instead, which the model never saw in training.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::models::mel::{filterbank, N_FFT, SAMPLE_RATE};

/// Samples between frames.
pub const HOP: usize = 160;
/// Samples in one 30 s window.
pub const WINDOW_SAMPLES: usize = 30 * 16_000;
/// Frames in one 30 s window.
pub const WINDOW_FRAMES: usize = WINDOW_SAMPLES / HOP;

/// A reusable mel computer (FFT plan, window, sparse filters).
pub struct MelSpectrogram {
    n_mels: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    hann: Vec<f32>,
    /// Per mel band: first bin and its weights (the triangles are sparse).
    filters: Vec<(usize, Vec<f32>)>,
}

impl MelSpectrogram {
    pub fn new(n_mels: usize) -> Self {
        let n_bins = N_FFT / 2 + 1;
        let dense = filterbank(n_mels, N_FFT, SAMPLE_RATE);
        let filters = dense
            .chunks(n_bins)
            .map(|row| {
                let first = row.iter().position(|w| *w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|w| *w != 0.0).unwrap_or(0);
                let weights = if last >= first {
                    row[first..=last].to_vec()
                } else {
                    Vec::new()
                };
                (first, weights)
            })
            .collect();
        let hann = (0..N_FFT)
            .map(|n| {
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos() as f32
            })
            .collect();
        Self {
            n_mels,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
            hann,
            filters,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Features of every 30 s window `audio` spans (at least one):
    /// `(windows, features)` with `windows × n_mels × WINDOW_FRAMES`
    /// values, row-major per window.
    ///
    /// As faster-whisper computes them: the log-mel of the whole clip (160
    /// zero samples appended, reflect-padded STFT, last frame dropped),
    /// clamped and scaled once over the clip, then cut into 3000-frame
    /// windows with the last frame left out and zeros after the audio. The
    /// zero padding matters: padding with computed silence instead (as
    /// whisper.cpp does) turned "let us begin the meeting" into "and I'll
    /// see you again in the meeting" on a clip faster-whisper got right.
    pub fn windows(&self, audio: &[f32]) -> (usize, Vec<f32>) {
        let padded_len = audio.len() + HOP;
        let frames = padded_len / HOP;
        let content = frames.saturating_sub(1).max(1);
        let log = self.log_mel(audio, padded_len, frames);
        let windows = content.div_ceil(WINDOW_FRAMES).max(1);
        let mut out = vec![0f32; windows * self.n_mels * WINDOW_FRAMES];
        for w in 0..windows {
            let first = w * WINDOW_FRAMES;
            let n = content.saturating_sub(first).min(WINDOW_FRAMES);
            for m in 0..self.n_mels {
                let src = &log[m * frames + first..m * frames + first + n];
                let dst = (w * self.n_mels + m) * WINDOW_FRAMES;
                out[dst..dst + n].copy_from_slice(src);
            }
        }
        (windows, out)
    }

    /// `n_mels × frames` normalised log-mel of `audio` zero-extended to
    /// `padded_len` samples.
    fn log_mel(&self, audio: &[f32], padded_len: usize, frames: usize) -> Vec<f32> {
        let half = N_FFT / 2;
        // numpy's reflect padding of the zero-extended clip.
        let sample = |i: usize| -> f32 {
            let n = padded_len as isize;
            let mut j = i as isize - half as isize;
            if j < 0 {
                j = -j;
            } else if j >= n {
                j = 2 * (n - 1) - j;
            }
            audio.get(j as usize).copied().unwrap_or(0.0)
        };
        let n_bins = N_FFT / 2 + 1;
        let mut mel = vec![0f32; self.n_mels * frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; n_bins];
        for frame in 0..frames {
            let start = frame * HOP;
            for (k, x) in input.iter_mut().enumerate() {
                *x = sample(start + k) * self.hann[k];
            }
            if self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .is_err()
            {
                // Only a length mismatch fails, and the buffers come from
                // the plan itself.
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, (first, weights)) in self.filters.iter().enumerate() {
                let e: f32 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                mel[m * frames + frame] = e;
            }
        }
        let mut peak = f32::MIN;
        for v in mel.iter_mut() {
            *v = v.max(1e-10).log10();
            peak = peak.max(*v);
        }
        let floor = peak - 8.0;
        for v in mel.iter_mut() {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_sits_at_the_floor_and_padding_is_zero() {
        let mel = MelSpectrogram::new(80);
        let (windows, out) = mel.windows(&vec![0.0; 16_000]);
        assert_eq!(windows, 1);
        assert_eq!(out.len(), 80 * WINDOW_FRAMES);
        // 1 s = 100 frames of content: log10(1e-10) = -10 → (-10 + 4) / 4.
        assert!((out[0] - -1.5).abs() < 1e-6);
        assert!((out[99] - -1.5).abs() < 1e-6);
        // After the audio: zeros, as faster-whisper pads.
        assert_eq!(out[100], 0.0);
        assert_eq!(out[WINDOW_FRAMES - 1], 0.0);
    }

    #[test]
    fn a_tone_lights_up_its_band_and_is_normalised() {
        let audio: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin() * 0.5)
            .collect();
        let mel = MelSpectrogram::new(80);
        let (_, out) = mel.windows(&audio);
        let content: Vec<f32> = (0..80)
            .flat_map(|m| out[m * WINDOW_FRAMES..m * WINDOW_FRAMES + 100].to_vec())
            .collect();
        let peak = content.iter().cloned().fold(f32::MIN, f32::max);
        let low = content.iter().cloned().fold(f32::MAX, f32::min);
        // The floor is the peak minus 8 (in log10 units), scaled by 1/4.
        assert!((peak - low - 2.0).abs() < 1e-4, "peak {peak} low {low}");
        // Frame 50 (0.5 s in): the band holding 1 kHz is the loudest.
        let band = |m: usize| out[m * WINDOW_FRAMES + 50];
        let best = (0..80)
            .max_by(|a, b| band(*a).total_cmp(&band(*b)))
            .expect("bands");
        assert!((20..40).contains(&best), "1 kHz peaked in band {best}");
        assert!((band(best) - peak).abs() < 0.2);
    }

    #[test]
    fn long_audio_spans_several_windows() {
        let mel = MelSpectrogram::new(80);
        let (windows, out) = mel.windows(&vec![0.1; WINDOW_SAMPLES + 16_000]);
        assert_eq!(windows, 2);
        assert_eq!(out.len(), 2 * 80 * WINDOW_FRAMES);
        // The second window holds the last second, then zeros.
        let second = 80 * WINDOW_FRAMES;
        assert_ne!(out[second + 50], 0.0);
        assert_eq!(out[second + 200], 0.0);
    }
}
