//! API keys end to end: `stt keys` writes the file, a real server checks
//! every transport's key against it, per-key limits trip with their codes,
//! revocation takes effect on the running server, and no metric or log
//! shows a secret.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use stt::pb;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::server::*;

/// `stt keys add`: the secret it prints once.
fn add_key(file: &Path, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "--file", file.to_str().unwrap(), "add", "--id", id];
    args.extend(extra);
    let out = run_stt(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        secret.starts_with("stt_") && secret.len() == 68,
        "{secret:?}"
    );
    secret
}

fn with_key(id: &str, key: &str) -> pb::SessionRequest {
    let mut req = session_request(id);
    req.attributes.insert("api_key".into(), key.into());
    req
}

fn keyed_server(file: &Path) -> TestServer {
    let file = file.to_path_buf();
    TestServer::start(move |s| s.server.auth.keys_file = Some(file))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_keys_open_sessions_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let secret = add_key(&file, "team-a", &["--name", "Team A"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(&secret) && text.contains("sha256:"),
        "{text}"
    );
    let listed = run_stt(&["keys", "--file", file.to_str().unwrap(), "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("team-a") && listed.contains("active") && !listed.contains(&secret));

    let server = keyed_server(&file);
    // gRPC: the attribute, then `authorization: Bearer` metadata.
    let created = create_ok(&server, with_key("ok-attr", &secret)).await;
    assert!(
        !created.attributes.contains_key("api_key"),
        "the secret is not echoed"
    );
    let mut request = tonic::Request::new(session_request("ok-bearer"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    server
        .client()
        .await
        .create_session(request)
        .await
        .expect("Bearer metadata");
    for (id, key, code) in [("unknown", "stt_nope", "ERR1012"), ("empty", "", "ERR1009")] {
        let e = create_err(&server, with_key(id, key)).await;
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        assert!(e.message().starts_with(code), "{e:?}");
    }

    // WebSocket: the start frame's attribute, or the upgrade's header.
    let url = format!("ws://{}/ws/stream", server.web.unwrap());
    let start = |key: Option<&str>| {
        let mut data = serde_json::json!({});
        if let Some(k) = key {
            data["attributes"] = serde_json::json!({"api_key": k});
        }
        serde_json::json!({"type": "start", "data": data}).to_string()
    };
    async fn first_frame(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> serde_json::Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .expect("frame in time")
            {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Text(start(Some(&secret)).into()))
        .await
        .unwrap();
    assert_eq!(first_frame(&mut ws).await["type"], "session");
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Text(start(None).into())).await.unwrap();
    assert_eq!(first_frame(&mut ws).await["type"], "session");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Text(start(Some("stt_wrong")).into()))
        .await
        .unwrap();
    let f = first_frame(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str()),
        (Some("error"), Some("ERR1012")),
        "{f}"
    );

    // REST: Bearer.
    let wav = std::fs::read(asset("audio/hello.wav")).unwrap();
    let post = |key: &str| {
        let form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(wav.clone()).file_name("hello.wav"),
        );
        reqwest::blocking::Client::new()
            .post(format!("{}/v1/audio/transcriptions", server.web_url()))
            .bearer_auth(key)
            .multipart(form)
            .timeout(Duration::from_secs(120))
            .send()
            .expect("POST")
    };
    let (ok, bad) = tokio::task::block_in_place(|| (post(&secret), post("stt_wrong")));
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(bad.status().as_u16(), 401);

    // Metrics name the key id, never the secret.
    let prom = reqwest::get(format!("http://{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!prom.contains(&secret));
    let json = reqwest::get(format!("http://{}/metrics.json", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!json.contains(&secret));
}

#[tokio::test]
async fn per_key_limits_and_revocation_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let one = add_key(&file, "one-session", &["--max-sessions", "1"]);
    let base_only = add_key(&file, "base-only", &["--models", "base"]);
    let server = TestServer::start({
        let file = file.clone();
        move |s| {
            s.server.auth.keys_file = Some(file);
            s.server.metrics.expose_api_key_sessions = true;
        }
    });
    create_ok(&server, with_key("first", &one)).await;
    let e = create_err(&server, with_key("second", &one)).await;
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().starts_with("ERR1008") && e.message().contains("one-session"),
        "{e:?}"
    );
    let e = create_err(&server, with_key("wrong-model", &base_only)).await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().starts_with("ERR1013") && e.message().contains("base"),
        "{e:?}"
    );
    // The per-key gauge names the id.
    let json: serde_json::Value = reqwest::get(format!("http://{}/metrics.json", server.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        json["active_sessions_by_api_key"]["one-session"], 1,
        "{json}"
    );

    // Revoked on disk: the running server refuses it within seconds.
    let out = run_stt(&[
        "keys",
        "--file",
        file.to_str().unwrap(),
        "revoke",
        "--id",
        "base-only",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = create_err(&server, with_key("after-revoke", &base_only)).await;
        if e.message().starts_with("ERR1012") {
            assert!(e.message().contains("revoked"), "{e:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {e:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_server_wide_per_key_cap_applies_to_keys_without_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.yaml");
    let plain = add_key(&file, "plain", &[]);
    let roomy = add_key(&file, "roomy", &["--max-sessions", "2"]);
    let server = TestServer::start({
        let file = file.clone();
        move |s| {
            s.server.auth.keys_file = Some(file);
            s.server.server.max_sessions_per_api_key = 1;
        }
    });
    create_ok(&server, with_key("plain-1", &plain)).await;
    let e = create_err(&server, with_key("plain-2", &plain)).await;
    assert!(
        e.message().starts_with("ERR1008") && e.message().contains("plain"),
        "{e:?}"
    );
    // A key's own max_sessions wins over the server-wide cap.
    create_ok(&server, with_key("roomy-1", &roomy)).await;
    create_ok(&server, with_key("roomy-2", &roomy)).await;
    let e = create_err(&server, with_key("roomy-3", &roomy)).await;
    assert!(e.message().starts_with("ERR1008"), "{e:?}");
}

#[tokio::test]
async fn new_sessions_are_rate_limited_and_capped_per_ip() {
    let server = TestServer::start(|s| {
        s.server.server.create_session_rps = 0.2;
        s.server.server.create_session_burst = 2;
    });
    create_ok(&server, session_request("burst-1")).await;
    create_ok(&server, session_request("burst-2")).await;
    let e = create_err(&server, session_request("burst-3")).await;
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().starts_with("ERR1014") && e.message().contains("retry in"),
        "{e:?}"
    );
    // A presented key has a bucket of its own.
    create_ok(&server, with_key("with-a-key", "some-key")).await;
    drop(server);

    let server = TestServer::start(|s| s.server.server.max_sessions_per_ip = 1);
    create_ok(&server, session_request("ip-1")).await;
    let e = create_err(&server, session_request("ip-2")).await;
    assert!(
        e.message().starts_with("ERR1008") && e.message().contains("max_sessions_per_ip"),
        "{e:?}"
    );
    // The same address over the WebSocket is the same client.
    let url = format!("ws://{}/ws/stream", server.web.unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Text(r#"{"type":"start"}"#.into()))
        .await
        .unwrap();
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => {
                break serde_json::from_str::<serde_json::Value>(&t).unwrap()
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(frame["code"], "ERR1008", "{frame}");
}
