//! Audio a client sends or a file holds: PCM16 chunks, the resamplers, and
//! the file readers (WAV through hound, the rest through symphonia).

use std::sync::OnceLock;

use proptest::prelude::*;

use super::{fuzz_config, mutated, word_patched};
use crate::audio::decode::read_audio;
use crate::audio::pcm::pcm16_to_f32;
use crate::audio::resample::{resample_to_16k, StreamResampler};
use crate::audio::{check_rate, MAX_RATE, MIN_RATE, TARGET_RATE};

/// Output samples a resampler owes for `n` input samples at `rate`. Stated
/// here rather than borrowed from `resample.rs`, so the check is not the
/// code under test checking itself.
fn expected(n: usize, rate: u32) -> usize {
    (n as u64 * u64::from(TARGET_RATE)).div_ceil(u64::from(rate)) as usize
}

/// Rates clients send, the edges of the accepted range, and 64 rates
/// spread over it (most sharing no factor with 16 kHz, the resampler's
/// hardest case). A fixed set, so each rate's resampler is built once per
/// thread and reused — building one plans FFTs up to a second of audio
/// long, which would make a 10⁵-case run take hours.
fn rate() -> impl Strategy<Value = u32> {
    let mut rates = vec![
        MIN_RATE, 8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000, 192_000, MAX_RATE,
    ];
    let step = (MAX_RATE - MIN_RATE) / 64;
    rates.extend((0..64).map(|i| MIN_RATE + 997 + i * step));
    prop::sample::select(rates)
}

thread_local! {
    /// One resampler per rate, reused: `finish` leaves it ready for a new
    /// stream.
    static RESAMPLERS: std::cell::RefCell<std::collections::HashMap<u32, StreamResampler>> =
        std::cell::RefCell::default();
}

/// Pushes `chunks` through this thread's resampler for `rate`, then
/// flushes it.
fn resample_stream(rate: u32, chunks: &[Vec<f32>]) -> Result<Vec<f32>, crate::audio::AudioError> {
    RESAMPLERS.with(|cell| {
        let mut map = cell.borrow_mut();
        let r = match map.entry(rate) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(StreamResampler::new(rate)?),
        };
        let mut out = Vec::new();
        let pushed = chunks.iter().try_for_each(|c| r.push(c, &mut out));
        // Flush even after a failed push, so the next case starts clean.
        let flushed = r.finish(&mut out);
        pushed.and(flushed).map(|()| out)
    })
}

/// A WAV file as `stt file` or a browser would send it: 16-bit stereo at
/// 22.05 kHz, a quarter second.
fn valid_wav() -> Vec<u8> {
    static WAV: OnceLock<Vec<u8>> = OnceLock::new();
    WAV.get_or_init(|| {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 22_050,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cursor, spec).expect("wav writer");
        for i in 0..22_050 / 4 {
            let s = ((i as f32 * 0.05).sin() * 8000.0) as i16;
            w.write_sample(s).expect("sample");
            w.write_sample(-s).expect("sample");
        }
        w.finalize().expect("finalize");
        cursor.into_inner()
    })
    .clone()
}

