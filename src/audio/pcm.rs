//! PCM16 little-endian bytes ↔ f32 samples, with the size checks a network
//! payload needs, and the RMS level the speech gate uses.

use super::AudioError;

/// Decodes little-endian signed 16-bit PCM into f32 in [-1, 1).
///
/// `max_bytes` bounds the payload so a hostile chunk cannot make us allocate
/// without limit; an odd length means the sender's framing is broken.
pub fn pcm16_to_f32(bytes: &[u8], max_bytes: usize) -> Result<Vec<f32>, AudioError> {
    if bytes.len() > max_bytes {
        return Err(AudioError::TooLarge {
            got: bytes.len(),
            limit: max_bytes,
        });
    }
    if bytes.len() % 2 != 0 {
        return Err(AudioError::OddLength(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect())
}

/// Encodes f32 samples as little-endian PCM16, clamping out-of-range values.
pub fn f32_to_pcm16(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for &s in samples {
        out.extend_from_slice(&f32_to_i16(s).to_le_bytes());
    }
    out
}

/// One f32 sample to i16, clamped.
pub fn f32_to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Root-mean-square level of `samples` (0 for an empty slice).
pub fn rms(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / samples.len() as f64).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_values() {
        let samples = [0.0, 0.5, -0.5, 0.999, -1.0];
        let bytes = f32_to_pcm16(&samples);
        let back = pcm16_to_f32(&bytes, 1 << 20).unwrap();
        for (a, b) in samples.iter().zip(&back) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn odd_length_is_an_error() {
        assert!(matches!(
            pcm16_to_f32(&[1, 2, 3], 100),
            Err(AudioError::OddLength(3))
        ));
    }

    #[test]
    fn oversized_payload_is_an_error() {
        assert!(matches!(
            pcm16_to_f32(&[0; 10], 8),
            Err(AudioError::TooLarge { got: 10, limit: 8 })
        ));
    }

    #[test]
    fn little_endian_decoding() {
        // 0x4000 = 16384 → 0.5
        assert_eq!(pcm16_to_f32(&[0x00, 0x40], 2).unwrap(), vec![0.5]);
        assert_eq!(pcm16_to_f32(&[0x00, 0x80], 2).unwrap(), vec![-1.0]);
    }

    #[test]
    fn rms_of_constant_and_empty() {
        assert_eq!(rms(&[]), 0.0);
        assert!((rms(&[0.5, -0.5, 0.5]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn clamps_out_of_range() {
        assert_eq!(f32_to_i16(2.0), 32767);
        assert_eq!(f32_to_i16(-2.0), -32767);
    }
}
