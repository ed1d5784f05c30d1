//! One measured session as the logs and the summary see it: flat fields,
//! seconds rounded to milliseconds, and the column definitions every log
//! format shares. Built from a [`StreamOutcome`] or a [`ClientError`].

use serde::Serialize;

use super::stats::{round3, rtf};
use crate::client::{ClientError, StreamOutcome};

/// Where and when a session ran within the bench.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSlot {
    pub session_id: String,
    /// 0-based channel.
    pub channel: usize,
    /// 0-based measured iteration of that channel.
    pub iteration: usize,
    /// The WAV's file name.
    pub audio_file: String,
    /// Seconds of audio in the clip.
    pub audio_sec: f64,
    /// Seconds from the bench's start to this session's start.
    pub start_sec: f64,
    /// Seconds the session took, connect to stream end.
    pub elapsed_sec: f64,
}

/// One row of every session log. Field order is column order; `None` is an
/// empty cell (csv/tsv), `null` (jsonl) or `-` (markdown).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    pub session_id: String,
    pub channel: usize,
    pub iteration: usize,
    pub audio_file: String,
    pub audio_seconds: f64,
    pub start_offset_seconds: f64,
    pub wall_seconds: f64,
    pub rtf: Option<f64>,
    pub first_partial_seconds: Option<f64>,
    pub final_latency_seconds: Option<f64>,
    pub partials: usize,
    pub finals: usize,
    pub final_text: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub decode_buffer_wait_seconds: Option<f64>,
    pub decode_queue_wait_seconds: Option<f64>,
    pub decode_inference_seconds: Option<f64>,
    pub decode_response_emit_seconds: Option<f64>,
    pub decode_total_seconds: Option<f64>,
    pub decode_count: Option<u64>,
}

/// Each column's name and meaning, in column order (the markdown log prints
/// them; a test keeps them in step with [`SessionRecord`]).
pub const COLUMNS: &[(&str, &str)] = &[
    ("session_id", "session id sent to the server"),
    ("channel", "0-based channel (concurrent stream) that ran the session"),
    ("iteration", "0-based measured iteration of that channel (warm-ups excluded)"),
    ("audio_file", "WAV streamed"),
    ("audio_seconds", "seconds of audio in the WAV"),
    ("start_offset_seconds", "seconds from the bench's start to the session's start"),
    ("wall_seconds", "seconds from the first chunk sent to the stream's end (failed: connect to failure)"),
    ("rtf", "wall_seconds / seconds of audio sent (1 at real-time pace; lower is faster)"),
    ("first_partial_seconds", "seconds from the first chunk sent to the first partial result"),
    ("final_latency_seconds", "end of audio → final: seconds from sending the audio the last final ends on to receiving it"),
    ("partials", "partial results received"),
    ("finals", "final results received"),
    ("final_text", "the finals' text, joined with spaces"),
    ("error_code", "ERRxxxx from the server, grpc:<status> without one, or connect; empty when the session succeeded"),
    ("error", "the error message; empty when the session succeeded"),
    ("decode_buffer_wait_seconds", "server trailer: audio waiting in the session buffer before a decode was scheduled"),
    ("decode_queue_wait_seconds", "server trailer: decodes waiting for a free whisper worker"),
    ("decode_inference_seconds", "server trailer: whisper inference"),
    ("decode_response_emit_seconds", "server trailer: turning transcripts into results and sending them"),
    ("decode_total_seconds", "server trailer: the four above together"),
    ("decode_count", "server trailer: decodes run for the session"),
];

impl SessionRecord {
    /// A session that completed.
    pub fn ok(slot: SessionSlot, o: &StreamOutcome) -> Self {
        let partials = o.results.iter().filter(|r| !r.is_final).count();
        // The last final's latency: its audio left the client, then the
        // server endpointed, decoded and answered.
        let final_latency = o
            .results
            .iter()
            .zip(&o.timings)
            .rev()
            .find(|(r, _)| r.is_final)
            .and_then(|(_, t)| t.latency_sec);
        let t = &o.trailers;
        Self {
            wall_seconds: round3(o.wall_sec),
            rtf: rtf(o.wall_sec, o.sent_sec).map(round3),
            first_partial_seconds: o.first_partial_sec.map(round3),
            final_latency_seconds: final_latency.map(round3),
            partials,
            finals: o.results.len() - partials,
            final_text: o.transcript(),
            decode_buffer_wait_seconds: t.buffer_wait_sec.map(round3),
            decode_queue_wait_seconds: t.queue_wait_sec.map(round3),
            decode_inference_seconds: t.inference_sec.map(round3),
            decode_response_emit_seconds: t.response_emit_sec.map(round3),
            decode_total_seconds: t.total_sec.map(round3),
            decode_count: t.count,
            ..Self::empty(slot)
        }
    }

    /// A session that failed.
    pub fn failed(slot: SessionSlot, err: &ClientError) -> Self {
        Self {
            error_code: Some(error_code(err)),
            error: Some(err.to_string()),
            ..Self::empty(slot)
        }
    }

