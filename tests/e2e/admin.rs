//! The admin API against a real server: each ERR40xx provoked, and a
//! second model loaded at run time serving a session.

use std::time::Duration;

use serde_json::{json, Value};
use stt::server::settings::AdminSettings;

use crate::harness::{assert_words, models_dir, scratch, tiny_en};
use crate::server::*;
use crate::streaming::{silence, speech};

const TOKEN: &str = "test-admin-token";

fn admin_server(allow_paths: bool, allowlist: Vec<String>) -> TestServer {
    TestServer::start(move |s| {
        s.admin = AdminSettings {
            enabled: true,
            token: Some(TOKEN.into()),
            allow_model_path: allow_paths,
            allowlist,
            ..Default::default()
        };
    })
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", server.http);
    let mut req = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("HTTP answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn assert_code(got: &(u16, Value), code: &str, status: u16) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        got.1
    );
}

/// Polls list_models until `id` has `status`.
async fn wait_for_status(server: &TestServer, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = call(server, "GET", "/admin/list_models", Some(TOKEN), None).await;
        let found = list["models"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id).cloned());
        match &found {
            Some(m) if m["status"] == status => return m.clone(),
            None if status == "gone" => return Value::Null,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "model {id} never became {status}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn err4001_admin_api_disabled_by_default() {
    let server = TestServer::start(|_| {});
    let got = call(&server, "GET", "/admin/list_models", Some(TOKEN), None).await;
    assert_code(&got, "ERR4001", 501);
    let got = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_code(&got, "ERR4001", 501);
}

#[tokio::test]
async fn err4004_missing_or_wrong_admin_token() {
    let server = admin_server(false, vec![]);
    let got = call(&server, "GET", "/admin/list_models", None, None).await;
    assert_code(&got, "ERR4004", 401);
    let got = call(&server, "GET", "/admin/list_models", Some("nope"), None).await;
    assert_code(&got, "ERR4004", 401);
    let got = call(
        &server,
        "POST",
        "/admin/unload_model",
        Some("test-admin-tokem"),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_code(&got, "ERR4004", 401);
    let (status, list) = call(&server, "GET", "/admin/list_models", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["default_model"], "tiny.en");
    assert_eq!(list["models"][0]["status"], "ready");
    assert_eq!(list["models"][0]["default"], true);
}

#[tokio::test]
async fn err4003_unload_default_or_unknown_model() {
    let server = admin_server(false, vec![]);
    let got = call(
        &server,
        "POST",
        "/admin/unload_model",
        Some(TOKEN),
        Some(json!({"model_id": "tiny.en"})),
    )
    .await;
    assert_code(&got, "ERR4003", 400);
    let got = call(
        &server,
        "POST",
        "/admin/unload_model",
        Some(TOKEN),
        Some(json!({"model_id": "no-such-model"})),
    )
    .await;
    assert_code(&got, "ERR4003", 400);
    // Loading a model that is not provisioned names what to do.
    let got = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_id": "large-v9"})),
    )
    .await;
    assert_code(&got, "ERR4003", 400);
    assert!(got.1["message"].to_string().contains("stt models import"));
}

