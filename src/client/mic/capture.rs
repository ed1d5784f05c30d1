//! The capture thread: owns the cpal input stream (which must stay on the
//! thread that built it on some hosts), turns each callback's frames into
//! 16 kHz mono f32 and hands them to the async side over a bounded channel.
//! The audio callback never blocks: when the channel is full the block is
//! dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{Device, ErrorKind, FromSample, SampleFormat, SizedSample, Stream};
use tokio::sync::mpsc;

use super::device::CaptureFormat;
use crate::audio::resample::StreamResampler;

/// Blocks (one per audio callback, about one chunk each) queued between the
/// capture thread and the sender task: about 25 s at 100 ms periods, so
/// only a stalled connection fills it. When full, new blocks are dropped and
/// counted (a microphone cannot wait).
pub const QUEUE_BLOCKS: usize = 256;

/// What the capture thread is told.
enum Control {
    /// Stop capturing and end the thread.
    Stop,
    /// The stream failed for good; the thread ends (the cause is in `failure`).
    Failed,
}

/// A running capture. Dropping it stops capturing and joins the thread.
pub struct Capture {
    /// Tells the capture thread to drop its stream; unbounded, at most two
    /// messages ever travel (a failure and the stop).
    control: std_mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
    /// Samples (16 kHz) dropped because the queue was full.
    dropped: Arc<AtomicU64>,
    /// Why capturing stopped on its own, if it did.
    failure: Arc<Mutex<Option<String>>>,
}

/// How a capture ended.
#[derive(Debug, Default)]
pub struct CaptureReport {
    /// Seconds of audio dropped because the client fell behind.
    pub dropped_sec: f64,
    /// Why the device stopped delivering audio, if it did.
    pub failure: Option<String>,
}

