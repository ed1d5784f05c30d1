//! The error-code table: every `ERRxxxx` the product can return, with its gRPC
//! status and HTTP status in one place. Components keep their own error enums;
//! the layer that talks to a client picks a code and wraps it in [`SttError`].

use std::fmt;

/// Every coded error. The first digit is the family: 1 request/session
/// validation, 2 decode pipeline, 3 unexpected, 4 admin/control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Missing `session_id` in CreateSession.
    Err1001,
    /// `session_id` already active.
    Err1002,
    /// `vad_threshold` must be non-negative (and at most 1).
    Err1003,
    /// Unknown or missing `session_id`.
    Err1004,
    /// Invalid session token.
    Err1005,
    /// Session timeout (no audio).
    Err1006,
    /// Audio chunk exceeds the maximum size.
    Err1007,
    /// VAD capacity (or session capacity) exhausted.
    Err1008,
    /// API key required but missing.
    Err1009,
    /// Invalid decode option(s): language, task, profile, model.
    Err1010,
    /// Malformed audio: odd-length PCM16, absurd sample rate. (Ours.)
    Err1011,
    /// API key not accepted: not listed, or revoked. (Ours.)
    Err1012,
    /// The API key may not do this (a model it is not allowed). (Ours.)
    Err1013,
    /// Too many new sessions: `server.create_session_rps`. (Ours.)
    Err1014,
    /// The session sent more audio than `server.max_audio_seconds_per_session`.
    /// (Ours; the original's later versions say ERR2004.)
    Err1015,
    /// Audio arrives faster than allowed: `server.max_audio_bytes_per_sec`
    /// or the key's `audio_seconds_per_minute`. (Ours; the original's later
    /// versions say ERR2003.)
    Err1016,
    /// Decode timed out waiting for pending tasks.
    Err2001,
    /// Decode task failed.
    Err2002,
    /// A speech component (model, VAD runtime) is unavailable. (Ours.)
    Err2003,
    /// Server is shutting down and admits no new sessions. (Ours.)
    Err2004,
    /// Unexpected CreateSession error.
    Err3001,
    /// Unexpected StreamingRecognize error.
    Err3002,
    /// Admin API not enabled.
    Err4001,
    /// Model already loaded.
    Err4002,
    /// Model not found or is default (unload failed).
    Err4003,
    /// Invalid or missing admin token.
    Err4004,
    /// `model_path` not allowed.
    Err4005,
    /// Malformed control-plane request (bad JSON, unknown field). (Ours.)
    Err4006,
    /// No such control-plane endpoint. (Ours.)
    Err4007,
    /// The client's address is not in the allowlist (`STT_HTTP_ALLOWLIST`,
    /// `STT_GRPC_ALLOWLIST`). (As the original's later versions.)
    Err4008,
    /// Too many HTTP requests from one address: `server.http_rate_limit_rps`.
    /// (Ours; the original's later ERR4007, which is taken here, and its
    /// ERR4009 means something else.)
    Err4010,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 31] = [
        Self::Err1001,
        Self::Err1002,
        Self::Err1003,
        Self::Err1004,
        Self::Err1005,
        Self::Err1006,
        Self::Err1007,
        Self::Err1008,
        Self::Err1009,
        Self::Err1010,
        Self::Err1011,
        Self::Err1012,
        Self::Err1013,
        Self::Err1014,
        Self::Err1015,
        Self::Err1016,
        Self::Err2001,
        Self::Err2002,
        Self::Err2003,
        Self::Err2004,
        Self::Err3001,
        Self::Err3002,
        Self::Err4001,
        Self::Err4002,
        Self::Err4003,
        Self::Err4004,
        Self::Err4005,
        Self::Err4006,
        Self::Err4007,
        Self::Err4008,
        Self::Err4010,
    ];

    /// The code as clients see it, e.g. `"ERR1007"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Err1001 => "ERR1001",
            Self::Err1002 => "ERR1002",
            Self::Err1003 => "ERR1003",
            Self::Err1004 => "ERR1004",
            Self::Err1005 => "ERR1005",
            Self::Err1006 => "ERR1006",
            Self::Err1007 => "ERR1007",
            Self::Err1008 => "ERR1008",
            Self::Err1009 => "ERR1009",
            Self::Err1010 => "ERR1010",
            Self::Err1011 => "ERR1011",
            Self::Err1012 => "ERR1012",
            Self::Err1013 => "ERR1013",
            Self::Err1014 => "ERR1014",
            Self::Err1015 => "ERR1015",
            Self::Err1016 => "ERR1016",
            Self::Err2001 => "ERR2001",
            Self::Err2002 => "ERR2002",
            Self::Err2003 => "ERR2003",
            Self::Err2004 => "ERR2004",
            Self::Err3001 => "ERR3001",
            Self::Err3002 => "ERR3002",
            Self::Err4001 => "ERR4001",
            Self::Err4002 => "ERR4002",
            Self::Err4003 => "ERR4003",
            Self::Err4004 => "ERR4004",
            Self::Err4005 => "ERR4005",
            Self::Err4006 => "ERR4006",
            Self::Err4007 => "ERR4007",
            Self::Err4008 => "ERR4008",
            Self::Err4010 => "ERR4010",
        }
    }

    /// The gRPC status code the original system returns for this error.
    pub const fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::Err1001 | Self::Err1003 | Self::Err1007 | Self::Err1010 | Self::Err1011 => {
                Code::InvalidArgument
            }
            Self::Err1002 => Code::AlreadyExists,
            Self::Err1004 | Self::Err1009 | Self::Err1012 => Code::Unauthenticated,
            Self::Err1005 | Self::Err1013 => Code::PermissionDenied,
            Self::Err1006 => Code::DeadlineExceeded,
            Self::Err1008 | Self::Err1014 | Self::Err1015 | Self::Err1016 | Self::Err4010 => {
                Code::ResourceExhausted
            }
            Self::Err2001 | Self::Err2002 => Code::Internal,
            Self::Err2003 | Self::Err2004 => Code::Unavailable,
            Self::Err3001 | Self::Err3002 => Code::Unknown,
            // Admin codes are HTTP-only; map them sensibly if ever carried on gRPC.
            Self::Err4001 => Code::Unimplemented,
            Self::Err4002 => Code::AlreadyExists,
            Self::Err4003 => Code::NotFound,
            Self::Err4004 => Code::Unauthenticated,
            Self::Err4005 => Code::PermissionDenied,
            Self::Err4006 => Code::InvalidArgument,
            Self::Err4007 => Code::NotFound,
            Self::Err4008 => Code::PermissionDenied,
        }
    }

    /// The HTTP status for the control plane.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Err4001 => 501,
            Self::Err4002 => 409,
            Self::Err4003 => 400,
            Self::Err4004 => 401,
            Self::Err4005 => 403,
            Self::Err4006 => 400,
            Self::Err4007 => 404,
            Self::Err1004 | Self::Err1009 | Self::Err1012 => 401,
            Self::Err1005 | Self::Err1013 => 403,
            Self::Err1002 => 409,
            Self::Err1006 => 408,
            Self::Err1008 | Self::Err1014 | Self::Err1015 | Self::Err1016 | Self::Err4010 => 429,
            Self::Err4008 => 403,
            Self::Err2003 | Self::Err2004 => 503,
            Self::Err1001 | Self::Err1003 | Self::Err1007 | Self::Err1010 | Self::Err1011 => 400,
            Self::Err2001 | Self::Err2002 | Self::Err3001 | Self::Err3002 => 500,
        }
    }

    /// Parses `"ERR1007"` (also the prefix of a status message).
    pub fn parse(s: &str) -> Option<Self> {
        let code = s.get(..7)?;
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client sees: a code plus a human message. The optional source
/// is logged, never sent (ERR3xxx must not leak internals).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SttError {
    pub code: ErrorCode,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SttError {
    /// A coded error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause (for logs).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl From<SttError> for tonic::Status {
    fn from(e: SttError) -> Self {
        tonic::Status::new(e.code.grpc_code(), format!("{}: {}", e.code, e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_in_its_family() {
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert_eq!(ErrorCode::parse(s), Some(code));
            assert!(s.starts_with("ERR") && s.len() == 7);
            let status = code.http_status();
            match &s[3..4] {
                "4" => assert!((400..=501).contains(&status)),
                "1" => assert!((400..500).contains(&status), "{s} → {status}"),
                _ => assert!(status >= 500),
            }
        }
    }

    #[test]
    fn table_matches_the_original() {
        use tonic::Code;
        assert_eq!(ErrorCode::Err1001.grpc_code(), Code::InvalidArgument);
        assert_eq!(ErrorCode::Err1002.grpc_code(), Code::AlreadyExists);
        assert_eq!(ErrorCode::Err1004.grpc_code(), Code::Unauthenticated);
        assert_eq!(ErrorCode::Err1005.grpc_code(), Code::PermissionDenied);
        assert_eq!(ErrorCode::Err1006.grpc_code(), Code::DeadlineExceeded);
        assert_eq!(ErrorCode::Err1008.grpc_code(), Code::ResourceExhausted);
        assert_eq!(ErrorCode::Err1009.grpc_code(), Code::Unauthenticated);
        assert_eq!(ErrorCode::Err2001.grpc_code(), Code::Internal);
        assert_eq!(ErrorCode::Err3002.grpc_code(), Code::Unknown);
        assert_eq!(ErrorCode::Err4001.http_status(), 501);
        assert_eq!(ErrorCode::Err4002.http_status(), 409);
        assert_eq!(ErrorCode::Err4003.http_status(), 400);
        assert_eq!(ErrorCode::Err4004.http_status(), 401);
        assert_eq!(ErrorCode::Err4005.http_status(), 403);
    }

    #[test]
    fn status_message_starts_with_the_code() {
        let status: tonic::Status = SttError::new(ErrorCode::Err1007, "too big").into();
        assert_eq!(status.message(), "ERR1007: too big");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