#[tokio::test]
async fn err4005_model_path_outside_the_allowlist() {
    // allowed/ holds a link to a file outside it and a real tiny.en;
    // outside/ a stand-in file.
    let root = scratch().join("admin_allowlist");
    let allowed = root.join("allowed");
    let outside = root.join("outside");
    std::fs::create_dir_all(&allowed).expect("dir");
    std::fs::create_dir_all(&outside).expect("dir");
    let escape = outside.join("ggml-escape.bin");
    if !escape.exists() {
        std::fs::write(&escape, b"not really a model").expect("file");
    }
    let link = allowed.join("ggml-link.bin");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&escape, &link).expect("symlink");
    // A real file, not a symlink: links are resolved before the allowlist
    // check, so a link to the provisioned file would resolve outside.
    let inside = allowed.join("ggml-inside.bin");
    let _ = std::fs::remove_file(&inside);
    std::fs::hard_link(tiny_en(), &inside)
        .or_else(|_| std::fs::copy(tiny_en(), &inside).map(drop))
        .expect("tiny.en inside allowed/");

    // Paths not allowed at all.
    let server = admin_server(false, vec![]);
    let got = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_path": tiny_en()})),
    )
    .await;
    assert_code(&got, "ERR4005", 403);
    drop(server);

    let server = admin_server(true, vec![allowed.display().to_string()]);
    for path in [
        escape.display().to_string(),
        format!("{}/../outside/ggml-escape.bin", allowed.display()),
        link.display().to_string(),
        tiny_en().display().to_string(),
    ] {
        let got = call(
            &server,
            "POST",
            "/admin/load_model",
            Some(TOKEN),
            Some(json!({"model_id": "x", "model_path": path})),
        )
        .await;
        assert_code(&got, "ERR4005", 403);
    }
    // Nothing was loaded by any of them.
    let (_, list) = call(&server, "GET", "/admin/list_models", Some(TOKEN), None).await;
    assert_eq!(list["models"].as_array().map(Vec::len), Some(1), "{list}");
    // The allowlist is not a wall: a file under it loads.
    let (status, body) = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_id": "inside", "model_path": inside.display().to_string()})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "loading", "{body}");
    wait_for_status(&server, "inside", "ready").await;
}

#[tokio::test]
async fn err4002_load_twice_and_a_session_on_the_second_model() {
    let server = admin_server(false, vec![]);
    assert!(models_dir().join("ggml-base.bin").is_file());
    let (status, body) = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "loading");
    // Again while loading, and again once loaded.
    let got = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_code(&got, "ERR4002", 409);
    let base = wait_for_status(&server, "base", "ready").await;
    assert_eq!(base["multilingual"], true, "{base}");
    let got = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_code(&got, "ERR4002", 409);

    // A session on base: it may ask for German, which tiny.en refuses.
    let mut req = session_request("on-base");
    req.attributes.insert("model_id".into(), "base".into());
    let resp = create_ok(&server, req).await;
    assert_eq!(
        resp.attributes.get("model_id").map(String::as_str),
        Some("base")
    );
    let mut de = session_request("de-on-tiny");
    de.language_code = "de".into();
    let refused = create_err(&server, de.clone()).await;
    assert!(refused.message().starts_with("ERR1010"), "{refused:?}");
    de.session_id = "de-on-base".into();
    de.attributes.insert("model_id".into(), "base".into());
    create_ok(&server, de).await;

    // Unloading while a session holds it: the session still transcribes.
    let (status, body) = call(
        &server,
        "POST",
        "/admin/unload_model",
        Some(TOKEN),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "unloading", "{body}");
    let mut late = session_request("late");
    late.attributes.insert("model_id".into(), "base".into());
    let refused = create_err(&server, late).await;
    assert!(refused.message().starts_with("ERR1010"), "{refused:?}");

    let text = "I would like to order a large pizza with mushrooms.";
    let mut audio = speech("admin_base", text);
    audio.extend(silence(1.0));
    let mut client = server.client().await;
    let out = stream_raw(
        &mut client,
        "on-base",
        "",
        audio_chunks(&audio, 200, "on-base", ""),
        Duration::ZERO,
    )
    .await;
    assert!(
        out.status
            .as_ref()
            .is_none_or(|s| s.code() == tonic::Code::Ok),
        "{out:?}"
    );
    assert_words(text, &out.final_text(), 0.7);
    // The German session never streams; the reaper or our drop frees it.
    server.registry.reap(Duration::ZERO);
    wait_for_status(&server, "base", "gone").await;
}

#[tokio::test]
async fn err1010_session_on_a_model_that_is_not_loaded() {
    let server = TestServer::start(|_| {});
    let mut req = session_request("nope");
    req.attributes.insert("model_id".into(), "base".into());
    let status = create_err(&server, req).await;
    assert!(status.message().starts_with("ERR1010"), "{status:?}");
    assert!(status.message().contains("/admin/load_model"), "{status:?}");
}

