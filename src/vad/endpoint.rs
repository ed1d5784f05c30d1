//! Endpointing: speech probabilities per 32 ms frame → utterance start and
//! end events, in samples of the stream. Speech starts when a frame reaches
//! `threshold`; it ends once probabilities stay below `threshold - 0.15`
//! (hysteresis, so a wobble around the threshold does not split words) for
//! `silence` seconds. Boundaries get a small pad so word edges survive.

use super::FRAME;

/// Endpointing parameters for one stream.
#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    /// Probability at or above which a frame is speech.
    pub threshold: f32,
    /// Trailing silence that ends an utterance, in samples.
    pub silence_samples: u64,
    /// Padding added before a start and after an end, in samples.
    pub pad_samples: u64,
    /// Utterances shorter than this are dropped as noise, in samples.
    pub min_speech_samples: u64,
}

impl EndpointConfig {
    /// From seconds at 16 kHz, with a 200 ms pad (Whisper decodes word edges
    /// better with some silence around them) and 100 ms minimum speech.
    pub fn new(threshold: f64, silence_sec: f64) -> Self {
        Self {
            threshold: threshold as f32,
            silence_samples: (silence_sec * 16_000.0).round().max(1.0) as u64,
            pad_samples: 3_200,
            min_speech_samples: 1_600,
        }
    }
}

/// What the endpointer saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechEvent {
    /// Speech began at this sample (padded).
    Start(u64),
    /// The utterance that began at `start` ended at `end` (padded).
    End { start: u64, end: u64 },
}

/// The state machine; feed it one probability per frame.
#[derive(Debug)]
pub struct Endpointer {
    cfg: EndpointConfig,
    /// Frames seen so far.
    frame: u64,
    /// Start sample of the utterance in progress.
    start: Option<u64>,
    /// First sample of the current silence run inside an utterance.
    silence_from: Option<u64>,
    /// End of the previous utterance (a new start never reaches back past it).
    last_end: u64,
}

impl Endpointer {
    pub fn new(cfg: EndpointConfig) -> Self {
        Self {
            cfg,
            frame: 0,
            start: None,
            silence_from: None,
            last_end: 0,
        }
    }

    /// Whether an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        self.start.is_some()
    }

    /// Start sample of the utterance in progress.
    pub fn utterance_start(&self) -> Option<u64> {
        self.start
    }

    /// Where the utterance in progress will end if the silence that has
    /// begun lasts (padded, as `End` would report it); `None` while speech
    /// continues. Lets a caller start the final's decode before the
    /// endpoint is confirmed.
    pub fn tentative_end(&self) -> Option<u64> {
        self.start?;
        self.silence_from.map(|from| from + self.cfg.pad_samples)
    }

    /// Samples covered by the frames seen so far.
    pub fn position(&self) -> u64 {
        self.frame * FRAME as u64
    }

    /// Feeds the probability of the next frame.
    pub fn push(&mut self, prob: f32) -> Option<SpeechEvent> {
        let frame_start = self.frame * FRAME as u64;
        let frame_end = frame_start + FRAME as u64;
        self.frame += 1;
        let negative = self.cfg.threshold - 0.15;
        match self.start {
            None => {
                if prob >= self.cfg.threshold {
                    let start = frame_start
                        .saturating_sub(self.cfg.pad_samples)
                        .max(self.last_end);
                    self.start = Some(start);
                    self.silence_from = None;
                    return Some(SpeechEvent::Start(start));
                }
                None
            }
            Some(start) => {
                if prob >= self.cfg.threshold {
                    self.silence_from = None;
                    return None;
                }
                if prob < negative && self.silence_from.is_none() {
                    self.silence_from = Some(frame_start);
                }
                match self.silence_from {
                    Some(from) if frame_end - from >= self.cfg.silence_samples => {
                        Some(self.close(start, from))
                    }
                    _ => None,
                }
            }
        }
    }

    /// Ends the utterance in progress at the current position (end of stream
    /// or an explicit flush). `None` when there is none.
    pub fn flush(&mut self) -> Option<SpeechEvent> {
        let start = self.start?;
        let end = self.silence_from.unwrap_or(self.position());
        Some(self.close(start, end))
    }

    fn close(&mut self, start: u64, speech_end: u64) -> SpeechEvent {
        let end = (speech_end + self.cfg.pad_samples).min(self.position());
        self.start = None;
        self.silence_from = None;
        self.last_end = end;
        SpeechEvent::End { start, end }
    }
}

