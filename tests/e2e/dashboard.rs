//! `stt dashboard --once`, the built binary, against a real server and
//! against a port where nothing listens.

use std::net::TcpListener;

use crate::harness::run_stt;
use crate::server::{create_ok, session_request, TestServer};

fn dashboard_once(metrics_url: &str, system_url: &str) -> std::process::Output {
    run_stt(&[
        "dashboard",
        "--once",
        "--metrics-url",
        metrics_url,
        "--system-url",
        system_url,
    ])
}

#[tokio::test]
async fn dashboard_once_prints_the_active_session_count() {
    let server = TestServer::start(|_| {});
    // A created session counts as active until it streams or times out.
    create_ok(&server, session_request("dash-1")).await;
    let http = server.http;
    let out = tokio::task::spawn_blocking(move || {
        dashboard_once(
            &format!("http://{http}/metrics.json"),
            &format!("http://{http}/system"),
        )
    })
    .await
    .expect("dashboard ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l == "active sessions   1"),
        "{stdout}"
    );
    assert!(stdout.contains("model             "), "{stdout}");
    assert!(stdout.contains("process           cpu "), "{stdout}");
    assert!(stdout.contains("host              "), "{stdout}");
    assert!(!stdout.contains("unreachable"), "{stdout}");
}

#[test]
fn dashboard_once_against_a_dead_port_fails_clearly() {
    // Bind then drop: a loopback port that nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = dashboard_once(
        &format!("http://127.0.0.1:{port}/metrics.json"),
        &format!("http://127.0.0.1:{port}/system"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&format!(
            "error: server unreachable: GET http://127.0.0.1:{port}/metrics.json: "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: start the server with `stt serve`"),
        "{stderr}"
    );
}

#[test]
fn dashboard_rejects_a_bad_interval_as_usage() {
    let out = run_stt(&["dashboard", "--once", "--interval", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));
}
