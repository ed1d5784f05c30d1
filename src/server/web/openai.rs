//! The OpenAI audio API over the session service:
//! `POST /v1/audio/transcriptions`, `POST /v1/audio/translations` (multipart
//! `file`, `model`, `language`, `prompt`, `response_format`, `temperature`,
//! `timestamp_granularities[]`) and `GET /v1/models`. Errors are
//! OpenAI-shaped, `{"error":{"message","type","code"}}`, with our ERR code
//! and its HTTP status. An upload is one session of transport `rest`: same
//! admission, validation and metrics as a stream.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::WebState;
use crate::audio::decode::{read_audio, FORMATS};
use crate::engine::Task;
use crate::error::{ErrorCode, SttError};
use crate::server::batch::FileTranscript;
use crate::server::service::MODEL_ID_ATTRIBUTE;
use crate::server::session::SessionRequest;

/// Optional: the id a signed token signs (and the session is logged as).
const SESSION_ID_HEADER: &str = "x-stt-session-id";
/// A signed token's timestamp.
const AUTH_TS_HEADER: &str = "x-stt-auth-ts";

/// Model names OpenAI clients send by default; they mean our default model.
const OPENAI_MODEL_NAMES: [&str; 3] = ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"];

/// An error as OpenAI clients parse it.
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl From<SttError> for ApiError {
    fn from(e: SttError) -> Self {
        Self {
            status: StatusCode::from_u16(e.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code.as_str().to_string(),
            message: e.message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else if self.status == StatusCode::UNAUTHORIZED {
            "authentication_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {"message": self.message, "type": kind, "code": self.code}});
        (self.status, Json(body)).into_response()
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    SttError::new(ErrorCode::Err1010, message).into()
}

/// `GET /v1/models`: the models loaded and ready.
pub async fn models(State(web): State<WebState>) -> impl IntoResponse {
    let data: Vec<_> = web
        .service
        .models()
        .list()
        .into_iter()
        .filter(|m| m.status == "ready")
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": "stt",
                "default": m.default,
                "multilingual": m.multilingual,
                "engine": m.engine,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// What came in a transcription request.
#[derive(Debug, Default)]
struct Upload {
    file: Option<(String, Vec<u8>)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: ResponseFormat,
    words: bool,
}

/// `response_format`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ResponseFormat {
    #[default]
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            _ => return None,
        })
    }
}

pub async fn transcriptions(
    State(web): State<WebState>,
    peer: axum::Extension<crate::server::access::ClientIp>,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    transcribe(web, peer.0 .0, headers, form, Task::Transcribe).await
}

pub async fn translations(
    State(web): State<WebState>,
    peer: axum::Extension<crate::server::access::ClientIp>,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    transcribe(web, peer.0 .0, headers, form, Task::Translate).await
}

async fn transcribe(
    web: WebState,
    peer: std::net::IpAddr,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
    task: Task,
) -> Result<Response, ApiError> {
    let service = &web.service;
    let refuse = |e: SttError| ApiError::from(service.refuse("", "transcribe", e));
    service.admit().map_err(refuse)?;
    let mut form = form.map_err(|e| {
        refuse(SttError::new(
            ErrorCode::Err1010,
            format!("send the audio as multipart/form-data with a `file` field: {e}"),
        ))
    })?;
    let upload = match read_form(&mut form, web.max_upload_bytes).await {
        Ok(upload) => upload,
        Err(e) => {
            service
                .metrics()
                .count_error(ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Err1010));
            // Read what the client is still sending (up to the body limit),
            // so it gets to read our answer instead of a reset connection.
            while let Ok(Some(mut field)) = form.next_field().await {
                while let Ok(Some(_)) = field.chunk().await {}
            }
            return Err(e);
        }
    };
    let Some((name, bytes)) = upload.file else {
        return Err(refuse(SttError::new(
            ErrorCode::Err1010,
            "the request has no `file` field: send the audio as multipart field `file`",
        )));
    };
    if bytes.is_empty() {
        return Err(refuse(SttError::new(
            ErrorCode::Err1011,
            format!("the uploaded file {name:?} is empty"),
        )));
    }
    let samples = decode_upload(&name, bytes).await.map_err(refuse)?;

    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let session_id = match header(SESSION_ID_HEADER) {
        Some(id) => id,
        None => super::new_id("rest")?,
    };
    let mut req = SessionRequest {
        session_id,
        bearer: bearer(&headers),
        auth_ts: header(AUTH_TS_HEADER),
        peer: Some(peer),
        task: Some(task),
        language: upload.language.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(model) = upload
        .model
        .filter(|m| !OPENAI_MODEL_NAMES.contains(&m.as_str()))
    {
        req.attributes.insert(MODEL_ID_ATTRIBUTE.to_string(), model);
    }
    if let Some(key) = bearer(&headers) {
        req.attributes.insert("api_key".into(), key);
    }
    if let Some(prompt) = upload.prompt.filter(|p| !p.is_empty()) {
        req.attributes.insert("prompt".into(), prompt);
    }
    if upload.words {
        req.attributes
            .insert("word_timestamps".into(), "true".into());
    }
    let t = service.transcribe_file(req, samples).await?;
    Ok(render(&t, upload.format, task, upload.words))
}

/// The `Authorization: Bearer` key, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    crate::server::secret::bearer_token(value).map(str::to_string)
}

