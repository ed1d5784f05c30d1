//! Signed session tokens end to end (`create_session_auth_profile:
//! signed_token`): the real `stt file --signed-token-secret` client gets
//! through; missing, wrong, expired, future and replayed tokens are refused
//! with their codes; the legacy header and millisecond timestamps pass; the
//! WebSocket and REST transports check the same tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use stt::auth::signed::sign;
use stt::config::server::AuthProfile;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::server::*;
use crate::ws::HELLO;

const SECRET: &str = "shared-hmac-secret";

fn signed_server() -> TestServer {
    TestServer::start(|s| {
        s.server.auth.create_session_auth_profile = AuthProfile::SignedToken;
        s.server.auth.create_session_auth_secret = Some(SECRET.into());
        s.server.auth.create_session_auth_ttl_sec = 60;
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// CreateSession with `authorization` (and `x-stt-auth-ts` when given).
async fn create_signed(
    server: &TestServer,
    id: &str,
    bearer: &str,
    ts: Option<String>,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(session_request(id));
    let md = request.metadata_mut();
    md.insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    if let Some(ts) = ts {
        md.insert("x-stt-auth-ts", ts.parse().unwrap());
    }
    server
        .client()
        .await
        .create_session(request)
        .await
        .map(|_| ())
}

fn refused(r: Result<(), tonic::Status>, code: &str, says: &str) {
    let e = r.expect_err("should be refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().starts_with(code) && e.message().contains(says),
        "{e:?}"
    );
}

#[test]
fn stt_file_signs_its_session_and_gets_the_words() {
    let server = signed_server();
    let addr = server.addr.to_string();
    let hello = asset("audio/hello.wav");
    let out = run_stt(&[
        "file",
        "--server",
        &addr,
        "--no-realtime",
        "--signed-token-secret",
        SECRET,
        hello.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(HELLO, &stdout, 0.8);
    // Without the secret: refused, and the client says what to do.
    let out = run_stt(&[
        "file",
        "--server",
        &addr,
        "--no-realtime",
        hello.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERR1009"));
}

#[tokio::test]
async fn bad_signed_tokens_are_refused_and_good_forms_pass() {
    let server = signed_server();
    let t = now();
    // Missing.
    let e = server
        .client()
        .await
        .create_session(session_request("none"))
        .await
        .map(|_| ());
    refused(e, "ERR1009", "signed session token is required");
    // Wrong secret, expired, from the future.
    refused(
        create_signed(
            &server,
            "wrong",
            &sign("other", "wrong", t),
            Some(t.to_string()),
        )
        .await,
        "ERR1012",
        "does not match",
    );
    let old = t - 600;
    refused(
        create_signed(
            &server,
            "old",
            &sign(SECRET, "old", old),
            Some(old.to_string()),
        )
        .await,
        "ERR1012",
        "expired",
    );
    let ahead = t + 600;
    refused(
        create_signed(
            &server,
            "ahead",
            &sign(SECRET, "ahead", ahead),
            Some(ahead.to_string()),
        )
        .await,
        "ERR1012",
        "ahead",
    );
    // Valid once; the same token again is a replay.
    create_signed(
        &server,
        "once",
        &sign(SECRET, "once", t),
        Some(t.to_string()),
    )
    .await
    .expect("valid token");
    refused(
        create_signed(
            &server,
            "once",
            &sign(SECRET, "once", t),
            Some(t.to_string()),
        )
        .await,
        "ERR1012",
        "already used",
    );
    // The legacy single header, and a millisecond timestamp.
    create_signed(
        &server,
        "legacy",
        &format!("{t}:{}", sign(SECRET, "legacy", t)),
        None,
    )
    .await
    .expect("legacy form");
    let ms = t * 1000 + 123;
    create_signed(
        &server,
        "millis",
        &sign(SECRET, "millis", ms),
        Some(ms.to_string()),
    )
    .await
    .expect("ms timestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_rest_check_the_same_tokens() {
    let server = signed_server();
    let t = now();
    // WebSocket: the start frame carries the signature and timestamp.
    let url = format!("ws://{}/ws/stream", server.web.unwrap());
    for (id, secret, want) in [("ws-good", SECRET, "session"), ("ws-bad", "nope", "error")] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let start = serde_json::json!({"type": "start", "data": {
            "session_id": id, "auth_token": sign(secret, id, t), "auth_ts": t.to_string()}});
        ws.send(Message::Text(start.to_string().into()))
            .await
            .unwrap();
        let frame = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
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
        assert_eq!(frame["type"], want, "{frame}");
    }
    // REST: the session id it signs comes as x-stt-session-id.
    let wav = std::fs::read(asset("audio/hello.wav")).unwrap();
    let post = |id: &str, secret: &str| {
        let form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(wav.clone()).file_name("hello.wav"),
        );
        reqwest::blocking::Client::new()
            .post(format!("{}/v1/audio/transcriptions", server.web_url()))
            .bearer_auth(sign(secret, id, t))
            .header("x-stt-auth-ts", t.to_string())
            .header("x-stt-session-id", id)
            .multipart(form)
            .timeout(std::time::Duration::from_secs(120))
            .send()
            .expect("POST")
            .status()
            .as_u16()
    };
    let (good, bad) =
        tokio::task::block_in_place(|| (post("rest-good", SECRET), post("rest-bad", "nope")));
    assert_eq!((good, bad), (200, 401));
}
