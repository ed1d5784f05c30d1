//! The OpenAI-compatible REST API end to end: recorded speech uploaded with
//! curl and with a multipart HTTP client, in every response format and in
//! the common audio formats (made at test time with ffmpeg), and bad
//! uploads that must each get a clear OpenAI-shaped error.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::blocking::multipart::{Form, Part};
use serde_json::Value;

use crate::harness::*;
use crate::server::*;
use crate::ws::HELLO;

fn hello() -> PathBuf {
    asset("audio/hello.wav")
}

/// `curl -F file=@PATH -F KEY=VALUE…` against the transcription endpoint:
/// (HTTP status, body).
pub fn curl(
    server: &TestServer,
    endpoint: &str,
    file: &Path,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "-w", "\n%{http_code}", "-F"])
        .arg(format!("file=@{}", file.display()));
    for (k, v) in fields {
        cmd.arg("-F").arg(format!("{k}={v}"));
    }
    cmd.arg(format!("{}{endpoint}", server.web_url()));
    let out = cmd
        .output()
        .expect("curl must be installed (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

const TRANSCRIBE: &str = "/v1/audio/transcriptions";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Converts `input` with ffmpeg into `name` (format from its extension).
fn ffmpeg(input: &Path, name: &str, codec_args: &[&str]) -> PathBuf {
    let out = scratch().join(name);
    let status = Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-i"])
        .arg(input)
        .args(codec_args)
        .arg(&out)
        .status()
        .expect("ffmpeg must be installed (scripts/setup.sh)");
    assert!(status.success(), "ffmpeg failed for {name}");
    out
}

#[test]
fn rest_answers_in_every_response_format() {
    let server = TestServer::start(|_| {});
    let (status, body) = curl(&server, TRANSCRIBE, &hello(), &[("model", "tiny.en")]);
    assert_eq!(status, 200, "{body}");
    assert_words(HELLO, json(&body)["text"].as_str().unwrap(), 0.8);

    let (status, body) = curl(
        &server,
        TRANSCRIBE,
        &hello(),
        &[("response_format", "text")],
    );
    assert_eq!(status, 200, "{body}");
    assert_words(HELLO, &body, 0.8);
    assert!(!body.trim_start().starts_with('{'));

    let (_, body) = curl(&server, TRANSCRIBE, &hello(), &[("response_format", "srt")]);
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("1"), "{body}");
    let times = lines.next().unwrap_or_default();
    assert!(times.contains(" --> ") && times.contains(','), "{body}");
    assert_words(HELLO, &body, 0.8);

    let (_, body) = curl(&server, TRANSCRIBE, &hello(), &[("response_format", "vtt")]);
    assert!(body.starts_with("WEBVTT\n\n"), "{body}");
    assert!(body.contains(" --> ") && body.contains('.'), "{body}");
    assert_words(HELLO, &body, 0.8);

    // The whisper-1 name OpenAI clients send means the default model.
    let (status, body) = curl(
        &server,
        TRANSCRIBE,
        &hello(),
        &[
            ("response_format", "verbose_json"),
            ("model", "whisper-1"),
            ("language", "en"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["task"], "transcribe");
    assert_eq!(v["language"], "english");
    let duration = v["duration"].as_f64().unwrap();
    assert!((duration - 4.0).abs() < 1.5, "{v}");
    let segments = v["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for s in segments {
        let (a, b) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(0.0 <= a && a < b && b <= duration + 0.01, "{s}");
    }
    assert_words(HELLO, v["text"].as_str().unwrap(), 0.8);

    // Counted as sessions of the REST transport.
    let by = server.metrics.started_by_transport();
    assert_eq!(by.get("rest"), Some(&5), "{by:?}");
}

#[test]
fn rest_lists_the_ready_models() {
    let server = TestServer::start(|_| {});
    let v: Value = reqwest::blocking::get(format!("{}/v1/models", server.web_url()))
        .and_then(|r| r.json())
        .expect("GET /v1/models");
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny.en"]);
}

#[test]
fn rest_reads_mp3_flac_opus_webm_and_m4a_alike() {
    let server = TestServer::start(|_| {});
    let wav = hello();
    let files = [
        ffmpeg(&wav, "hello.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"]),
        ffmpeg(&wav, "hello.flac", &[]),
        ffmpeg(&wav, "hello.ogg", &["-c:a", "libopus", "-b:a", "48k"]),
        ffmpeg(&wav, "hello.webm", &["-c:a", "libopus", "-b:a", "48k"]),
        ffmpeg(&wav, "hello.m4a", &["-c:a", "aac", "-b:a", "128k"]),
    ];
    let (_, reference) = curl(&server, TRANSCRIBE, &wav, &[("response_format", "text")]);
    assert_words(HELLO, &reference, 0.8);
    for f in &files {
        let (status, body) = curl(&server, TRANSCRIBE, f, &[("response_format", "text")]);
        assert_eq!(status, 200, "{}: {body}", f.display());
        eprintln!("{}: {}", f.display(), body.trim());
        if f.extension().is_some_and(|e| e == "flac") {
            // Lossless: the very same words.
            assert_eq!(body, reference);
        } else {
            // Lossy codecs (and their encoder delay) move tiny.en on this
            // short clip by a word or three ("a test" → "my task",
            // "to text" → "attack"); the rest must be the WAV's words.
            assert_words(&reference, &body, 0.6);
        }
    }
}

/// Posts a multipart form, returning (status, JSON body).
fn post(server: &TestServer, form: Form) -> (u16, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}{TRANSCRIBE}", server.web_url()))
        .multipart(form)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().expect("a JSON error body"))
}