    fn empty(slot: SessionSlot) -> Self {
        Self {
            session_id: slot.session_id,
            channel: slot.channel,
            iteration: slot.iteration,
            audio_file: slot.audio_file,
            audio_seconds: round3(slot.audio_sec),
            start_offset_seconds: round3(slot.start_sec),
            wall_seconds: round3(slot.elapsed_sec),
            rtf: None,
            first_partial_seconds: None,
            final_latency_seconds: None,
            partials: 0,
            finals: 0,
            final_text: String::new(),
            error_code: None,
            error: None,
            decode_buffer_wait_seconds: None,
            decode_queue_wait_seconds: None,
            decode_inference_seconds: None,
            decode_response_emit_seconds: None,
            decode_total_seconds: None,
            decode_count: None,
        }
    }

    /// True when the session completed without an error.
    pub fn is_ok(&self) -> bool {
        self.error_code.is_none()
    }
}

/// A short, stable label for grouping failures: the server's code when it
/// sent one, else the gRPC status, else what failed on our side.
pub fn error_code(err: &ClientError) -> String {
    if let Some(code) = err.code() {
        return code.as_str().to_string();
    }
    match (err, err.status()) {
        (_, Some(status)) => format!("grpc:{:?}", status.code()),
        (ClientError::Connect { .. }, None) => "connect".into(),
        _ => "client".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::{DecodeTimings, ResultTiming};
    use crate::pb;

    pub(crate) fn slot(channel: usize, iteration: usize) -> SessionSlot {
        SessionSlot {
            session_id: format!("bench-c{channel}-i{iteration}"),
            channel,
            iteration,
            audio_file: "hello.wav".into(),
            audio_sec: 4.5,
            start_sec: 0.01234,
            elapsed_sec: 1.0,
        }
    }

    pub(crate) fn outcome() -> StreamOutcome {
        let r = |text: &str, is_final: bool, end_sec: f64| pb::SttResult {
            text: text.into(),
            is_final,
            end_sec,
            ..Default::default()
        };
        let t = |latency: f64| ResultTiming {
            received_sec: 1.0,
            latency_sec: Some(latency),
        };
        StreamOutcome {
            session_id: "bench-c0-i0".into(),
            session: pb::SessionResponse::default(),
            results: vec![
                r("hel", false, 0.5),
                r("hello, \"world\"", true, 1.0),
                r("bye", true, 2.0),
            ],
            timings: vec![t(0.1), t(0.4), t(0.61234)],
            trailers: DecodeTimings {
                buffer_wait_sec: Some(0.0104),
                queue_wait_sec: Some(0.2),
                inference_sec: Some(0.3336),
                response_emit_sec: Some(0.001),
                total_sec: Some(0.545),
                count: Some(3),
            },
            audio_sec: 4.5,
            sent_sec: 4.5,
            wall_sec: 2.25,
            first_partial_sec: Some(0.3),
        }
    }

    #[test]
    fn columns_match_the_record_fields() {
        let value = serde_json::to_value(SessionRecord::ok(slot(0, 0), &outcome())).expect("json");
        let mut fields: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        // Order is checked by the csv header test in `log`.
        assert_eq!(fields, names);
    }

    #[test]
    fn ok_record_rounds_and_counts() {
        let rec = SessionRecord::ok(slot(1, 2), &outcome());
        assert!(rec.is_ok());
        assert_eq!((rec.channel, rec.iteration), (1, 2));
        assert_eq!((rec.partials, rec.finals), (1, 2));
        assert_eq!(rec.final_text, "hello, \"world\" bye");
        assert_eq!(rec.final_latency_seconds, Some(0.612));
        assert_eq!(rec.first_partial_seconds, Some(0.3));
        assert_eq!(rec.rtf, Some(0.5));
        assert_eq!(rec.start_offset_seconds, 0.012);
        assert_eq!(rec.decode_buffer_wait_seconds, Some(0.01));
        assert_eq!(rec.decode_inference_seconds, Some(0.334));
        assert_eq!(rec.decode_count, Some(3));
    }

    #[test]
    fn failed_record_keeps_the_code() {
        let err = ClientError::Session(tonic::Status::resource_exhausted(
            "ERR1008: server at capacity",
        ));
        let rec = SessionRecord::failed(slot(0, 0), &err);
        assert!(!rec.is_ok());
        assert_eq!(rec.error_code.as_deref(), Some("ERR1008"));
        assert!(rec.error.as_deref().is_some_and(|e| e.contains("capacity")));
        let err = ClientError::Stream {
            status: tonic::Status::unavailable("reset"),
            results_before: 1,
        };
        assert_eq!(error_code(&err), "grpc:Unavailable");
        let err = ClientError::Connect {
            addr: "x".into(),
            cause: "refused".into(),
        };
        assert_eq!(error_code(&err), "connect");
    }
}
