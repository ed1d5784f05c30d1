//! `stt transcribe` end to end: real tiny.en, real Silero VAD, espeak speech.

use crate::harness::*;

const HELLO: &str = "Hello world. This is a test of the speech to text system.";

fn transcribe_text(file: &std::path::Path) -> String {
    let out = run_stt(&["transcribe", "--json", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "stt transcribe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["language"], "en");
    v["text"].as_str().unwrap_or_default().to_string()
}

#[test]
fn transcribe_works_on_a_ct2_directory_and_on_a_ggml_file() {
    let expected = "Good morning everyone, let us begin the meeting. Please call me back \
                    tomorrow afternoon. Thank you for calling customer support.";
    for (model, engine) in [(tiny_en_ct2(), "ctranslate2"), (tiny_en(), "whisper.cpp")] {
        let out = run_stt(&[
            "transcribe",
            "--json",
            "--model",
            model.to_str().unwrap(),
            asset("audio/passage.wav").to_str().unwrap(),
        ]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{engine}: {log}");
        assert!(log.contains(&format!("engine=\"{engine}\"")), "{log}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        assert_words(expected, v["text"].as_str().unwrap_or_default(), 0.9);
    }
}

#[test]
fn committed_asset_gives_the_spoken_words() {
    let _ = tiny_en();
    let text = transcribe_text(&asset("audio/hello.wav"));
    assert_words(HELLO, &text, 0.8);
}

#[test]
fn same_words_at_8k_44k_and_stereo_48k() {
    let _ = tiny_en();
    let expected = "Please call me back tomorrow afternoon.";
    let src = speak("callback", "en-us", expected);
    for (name, rate, ch) in [
        ("call8k", 8_000, 1),
        ("call44k", 44_100, 1),
        ("call48k2", 48_000, 2),
    ] {
        let f = sox_convert(&src, name, rate, ch);
        let text = transcribe_text(&f);
        assert_words(expected, &text, 0.75);
    }
}

#[test]
fn text_output_has_timestamps() {
    let _ = tiny_en();
    let out = run_stt(&["transcribe", asset("audio/hello.wav").to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("[00:0"), "{stdout}");
    assert!(stdout.contains(" → "), "{stdout}");
}

#[test]
fn non_wav_file_is_a_runtime_error() {
    let f = scratch().join("notes.wav");
    std::fs::write(&f, "this is not audio").unwrap();
    let out = run_stt(&["transcribe", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a readable WAV file"), "{err}");
}

#[test]
fn empty_wav_is_a_runtime_error() {
    let f = scratch().join("empty.wav");
    stt::audio::wav::write_wav(&f, &[]).unwrap();
    let out = run_stt(&["transcribe", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no audio"), "{err}");
}

#[test]
fn missing_model_is_a_runtime_error_with_a_hint() {
    let out = run_stt(&[
        "transcribe",
        "--model",
        "/nonexistent/ggml-x.bin",
        asset("audio/hello.wav").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found") && err.contains("hint:"), "{err}");
}

#[test]
fn missing_onnx_runtime_is_a_clear_error() {
    let _ = tiny_en();
    let out = stt()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["transcribe", asset("audio/hello.wav").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ONNX Runtime library not found"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn wrong_onnx_runtime_file_is_a_clear_error() {
    let _ = tiny_en();
    let fake = scratch().join("libonnxruntime.so");
    std::fs::write(&fake, "not a library").unwrap();
    let out = stt()
        .env("ORT_DYLIB_PATH", &fake)
        .args(["transcribe", asset("audio/hello.wav").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot load ONNX Runtime"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = run_stt(&["transcribe", "--task", "summarise", "x.wav"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_stt(&["transcribe", "--decode-profile", "nope", "x.wav"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_stt(&["transcribe"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `input` re-encoded by sox into `name` (the extension picks the codec).
fn sox_encode(input: &std::path::Path, name: &str, rate: u32, channels: u32) -> std::path::PathBuf {
    let out = scratch().join(name);
    let status = std::process::Command::new("sox")
        .arg(input)
        .args(["-r", &rate.to_string(), "-c", &channels.to_string()])
        .arg(&out)
        .status()
        .expect("sox must be installed (scripts/setup.sh installs it)");
    assert!(status.success(), "sox could not write {name}");
    out
}

#[test]
fn flac_and_ogg_vorbis_files_give_the_spoken_words() {
    let wav = asset("audio/hello.wav");
    for (name, rate, channels) in [
        ("hello.flac", 16_000, 1),
        ("hello_44k_stereo.ogg", 44_100, 2),
    ] {
        let file = sox_encode(&wav, name, rate, channels);
        // Vorbis is lossy: tiny.en may hear "speech attack system" (0.75)
        // where the WAV gives "speech to text system"; a broken decode
        // gives next to nothing.
        assert_words(HELLO, &transcribe_text(&file), 0.7);
    }
}

#[test]
fn a_file_that_is_not_audio_is_refused_naming_the_formats() {
    let file = scratch().join("not_audio.m4a");
    std::fs::write(&file, "this is a text file, not an m4a").expect("write");
    let out = run_stt(&["transcribe", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not_audio.m4a"), "{err}");
    assert!(
        err.contains("not an audio file in a format we read"),
        "{err}"
    );
    assert!(err.contains("FLAC"), "{err}");
    assert!(
        !err.contains("ERROR"),
        "symphonia's probe noise leaked: {err}"
    );
}

#[test]
fn ogg_opus_files_give_the_spoken_words() {
    // 48 kHz stereo, as browsers and phones record it.
    let stereo = sox_encode(&asset("audio/hello.wav"), "hello_48k_stereo.wav", 48_000, 2);
    let opus = scratch().join("hello.opus");
    let status = std::process::Command::new("opusenc")
        .args(["--quiet", stereo.to_str().unwrap(), opus.to_str().unwrap()])
        .status()
        .expect("opusenc must be installed (scripts/setup.sh installs opus-tools)");
    assert!(status.success(), "opusenc failed");
    let out = run_stt(&["transcribe", "--json", opus.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_words(HELLO, v["text"].as_str().unwrap_or_default(), 0.7);
    // The encoder's pre-skip is dropped: the clip keeps its length.
    let secs = v["duration_sec"].as_f64().unwrap_or_default();
    assert!((secs - 4.4).abs() < 0.2, "{secs} s");
}