/// Bytes a reader may meet: a broken WAV, a WAV with a hostile size or
/// format field, or bytes that only claim to be another format.
fn audio_bytes() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop::sample::select(vec![
        b"fLaC".to_vec(),
        b"OggS".to_vec(),
        b"ID3\x04".to_vec(),
        vec![0xFF, 0xFB],
        b"\x1A\x45\xDF\xA3".to_vec(),
        b"FORM\0\0\0\x20AIFF".to_vec(),
        b"caff".to_vec(),
        b"\0\0\0\x20ftypM4A ".to_vec(),
    ]);
    prop_oneof![
        3 => mutated(valid_wav()),
        2 => word_patched(valid_wav()),
        2 => (magic, prop::collection::vec(any::<u8>(), 0..2048)).prop_map(|(mut m, rest)| {
            m.extend(rest);
            m
        }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

proptest! {
    #![proptest_config(fuzz_config(2000))]

    /// A chunk decodes exactly when it is within the limit and whole
    /// samples, into as many samples in [-1, 1).
    #[test]
    fn pcm_chunks_decode_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        limit in 0usize..5000,
    ) {
        match pcm16_to_f32(&bytes, limit) {
            Ok(samples) => {
                prop_assert!(bytes.len() <= limit && bytes.len() % 2 == 0);
                prop_assert_eq!(samples.len(), bytes.len() / 2);
                prop_assert!(samples.iter().all(|s| (-1.0..1.0).contains(s)));
            }
            Err(_) => prop_assert!(bytes.len() > limit || bytes.len() % 2 != 0),
        }
    }

    /// The rate check takes what the resampler can build and nothing else.
    #[test]
    fn sample_rates_are_checked_at_the_door(rate in any::<i64>()) {
        let ok = check_rate(rate).is_ok();
        prop_assert_eq!(ok, (i64::from(MIN_RATE)..=i64::from(MAX_RATE)).contains(&rate));
    }
}

proptest! {
    #![proptest_config(fuzz_config(300))]

    /// Streaming resampling, chunked however the client chunks, gives
    /// exactly the samples the clip's length owes, all finite. (Found here:
    /// at rates sharing no factor with 16 kHz, such as 90 537 Hz, the
    /// flush gave up before rubato released its output.)
    #[test]
    fn streamed_audio_resamples_to_the_owed_length(
        rate in rate(),
        chunks in prop::collection::vec(
            prop::collection::vec(-1.0f32..1.0, 0..1500), 0..6),
    ) {
        let out = resample_stream(rate, &chunks).expect("resamples");
        let n: usize = chunks.iter().map(Vec::len).sum();
        prop_assert_eq!(out.len(), expected(n, rate));
        prop_assert!(out.iter().all(|s| s.is_finite()));
    }

    /// A whole clip — float WAVs may hold NaN, infinities or 1e38 —
    /// resamples to the owed length of finite samples. (Found here: rubato
    /// panicked on such values; they are now clipped or silenced first.)
    #[test]
    fn whole_clips_resample_whatever_their_values(
        rate in rate(),
        samples in prop::collection::vec(
            prop_oneof![8 => -1.0f32..1.0, 1 => any::<f32>()], 0..3000),
    ) {
        // resample_to_16k is push-all-then-finish on a fresh resampler;
        // the 16 kHz pass-through is its own branch.
        let out = if rate == TARGET_RATE {
            resample_to_16k(&samples, rate).expect("pass-through")
        } else {
            resample_stream(rate, std::slice::from_ref(&samples)).expect("any values resample")
        };
        prop_assert_eq!(out.len(), expected(samples.len(), rate));
        prop_assert!(out.iter().all(|s| s.is_finite()));
    }
}

proptest! {
    #![proptest_config(fuzz_config(1000))]

    /// Any file given to `stt file`, `stt transcribe`, the REST API or
    /// `stt bench` is read or refused with an error naming it; what is
    /// read is 16 kHz audio of a plausible length.
    #[test]
    fn audio_files_are_read_or_refused(
        bytes in audio_bytes(),
        ext in prop::sample::select(vec!["wav", "flac", "mp3", "ogg", "m4a", "webm", "bin"]),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("clip.{ext}"));
        std::fs::write(&path, &bytes).expect("write");
        match read_audio(&path) {
            Ok(clip) => {
                prop_assert!(!clip.samples.is_empty());
                // No format packs more than 16 kHz of samples into a byte
                // per 1000 samples; a header that claims more is lying.
                prop_assert!(clip.samples.len() <= bytes.len().max(1) * 1000);
            }
            Err(e) => prop_assert!(e.to_string().contains("clip."), "{}", e),
        }
    }
}
