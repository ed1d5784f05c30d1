//! `stt bench`, the built binary against a real server: every measured
//! session is logged once in each format, warm-ups are not, the JSON summary
//! agrees, and failures (a refused session, a dead port) exit non-zero.

use std::path::Path;
use std::process::Output;

use crate::harness::*;
use crate::server::TestServer;

/// 2 channels × 2 iterations after 1 warm-up each, as fast as possible on
/// the short clip: 6 sessions run, 4 logged.
fn bench(server: &TestServer, extra: &[&str]) -> Output {
    let addr = server.addr.to_string();
    let mut args = vec![
        "bench",
        "--server",
        &addr,
        "--channels",
        "2",
        "--iterations",
        "2",
        "--warmup-iterations",
        "1",
        "--audio",
        "assets/audio/hello.wav",
    ];
    args.extend_from_slice(extra);
    run_stt(&args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each (channel, iteration) pair exactly once.
fn assert_slots(mut slots: Vec<(String, String)>) {
    slots.sort();
    let want: Vec<(String, String)> = [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
        .iter()
        .map(|(c, i)| (c.to_string(), i.to_string()))
        .collect();
    assert_eq!(slots, want);
}

#[test]
fn bench_logs_each_measured_session_once_in_every_format() {
    let server = TestServer::start(|_| {});
    let dir = scratch().join("bench-logs");

    // jsonl on stdout, csv (from the extension) to a file, JSON summary.
    let csv_path = dir.join("sessions.csv");
    let summary_path = dir.join("summary.json");
    let out = bench(
        &server,
        &[
            "--log-sessions",
            "--session-log-path",
            csv_path.to_str().expect("utf-8 path"),
            "--json-summary",
            summary_path.to_str().expect("utf-8 path"),
        ],
    );
    assert_ok(&out);
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for l in &lines {
        assert!(l["error_code"].is_null(), "{l}");
        assert_words(
            "Hello world. This is a test of the speech to text system.",
            l["final_text"].as_str().unwrap_or_default(),
            0.6,
        );
        assert!(l["decode_total_seconds"].as_f64().is_some(), "{l}");
        assert!(l["final_latency_seconds"].as_f64().is_some(), "{l}");
    }
    assert_slots(
        lines
            .iter()
            .map(|l| (l["channel"].to_string(), l["iteration"].to_string()))
            .collect(),
    );
    // The table went to stderr, keeping stdout parseable.
    let stderr = text(&out.stderr);
    assert!(stderr.contains("4 ok, 0 failed"), "{stderr}");
    assert!(stderr.contains("decode total"), "{stderr}");

    let csv_text = read(&csv_path);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header = reader.headers().expect("csv header").clone();
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("csv row")).collect();
    assert_eq!(rows.len(), 4, "{csv_text}");
    assert_slots(
        rows.iter()
            .map(|r| {
                (
                    r[col("channel")].to_string(),
                    r[col("iteration")].to_string(),
                )
            })
            .collect(),
    );
    assert!(rows.iter().all(|r| r[col("error_code")].is_empty()));

    let summary: serde_json::Value = serde_json::from_str(&read(&summary_path)).expect("json");
    assert_eq!(summary["sessions"], 4, "{summary}");
    assert_eq!(summary["sessions_ok"], 4, "{summary}");
    assert_eq!(summary["sessions_failed"], 0, "{summary}");
    assert_eq!(summary["warmup_sessions"], 2, "{summary}");
    assert_eq!(summary["timings"]["decode_total_seconds"]["count"], 4);
    assert!(summary["audio_seconds_per_wall_second"].as_f64() > Some(0.0));

    // tsv to a file, channels ramped in two steps; the table on stdout.
    let tsv_path = dir.join("sessions.tsv");
    let out = bench(
        &server,
        &[
            "--session-log-path",
            tsv_path.to_str().expect("utf-8 path"),
            "--ramp-steps",
            "2",
            "--ramp-interval-sec",
            "0.2",
        ],
    );
    assert_ok(&out);
    assert!(text(&out.stdout).contains("4 ok, 0 failed"));
    let tsv = read(&tsv_path);
    let tsv_lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(tsv_lines.len(), 5, "{tsv}");
    assert!(tsv_lines[0].starts_with("session_id\tchannel\titeration\t"));
    let width = tsv_lines[0].split('\t').count();
    assert!(tsv_lines.iter().all(|l| l.split('\t').count() == width));

    // markdown on stdout.
    let out = bench(
        &server,
        &["--log-sessions", "--session-log-format", "markdown"],
    );
    assert_ok(&out);
    let md = text(&out.stdout);
    assert!(md.starts_with("# stt bench session log"), "{md}");
    assert!(
        md.contains("- started: ") && md.contains("- finished: "),
        "{md}"
    );
    assert!(md.contains("- `decode_inference_seconds`: "), "{md}");
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 2 + 4, "{md}");
    assert!(table[0].starts_with("| session_id | channel | iteration |"));
}

#[test]
fn bench_exits_non_zero_when_sessions_fail() {
    // tiny.en cannot do German: every session is refused with ERR1010.
    let server = TestServer::start(|_| {});
    let summary_path = scratch().join("bench-fail").join("summary.json");
    let out = run_stt(&[
        "bench",
        "--server",
        &server.addr.to_string(),
        "--channels",
        "2",
        "--iterations",
        "2",
        "--language",
        "de",
        "--json-summary",
        summary_path.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("4 of 4 sessions failed (ERR1010 ×4)"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&read(&summary_path)).expect("json");
    assert_eq!(summary["sessions_failed"], 4, "{summary}");
    assert_eq!(summary["errors_by_code"]["ERR1010"], 4, "{summary}");
}

#[test]
fn bench_against_a_dead_port_fails_clearly() {
    let out = run_stt(&["bench", "--server", "127.0.0.1:1", "--channels", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot connect to 127.0.0.1:1"), "{stderr}");
    assert!(
        stderr.contains("hint: start one with `stt serve`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Once, not once per channel.
    assert_eq!(stderr.matches("cannot connect").count(), 1, "{stderr}");
}

/// `--duration`: the soak's rows carry the server's own figures, its
/// sessions reconnect, and an error fails it. The drift limit is wide here
/// (a few seconds of soak are mostly warm-up); `soak::judge`'s unit tests
/// hold the limits themselves.
#[test]
fn soak_reports_server_figures_every_interval_and_fails_on_errors() {
    let server = TestServer::start(|_| {});
    let dir = scratch().join("soak");
    let soak = |extra: &[&str], name: &str| {
        let path = dir.join(name);
        let mut args = vec![
            "bench",
            "--server",
            &server.url(),
            "--system-url",
            &format!("http://{}/system", server.http),
            "--metrics-url",
            &format!("http://{}/metrics.json", server.http),
            "--channels",
            "2",
            "--audio",
            "assets/audio/hello.wav",
            "--duration",
            "9",
            "--report-every-sec",
            "2",
            "--soak-warmup-sec",
            "2",
            "--max-rss-drift-percent",
            "50",
            "--json-summary",
            path.to_str().expect("utf-8 path"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_stt(&argv);
        let report: serde_json::Value =
            serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        (out, report)
    };

    let (out, report) = soak(&[], "ok.json");
    assert_ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("PASS"), "{stdout}");
    let samples = report["samples"].as_array().expect("samples");
    // A row at 0 s, then every 2 s to 9 s, and one for sessions that ended
    // after it.
    assert!(samples.len() >= 5, "{report}");
    for s in samples {
        for key in ["rss_bytes", "open_fds", "threads", "server_sessions"] {
            assert!(s[key].as_u64().is_some(), "{key} missing: {s}");
        }
    }
    assert!(
        samples[0]["rss_bytes"].as_u64() > Some(10 << 20),
        "{report}"
    );
    // Sessions of hello.wav take about 4 s: each channel ran at least two,
    // one after the other, each on its own connection.
    let ok = report["sessions_ok"].as_u64().expect("sessions_ok");
    assert!(ok >= 4, "{report}");
    // Each on its own session on the server.
    let started: u64 = server.metrics.started_by_transport().values().sum();
    assert!(started >= ok, "{started} sessions started for {ok} ok");
    assert!(
        report["final_latency_sec"]["count"].as_u64() >= Some(ok),
        "every session's final timed: {report}"
    );
    assert_eq!(report["verdict"]["passed"], true, "{report}");

    // tiny.en refuses German: every session fails, and so does the soak.
    let (out, report) = soak(&["--language", "de"], "errors.json");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(report["verdict"]["passed"], false, "{report}");
    assert!(report["errors"].as_u64() > Some(0), "{report}");
    assert!(
        text(&out.stdout).contains("FAIL: ") && text(&out.stdout).contains("ERR1010"),
        "{}",
        text(&out.stdout)
    );
}