fn file_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_string())
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str, says: &str) {
    assert_eq!(status, want_status, "{body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert_eq!(e["type"], "invalid_request_error", "{body}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains(says),
        "{message:?} should mention {says:?}"
    );
}

#[test]
fn rest_bad_uploads_get_clear_errors_and_leave_the_server_well() {
    let server = TestServer::start(|s| s.server.server.max_upload_bytes = 200_000);
    let wav = std::fs::read(hello()).unwrap();

    // Not audio.
    let (s, b) = post(
        &server,
        Form::new().part(
            "file",
            file_part(b"just some text\n".repeat(50), "notes.mp3"),
        ),
    );
    assert_error(s, &b, 400, "ERR1011", "notes.mp3");
    // Empty.
    let (s, b) = post(
        &server,
        Form::new().part("file", file_part(Vec::new(), "empty.wav")),
    );
    assert_error(s, &b, 400, "ERR1011", "empty");
    // Truncated: the WAV header and a sliver of its data.
    let (s, b) = post(
        &server,
        Form::new().part("file", file_part(wav[..30].to_vec(), "cut.wav")),
    );
    assert_error(s, &b, 400, "ERR1011", "cut.wav");
    // Oversized (the limit is server.max_upload_bytes): just over it, and
    // far over it, where the server stops reading the body.
    let (s, b) = post(
        &server,
        Form::new().part("file", file_part(vec![0u8; 210_000], "big.wav")),
    );
    assert_eq!(s, 413, "{b}");
    assert_eq!(b["error"]["code"], "ERR1007", "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_upload_bytes"),
        "{b}"
    );
    let huge = scratch().join("huge.wav");
    std::fs::write(&huge, vec![0u8; 2_000_000]).unwrap();
    let (s, body) = curl(&server, TRANSCRIBE, &huge, &[]);
    assert_eq!(s, 413, "{body}");
    assert_eq!(json(&body)["error"]["code"], "ERR1007", "{body}");
    // Wrong field names.
    let (s, b) = post(
        &server,
        Form::new().part("audio", file_part(wav.clone(), "hello.wav")),
    );
    assert_error(s, &b, 400, "ERR1010", "\"audio\"");
    let (s, b) = post(&server, Form::new().text("model", "tiny.en"));
    assert_error(s, &b, 400, "ERR1010", "`file`");
    // Bad values.
    let (s, b) = post(
        &server,
        Form::new()
            .part("file", file_part(wav.clone(), "hello.wav"))
            .text("response_format", "xml"),
    );
    assert_error(s, &b, 400, "ERR1010", "response_format");
    let (s, b) = post(
        &server,
        Form::new()
            .part("file", file_part(wav.clone(), "hello.wav"))
            .text("model", "no-such-model"),
    );
    assert_error(s, &b, 400, "ERR1010", "no-such-model");

    // The server is unaffected: a good upload still works, nothing leaked.
    let (s, b) = post(
        &server,
        Form::new().part("file", file_part(wav, "hello.wav")),
    );
    assert_eq!(s, 200, "{b}");
    assert_words(HELLO, b["text"].as_str().unwrap(), 0.8);
    assert_eq!(server.registry.active(), 0);
}

