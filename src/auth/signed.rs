//! Signed session tokens, as the original's later versions check them: the
//! client proves it holds a shared secret by sending
//! `authorization: Bearer <hex HMAC-SHA256(secret, "<session_id>:<ts>")>`
//! and `x-stt-auth-ts: <ts>` (Unix seconds; milliseconds are accepted), or
//! the legacy single header `authorization: Bearer <ts>:<sig>`. A token is
//! good for `ttl` either side of the server's clock, and only once: the
//! same (session id, ts) is refused while it is still inside the window.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Timestamps above this are milliseconds (10¹² s is the year 33658).
const MILLIS_FROM: i64 = 1_000_000_000_000;
/// Replay entries kept at most; beyond it the oldest half is dropped (a
/// flood of valid tokens is itself bounded by the rate limits).
const MAX_SEEN: usize = 100_000;

/// The hex signature of `session_id` at `unix` seconds.
pub fn sign(secret: &str, session_id: &str, unix: i64) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(format!("{session_id}:{unix}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Why a signed token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedRefusal {
    Missing,
    Malformed(String),
    BadSignature,
    Expired,
    FromTheFuture,
    Replayed,
}

impl SignedRefusal {
    pub fn message(&self, ttl_sec: i64) -> String {
        match self {
            Self::Missing => "a signed session token is required: send `authorization: Bearer <hex HMAC-SHA256(secret, \"<session_id>:<unix_seconds>\")>` and `x-stt-auth-ts: <unix_seconds>`".into(),
            Self::Malformed(why) => format!("signed session token: {why}"),
            Self::BadSignature => "signed session token: the signature does not match (wrong secret, session id or timestamp)".into(),
            Self::Expired => format!("signed session token expired: its timestamp is more than {ttl_sec} s old; sign again with the current time"),
            Self::FromTheFuture => format!("signed session token is dated more than {ttl_sec} s ahead of the server's clock: check the client's clock"),
            Self::Replayed => "signed session token already used: sign each CreateSession afresh".into(),
        }
    }
}

/// The server's checker.
pub struct SignedTokens {
    secret: String,
    ttl_sec: i64,
    /// (session id, ts) → ts, for replay refusal inside the window.
    seen: Mutex<HashMap<(String, i64), i64>>,
}

impl SignedTokens {
    pub fn new(secret: String, ttl_sec: i64) -> Self {
        Self {
            secret,
            ttl_sec: ttl_sec.max(1),
            seen: Mutex::default(),
        }
    }

    pub fn ttl_sec(&self) -> i64 {
        self.ttl_sec
    }

    /// Checks a token presented for `session_id` at `now` (Unix seconds).
    pub fn verify(
        &self,
        session_id: &str,
        bearer: Option<&str>,
        ts_header: Option<&str>,
        now: i64,
    ) -> Result<(), SignedRefusal> {
        let bearer = bearer.map(str::trim).filter(|b| !b.is_empty());
        let (sig, ts) = match (bearer, ts_header.map(str::trim)) {
            (None, _) => return Err(SignedRefusal::Missing),
            (Some(sig), Some(ts)) => (sig, ts),
            // Legacy: `Bearer <ts>:<sig>`.
            (Some(b), None) => b
                .split_once(':')
                .map(|(ts, sig)| (sig, ts))
                .ok_or_else(|| {
                    SignedRefusal::Malformed(
                        "no x-stt-auth-ts header, and the bearer is not <ts>:<sig>".into(),
                    )
                })?,
        };
        let raw: i64 = ts
            .parse()
            .map_err(|_| SignedRefusal::Malformed(format!("timestamp {ts:?} is not an integer")))?;
        let unix = if raw >= MILLIS_FROM { raw / 1000 } else { raw };
        if now - unix > self.ttl_sec {
            return Err(SignedRefusal::Expired);
        }
        if unix - now > self.ttl_sec {
            return Err(SignedRefusal::FromTheFuture);
        }
        // The client signed the timestamp as it sent it (seconds or ms).
        let expected = sign(&self.secret, session_id, raw);
        let presented = sig.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            return Err(SignedRefusal::BadSignature);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl_sec;
        seen.retain(|_, at| now - *at <= ttl);
        if seen.len() >= MAX_SEEN {
            let mut ats: Vec<i64> = seen.values().copied().collect();
            ats.sort_unstable();
            let cut = ats[ats.len() / 2];
            seen.retain(|_, at| *at > cut);
        }
        if seen.insert((session_id.to_string(), unix), unix).is_some() {
            return Err(SignedRefusal::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn valid_tokens_pass_once() {
        let t = SignedTokens::new("s3cret".into(), 60);
        let sig = sign("s3cret", "call-1", NOW);
        assert_eq!(
            t.verify("call-1", Some(&sig), Some(&NOW.to_string()), NOW + 5),
            Ok(())
        );
        assert_eq!(
            t.verify("call-1", Some(&sig), Some(&NOW.to_string()), NOW + 6),
            Err(SignedRefusal::Replayed)
        );
        // Upper-case hex is the same signature.
        let sig2 = sign("s3cret", "call-2", NOW).to_uppercase();
        assert_eq!(
            t.verify("call-2", Some(&sig2), Some(&NOW.to_string()), NOW),
            Ok(())
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let t = SignedTokens::new("s3cret".into(), 60);
        let ts = NOW.to_string();
        let wrong = sign("other", "c", NOW);
        assert_eq!(
            t.verify("c", Some(&wrong), Some(&ts), NOW),
            Err(SignedRefusal::BadSignature)
        );
        let other_id = sign("s3cret", "d", NOW);
        assert_eq!(
            t.verify("c", Some(&other_id), Some(&ts), NOW),
            Err(SignedRefusal::BadSignature)
        );
        let good = sign("s3cret", "c", NOW);
        assert_eq!(
            t.verify("c", Some(&good), Some(&ts), NOW + 61),
            Err(SignedRefusal::Expired)
        );
        assert_eq!(
            t.verify("c", Some(&good), Some(&ts), NOW - 61),
            Err(SignedRefusal::FromTheFuture)
        );
        assert_eq!(
            t.verify("c", None, Some(&ts), NOW),
            Err(SignedRefusal::Missing)
        );
        assert!(matches!(
            t.verify("c", Some(&good), Some("soon"), NOW),
            Err(SignedRefusal::Malformed(_))
        ));
        assert!(matches!(
            t.verify("c", Some(&good), None, NOW),
            Err(SignedRefusal::Malformed(_))
        ));
    }

    #[test]
    fn legacy_form_and_millisecond_timestamps_pass() {
        let t = SignedTokens::new("s3cret".into(), 60);
        let legacy = format!("{NOW}:{}", sign("s3cret", "old-client", NOW));
        assert_eq!(t.verify("old-client", Some(&legacy), None, NOW), Ok(()));
        let ms = NOW * 1000 + 250;
        let sig = sign("s3cret", "ms-client", ms);
        assert_eq!(
            t.verify("ms-client", Some(&sig), Some(&ms.to_string()), NOW + 1),
            Ok(())
        );
    }
}
