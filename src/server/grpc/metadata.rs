//! gRPC metadata the original's clients rely on: the `session-id` request
//! header and the decode-timing trailers sent when a stream ends.

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::server::session::DecodeTimings;

/// Request metadata key carrying the session id.
pub const SESSION_ID: &str = "session-id";

pub use crate::server::session::timing::{BUFFER_WAIT, COUNT, EMIT, INFERENCE, QUEUE_WAIT, TOTAL};

/// A signed session token's timestamp (`stt::auth::signed`).
pub const AUTH_TS: &str = "x-stt-auth-ts";

/// The key of an `authorization: Bearer <key>` header, if any.
pub fn bearer(md: &MetadataMap) -> Option<String> {
    let value = md.get("authorization")?.to_str().ok()?;
    crate::server::secret::bearer_token(value).map(str::to_string)
}

/// The session id from request metadata, if present and printable.
pub fn session_id(md: &MetadataMap) -> Option<String> {
    md.get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Writes the timing totals as trailers (seconds, 6 decimals).
pub fn add_timings(md: &mut MetadataMap, t: &DecodeTimings) {
    for (key, value) in t.trailers() {
        if let Ok(v) = MetadataValue::try_from(value) {
            md.insert(key, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn trailers_carry_every_key() {
        let mut md = MetadataMap::new();
        let t = DecodeTimings {
            buffer_wait: Duration::from_millis(250),
            queue_wait: Duration::from_millis(5),
            inference: Duration::from_millis(400),
            emit: Duration::from_micros(30),
            count: 3,
        };
        add_timings(&mut md, &t);
        let get = |k: &str| md.get(k).unwrap().to_str().unwrap().to_string();
        assert_eq!(get(BUFFER_WAIT), "0.250000");
        assert_eq!(get(TOTAL), "0.655030");
        assert_eq!(get(COUNT), "3");
    }

    #[test]
    fn session_id_from_metadata() {
        let mut md = MetadataMap::new();
        assert_eq!(session_id(&md), None);
        md.insert(SESSION_ID, MetadataValue::from_static(" abc "));
        assert_eq!(session_id(&md).as_deref(), Some("abc"));
    }
}