/// Offline helper: speech regions `(start, end)` in samples from a whole
/// clip's frame probabilities. Utterances shorter than the minimum are dropped.
pub fn regions(probs: &[f32], cfg: EndpointConfig) -> Vec<(u64, u64)> {
    let mut ep = Endpointer::new(cfg);
    let mut out = Vec::new();
    let mut keep = |ev| {
        if let Some(SpeechEvent::End { start, end }) = ev {
            if end - start >= cfg.min_speech_samples {
                out.push((start, end));
            }
        }
    };
    for &p in probs {
        let ev = ep.push(p);
        keep(ev);
    }
    let ev = ep.flush();
    keep(ev);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(silence_frames: u64) -> EndpointConfig {
        EndpointConfig {
            threshold: 0.5,
            silence_samples: silence_frames * FRAME as u64,
            pad_samples: 0,
            min_speech_samples: 0,
        }
    }

    #[test]
    fn start_and_end_after_enough_silence() {
        let mut ep = Endpointer::new(cfg(3));
        let probs = [0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1];
        let events: Vec<_> = probs.iter().filter_map(|&p| ep.push(p)).collect();
        assert_eq!(
            events,
            vec![
                SpeechEvent::Start(512),
                SpeechEvent::End {
                    start: 512,
                    end: 1536
                }
            ]
        );
    }

    #[test]
    fn short_pause_does_not_split() {
        let mut ep = Endpointer::new(cfg(3));
        let probs = [0.9, 0.1, 0.1, 0.9, 0.9];
        let events: Vec<_> = probs.iter().filter_map(|&p| ep.push(p)).collect();
        assert_eq!(events, vec![SpeechEvent::Start(0)]);
        assert!(ep.in_speech());
    }

    #[test]
    fn hysteresis_keeps_wobbling_speech_together() {
        // 0.4 is below threshold but above threshold - 0.15: still speech-ish.
        let mut ep = Endpointer::new(cfg(2));
        let events: Vec<_> = [0.9, 0.4, 0.4, 0.4, 0.9]
            .iter()
            .filter_map(|&p| ep.push(p))
            .collect();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn flush_closes_open_speech() {
        let mut ep = Endpointer::new(cfg(10));
        ep.push(0.9);
        ep.push(0.9);
        assert_eq!(
            ep.flush(),
            Some(SpeechEvent::End {
                start: 0,
                end: 1024
            })
        );
        assert_eq!(ep.flush(), None);
    }

    #[test]
    fn tentative_end_matches_the_confirmed_end() {
        let cfg = EndpointConfig {
            threshold: 0.5,
            silence_samples: 10 * FRAME as u64,
            pad_samples: 2 * FRAME as u64,
            min_speech_samples: 0,
        };
        let mut ep = Endpointer::new(cfg);
        for _ in 0..5 {
            ep.push(0.9);
        }
        assert_eq!(ep.tentative_end(), None);
        let mut tentative = None;
        let mut end = None;
        for _ in 0..20 {
            if let Some(SpeechEvent::End { end: e, .. }) = ep.push(0.0) {
                end = Some(e);
                break;
            }
            tentative = tentative.or(ep.tentative_end());
        }
        assert_eq!(tentative, end);
        // Speech resuming withdraws it.
        ep.push(0.9);
        ep.push(0.0);
        assert!(ep.tentative_end().is_some());
        ep.push(0.9);
        assert_eq!(ep.tentative_end(), None);
    }

    #[test]
    fn pad_never_reaches_into_previous_utterance() {
        let c = EndpointConfig {
            pad_samples: 2048,
            ..cfg(1)
        };
        let r = regions(&[0.9, 0.1, 0.9, 0.1], c);
        assert_eq!(r.len(), 2);
        assert!(r[1].0 >= r[0].1);
    }

    #[test]
    fn regions_drop_blips() {
        let c = EndpointConfig {
            min_speech_samples: 2 * FRAME as u64,
            ..cfg(1)
        };
        assert!(regions(&[0.9, 0.1, 0.1], c).is_empty());
    }
}