/// Reads every field; the file is held to `max_bytes`.
async fn read_form(form: &mut Multipart, max_bytes: usize) -> Result<Upload, ApiError> {
    let mut up = Upload::default();
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                let file_name = field.file_name().unwrap_or("upload").to_string();
                let bytes = read_file_field(field, max_bytes).await?;
                up.file = Some((file_name, bytes));
            }
            "model" => up.model = Some(text(field).await?),
            "language" => up.language = Some(text(field).await?),
            "prompt" => up.prompt = Some(text(field).await?),
            "response_format" => {
                let v = text(field).await?;
                up.format = ResponseFormat::parse(&v).ok_or_else(|| {
                    invalid(format!(
                        "response_format {v:?} is not one of json, text, srt, vtt, verbose_json"
                    ))
                })?;
            }
            "temperature" => {
                let v = text(field).await?;
                match v.trim().parse::<f32>() {
                    Ok(t) if (0.0..=1.0).contains(&t) => {}
                    _ => {
                        return Err(invalid(format!(
                            "temperature {v:?} must be a number from 0 to 1"
                        )))
                    }
                }
            }
            "timestamp_granularities[]" | "timestamp_granularities" => {
                let v = text(field).await?;
                match v.as_str() {
                    "word" => up.words = true,
                    "segment" => {}
                    _ => {
                        return Err(invalid(format!(
                            "timestamp_granularities {v:?} is not one of segment, word"
                        )))
                    }
                }
            }
            // Accepted for compatibility; streaming responses are not offered.
            "stream" | "chunking_strategy" | "include[]" => {
                text(field).await?;
            }
            other => {
                return Err(invalid(format!(
                    "unknown field {other:?}: expected file, model, language, prompt, \
                     response_format, temperature, timestamp_granularities[]"
                )))
            }
        }
    }
    Ok(up)
}

async fn read_file_field(mut field: Field<'_>, max_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(too_large(max_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn text(field: Field<'_>) -> Result<String, ApiError> {
    field.text().await.map_err(multipart_error)
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: ErrorCode::Err1007.as_str().into(),
        message: format!(
            "the file is larger than {} MiB (server.max_upload_bytes); split it or compress it",
            max_bytes / (1024 * 1024)
        ),
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: ErrorCode::Err1007.as_str().into(),
            message: format!("the upload is too large (server.max_upload_bytes): {e}"),
        };
    }
    invalid(format!("malformed multipart body: {e}"))
}

/// Decodes the upload, whatever its format, to 16 kHz mono (off the async
/// runtime: an MP3 of minutes is real CPU work).
async fn decode_upload(name: &str, bytes: Vec<u8>) -> Result<Arc<[f32]>, SttError> {
    let shown = name.to_string();
    tokio::task::spawn_blocking(move || {
        let ext = std::path::Path::new(&shown)
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()))
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let spill = |e: std::io::Error| {
            SttError::new(ErrorCode::Err3002, "cannot buffer the upload on disk").with_source(e)
        };
        let mut file = tempfile::Builder::new()
            .prefix("stt-upload-")
            .suffix(&ext)
            .tempfile()
            .map_err(spill)?;
        std::io::Write::write_all(&mut file, &bytes).map_err(spill)?;
        let clip = read_audio(file.path()).map_err(|e| {
            // Name the upload, not our temporary file.
            let why = e
                .to_string()
                .replace(&file.path().display().to_string(), &shown);
            let formats = if why.contains(FORMATS) {
                String::new()
            } else {
                format!(" (we read {FORMATS})")
            };
            SttError::new(
                ErrorCode::Err1011,
                format!("cannot read the uploaded audio: {why}{formats}"),
            )
        })?;
        if clip.samples.is_empty() {
            return Err(SttError::new(
                ErrorCode::Err1011,
                format!("the uploaded file {shown:?} holds no audio"),
            ));
        }
        Ok(Arc::from(clip.samples))
    })
    .await
    .map_err(|e| SttError::new(ErrorCode::Err3002, "decoding the upload failed").with_source(e))?
}