#[test]
fn rest_works_with_the_openai_python_client() {
    let python = openai_python();
    let server = TestServer::start(|_| {});
    let script = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0, timeout=120)
with open(sys.argv[2], "rb") as f:
    text = client.audio.transcriptions.create(model="whisper-1", file=f)
with open(sys.argv[2], "rb") as f:
    verbose = client.audio.transcriptions.create(
        model="tiny.en", file=f, response_format="verbose_json",
        timestamp_granularities=["segment"], language="en")
try:
    with open(sys.argv[3], "rb") as f:
        client.audio.transcriptions.create(model="whisper-1", file=f)
    error = None
except Exception as e:
    error = {"status": getattr(e, "status_code", None), "body": getattr(e, "body", None)}
print(json.dumps({"text": text.text, "verbose_text": verbose.text,
                  "segments": [[s.start, s.end] for s in verbose.segments], "error": error}))
"#;
    let not_audio = scratch().join("not-audio.mp3");
    std::fs::write(&not_audio, b"definitely not audio").unwrap();
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(server.web_url())
        .arg(hello())
        .arg(&not_audio)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(String::from_utf8_lossy(&out.stdout).trim());
    assert_words(HELLO, v["text"].as_str().unwrap(), 0.8);
    assert_words(HELLO, v["verbose_text"].as_str().unwrap(), 0.8);
    assert!(!v["segments"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["error"]["status"], 400, "{v}");
    assert_eq!(v["error"]["body"]["code"], "ERR1011", "{v}");
}

/// The interpreter of the throwaway venv the test command makes with the
/// `openai` package (STT_OPENAI_PYTHON).
fn openai_python() -> PathBuf {
    let p = std::env::var_os("STT_OPENAI_PYTHON").expect(
        "STT_OPENAI_PYTHON must name a python with the openai package: run the tests through scripts/test.sh",
    );
    PathBuf::from(p)
}

#[test]
fn rest_takes_the_api_key_as_a_bearer_token() {
    let server = TestServer::start(|s| s.server.server.require_api_key = true);
    let wav = std::fs::read(hello()).unwrap();
    let send = |key: Option<&str>| {
        let mut req = reqwest::blocking::Client::new()
            .post(format!("{}{TRANSCRIBE}", server.web_url()))
            .multipart(Form::new().part("file", file_part(wav.clone(), "hello.wav")))
            .timeout(std::time::Duration::from_secs(120));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().expect("JSON"))
    };
    let (s, b) = send(None);
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["error"]["code"], "ERR1009", "{b}");
    assert_eq!(b["error"]["type"], "authentication_error", "{b}");
    let (s, b) = send(Some("team-key"));
    assert_eq!(s, 200, "{b}");
    assert_words(HELLO, b["text"].as_str().unwrap(), 0.8);
}