#[tokio::test]
async fn err4006_and_err4007_malformed_requests_and_unknown_paths() {
    let server = admin_server(false, vec![]);
    let got = call(
        &server,
        "POST",
        "/admin/load_model",
        Some(TOKEN),
        Some(json!({"model": "base"})),
    )
    .await;
    assert_code(&got, "ERR4006", 400);
    let got = call(&server, "GET", "/nowhere", None, None).await;
    assert_code(&got, "ERR4007", 404);
}

#[tokio::test]
async fn the_originals_query_form_unloads_drains_and_reports_status() {
    let server = admin_server(false, vec![]);
    // The original's admin clients send query parameters, no body.
    let got = call(
        &server,
        "POST",
        "/admin/unload_model?model_id=tiny.en",
        Some(TOKEN),
        None,
    )
    .await;
    assert_code(&got, "ERR4003", 400);
    let got = call(&server, "POST", "/admin/unload_model", Some(TOKEN), None).await;
    assert_code(&got, "ERR4006", 400);
    let got = call(
        &server,
        "GET",
        "/admin/load_model_status?model_id=base",
        Some(TOKEN),
        None,
    )
    .await;
    assert_code(&got, "ERR4003", 400);

    let (status, _) = call(
        &server,
        "POST",
        "/admin/load_model?x=1",
        Some(TOKEN),
        Some(json!({"model_id": "base"})),
    )
    .await;
    assert_eq!(status, 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(
            &server,
            "GET",
            "/admin/load_model_status?model_id=base",
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "ready" {
            assert_eq!(body["default"], false);
            break;
        }
        assert_eq!(body["status"], "loading", "{body}");
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A session holds base: the drain waits its timeout, then says so.
    let mut req = session_request("holds-base");
    req.attributes.insert("model_id".into(), "base".into());
    create_ok(&server, req).await;
    let started = std::time::Instant::now();
    let (status, body) = call(
        &server,
        "POST",
        "/admin/unload_model?model_id=base&drain_timeout_sec=1",
        Some(TOKEN),
        None,
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["drained"].as_bool()),
        (Some("unloading"), Some(false)),
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    let (_, body) = call(
        &server,
        "GET",
        "/admin/load_model_status?model_id=base",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(body["status"], "unloading", "{body}");
    // Once the session is gone the model goes too.
    server.registry.reap(Duration::ZERO);
    wait_for_status(&server, "base", "gone").await;
    // The guard runs before any handler: no token, no status.
    let got = call(
        &server,
        "GET",
        "/admin/load_model_status?model_id=base",
        None,
        None,
    )
    .await;
    assert_code(&got, "ERR4004", 401);
}

#[tokio::test]
async fn an_observability_token_guards_metrics_and_detailed_health() {
    const OBS: &str = "obs-token";
    for minimal in [false, true] {
        let server = TestServer::start(move |s| {
            s.admin = AdminSettings {
                observability_token: Some(OBS.into()),
                public_health_minimal: minimal,
                ..Default::default()
            };
        });
        for path in ["/metrics", "/metrics.json", "/system"] {
            let client = reqwest::Client::new();
            let url = format!("http://{}{path}", server.http);
            let denied = client.get(&url).send().await.unwrap();
            assert_eq!(denied.status().as_u16(), 401, "{path}");
            let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
            assert_eq!(wrong.status().as_u16(), 401, "{path}");
            let ok = client.get(&url).bearer_auth(OBS).send().await.unwrap();
            assert_eq!(ok.status().as_u16(), 200, "{path}");
        }
        let (status, body) = call(&server, "GET", "/health", None, None).await;
        if minimal {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body, json!({"status": "ok"}), "bare status only");
        } else {
            assert_code(&(status, body), "ERR4004", 401);
        }
        let (status, body) = call(&server, "GET", "/health", Some(OBS), None).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["model_path"].is_string(),
            "details with the token: {body}"
        );
    }
}
