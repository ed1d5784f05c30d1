//! What an operator writes: `server.yaml`, `model.yaml`, the client YAML
//! and the keys file, from the shipped files with values swapped, lines
//! dropped and bytes broken, through to the values the server derives.

use std::path::Path;

use proptest::prelude::*;

use super::fuzz_config;
use crate::auth::KeyFile;
use crate::config::{parse_yaml, ClientFile, ModelFile, ServerFile};
use crate::server::limits::{AudioRateLimit, HttpRateLimit, KeyAudioQuotas, SessionRateLimit};
use crate::server::settings::Settings;

const SERVER_YAML: &str = include_str!("../../config/server.yaml");
const MODEL_YAML: &str = include_str!("../../config/model.yaml");
const CLIENT_YAML: &str = include_str!("../../config/client/file.yaml");
const KEYS_YAML: &str = "keys:\n  - id: alice\n    hash: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n    max_sessions: 2\n    models: [tiny.en]\n    audio_seconds_per_minute: 30\n";

/// YAML scalars operators type, right and wrong.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "-1",
            "1e308",
            "-1e308",
            "1e-320",
            ".nan",
            ".inf",
            "-.inf",
            "null",
            "~",
            "true",
            "\"\"",
            "[]",
            "{}",
            "18446744073709551616",
            "4294967296",
            "0.0000001",
            "99999999999",
            "auto",
            "cuda",
            "\"x\"",
            "[1, 2]",
            "{a: 1}",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        "[ -~]{0,12}",
    ]
}

/// One edit to a YAML text.
#[derive(Debug, Clone)]
enum Edit {
    /// Line `n`'s value (after the first `: `) becomes `scalar`.
    Value(usize, String),
    Drop(usize),
    /// A copy of line `n` goes after it (a duplicate key).
    Duplicate(usize),
    /// A line of anything goes before line `n`.
    Insert(usize, String),
    /// Byte `n` of the text becomes `b` (read back lossily as UTF-8).
    Byte(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<usize>(), scalar()).prop_map(|(n, s)| Edit::Value(n, s)),
        1 => any::<usize>().prop_map(Edit::Drop),
        1 => any::<usize>().prop_map(Edit::Duplicate),
        1 => (any::<usize>(), "\\PC{0,30}").prop_map(|(n, s)| Edit::Insert(n, s)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(n, b)| Edit::Byte(n, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Value(i, v) => {
                if let Some(line) = lines.get_mut(i % n) {
                    if let Some(at) = line.find(": ") {
                        // Keep the key and its indentation; drop the comment.
                        line.truncate(at + 2);
                        line.push_str(v);
                    }
                }
            }
            Edit::Drop(i) => {
                if !lines.is_empty() {
                    lines.remove(i % n);
                }
            }
            Edit::Duplicate(i) => {
                if let Some(line) = lines.get(i % n).cloned() {
                    lines.insert(i % n, line);
                }
            }
            Edit::Insert(i, s) => lines.insert(i % n, s.clone()),
            Edit::Byte(i, b) => {
                let mut bytes = lines.join("\n").into_bytes();
                if !bytes.is_empty() {
                    let at = i % bytes.len();
                    bytes[at] = *b;
                }
                lines = String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    lines.join("\n")
}

fn edited(text: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(edit(), 1..5).prop_map(move |edits| apply(text, &edits))
}

proptest! {
    #![proptest_config(fuzz_config(1500))]

    /// Any `server.yaml` and `model.yaml` either load and validate, after
    /// which every value the server derives from them — durations, sample
    /// counts, rate limiters — can be built, or are refused naming the key.
    #[test]
    fn server_and_model_yaml_load_or_are_refused(
        server in edited(SERVER_YAML),
        model in edited(MODEL_YAML),
    ) {
        let server_path = Path::new("server.yaml");
        let model_path = Path::new("model.yaml");
        let server = parse_yaml::<ServerFile>(&server, server_path)
            .and_then(|f| f.validate(server_path).map(|()| f));
        let model = parse_yaml::<ModelFile>(&model, model_path)
            .and_then(|f| f.validate(model_path).map(|()| f));
        for e in [server.as_ref().err(), model.as_ref().err()].into_iter().flatten() {
            let text = e.to_string();
            prop_assert!(text.contains("server.yaml") || text.contains("model.yaml"), "{}", text);
        }
        if let (Ok(server), Ok(model)) = (server, model) {
            let mut settings = Settings::with_model("m.bin".into());
            settings.server = server;
            settings.model = model;
            let limits = settings.session_limits();
            prop_assert!(limits.partial_interval_samples >= 1);
            let _ = settings.session_defaults();
            let _ = (settings.profile("realtime"), settings.profile("accurate"));
            let s = &settings.server.server;
            let _ = SessionRateLimit::new(s.create_session_rps, s.create_session_burst);
            let _ = HttpRateLimit::new(s.http_rate_limit_rps, s.http_rate_limit_burst);
            let _ = AudioRateLimit::new(s.max_audio_bytes_per_sec, s.max_audio_bytes_per_sec_burst);
            for v in [
                s.session_timeout_sec, s.decode_queue_timeout_sec, s.decode_timeout_sec,
                s.shutdown_grace_sec, settings.server.tls.reload_interval_sec,
                settings.server.health.window_sec,
            ] {
                let _ = crate::config::seconds(v);
            }
        }
    }

    /// Any client YAML loads or is refused naming the file.
    #[test]
    fn client_yaml_loads_or_is_refused(text in edited(CLIENT_YAML)) {
        if let Err(e) = ClientFile::parse(&text, Path::new("file.yaml")) {
            prop_assert!(e.to_string().contains("file.yaml"), "{}", e);
        }
    }

    /// Any keys file loads, and its quotas can be applied, or it is
    /// refused naming the file.
    #[test]
    fn keys_files_load_or_are_refused(text in edited(KEYS_YAML), audio_ms in 0u64..100_000) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.yaml");
        std::fs::write(&path, &text).expect("write");
        match KeyFile::load(&path) {
            Ok(file) => {
                let quotas = KeyAudioQuotas::default();
                for k in &file.keys {
                    if let Some(per_minute) = k.audio_seconds_per_minute {
                        let _ = quotas.check(&k.id, per_minute, audio_ms);
                    }
                }
            }
            Err(e) => prop_assert!(e.contains("keys.yaml"), "{}", e),
        }
    }

    /// Seconds from any file become a duration: never a panic, zero for
    /// nothing, and never shorter for a longer setting.
    #[test]
    fn config_seconds_become_durations(a in any::<f64>(), b in any::<f64>()) {
        let (da, db) = (crate::config::seconds(a), crate::config::seconds(b));
        if a.is_nan() || a <= 0.0 {
            prop_assert_eq!(da, std::time::Duration::ZERO);
        }
        if a <= b {
            prop_assert!(da <= db);
        }
    }
}
