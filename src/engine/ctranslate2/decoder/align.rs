//! Word timing on CTranslate2: the model's alignment heads place each
//! generated text token on the encoder's 20 ms grid (cross-attention and
//! DTW, as faster-whisper does), and [`crate::engine::words`] groups the
//! tokens into words.

use super::{Ct2Decoder, Window, WINDOW_SAMPLES};
use crate::engine::backend::Attempt;
use crate::engine::ctranslate2::{ffi, take_error};
use crate::engine::words::{self, Timed};
use crate::engine::EngineError;

/// Seconds per encoder position, the unit of word alignment.
const ALIGN_STEP: f64 = 0.02;
/// faster-whisper's median filter over the alignment heads' attention.
const MEDIAN_FILTER_WIDTH: usize = 7;

impl Ct2Decoder {
    /// Times each text token of a group's windows (`first` is the group's
    /// first window index in the clip) through the model's alignment heads.
    pub(super) fn align(
        &self,
        encoded: *mut ffi::Encoded,
        attempt: &Attempt<'_>,
        first: usize,
        windows: &mut [Window],
    ) -> Result<(), EngineError> {
        let text: Vec<Vec<usize>> = windows
            .iter()
            .map(|w| {
                w.ids
                    .iter()
                    .copied()
                    .filter(|&id| id < self.tokens.eot)
                    .collect()
            })
            .collect();
        if text.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let counts: Vec<usize> = text.iter().map(Vec::len).collect();
        let tokens: Vec<usize> = text.concat();
        // Mel frames of real audio in each window; the alignment ignores
        // the padding after it.
        let num_frames: Vec<usize> = (0..windows.len())
            .map(|b| {
                let start = (first + b) * WINDOW_SAMPLES;
                let real = attempt.samples.saturating_sub(start).min(WINDOW_SAMPLES);
                real.div_ceil(160).clamp(2, self.frames)
            })
            .collect();
        let start = self.start_sequence(attempt)?;
        let mut out: Vec<ffi::Alignment> =
            windows.iter().map(|_| ffi::Alignment::default()).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: `tokens` holds sum(counts) ids, `counts`, `num_frames` and
        // `out` one entry per row of the encoded batch; the replica belongs
        // to this thread.
        let rc = unsafe {
            ffi::stt_ct2_align(
                self.replica.0,
                encoded,
                start.as_ptr(),
                start.len(),
                tokens.as_ptr(),
                counts.as_ptr(),
                num_frames.as_ptr(),
                MEDIAN_FILTER_WIDTH,
                out.as_mut_ptr(),
                &mut err,
            )
        };
        if rc == 0 {
            for (w, a) in windows.iter_mut().zip(&out) {
                if !a.starts.is_null() {
                    // SAFETY: the shim wrote `n_starts` positions there.
                    let starts = unsafe { std::slice::from_raw_parts(a.starts, a.n_starts) };
                    w.starts = starts.iter().map(|&p| p as f64 * ALIGN_STEP).collect();
                }
                if !a.probs.is_null() {
                    // SAFETY: the shim wrote `n_probs` probabilities there.
                    w.probs = unsafe { std::slice::from_raw_parts(a.probs, a.n_probs) }.to_vec();
                }
            }
        }
        // SAFETY: every entry was initialised (null or malloc'd).
        unsafe { ffi::stt_ct2_alignments_free(out.as_mut_ptr(), out.len()) };
        if rc != 0 {
            return Err(EngineError::Decode(format!(
                "word alignment: {}",
                take_error(err)
            )));
        }
        Ok(())
    }

    /// One window's words: its text tokens grouped into words, each timed
    /// from where its first token starts to where the next word starts.
    pub(super) fn words(&self, window: &Window, language: &str) -> Vec<Timed> {
        let ids: Vec<usize> = window
            .ids
            .iter()
            .copied()
            .filter(|&id| id < self.tokens.eot)
            .collect();
        if window.starts.len() != ids.len() + 1 {
            return Vec::new();
        }
        let bytes: Vec<&[u8]> = ids.iter().map(|&id| self.tokens.bytes(id)).collect();
        words::split_words(&bytes, language)
            .into_iter()
            .map(|span| {
                let probs = &window.probs.get(span.tokens.clone()).unwrap_or(&[]);
                let probability = if probs.is_empty() {
                    0.0
                } else {
                    probs.iter().sum::<f32>() / probs.len() as f32
                };
                Timed {
                    text: span.text,
                    tokens: span.tokens.len(),
                    start: window.starts[span.tokens.start],
                    end: window.starts[span.tokens.end],
                    probability,
                }
            })
            .collect()
    }
}
