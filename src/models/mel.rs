//! The mel filterbank stored in a ggml Whisper file: librosa's default
//! (Slaney mel scale, Slaney area normalisation) for a 400-point FFT at
//! 16 kHz, which is what OpenAI's `mel_filters.npz` holds.
//!
//! whisper.cpp computes its log-mel spectrogram with the filters it reads
//! from the model file, so these numbers decide what the model hears.

/// Whisper's sample rate.
pub const SAMPLE_RATE: f64 = 16_000.0;
/// Whisper's FFT size; it gives `N_FFT / 2 + 1` = 201 frequency bins.
pub const N_FFT: usize = 400;
/// Mel bands of every Whisper model before large-v3 (which has 128).
pub const DEFAULT_N_MELS: usize = 80;

/// Row-major `n_mels × (n_fft / 2 + 1)` triangular filters from 0 Hz to
/// Nyquist, each scaled to unit area per Hz as librosa's `norm="slaney"`.
pub fn filterbank(n_mels: usize, n_fft: usize, sample_rate: f64) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let nyquist = sample_rate / 2.0;
    let bin_hz: Vec<f64> = linspace(0.0, nyquist, n_bins);
    let edges_hz: Vec<f64> = linspace(hz_to_mel(0.0), hz_to_mel(nyquist), n_mels + 2)
        .into_iter()
        .map(mel_to_hz)
        .collect();

    let mut out = Vec::with_capacity(n_mels * n_bins);
    for m in 0..n_mels {
        let (lo, mid, hi) = (edges_hz[m], edges_hz[m + 1], edges_hz[m + 2]);
        let area = 2.0 / (hi - lo);
        for &f in &bin_hz {
            let rising = (f - lo) / (mid - lo);
            let falling = (hi - f) / (hi - mid);
            // librosa keeps the triangle in f32 before scaling it; rounding
            // twice like it does reproduces its numbers bit for bit.
            let weight = f64::from(rising.min(falling).max(0.0) as f32);
            out.push((weight * area) as f32);
        }
    }
    out
}

/// numpy's `linspace`: exact end points, `start + i * step` between.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i + 1 == n {
                        stop
                    } else {
                        start + i as f64 * step
                    }
                })
                .collect()
        }
    }
}

// Slaney's scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        mel * F_SP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINS: usize = N_FFT / 2 + 1;

    fn at(filters: &[f32], row: usize, col: usize) -> f64 {
        f64::from(filters[row * BINS + col])
    }

    /// Values of OpenAI's `whisper/assets/mel_filters.npz` (`mel_80`).
    #[test]
    fn matches_openai_mel_80() {
        let f = filterbank(DEFAULT_N_MELS, N_FFT, SAMPLE_RATE);
        assert_eq!(f.len(), 80 * BINS);
        let reference = [
            (0, 1, 0.024_862_594_902_515_41),
            (1, 1, 0.001_990_821_911_022_067),
            (1, 2, 0.022_871_771_827_340_126),
            (40, 42, 0.005_411_104_764_789_343),
            (40, 43, 0.014_735_566_452_145_576),
            (40, 44, 0.006_518_189_795_315_266),
            (79, 190, 0.002_232_054_946_944_117_5),
            (79, 195, 0.002_243_795_199_319_720_3),
            (0, 2, 0.0),
            (79, 200, 0.0),
        ];
        for (row, col, want) in reference {
            let got = at(&f, row, col);
            assert!(
                (got - want).abs() < 1e-9,
                "[{row}][{col}] = {got}, want {want}"
            );
        }
        let total: f64 = f.iter().map(|v| f64::from(*v)).sum();
        assert!((total - 1.999_024_092_387_117).abs() < 1e-6, "sum {total}");
    }

    #[test]
    fn filters_are_nonnegative_triangles_in_rising_order() {
        let f = filterbank(DEFAULT_N_MELS, N_FFT, SAMPLE_RATE);
        let mut last_peak = 0;
        for row in 0..DEFAULT_N_MELS {
            let r = &f[row * BINS..(row + 1) * BINS];
            assert!(r.iter().all(|v| *v >= 0.0));
            let peak = (0..BINS)
                .max_by(|a, b| r[*a].total_cmp(&r[*b]))
                .expect("non-empty row");
            assert!(peak >= last_peak, "row {row} peaks before row {}", row - 1);
            last_peak = peak;
        }
        // The DC bin sits on the first edge, where every triangle is zero.
        assert!((0..DEFAULT_N_MELS).all(|row| at(&f, row, 0) == 0.0));
    }

    #[test]
    fn mel_scale_round_trips_and_is_linear_below_1khz() {
        for hz in [0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
        assert!((hz_to_mel(200.0) - 3.0).abs() < 1e-12);
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
    }

    #[test]
    fn large_v3_shape_has_128_rows() {
        let f = filterbank(128, N_FFT, SAMPLE_RATE);
        assert_eq!(f.len(), 128 * BINS);
        // From `mel_128` in the same npz.
        assert!((at(&f, 0, 1) - 0.012_373_986_653_983_593).abs() < 1e-9);
    }
}
