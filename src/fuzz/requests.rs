//! What a client asks for: CreateSession from the proto (gRPC) and the
//! WebSocket start frame, each through to the session's options.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::fuzz_config;
use crate::engine::Task;
use crate::error::{ErrorCode, SttError};
use crate::pb;
use crate::server::session::options::{Defaults, SessionOptions, SessionRequest};
use crate::server::web::ws::parse_start;

fn defaults(multilingual: bool) -> Defaults {
    let model = if multilingual { "base" } else { "tiny.en" };
    Defaults {
        languages: multilingual.then(|| Arc::from(vec![("en".to_string(), 1), ("de".into(), 1)])),
        ..Defaults::for_tests(model, multilingual)
    }
}

/// Strings clients send: empty, padded, control characters, very long,
/// non-ASCII, or anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("  ".to_string()),
        Just("auto".to_string()),
        Just("en".to_string()),
        Just("de".to_string()),
        Just("\u{0}\n".to_string()),
        "[a-z]{1,8}",
        "\\PC{0,40}",
        ".{0,12}",
        (0usize..2000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Doubles a client may put in a float field.
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        -2.0f64..100.0,
        any::<f64>(),
    ]
}

fn attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        Just("api_key".to_string()),
        Just("api_key_required".to_string()),
        Just("model_id".to_string()),
        Just("prompt".to_string()),
        Just("word_timestamps".to_string()),
        text(),
    ];
    prop::collection::btree_map(key, text(), 0..5)
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..4, 1 => any::<i32>()]
}

prop_compose! {
    fn proto_request()(
        session_id in text(),
        attributes in attributes(),
        vad_mode in enum_value(),
        vad_silence in double(),
        vad_threshold in double(),
        require_token in any::<bool>(),
        language_code in text(),
        task in enum_value(),
        decode_profile in enum_value(),
        vad_threshold_override in prop::option::of(double()),
    ) -> pb::SessionRequest {
        pb::SessionRequest {
            session_id,
            attributes: attributes.into_iter().collect(),
            vad_mode, vad_silence, vad_threshold, require_token,
            language_code, task, decode_profile, vad_threshold_override,
        }
    }
}

/// What every accepted session promises, whichever transport it came by.
fn check_options(o: &SessionOptions, multilingual: bool) -> Result<(), TestCaseError> {
    prop_assert!(!o.id.is_empty() && o.id.len() <= 256);
    prop_assert!(!o.id.chars().any(char::is_control));
    prop_assert!(o.vad_silence.is_finite() && (0.0..=60.0).contains(&o.vad_silence));
    prop_assert!(o.vad_threshold.is_finite() && (0.0..=1.0).contains(&o.vad_threshold));
    if !multilingual {
        prop_assert_eq!(o.language.as_deref(), Some("en"));
        prop_assert_eq!(o.task, Task::Transcribe);
    }
    Ok(())
}

/// A refusal is one of the validation codes (ERR10xx), with a message.
fn check_refusal(e: &SttError) -> Result<(), TestCaseError> {
    prop_assert!(e.code.as_str().starts_with("ERR10"), "{:?}", e.code);
    prop_assert!(!e.message.is_empty());
    Ok(())
}

/// Start frames: well-formed ones with hostile values, and broken JSON.
fn start_frame() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        double().prop_map(|d| serde_json::Number::from_f64(d)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        text().prop_map(serde_json::Value::from),
        attributes().prop_map(|a| serde_json::json!(a)),
    ];
    let field = prop::sample::select(vec![
        "session_id",
        "session_token",
        "sample_rate",
        "attributes",
        "vad_mode",
        "vad_silence",
        "vad_threshold",
        "vad_threshold_override",
        "require_token",
        "language_code",
        "task",
        "decode_profile",
        "model_id",
        "auth_token",
        "auth_ts",
        "unknown",
    ]);
    let data = prop::collection::btree_map(field, value, 0..6);
    prop_oneof![
        4 => (data, prop::sample::select(vec!["start", "end", "Start", ""])).prop_map(|(d, t)| {
            serde_json::json!({"type": t, "data": d}).to_string()
        }),
        1 => ".{0,64}",
        1 => Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(fuzz_config(3000))]

    /// Any CreateSession becomes a session's options that keep every
    /// promise, or a validation refusal: never a panic, never a session
    /// with a threshold outside [0, 1] or an id nobody can log.
    #[test]
    fn proto_session_requests_resolve_or_are_refused(
        req in proto_request(),
        multilingual in any::<bool>(),
    ) {
        match SessionRequest::try_from(req) {
            Ok(r) => match SessionOptions::resolve(r, &defaults(multilingual)) {
                Ok(o) => check_options(&o, multilingual)?,
                Err(e) => check_refusal(&e)?,
            },
            Err(e) => check_refusal(&e)?,
        }
    }

    /// Any first WebSocket frame opens a session with the same promises
    /// as gRPC, or is refused with ERR1010 (the socket then closes with
    /// that code).
    #[test]
    fn websocket_start_frames_parse_or_are_refused(
        frame in start_frame(),
        multilingual in any::<bool>(),
    ) {
        match parse_start(&frame) {
            Ok(data) => match data.into_request("ws-fuzz".into()) {
                Ok(r) => match SessionOptions::resolve(r, &defaults(multilingual)) {
                    Ok(o) => check_options(&o, multilingual)?,
                    Err(e) => check_refusal(&e)?,
                },
                Err(e) => check_refusal(&e)?,
            },
            Err(e) => prop_assert_eq!(e.code, ErrorCode::Err1010),
        }
    }
}
