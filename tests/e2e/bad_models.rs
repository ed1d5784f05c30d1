//! Broken CTranslate2 models: a missing `model.bin` or vocabulary, a
//! truncated `model.bin`, a `config.json` that is not JSON. Each is a coded,
//! readable error naming the file — from `stt models verify`, at server
//! start, and at admin load — never a crash inside CTranslate2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use stt::server::settings::AdminSettings;

use crate::harness::*;
use crate::server::TestServer;

/// A copy of the provisioned tiny.en directory, broken by `breaks`.
fn broken(name: &str, breaks: impl FnOnce(&Path)) -> PathBuf {
    let dir = scratch().join("bad_models").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["model.bin", "config.json", "vocabulary.txt"] {
        std::fs::copy(tiny_en_ct2().join(f), dir.join(f)).expect("copy");
    }
    breaks(&dir);
    dir
}

/// The four broken models and the words their error must contain.
fn cases() -> Vec<(PathBuf, &'static str)> {
    vec![
        (
            broken("no_model_bin", |d| {
                std::fs::remove_file(d.join("model.bin")).expect("rm")
            }),
            "model.bin is missing",
        ),
        (
            broken("no_vocabulary", |d| {
                std::fs::remove_file(d.join("vocabulary.txt")).expect("rm")
            }),
            "vocabulary.txt is missing",
        ),
        (
            broken("truncated", |d| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("model.bin"))
                    .expect("open");
                f.set_len(10_000_000).expect("truncate");
            }),
            "model.bin",
        ),
        (
            broken("bad_config", |d| {
                std::fs::write(d.join("config.json"), "{\"lang_ids\": [1, 2").expect("write")
            }),
            "config.json is not valid JSON",
        ),
    ]
}

#[test]
fn models_verify_names_what_is_wrong_with_a_broken_ct2_directory() {
    for (dir, expected) in cases() {
        let out = run_stt(&["models", "verify", dir.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: verify passed", dir.display());
        assert!(stderr.contains(expected), "{}: {stderr}", dir.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn models_verify_loads_and_decodes_a_good_ct2_directory() {
    let out = run_stt(&["models", "verify", tiny_en_ct2().to_str().expect("utf-8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CTranslate2 Whisper (WhisperSpec"),
        "{stdout}"
    );
    assert!(stdout.contains("English-only"), "{stdout}");
    assert!(
        stdout.contains("loads and decodes in CTranslate2: ok"),
        "{stdout}"
    );
}

#[test]
fn serve_refuses_to_start_on_a_broken_model() {
    for (dir, expected) in cases() {
        let out = stt()
            .args(["serve", "--port", "0", "--metrics-port", "0", "--model"])
            .arg(&dir)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", dir.display());
        assert!(stderr.contains(expected), "{}: {stderr}", dir.display());
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn admin_load_of_a_broken_model_is_err4003_naming_the_file() {
    let root = scratch().join("bad_models");
    let cases = cases();
    let server = TestServer::start(move |s| {
        s.admin = AdminSettings {
            enabled: true,
            token: Some("t".into()),
            allow_model_path: true,
            allowlist: vec![root.display().to_string()],
            ..Default::default()
        };
    });
    let client = reqwest::Client::new();
    for (dir, expected) in cases {
        let resp = client
            .post(format!("http://{}/admin/load_model", server.http))
            .bearer_auth("t")
            .json(&json!({"model_path": dir}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("HTTP answers");
        assert_eq!(resp.status().as_u16(), 400, "{}", dir.display());
        let body: serde_json::Value = resp.json().await.expect("JSON");
        assert_eq!(body["code"], "ERR4003", "{body}");
        let msg = body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expected), "{}: {msg}", dir.display());
    }
}