/// The response in the format asked for.
fn render(t: &FileTranscript, format: ResponseFormat, task: Task, words: bool) -> Response {
    let text = t.text();
    match format {
        ResponseFormat::Json => Json(json!({"text": text})).into_response(),
        ResponseFormat::Text => plain("text/plain; charset=utf-8", text + "\n"),
        ResponseFormat::Srt => plain("application/x-subrip; charset=utf-8", srt(t)),
        ResponseFormat::Vtt => plain("text/vtt; charset=utf-8", vtt(t)),
        ResponseFormat::VerboseJson => Json(verbose_json(t, task, words)).into_response(),
    }
}

fn plain(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn verbose_json(t: &FileTranscript, task: Task, words: bool) -> serde_json::Value {
    let segments: Vec<_> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": i,
                "seek": 0,
                "start": round3(s.start_sec),
                "end": round3(s.end_sec),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": s.avg_logprob.unwrap_or(0.0),
                "compression_ratio": 0.0,
                "no_speech_prob": s.no_speech_probability,
            })
        })
        .collect();
    let mut out = json!({
        "task": task.as_str(),
        "language": crate::engine::language_name(&t.language).unwrap_or(&t.language),
        "duration": round3(t.duration_sec),
        "text": t.text(),
        "segments": segments,
    });
    if words {
        let words: Vec<_> = t
            .segments
            .iter()
            .flat_map(|s| &s.words)
            .map(|w| {
                json!({
                    "word": w.word.trim(),
                    "start": round3(w.start_sec),
                    "end": round3(w.end_sec),
                    "probability": w.probability,
                })
            })
            .collect();
        out["words"] = json!(words);
    }
    out
}

/// `hh:mm:ss` then `sep` and milliseconds.
fn timestamp(sec: f64, sep: char) -> String {
    let ms = (sec.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

fn srt(t: &FileTranscript) -> String {
    let mut out = String::new();
    for (i, s) in t.segments.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(s.start_sec, ','),
            timestamp(s.end_sec, ','),
            s.text
        );
    }
    out
}

fn vtt(t: &FileTranscript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in &t.segments {
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            timestamp(s.start_sec, '.'),
            timestamp(s.end_sec, '.'),
            s.text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::batch::FileSegment;

    fn transcript() -> FileTranscript {
        let seg = |a: f64, b: f64, text: &str| FileSegment {
            start_sec: a,
            end_sec: b,
            text: text.into(),
            avg_logprob: None,
            no_speech_probability: 0.0,
            words: Vec::new(),
        };
        FileTranscript {
            duration_sec: 3725.5,
            language: "en".into(),
            language_probability: 1.0,
            segments: vec![seg(0.5, 2.25, "Hello there."), seg(3661.0, 3662.5, "Bye.")],
            ..Default::default()
        }
    }

    #[test]
    fn subtitles_follow_their_formats() {
        let t = transcript();
        assert_eq!(
            srt(&t),
            "1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n2\n01:01:01,000 --> 01:01:02,500\nBye.\n\n"
        );
        assert!(vtt(&t).starts_with("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello there.\n"));
    }

    #[test]
    fn verbose_json_is_openai_shaped() {
        let v = verbose_json(&transcript(), Task::Transcribe, false);
        assert_eq!(v["language"], "english");
        assert_eq!(v["text"], "Hello there. Bye.");
        assert_eq!(v["segments"][1]["id"], 1);
        assert_eq!(v["segments"][1]["start"], 3661.0);
        assert!(v.get("words").is_none());
    }

    #[test]
    fn formats_and_bearer_keys_parse() {
        assert_eq!(
            ResponseFormat::parse("verbose_json"),
            Some(ResponseFormat::VerboseJson)
        );
        assert_eq!(ResponseFormat::parse("xml"), None);
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer sk-1".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("sk-1"));
    }
}
