//! One `StreamingRecognize` call: a sender task cuts the audio into chunks and
//! paces them (a clip in memory), or forwards live audio as it arrives (the
//! microphone), while the caller's task reads results until the server ends
//! the stream, then reads the decode-timing trailers. Printing is the
//! caller's business (an observer callback); this module never writes.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::session::SESSION_ID_METADATA;
use super::timing::{DecodeTimings, ResultTiming, SendLog, SentChunk};
use super::{ClientError, StreamOutcome};
use crate::audio::{pcm::f32_to_pcm16, TARGET_RATE};
use crate::pb;
use crate::pb::stt_backend_client::SttBackendClient;

/// Chunks queued between the sender task and the transport. Small, so a send
/// time is close to when the chunk really left; when full the sender waits.
const OUTBOUND_CAPACITY: usize = 4;

/// How the audio is cut and paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// `chunk_ms` chunks, one per `chunk_ms` of wall time (like a live source).
    Realtime { chunk_ms: u64 },
    /// `chunk_ms` chunks as fast as the server takes them.
    Burst { chunk_ms: u64 },
    /// The whole clip as one chunk (batch).
    Whole,
}

impl Sending {
    /// Samples per chunk for a clip of `total` samples (never 0).
    pub fn chunk_samples(self, total: usize) -> usize {
        match self {
            Self::Realtime { chunk_ms } | Self::Burst { chunk_ms } => {
                (chunk_ms as usize * TARGET_RATE as usize / 1000).max(1)
            }
            Self::Whole => total.max(1),
        }
    }

    fn period(self) -> Option<Duration> {
        match self {
            Self::Realtime { chunk_ms } => Some(Duration::from_millis(chunk_ms.max(1))),
            Self::Burst { .. } | Self::Whole => None,
        }
    }
}

/// Sample ranges of each chunk: full chunks, then a shorter remainder. An
/// empty clip still yields one (empty) chunk, so the stream always carries
/// an `is_final`.
pub fn chunk_ranges(total: usize, per_chunk: usize) -> Vec<Range<usize>> {
    let per_chunk = per_chunk.max(1);
    if total == 0 {
        return std::iter::once(0..0).collect();
    }
    (0..total)
        .step_by(per_chunk)
        .map(|start| start..(start + per_chunk).min(total))
        .collect()
}

/// Where a stream's audio comes from.
#[derive(Debug)]
pub enum Source {
    /// A clip in memory (16 kHz mono), cut and paced as `sending` says.
    Clip { audio: Arc<[f32]>, sending: Sending },
    /// Live 16 kHz mono audio, in blocks of any length, sent in `chunk_ms`
    /// chunks as soon as a chunk is complete. The channel closing (capture
    /// ended) or `stop` ends the stream with an `is_final` chunk carrying
    /// whatever audio is left.
    Live {
        audio: mpsc::Receiver<Vec<f32>>,
        chunk_ms: u64,
    },
}

impl Source {
    /// Seconds of audio in a clip; `None` for live audio (known only at the end).
    fn clip_sec(&self) -> Option<f64> {
        match self {
            Self::Clip { audio, .. } => Some(crate::audio::seconds(audio.len())),
            Self::Live { .. } => None,
        }
    }
}

/// What every chunk of one session carries besides audio.
#[derive(Debug, Clone)]
pub struct ChunkIds {
    pub session_id: String,
    /// From `SessionResponse.token`; empty when the server issued none.
    pub session_token: String,
}

impl ChunkIds {
    /// One chunk of 16 kHz audio.
    pub fn chunk(&self, samples: &[f32], is_final: bool) -> pb::AudioChunk {
        pb::AudioChunk {
            pcm16: f32_to_pcm16(samples),
            sample_rate: TARGET_RATE as i32,
            is_final,
            session_id: self.session_id.clone(),
            session_token: self.session_token.clone(),
        }
    }
}

