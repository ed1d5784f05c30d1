//! Token buckets (governor), each keyed and bounded (idle buckets are
//! swept once there are many):
//! - new sessions (`server.create_session_rps` / `create_session_burst`),
//!   per API key, or per client IP for sessions without one, checked before
//!   the key itself so a flood of bad keys is throttled too;
//! - streamed audio bytes (`server.max_audio_bytes_per_sec` / `_burst`),
//!   per API key, else per client IP, over all of that client's sessions;
//! - streamed audio seconds per API key (`audio_seconds_per_minute` in the
//!   keys file);
//! - HTTP requests per client IP (`server.http_rate_limit_rps` / `_burst`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ErrorCode, SttError};

/// Buckets kept before idle ones are swept.
const MAX_BUCKETS: usize = 10_000;

/// The slowest rate a limit keeps (config validation refuses slower ones;
/// this guards other callers).
const MAX_PERIOD: Duration = crate::config::server::SLOWEST_RATE_PERIOD;

/// The most time a full bucket may stand for (period × burst).
const MAX_BUCKET: Duration = Duration::from_secs(365 * 86_400);

/// `rps` per second with `burst` at once; `None` when `rps` is not
/// positive (no limit). governor counts time in u64 nanoseconds, panics on
/// a period past 584 years and overflows on period × burst, so the period
/// stays within [`MAX_PERIOD`] and the bucket within [`MAX_BUCKET`].
fn per_second(rps: f64, burst: u32) -> Option<Quota> {
    if !(rps.is_finite() && rps > 0.0) {
        return None;
    }
    // Not `config::seconds`: its millisecond floor would cap every limit
    // at 1000 per second.
    let period = Duration::try_from_secs_f64(1.0 / rps)
        .unwrap_or(MAX_PERIOD)
        .clamp(Duration::from_nanos(1), MAX_PERIOD);
    let most = (MAX_BUCKET.as_nanos() / period.as_nanos()).min(u128::from(u32::MAX)) as u32;
    let burst = NonZeroU32::new(burst.clamp(1, most.max(1)))?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

pub struct SessionRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl SessionRateLimit {
    /// `None` when `rps` is not positive (no limit).
    pub fn new(rps: f64, burst: u32) -> Option<Self> {
        let quota = per_second(rps, burst)?;
        Some(Self {
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// Takes one token from `key`'s bucket; `Err` with how long until the
    /// next one.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.limiter.len() > MAX_BUCKETS {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| {
                not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ))
            })
    }
}

/// `server.max_audio_bytes_per_sec` / `_burst`: PCM bytes per client.
pub struct AudioRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    rate: u32,
    burst: u32,
}

impl AudioRateLimit {
    /// `None` when `bytes_per_sec` is 0 (no limit). A burst below the rate
    /// is taken as the rate.
    pub fn new(bytes_per_sec: u64, burst: u64) -> Option<Self> {
        let rate = u32::try_from(bytes_per_sec)
            .ok()
            .and_then(NonZeroU32::new)?;
        let burst =
            NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX)).map_or(rate, |b| b.max(rate));
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            rate: rate.get(),
            burst: burst.get(),
        })
    }

    /// Takes `bytes` from `key`'s bucket, or refuses the chunk (ERR1016):
    /// audio arriving faster than a real-time source can is refused, not
    /// queued, as the original does.
    pub fn check(&self, key: &str, bytes: usize) -> Result<(), SttError> {
        let Some(n) = u32::try_from(bytes).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        if self.limiter.len() > MAX_BUCKETS {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key_n(&key.to_string(), n) {
            Ok(Ok(())) => Ok(()),
            _ => Err(SttError::new(
                ErrorCode::Err1016,
                format!(
                    "audio arrives faster than this server allows one client ({} bytes/s, bursts of {} bytes: server.max_audio_bytes_per_sec); send at real time",
                    self.rate, self.burst
                ),
            )),
        }
    }
}

