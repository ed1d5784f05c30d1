//! The whisper.cpp worker pool directly: real tiny.en, real speech.

use std::sync::Arc;
use std::time::Instant;

use stt::config::model::DecodeProfileConfig;
use stt::server::engine::{DecodeJob, DecodeParams, Engine, EngineConfig, EngineError, Priority};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

fn engine() -> Engine {
    Engine::start(EngineConfig::new(tiny_en())).expect("tiny.en loads")
}

fn passage() -> Arc<[f32]> {
    stt::audio::wav::read_wav(&asset("audio/passage.wav"))
        .unwrap()
        .samples
        .into()
}

#[test]
fn decode_gives_words_and_segment_times() {
    let engine = engine();
    let params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    let t = engine.decode_blocking(passage(), params).unwrap();
    assert_words(
        "Good morning everyone, let us begin the meeting.",
        &t.text(),
        0.8,
    );
    assert_eq!(t.language, "en");
    let last = t.segments.last().expect("segments");
    assert!(
        last.end_sec > 8.0 && last.end_sec < 13.0,
        "{:?}",
        t.segments
    );
    engine.shutdown();
}

#[test]
fn cancelling_aborts_a_running_decode_promptly() {
    let engine = engine();
    // 36 s of speech (two 30 s windows). Time one uncancelled decode, then
    // cancel the same decode early: the abort must end it well before it
    // would have finished. Relative, so a loaded machine does not flake it.
    let long: Arc<[f32]> = passage().repeat(3).into();
    let params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    let started = Instant::now();
    engine
        .decode_blocking(long.clone(), params.clone())
        .expect("uncancelled decode");
    let full = started.elapsed();

    let cancel = CancellationToken::new();
    let (job, rx) = DecodeJob::new(long, params.clone(), cancel.clone());
    engine.try_submit(job, Priority::Final).unwrap();
    std::thread::sleep(full / 10);
    let cancelled_at = Instant::now();
    cancel.cancel();
    let res = rx.blocking_recv().expect("worker replies");
    let took = cancelled_at.elapsed();
    assert!(matches!(res, Err(EngineError::Cancelled)), "{res:?}");
    assert!(
        took < full.mul_f64(0.6),
        "abort took {took:?}; a whole decode takes {full:?}"
    );
    // The worker is still usable afterwards.
    assert!(engine.decode_blocking(passage(), params).is_ok());
    engine.shutdown();
}

#[test]
fn english_only_model_refuses_other_languages() {
    let engine = engine();
    let mut params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    params.language = Some("de".into());
    let res = engine.decode_blocking(passage(), params);
    assert!(matches!(res, Err(EngineError::Language { .. })), "{res:?}");
    engine.shutdown();
}

#[test]
fn every_model_decodes_through_the_default_models_cpu_gate() {
    // Two models' workers decoding at once on cores sized for one collapse
    // (ggml threads spin); a registry's models share one gate.
    use stt::server::model_registry::ModelRegistry;
    let registry = ModelRegistry::start("tiny.en".into(), EngineConfig::new(tiny_en()))
        .expect("default loads");
    registry
        .load_now("second".into(), tiny_en())
        .expect("second model loads");
    let default = registry.lease(None).expect("default lease");
    let second = registry.lease(Some("second")).expect("second lease");
    let gate = default.engine().gate();
    assert_eq!(gate.free(), 1);
    let pass = gate.enter(Priority::Final, &CancellationToken::new());
    assert!(pass.is_some());
    assert_eq!(
        second.engine().gate().free(),
        0,
        "the second model has a gate of its own"
    );
    drop(pass);
    // And decoding still works through it.
    let params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    let t = second.engine().decode_blocking(passage(), params).unwrap();
    assert!(!t.text().is_empty());
    drop((default, second));
    registry.shutdown();
}
