//! The bench's arithmetic: percentiles of a set of timings, real-time factor
//! and throughput. Pure functions over numbers — no I/O, no sessions.

use serde::Serialize;

/// Rounds seconds to milliseconds, the precision every log and summary shows.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Count, mean and spread of one timing over many sessions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Distribution {
    /// `None` when no finite value is given. Percentiles are nearest-rank
    /// (the smallest value with at least p% of the values at or below it),
    /// so every figure is one a session really saw.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Self {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            max: v[v.len() - 1],
        })
    }

    /// Every figure rounded to milliseconds, for output.
    pub fn rounded(self) -> Self {
        Self {
            count: self.count,
            mean: round3(self.mean),
            min: round3(self.min),
            p50: round3(self.p50),
            p90: round3(self.p90),
            p99: round3(self.p99),
            max: round3(self.max),
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of `sorted` (ascending, non-empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Real-time factor: seconds spent per second of audio (below 1 is faster
/// than real time). `None` without audio.
pub fn rtf(wall_sec: f64, audio_sec: f64) -> Option<f64> {
    (audio_sec > 0.0 && wall_sec.is_finite()).then(|| wall_sec / audio_sec)
}

/// Seconds of audio transcribed per second of wall time across all channels
/// (the server's capacity in "real-time streams"). `None` without wall time.
pub fn throughput(audio_sec: f64, wall_sec: f64) -> Option<f64> {
    (wall_sec > 0.0 && audio_sec.is_finite()).then(|| audio_sec / wall_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 90.0), 90.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        // Ten values: p99 is the largest, p50 the fifth.
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(
            (
                percentile(&v, 50.0),
                percentile(&v, 90.0),
                percentile(&v, 99.0)
            ),
            (5.0, 9.0, 10.0)
        );
        assert_eq!(percentile(&[0.7], 99.0), 0.7);
    }

    #[test]
    fn distribution_sorts_and_skips_non_finite() {
        assert_eq!(Distribution::of([]), None);
        assert_eq!(Distribution::of([f64::NAN]), None);
        let d = Distribution::of([0.4, 0.1, f64::INFINITY, 0.3, 0.2]).expect("values");
        assert_eq!(d.count, 4);
        assert!((d.mean - 0.25).abs() < 1e-12);
        assert_eq!(
            (d.min, d.p50, d.p90, d.p99, d.max),
            (0.1, 0.2, 0.4, 0.4, 0.4)
        );
    }

    #[test]
    fn rounding_is_to_milliseconds() {
        assert_eq!(round3(1.23456), 1.235);
        assert_eq!(round3(0.0004), 0.0);
        let d = Distribution::of([0.12345, 0.98765])
            .expect("values")
            .rounded();
        assert_eq!((d.min, d.max, d.mean), (0.123, 0.988, 0.556));
    }

    #[test]
    fn rtf_and_throughput() {
        assert_eq!(rtf(2.0, 4.0), Some(0.5));
        assert_eq!(rtf(1.0, 0.0), None);
        // Four channels each streaming 10 s of audio in 5 s of wall time.
        assert_eq!(throughput(40.0, 5.0), Some(8.0));
        assert_eq!(throughput(1.0, 0.0), None);
    }
}
