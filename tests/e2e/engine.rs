//! The engine seam directly: both backends on real tiny.en and real speech,
//! the model kind picking the backend, guards on a real loop, cancellation.

use std::sync::Arc;
use std::time::Instant;

use stt::config::model::DecodeProfileConfig;
use stt::engine::{
    DecodeJob, DecodeParams, Engine, EngineChoice, EngineConfig, EngineError, EngineKind,
    GuardReason, ModelSource, Priority,
};
use tokio_util::sync::CancellationToken;

use crate::harness::*;

/// whisper.cpp on the ggml tiny.en.
fn engine() -> Engine {
    Engine::start(EngineConfig::new(ModelSource::from_path(tiny_en()))).expect("tiny.en loads")
}

/// CTranslate2 on the provisioned directory.
fn ct2_engine() -> Engine {
    Engine::start(EngineConfig::new(ModelSource::from_path(tiny_en_ct2())))
        .expect("tiny.en loads in CTranslate2")
}

/// What assets/audio/passage.wav says.
const PASSAGE: &str =
    "Good morning everyone, let us begin the meeting. Please call me back tomorrow \
     afternoon. Thank you for calling customer support. I would like to order a large pizza.";

fn passage() -> Arc<[f32]> {
    stt::audio::wav::read_wav(&asset("audio/passage.wav"))
        .unwrap()
        .samples
        .into()
}

#[test]
fn each_engine_decodes_the_passage_with_words_and_times() {
    for (engine, kind) in [
        (engine(), EngineKind::WhisperCpp),
        (ct2_engine(), EngineKind::CTranslate2),
    ] {
        let params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
        let t = engine.decode_blocking(passage(), params).unwrap();
        assert_words(PASSAGE, &t.text(), 0.9);
        assert_eq!(t.language, "en");
        assert_eq!(t.engine, Some(kind));
        assert!(t.guards.is_empty(), "{kind:?}: {:?}", t.guards);
        let last = t.segments.last().expect("segments");
        assert!(
            last.end_sec > 8.0 && last.end_sec < 13.0,
            "{kind:?}: {:?}",
            t.segments
        );
        engine.shutdown();
    }
}

#[test]
fn the_engine_follows_the_model_kind() {
    // A provisioned name resolves to the CTranslate2 directory by default,
    // to the ggml file when whisper.cpp is asked for.
    let auto = ModelSource::resolve("tiny.en", EngineChoice::Auto);
    assert_eq!(auto.kind, EngineKind::CTranslate2);
    assert_eq!(auto.path, tiny_en_ct2());
    let ggml = ModelSource::resolve("tiny.en", EngineChoice::Only(EngineKind::WhisperCpp));
    assert_eq!(
        (ggml.kind, ggml.path.clone()),
        (EngineKind::WhisperCpp, tiny_en())
    );
    assert_eq!(auto.id(), "tiny.en");
    assert_eq!(ggml.id(), "tiny.en");
    let e = Engine::start(EngineConfig::new(auto)).expect("loads");
    assert_eq!(e.model().kind, EngineKind::CTranslate2);
    e.shutdown();
}

#[test]
fn a_loop_in_a_small_window_is_caught_and_retried_with_the_full_window() {
    // whisper.cpp with a 384-frame window (7.7 s) on the 12 s passage loops
    // ("Thank you for calling. Thank you for calling. …"); the repetition
    // guard rejects it and the retry at the full window gets the text.
    let engine = engine();
    let mut params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    params.audio_ctx = Some(384);
    let t = engine.decode_blocking(passage(), params).unwrap();
    assert_eq!(t.guards, vec![GuardReason::Repetition], "{:?}", t.text());
    assert!(!t.dropped);
    assert_words(
        "Thank you for calling customer support. I would like to order a large pizza.",
        &t.text(),
        0.9,
    );
    let counts = engine.guards().by_reason();
    assert!(counts.contains(&(GuardReason::Repetition, 1)), "{counts:?}");
    assert_eq!(engine.guards().dropped(), 0);
    engine.shutdown();
}

#[test]
fn ctranslate2_decodes_a_long_clip_window_by_window() {
    // ~130 s: the passage, a long silence, then hello.wav at 125 s — five
    // 30 s windows, encoded and decoded in bounded groups (four, then one);
    // the fifth window's words and times come back.
    let engine = ct2_engine();
    let hello = stt::audio::wav::read_wav(&asset("audio/hello.wav"))
        .unwrap()
        .samples;
    let mut long = passage().to_vec();
    long.resize(125 * 16_000, 0.0);
    long.extend(hello);
    let params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    let t = engine.decode_blocking(long.into(), params).unwrap();
    let last = t.segments.last().expect("segments");
    assert!(last.start_sec >= 120.0, "{:?}", t.segments);
    assert!(last.end_sec > 128.0, "{:?}", t.segments);
    assert_words("Hello world. This is a test", &last.text, 0.8);
    assert_words("Good morning everyone", &t.segments[0].text, 0.8);
    engine.shutdown();
}

#[test]
fn a_job_cancelled_before_it_runs_never_reaches_ctranslate2() {
    // A cancelled job is answered without encoding: far sooner than a
    // decode (relative, so a loaded machine does not flake it).
    let engine = ct2_engine();
    let params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
    let started = Instant::now();
    engine.decode_blocking(passage(), params.clone()).unwrap();
    let full = started.elapsed();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (job, rx) = DecodeJob::new(passage(), params.clone(), cancel);
    let started = Instant::now();
    engine.try_submit(job, Priority::Final).unwrap();
    let res = rx.blocking_recv().expect("worker replies");
    let took = started.elapsed();
    assert!(matches!(res, Err(EngineError::Cancelled)), "{res:?}");
    assert!(
        took < full / 4,
        "answered in {took:?}; a decode takes {full:?}"
    );
    assert!(engine.decode_blocking(passage(), params).is_ok());
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
fn english_only_model_refuses_other_languages_on_each_engine() {
    for engine in [engine(), ct2_engine()] {
        let mut params = DecodeParams::from_profile(DecodeProfileConfig::realtime());
        params.language = Some("de".into());
        let res = engine.decode_blocking(passage(), params);
        assert!(matches!(res, Err(EngineError::Language { .. })), "{res:?}");
        engine.shutdown();
    }
}

#[test]
fn every_model_decodes_through_the_default_models_cpu_gate() {
    // Two models' workers decoding at once on cores sized for one collapse
    // (ggml threads spin); a registry's models share one gate.
    use stt::server::model_registry::ModelRegistry;
    let registry = ModelRegistry::start(
        "tiny.en".into(),
        EngineConfig::new(ModelSource::from_path(tiny_en_ct2())),
        EngineChoice::Auto,
    )
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
    assert_words(PASSAGE, &t.text(), 0.8);
    drop((default, second));
    registry.shutdown();
}
