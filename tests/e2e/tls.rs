//! TLS on every listener, with certificates made at test time (rcgen): the
//! real clients (`stt file --tls-ca-file`, the dashboard, the library's
//! gRPC client) reach a TLS server and get the words; plaintext clients are
//! refused; mutual TLS refuses clients without a trusted certificate; a new
//! certificate (SIGHUP, or new files on disk) is served to new connections
//! while an open stream carries on; `tls.required` without a certificate
//! does not start.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use stt::client::tls::ClientTls;
use stt::client::{SessionSettings, StreamOptions};

use crate::harness::*;
use crate::server::*;
use crate::ws::HELLO;

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

pub fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let issuer =
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, issuer.pem()).expect("write CA");
    Ca { issuer, pem }
}

/// A certificate for localhost and 127.0.0.1 signed by `ca`, written as
/// `<name>.crt` and `<name>.key` under `dir`.
pub fn leaf(dir: &Path, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    let (crt, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (crt, k)
}

pub fn tls_server(
    cert: &Path,
    key: &Path,
    tweak: impl FnOnce(&mut stt::server::Settings),
) -> TestServer {
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    TestServer::start(move |s| {
        s.server.tls.cert_file = Some(cert);
        s.server.tls.key_file = Some(key);
        tweak(s);
    })
}

fn trusting(ca: &Path) -> ClientTls {
    ClientTls {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTls::default()
    }
}

fn session(server: &TestServer, tls: Option<ClientTls>) -> SessionSettings {
    let mut s =
        SessionSettings::new(&format!("localhost:{}", server.addr.port()), "tls").expect("address");
    s.server = s.server.with_tls(tls);
    s
}

/// CreateSession over a fresh connection: whether the handshake and the
/// call went through.
async fn create(server: &TestServer, tls: Option<ClientTls>) -> Result<(), String> {
    let s = session(server, tls);
    let mut client = stt::client::connect(&s.server)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        stt::client::create_session(&mut client, &s),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn https(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("CA");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn tls_server_gives_stt_file_the_words_and_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path(), "ca");
    let (crt, key) = leaf(dir.path(), &ca, "server");
    let server = tls_server(&crt, &key, |_| {});

    // The real command line, as a user runs it against a private CA.
    let server_arg = format!("https://localhost:{}", server.addr.port());
    let hello = asset("audio/hello.wav");
    let ca_arg = ca.pem.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_stt(&[
            "file",
            "--server",
            &server_arg,
            "--tls-ca-file",
            &ca_arg,
            "--no-realtime",
            hello.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_words(HELLO, &stdout, 0.8);

    // The operations plane: health and the expiry gauge over HTTPS.
    let client = https(&ca.pem);
    let ops = format!("https://localhost:{}", server.http.port());
    let health = client
        .get(format!("{ops}/health"))
        .send()
        .await
        .expect("GET /health");
    assert!(health.status().is_success(), "{health:?}");
    let text = client
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    let expiry = text
        .lines()
        .find_map(|l| l.strip_prefix("stt_tls_cert_expiry_seconds "))
        .unwrap_or_else(|| panic!("no expiry gauge in\n{text}"));
    let left: i64 = expiry.trim().parse().expect("a number");
    // rcgen's certificates run to 4096.
    assert!(left > 365 * 24 * 3600, "{left}");

    // The data plane: the page and the OpenAI API over HTTPS.
    let web = format!("https://localhost:{}", server.web.unwrap().port());
    let page = client
        .get(&web)
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .unwrap();
    assert!(page.contains("live captions"), "{page}");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(std::fs::read(asset("audio/hello.wav")).unwrap())
            .file_name("hello.wav"),
    );
    let got = client
        .post(format!("{web}/v1/audio/transcriptions"))
        .multipart(form)
        .send()
        .await
        .expect("POST transcriptions");
    assert!(got.status().is_success(), "{got:?}");
    let body: serde_json::Value = got.json().await.unwrap();
    assert_words(HELLO, body["text"].as_str().unwrap_or_default(), 0.8);

    // The dashboard polls over HTTPS with the same CA flag.
    let (m, s, ca_arg) = (
        format!("{ops}/metrics.json"),
        format!("{ops}/system"),
        ca.pem.to_str().unwrap().to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        run_stt(&[
            "dashboard",
            "--once",
            "--metrics-url",
            &m,
            "--system-url",
            &s,
            "--tls-ca-file",
            &ca_arg,
        ])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn plaintext_and_untrusting_clients_are_refused_by_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path(), "ca");
    let (crt, key) = leaf(dir.path(), &ca, "server");
    let server = tls_server(&crt, &key, |_| {});

    let plain = create(&server, None).await;
    assert!(plain.is_err(), "plaintext gRPC got through: {plain:?}");
    let http = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", server.http.port()))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(http.is_err(), "plaintext HTTP got through: {http:?}");
    // TLS with the public roots does not trust a private CA.
    let untrusting = create(&server, Some(ClientTls::default())).await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    assert!(
        eventually(Duration::from_secs(5), || {
            server
                .metrics
                .tls_handshake_failures
                .load(Ordering::Relaxed)
                >= 2
        })
        .await,
        "handshake failures are counted"
    );
    create(&server, Some(trusting(&ca.pem)))
        .await
        .expect("a client trusting the CA gets a session");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let clients = ca(dir.path(), "clients");
    let strangers = ca(dir.path(), "strangers");
    let ca = ca(dir.path(), "ca");
    let (crt, key) = leaf(dir.path(), &ca, "server");
    let clients_pem = clients.pem.clone();
    let server = tls_server(&crt, &key, move |s| {
        s.server.tls.client_ca_file = Some(clients_pem);
    });

    let none = create(&server, Some(trusting(&ca.pem))).await;
    assert!(none.is_err(), "no client certificate got through: {none:?}");
    let stranger = leaf(dir.path(), &strangers, "stranger");
    let wrong = create(
        &server,
        Some(ClientTls {
            identity: Some(stranger),
            ..trusting(&ca.pem)
        }),
    )
    .await;
    assert!(
        wrong.is_err(),
        "an untrusted certificate got through: {wrong:?}"
    );
    let member = leaf(dir.path(), &clients, "member");
    create(
        &server,
        Some(ClientTls {
            identity: Some(member),
            ..trusting(&ca.pem)
        }),
    )
    .await
    .expect("a client with a certificate from the client CA gets a session");
}

/// Replaces the server's files with a certificate from `ca`.
fn rotate(crt: &Path, key: &Path, ca: &Ca) {
    let dir = crt.parent().unwrap();
    let (new_crt, new_key) = leaf(dir, ca, "rotated");
    // Renames, as certificate managers do, so no reader sees half a file.
    std::fs::rename(new_key, key).unwrap();
    std::fs::rename(new_crt, crt).unwrap();
}

/// Streams hello.wav followed by silence at real time over TLS, rotates the
/// certificate with `rotate` while the stream is open, and checks both that
/// new connections get the new certificate and that the open stream ends
/// with its words.
async fn rotation_keeps_streams(reload_interval_sec: f64, signal: bool) {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = ca(dir.path(), "old");
    let new_ca = ca(dir.path(), "new");
    let (crt, key) = leaf(dir.path(), &old_ca, "server");
    let server = tls_server(&crt, &key, move |s| {
        s.server.tls.reload_interval_sec = reload_interval_sec;
    });

    let mut audio = stt::audio::decode::read_audio(&asset("audio/hello.wav"))
        .unwrap()
        .samples;
    audio.extend(std::iter::repeat_n(0.0, 16_000 * 4));
    let opts = StreamOptions::new(session(&server, Some(trusting(&old_ca.pem))), audio);
    let stream = tokio::spawn(stt::client::stream_audio(opts));
    assert!(
        eventually(Duration::from_secs(20), || server.registry.active() >= 1).await,
        "the stream started"
    );

    rotate(&crt, &key, &new_ca);
    if signal {
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if create(&server, Some(trusting(&new_ca.pem))).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.metrics.tls_reloads.load(Ordering::Relaxed) >= 1);
    let old = create(&server, Some(trusting(&old_ca.pem))).await;
    assert!(
        old.is_err(),
        "new connections still get the old certificate"
    );
    assert!(
        !stream.is_finished(),
        "the stream should still be open after the rotation (the test's timing is off)"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("the stream ends")
        .unwrap()
        .expect("the open stream is not dropped by the rotation");
    assert_words(HELLO, &outcome.transcript(), 0.8);
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_without_dropping_open_streams() {
    // An hour between checks: only the signal can have reloaded it.
    rotation_keeps_streams(3600.0, true).await;
}

#[tokio::test]
async fn new_certificate_files_are_picked_up_without_a_signal() {
    rotation_keeps_streams(0.2, false).await;
}

#[test]
fn tls_required_without_a_certificate_does_not_start() {
    let out = run_stt(&[
        "serve",
        "--tls-required",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--ws-port",
        "0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls.required"), "{stderr}");
}

#[test]
fn a_certificate_without_its_key_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path(), "ca");
    let (crt, _) = leaf(dir.path(), &ca, "server");
    let out = run_stt(&[
        "serve",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--ws-port",
        "0",
        "--tls-cert-file",
        crt.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key-file"), "{stderr}");
}