/// Per-key `audio_seconds_per_minute`: one bucket of audio milliseconds
/// per key id (the keys file bounds how many).
#[derive(Default)]
pub struct KeyAudioQuotas {
    buckets: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl KeyAudioQuotas {
    /// Takes `audio_ms` from key `id`'s minute, or refuses (ERR1016).
    pub fn check(&self, id: &str, per_minute_sec: f64, audio_ms: u64) -> Result<(), SttError> {
        let per_minute_ms = (per_minute_sec * 1000.0).clamp(1.0, f64::from(u32::MAX)) as u32;
        let Some(per_minute) = NonZeroU32::new(per_minute_ms) else {
            return Ok(());
        };
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let entry = buckets.entry(id.to_string()).or_insert_with(|| {
                (
                    per_minute_ms,
                    Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))),
                )
            });
            // The keys file changed this key's quota: start it afresh.
            if entry.0 != per_minute_ms {
                *entry = (
                    per_minute_ms,
                    Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))),
                );
            }
            entry.1.clone()
        };
        let Some(n) = u32::try_from(audio_ms).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            _ => Err(SttError::new(
                ErrorCode::Err1016,
                format!("API key {id} may stream {per_minute_sec} s of audio a minute (audio_seconds_per_minute in the keys file); wait, or ask for a larger quota"),
            )),
        }
    }
}

/// `server.http_rate_limit_rps` / `_burst`: requests per client IP.
pub struct HttpRateLimit {
    limiter: DefaultKeyedRateLimiter<std::net::IpAddr>,
}

impl HttpRateLimit {
    /// `None` when `rps` is not positive (no limit).
    pub fn new(rps: f64, burst: u32) -> Option<Self> {
        let quota = per_second(rps, burst)?;
        Some(Self {
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// One request from `ip`; `Err` with how long until the next.
    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > MAX_BUCKETS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_key() {
        let l = SessionRateLimit::new(1.0, 2).expect("a limit");
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert!(l.check("b").is_ok());
        assert!(SessionRateLimit::new(0.0, 5).is_none());
    }

    #[test]
    fn audio_bytes_a_burst_then_refused_per_client() {
        let l = AudioRateLimit::new(32_000, 64_000).expect("a limit");
        assert!(l.check("ip:a", 64_000).is_ok());
        let e = l.check("ip:a", 3_200).unwrap_err();
        assert_eq!(e.code, ErrorCode::Err1016);
        // A chunk larger than the burst can never pass.
        assert!(l.check("ip:b", 64_001).is_err());
        assert!(l.check("ip:c", 3_200).is_ok());
        assert!(AudioRateLimit::new(0, 10).is_none());
    }

    #[test]
    fn key_audio_quota_is_a_minute_of_milliseconds() {
        let q = KeyAudioQuotas::default();
        assert!(q.check("k", 2.0, 1_500).is_ok());
        assert_eq!(q.check("k", 2.0, 600).unwrap_err().code, ErrorCode::Err1016);
        // Another key, and the same key with a new quota, start afresh.
        assert!(q.check("j", 2.0, 2_000).is_ok());
        assert!(q.check("k", 10.0, 5_000).is_ok());
    }

    #[test]
    fn http_requests_per_ip() {
        let l = HttpRateLimit::new(1.0, 2).expect("a limit");
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.check(a).is_ok() && l.check(a).is_ok());
        assert!(l.check(a).is_err());
        assert!(l.check("10.0.0.2".parse().unwrap()).is_ok());
    }

    /// governor panics on a period past 584 years and overflows on
    /// period × burst: rates and bursts at the extremes still make a limit.
    #[test]
    fn extreme_rates_and_bursts_still_limit() {
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        for (rps, burst) in [
            (1e-308, 1),
            (1e-308, u32::MAX),
            (0.01, u32::MAX),
            (1e12, u32::MAX),
        ] {
            let http = HttpRateLimit::new(rps, burst).expect("a limit");
            let sessions = SessionRateLimit::new(rps, burst).expect("a limit");
            assert!(http.check(a).is_ok() && sessions.check("k").is_ok());
        }
        // One a day with a burst of one: the second request waits a day.
        let slow = SessionRateLimit::new(1e-308, 1).expect("a limit");
        assert!(slow.check("k").is_ok());
        let wait = slow.check("k").expect_err("limited");
        assert!(wait > Duration::from_secs(86_000), "{wait:?}");
        // Fast limits keep their rate: 10 000 a second is a token every
        // 100 µs, not one a millisecond.
        let fast = SessionRateLimit::new(1e4, 1).expect("a limit");
        assert!(fast.check("k").is_ok());
        let wait = fast.check("k").expect_err("limited");
        assert!(wait <= Duration::from_micros(100), "{wait:?}");
    }
}
