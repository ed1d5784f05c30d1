//! Rate limits on new sessions (`server.create_session_rps` /
//! `create_session_burst`): a token bucket per API key, or per client IP
//! for sessions without one, checked before the key itself so a flood of
//! bad keys is throttled too. The buckets are bounded: idle ones are
//! dropped once there are many.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Buckets kept before idle ones are swept.
const MAX_BUCKETS: usize = 10_000;

pub struct SessionRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl SessionRateLimit {
    /// `None` when `rps` is not positive (no limit).
    pub fn new(rps: f64, burst: u32) -> Option<Self> {
        if !(rps.is_finite() && rps > 0.0) {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / rps);
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
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
}
