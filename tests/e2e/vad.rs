//! Silero VAD through ONNX Runtime on real speech.

use crate::harness::*;

/// First and last sample above a small amplitude: where espeak actually spoke.
fn voiced_span(samples: &[f32]) -> (usize, usize) {
    let first = samples.iter().position(|s| s.abs() > 0.02).unwrap_or(0);
    let last = samples
        .iter()
        .rposition(|s| s.abs() > 0.02)
        .unwrap_or(samples.len());
    (first, last)
}

#[test]
fn speech_silence_speech_gives_two_regions_at_the_right_times() {
    let a = stt::audio::wav::read_wav(&speak("vad_a", "en-us", "Good morning, everyone.")).unwrap();
    let b =
        stt::audio::wav::read_wav(&speak("vad_b", "en-us", "Let us begin the meeting.")).unwrap();
    let (a0, a1) = voiced_span(&a.samples);
    let (b0, b1) = voiced_span(&b.samples);
    // speech A, exactly 1 s of silence, speech B — trimmed to the voiced spans.
    let mut samples = vec![0.0f32; 8_000];
    let truth_a = (samples.len(), samples.len() + (a1 - a0));
    samples.extend_from_slice(&a.samples[a0..a1]);
    samples.extend(std::iter::repeat_n(0.0, 16_000));
    let truth_b = (samples.len(), samples.len() + (b1 - b0));
    samples.extend_from_slice(&b.samples[b0..b1]);
    samples.extend(std::iter::repeat_n(0.0, 8_000));
    let clip = stt::audio::wav::Clip {
        samples,
        source_rate: 16_000,
        source_channels: 1,
    };
    let vad = stt::transcribe::start_vad().expect("VAD starts from provisioned files");
    let regions = stt::transcribe::speech_regions(&vad, &clip, 0.5, 0.5).unwrap();
    assert_eq!(regions.len(), 2, "regions: {regions:?}");
    // Regions are padded on both sides so word edges survive; allow the pad
    // plus 150 ms of detector slack.
    let pad = stt::vad::endpoint::EndpointConfig::new(0.5, 0.5).pad_samples as f64;
    let tol = pad + 0.150 * 16_000.0;
    for ((start, end), (t0, t1)) in regions.iter().zip([truth_a, truth_b]) {
        let ds = (*start as f64 - t0 as f64).abs();
        let de = (*end as f64 - t1 as f64).abs();
        assert!(
            ds <= tol && de <= tol,
            "region {start}..{end} vs truth {t0}..{t1} (Δ {ds}, {de} samples)"
        );
    }
}

#[test]
fn pool_refuses_beyond_its_limit_and_recovers() {
    let vad = stt::transcribe::start_vad().unwrap();
    let first = vad.acquire().unwrap();
    assert!(matches!(
        vad.acquire(),
        Err(stt::vad::VadError::Exhausted { limit: 1 })
    ));
    drop(first);
    assert!(vad.acquire().is_ok());
}

#[test]
fn silence_scores_low_and_speech_scores_high() {
    let clip = stt::audio::wav::read_wav(&asset("audio/hello.wav")).unwrap();
    let vad = stt::transcribe::start_vad().unwrap();
    let mut stream = vad.acquire().unwrap();
    let mut probs = Vec::new();
    stream.push(&vec![0.0; 16_000], &mut probs).unwrap();
    assert!(probs.iter().all(|&p| p < 0.2), "silence: {probs:?}");
    probs.clear();
    stream.push(&clip.samples, &mut probs).unwrap();
    let max = probs.iter().cloned().fold(0.0f32, f32::max);
    assert!(max > 0.8, "speech max prob {max}");
}