/// Streams `audio` on an open session and collects what comes back.
/// `on_result` sees each result as it arrives.
pub(crate) async fn run(
    client: &mut SttBackendClient<Channel>,
    session: pb::SessionResponse,
    ids: ChunkIds,
    source: Source,
    stop: CancellationToken,
    on_result: &mut (dyn FnMut(&pb::SttResult, &ResultTiming) + Send),
) -> Result<StreamOutcome, ClientError> {
    let id_value = MetadataValue::try_from(ids.session_id.as_str())
        .map_err(|_| ClientError::SessionId(ids.session_id.clone()))?;
    let session_id = ids.session_id.clone();
    let clip_sec = source.clip_sec();

    let (chunk_tx, chunk_rx) = mpsc::channel(OUTBOUND_CAPACITY);
    // Unbounded, but it carries one record per chunk, so it never holds more
    // than the clip's chunk count.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    // Spawned before the call is awaited: some servers send response headers
    // only once audio arrives, so audio must already be flowing.
    let sender = AbortOnDrop(match source {
        Source::Clip { audio, sending } => {
            tokio::spawn(send_chunks(audio, sending, ids, stop, chunk_tx, sent_tx))
        }
        Source::Live { audio, chunk_ms } => {
            tokio::spawn(send_live(audio, chunk_ms, ids, stop, chunk_tx, sent_tx))
        }
    });

    let mut request = tonic::Request::new(ReceiverStream::new(chunk_rx));
    request.metadata_mut().insert(SESSION_ID_METADATA, id_value);
    let mut inbound = client
        .streaming_recognize(request)
        .await
        .map_err(|status| ClientError::Stream {
            status,
            results_before: 0,
        })?
        .into_inner();

    let mut log = SendLog::default();
    let mut results = Vec::new();
    let mut timings = Vec::new();
    let mut first_partial_sec = None;
    loop {
        match inbound.message().await {
            Ok(Some(result)) => {
                let now = Instant::now();
                while let Ok(chunk) = sent_rx.try_recv() {
                    log.push(chunk);
                }
                let timing = log.timing(result.end_sec, start, now);
                if !result.is_final && first_partial_sec.is_none() {
                    first_partial_sec = Some(timing.received_sec);
                }
                on_result(&result, &timing);
                results.push(result);
                timings.push(timing);
            }
            Ok(None) => break,
            Err(status) => {
                return Err(ClientError::Stream {
                    status,
                    results_before: results.len(),
                })
            }
        }
    }
    let wall_sec = start.elapsed().as_secs_f64();
    // The trailers follow the last message; an error here would already
    // have surfaced from `message()`, so a failure only means "none sent".
    let trailers = match inbound.trailers().await {
        Ok(Some(md)) => DecodeTimings::from_metadata(&md),
        _ => DecodeTimings::default(),
    };
    // An auto-end session can finish while audio is still being paced out.
    drop(sender);
    while let Ok(chunk) = sent_rx.try_recv() {
        log.push(chunk);
    }
    let sent_sec = crate::audio::seconds(log.sent_samples() as usize);
    Ok(StreamOutcome {
        session_id,
        session,
        results,
        timings,
        trailers,
        audio_sec: clip_sec.unwrap_or(sent_sec),
        sent_sec,
        wall_sec,
        first_partial_sec,
    })
}