impl Capture {
    /// Starts capturing from `device` as `format` says. Returns once the
    /// stream plays, with the receiving end of the 16 kHz blocks (the
    /// channel closes when capture stops), or why it could not start.
    pub fn start(
        device: Device,
        format: CaptureFormat,
    ) -> Result<(Self, mpsc::Receiver<Vec<f32>>), String> {
        let resampler =
            StreamResampler::new(format.config.sample_rate).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE_BLOCKS);
        let (control, control_rx) = std_mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let sink = Sink {
            channels: usize::from(format.config.channels.max(1)),
            resampler,
            tx,
            dropped: dropped.clone(),
            mono: Vec::new(),
        };
        let fail = Failer {
            control: control.clone(),
            failure: failure.clone(),
        };
        let (ready_tx, ready_rx) = std_mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("mic-capture".into())
            .spawn(move || {
                let stream = build(&device, format, sink, fail).and_then(|s| s.play().map(|()| s));
                match stream {
                    Ok(stream) => {
                        let _ = ready_tx.send(Ok(()));
                        // Either message, or every sender gone, ends capture.
                        let _ = control_rx.recv();
                        drop(stream);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("cannot start the capture thread: {e}"))?;
        let capture = Self {
            control,
            thread: Some(thread),
            dropped,
            failure,
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((capture, rx)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the capture thread ended unexpectedly".into()),
        }
    }

    /// Stops capturing, joins the thread and says how it went.
    pub fn stop(mut self) -> CaptureReport {
        self.shut_down();
        CaptureReport {
            dropped_sec: crate::audio::seconds(self.dropped.load(Ordering::Relaxed) as usize),
            failure: self
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn shut_down(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Builds the input stream for the device's sample type.
fn build(
    device: &Device,
    format: CaptureFormat,
    sink: Sink,
    fail: Failer,
) -> Result<Stream, cpal::Error> {
    match format.sample_format {
        SampleFormat::I16 => typed::<i16>(device, format, sink, fail),
        SampleFormat::F32 => typed::<f32>(device, format, sink, fail),
        SampleFormat::I32 => typed::<i32>(device, format, sink, fail),
        SampleFormat::F64 => typed::<f64>(device, format, sink, fail),
        SampleFormat::U16 => typed::<u16>(device, format, sink, fail),
        SampleFormat::I8 => typed::<i8>(device, format, sink, fail),
        SampleFormat::U8 => typed::<u8>(device, format, sink, fail),
        other => Err(cpal::Error::with_message(
            ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not supported by this client"),
        )),
    }
}

fn typed<T>(
    device: &Device,
    format: CaptureFormat,
    mut sink: Sink,
    mut fail: Failer,
) -> Result<Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let mut fail_on_error = fail.clone();
    device.build_input_stream::<T, _, _>(
        format.config,
        move |data: &[T], _| {
            if let Err(cause) = sink.push(data) {
                fail.fail(cause);
            }
        },
        move |err| match err.kind() {
            // A glitch: some audio is lost, the stream goes on.
            ErrorKind::Xrun => tracing::debug!(%err, "capture overrun"),
            ErrorKind::DeviceNotAvailable
            | ErrorKind::StreamInvalidated
            | ErrorKind::HostUnavailable
            | ErrorKind::PermissionDenied => fail_on_error.fail(err.to_string()),
            _ => tracing::warn!(%err, "capture error"),
        },
        None,
    )
}

/// The callback's end of the queue: mono, 16 kHz, never blocking.
struct Sink {
    /// Interleaved channels per frame.
    channels: usize,
    resampler: StreamResampler,
    /// Bounded ([`QUEUE_BLOCKS`]); `try_send` only, a full queue drops the
    /// block. Dropped with the stream, which closes the queue.
    tx: mpsc::Sender<Vec<f32>>,
    /// Samples dropped on a full queue (shared with [`Capture`]).
    dropped: Arc<AtomicU64>,
    /// Scratch: this callback's frames, mixed to mono.
    mono: Vec<f32>,
}

impl Sink {
    fn push<T>(&mut self, data: &[T]) -> Result<(), String>
    where
        T: SizedSample,
        f32: FromSample<T>,
    {
        to_mono(data, self.channels, &mut self.mono);
        let mut out = Vec::with_capacity(self.mono.len());
        self.resampler
            .push(&self.mono, &mut out)
            .map_err(|e| e.to_string())?;
        if out.is_empty() {
            return Ok(());
        }
        let n = out.len() as u64;
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(n, Ordering::Relaxed);
            }
            // The session is over; the stop is on its way.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        Ok(())
    }
}

/// Ends capture from a cpal callback: records the first cause and tells the
/// capture thread, which drops the stream; the queue then closes and the
/// session ends with a final.
#[derive(Clone)]
struct Failer {
    control: std_mpsc::Sender<Control>,
    /// First cause only; the lock is held for a compare-and-set, never
    /// across anything that waits.
    failure: Arc<Mutex<Option<String>>>,
}

impl Failer {
    fn fail(&mut self, cause: String) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(cause);
            let _ = self.control.send(Control::Failed);
        }
    }
}

/// Interleaved frames of `channels` samples → their average, as f32.
pub fn to_mono<T>(data: &[T], channels: usize, out: &mut Vec<f32>)
where
    T: SizedSample,
    f32: FromSample<T>,
{
    out.clear();
    let channels = channels.max(1);
    out.extend(data.chunks(channels).map(|frame| {
        let sum: f32 = frame.iter().map(|&s| s.to_sample::<f32>()).sum();
        sum / frame.len() as f32
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_averaged_to_mono_floats() {
        let mut out = Vec::new();
        to_mono(&[i16::MAX, 0, i16::MIN, i16::MIN], 2, &mut out);
        assert_eq!(out.len(), 2);
        assert!((out[0] - 0.5).abs() < 1e-3, "{out:?}");
        assert!((out[1] + 1.0).abs() < 1e-6, "{out:?}");
        to_mono(&[0.25f32, -0.5], 1, &mut out);
        assert_eq!(out, vec![0.25, -0.5]);
        to_mono(&[128u8, 255], 1, &mut out);
        assert!(out[0].abs() < 1e-6 && out[1] > 0.99, "{out:?}");
    }
}
