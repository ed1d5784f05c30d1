//! Decode timing per session: buffer wait (audio waiting before its decode
//! was scheduled), queue wait (scheduled → a worker took it), inference,
//! response emit (handing the result to the transport), and their total.
//! The totals go to the client as trailing metadata when the stream ends.

use std::time::Duration;

/// Trailer keys, in the original's names (gRPC trailing metadata, the
/// WebSocket `done` frame).
pub const BUFFER_WAIT: &str = "stt-decode-buffer-wait-sec";
pub const QUEUE_WAIT: &str = "stt-decode-queue-wait-sec";
pub const INFERENCE: &str = "stt-decode-inference-sec";
pub const EMIT: &str = "stt-decode-response-emit-sec";
pub const TOTAL: &str = "stt-decode-total-sec";
pub const COUNT: &str = "stt-decode-count";

/// Phases of one decode.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodePhases {
    pub buffer_wait: Duration,
    pub queue_wait: Duration,
    pub inference: Duration,
    pub emit: Duration,
}

impl DecodePhases {
    pub fn total(&self) -> Duration {
        self.buffer_wait + self.queue_wait + self.inference + self.emit
    }
}

/// Sums over every decode of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTimings {
    pub buffer_wait: Duration,
    pub queue_wait: Duration,
    pub inference: Duration,
    pub emit: Duration,
    pub count: u64,
}

impl DecodeTimings {
    pub fn add(&mut self, p: DecodePhases) {
        self.buffer_wait += p.buffer_wait;
        self.queue_wait += p.queue_wait;
        self.inference += p.inference;
        self.emit += p.emit;
        self.count += 1;
    }

    pub fn total(&self) -> Duration {
        self.buffer_wait + self.queue_wait + self.inference + self.emit
    }

    /// The totals as trailers: seconds with 6 decimals, then the count.
    pub fn trailers(&self) -> [(&'static str, String); 6] {
        let secs = |d: Duration| format!("{:.6}", d.as_secs_f64());
        [
            (BUFFER_WAIT, secs(self.buffer_wait)),
            (QUEUE_WAIT, secs(self.queue_wait)),
            (INFERENCE, secs(self.inference)),
            (EMIT, secs(self.emit)),
            (TOTAL, secs(self.total())),
            (COUNT, self.count.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up() {
        let mut t = DecodeTimings::default();
        let p = DecodePhases {
            buffer_wait: Duration::from_millis(10),
            queue_wait: Duration::from_millis(20),
            inference: Duration::from_millis(300),
            emit: Duration::from_millis(1),
        };
        t.add(p);
        t.add(p);
        assert_eq!(t.count, 2);
        assert_eq!(p.total(), Duration::from_millis(331));
        assert_eq!(t.total(), Duration::from_millis(662));
    }
}