/// The sender task: chunks, pacing, and the final flag. On `stop` it sends an
/// empty `is_final` chunk so the server flushes what it has.
async fn send_chunks(
    audio: Arc<[f32]>,
    sending: Sending,
    ids: ChunkIds,
    stop: CancellationToken,
    tx: mpsc::Sender<pb::AudioChunk>,
    sent: mpsc::UnboundedSender<SentChunk>,
) {
    let ranges = chunk_ranges(audio.len(), sending.chunk_samples(audio.len()));
    let last = ranges.len() - 1;
    let mut ticker = sending.period().map(|period| {
        let mut t = tokio::time::interval(period);
        // Burst catches up after a stall, so chunk k leaves at start + k·period
        // and pacing error never accumulates.
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    for (i, range) in ranges.into_iter().enumerate() {
        let stopped = match ticker.as_mut() {
            Some(t) => tokio::select! {
                biased;
                _ = stop.cancelled() => true,
                _ = t.tick() => false,
            },
            None => stop.is_cancelled(),
        };
        if stopped {
            // Nothing sent is final yet (the final is the last chunk).
            let _ = tx.send(ids.chunk(&[], true)).await;
            return;
        }
        let end_sample = range.end as u64;
        if tx.send(ids.chunk(&audio[range], i == last)).await.is_err() {
            return; // the call is over (server ended it, or failed)
        }
        let _ = sent.send(SentChunk {
            end_sample,
            at: Instant::now(),
        });
    }
    // Dropping `tx` ends the request stream: the client half-closes.
}

/// The live sender task: re-cuts blocks of any length into `chunk_ms` chunks
/// and sends each as soon as it is complete (the source sets the pace). On
/// `stop`, or when the source closes, whatever is queued or left over goes
/// out in one `is_final` chunk so the server flushes its final.
async fn send_live(
    mut audio: mpsc::Receiver<Vec<f32>>,
    chunk_ms: u64,
    ids: ChunkIds,
    stop: CancellationToken,
    tx: mpsc::Sender<pb::AudioChunk>,
    sent: mpsc::UnboundedSender<SentChunk>,
) {
    let per_chunk = Sending::Burst { chunk_ms }.chunk_samples(0);
    let mut out = Outbound {
        ids,
        tx,
        sent,
        end_sample: 0,
    };
    let mut pending: Vec<f32> = Vec::with_capacity(per_chunk * 2);
    loop {
        let block = tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            block = audio.recv() => block,
        };
        let last = block.is_none();
        match block {
            Some(block) => pending.extend_from_slice(&block),
            // Audio captured before the stop still belongs to the session.
            None => {
                while let Ok(block) = audio.try_recv() {
                    pending.extend_from_slice(&block);
                }
            }
        }
        let full = pending.len() / per_chunk * per_chunk;
        for chunk in pending[..full].chunks(per_chunk) {
            if !out.send(chunk, false).await {
                return;
            }
        }
        if last {
            out.send(&pending[full..], true).await;
            return;
        }
        pending.drain(..full);
    }
}

/// The sending half of a live stream: chunk identity, the transport queue
/// and the send log.
struct Outbound {
    ids: ChunkIds,
    tx: mpsc::Sender<pb::AudioChunk>,
    sent: mpsc::UnboundedSender<SentChunk>,
    /// Session samples sent so far.
    end_sample: u64,
}

impl Outbound {
    /// Sends one chunk; false when the call is over (the server ended it,
    /// or it failed).
    async fn send(&mut self, samples: &[f32], is_final: bool) -> bool {
        if self
            .tx
            .send(self.ids.chunk(samples, is_final))
            .await
            .is_err()
        {
            return false;
        }
        self.end_sample += samples.len() as u64;
        let _ = self.sent.send(SentChunk {
            end_sample: self.end_sample,
            at: Instant::now(),
        });
        true
    }
}

/// Aborts the sender when the stream is done with it, on every return path.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_follow_chunk_ms() {
        assert_eq!(Sending::Realtime { chunk_ms: 100 }.chunk_samples(99), 1600);
        assert_eq!(Sending::Burst { chunk_ms: 20 }.chunk_samples(0), 320);
        assert_eq!(Sending::Whole.chunk_samples(48_000), 48_000);
        assert_eq!(Sending::Whole.chunk_samples(0), 1);
        assert_eq!(Sending::Realtime { chunk_ms: 0 }.chunk_samples(10), 1);
    }

    #[test]
    fn ranges_cover_the_clip_with_a_short_tail() {
        let r = chunk_ranges(4000, 1600);
        assert_eq!(r, vec![0..1600, 1600..3200, 3200..4000]);
        assert_eq!(chunk_ranges(3200, 1600), vec![0..1600, 1600..3200]);
        assert_eq!(
            chunk_ranges(1, 1600),
            std::iter::once(0..1).collect::<Vec<_>>()
        );
        assert_eq!(
            chunk_ranges(0, 1600),
            std::iter::once(0..0).collect::<Vec<_>>()
        );
        assert_eq!(chunk_ranges(5, 0).len(), 5);
    }

    fn ids() -> ChunkIds {
        ChunkIds {
            session_id: "s".into(),
            session_token: "t".into(),
        }
    }

    #[test]
    fn chunk_carries_identity_and_rate() {
        let c = ids().chunk(&[0.0, 1.0, -1.0], false);
        assert_eq!(c.pcm16.len(), 6);
        assert_eq!(c.sample_rate, 16_000);
        assert_eq!(
            (c.session_id.as_str(), c.session_token.as_str()),
            ("s", "t")
        );
        assert!(!c.is_final);
    }

    async fn collect(
        audio: Vec<f32>,
        sending: Sending,
        stop: CancellationToken,
    ) -> Vec<pb::AudioChunk> {
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let (sent_tx, _sent_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(send_chunks(audio.into(), sending, ids(), stop, tx, sent_tx));
        drain(rx, task).await
    }

    /// Every chunk the sender emits, once it has finished.
    async fn drain<T>(
        mut rx: mpsc::Receiver<pb::AudioChunk>,
        task: tokio::task::JoinHandle<T>,
    ) -> Vec<pb::AudioChunk> {
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.push(c);
        }
        task.await.expect("sender finished");
        out
    }

    #[tokio::test]
    async fn only_the_last_chunk_is_final() {
        let out = collect(
            vec![0.1; 3_500],
            Sending::Burst { chunk_ms: 100 },
            CancellationToken::new(),
        )
        .await;
        let sizes: Vec<usize> = out.iter().map(|c| c.pcm16.len() / 2).collect();
        assert_eq!(sizes, vec![1600, 1600, 300]);
        let finals: Vec<bool> = out.iter().map(|c| c.is_final).collect();
        assert_eq!(finals, vec![false, false, true]);
        let whole = collect(vec![0.1; 3_500], Sending::Whole, CancellationToken::new()).await;
        assert_eq!(whole.len(), 1);
        assert!(whole[0].is_final && whole[0].pcm16.len() == 7_000);
        let empty = collect(
            Vec::new(),
            Sending::Burst { chunk_ms: 100 },
            CancellationToken::new(),
        )
        .await;
        assert_eq!(empty.len(), 1);
        assert!(empty[0].is_final && empty[0].pcm16.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn realtime_pacing_does_not_drift() {
        let start = tokio::time::Instant::now();
        let out = collect(
            vec![0.0; 16_000],
            Sending::Realtime { chunk_ms: 100 },
            CancellationToken::new(),
        )
        .await;
        assert_eq!(out.len(), 10);
        // Chunk k leaves at k·100 ms: the last at 900 ms, not later.
        assert_eq!(start.elapsed(), Duration::from_millis(900));
    }

    async fn collect_live(blocks: Vec<Vec<f32>>, stop: CancellationToken) -> Vec<pb::AudioChunk> {
        let (audio_tx, audio_rx) = mpsc::channel(blocks.len().max(1));
        for b in blocks {
            audio_tx.send(b).await.expect("queued");
        }
        drop(audio_tx);
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let (sent_tx, _sent_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(send_live(audio_rx, 100, ids(), stop, tx, sent_tx));
        drain(rx, task).await
    }

    #[tokio::test]
    async fn live_blocks_are_rechunked_and_the_rest_goes_out_final() {
        let blocks = vec![vec![0.1; 1000], vec![0.1; 1000], vec![0.1; 1400]];
        let out = collect_live(blocks, CancellationToken::new()).await;
        let sizes: Vec<usize> = out.iter().map(|c| c.pcm16.len() / 2).collect();
        assert_eq!(sizes, vec![1600, 1600, 200]);
        let finals: Vec<bool> = out.iter().map(|c| c.is_final).collect();
        assert_eq!(finals, vec![false, false, true]);
    }

    #[tokio::test]
    async fn live_stop_sends_queued_audio_in_chunks_then_a_final() {
        let stop = CancellationToken::new();
        stop.cancel();
        let out = collect_live(vec![vec![0.1; 3200]], stop).await;
        let sizes: Vec<usize> = out.iter().map(|c| c.pcm16.len() / 2).collect();
        assert_eq!(sizes, vec![1600, 1600, 0]);
        assert!(out[2].is_final && !out[1].is_final);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_sends_an_empty_final() {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            trigger.cancel();
        });
        let out = collect(vec![0.0; 16_000], Sending::Realtime { chunk_ms: 100 }, stop).await;
        // Chunks at 0, 100, 200 ms, then the flush.
        assert_eq!(out.len(), 4);
        assert!(out[..3].iter().all(|c| !c.is_final));
        assert!(out[3].is_final && out[3].pcm16.is_empty());
    }
}
