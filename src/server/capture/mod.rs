//! Server-side audio capture (`storage.persist_audio`): one 16 kHz mono PCM16
//! WAV per session under `storage.directory`, written off the async runtime,
//! and retention (`max_files`, `max_bytes`, `max_age_days`) after each capture
//! closes.
//!
//! Owns: file naming, each session's bounded queue (drop-oldest, counted), the
//! writer threads and retention. Must not: block a session task (the one
//! exception is [`CaptureStore::open`], which creates the file so the caller
//! learns at once that capture failed), decide which audio is captured, or
//! touch anything in the directory other than regular `*.wav` files.
//!
//! One writer thread per open capture rather than one shared writer: sessions
//! are already bounded by `server.max_sessions`, so the threads are too; a
//! stalled file (slow disk, full volume) then only fills its own session's
//! queue instead of delaying every other session's audio; and the thread's
//! lifetime is the capture's, so "drain, finalise, then run retention" is a
//! straight line of code rather than a state machine.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::audio::wav::CaptureWriter;
use crate::audio::AudioError;
use crate::config::server::StorageSection;

mod naming;
mod retention;
#[cfg(test)]
mod tests;

use naming::{sanitize_id, utc_stamp};

/// Longest sanitised session id kept in a file name (the rest is cut).
const MAX_ID_CHARS: usize = 64;
/// Bytes per PCM16 sample.
const SAMPLE_BYTES: u64 = 2;
/// Most samples one WAV can hold: the RIFF and data sizes are 32-bit (hound
/// keeps them in a `u32`, which would wrap), less room for the header. At
/// 16 kHz this is about 37 hours.
const MAX_FILE_SAMPLES: u64 = (u32::MAX as u64 - 1024) / SAMPLE_BYTES;

/// Where captures go and how much of them to keep; built from `storage:`.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Directory holding the WAVs; created if missing.
    pub directory: PathBuf,
    /// Chunks one session may have waiting for its writer; when full, the
    /// oldest waiting chunk is dropped and counted. At least 1.
    pub queue_max_chunks: usize,
    pub retention: Retention,
}

/// Limits on the capture directory; `None` means no limit. Open captures
/// count towards the totals but are never removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Total size of all `*.wav` files.
    pub max_bytes: Option<u64>,
    /// Number of `*.wav` files.
    pub max_files: Option<u64>,
    /// Files last modified longer ago than this are removed.
    pub max_age: Option<Duration>,
}

impl Retention {
    fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_files.is_some() || self.max_age.is_some()
    }
}

impl CaptureConfig {
    /// `None` when `persist_audio` is off. Null or negative limits mean "no
    /// limit", as `config/server.yaml` documents.
    pub fn from_storage(s: &StorageSection) -> Option<Self> {
        if !s.persist_audio {
            return None;
        }
        Some(Self {
            directory: s.directory.clone(),
            queue_max_chunks: s.queue_max_chunks.max(1),
            retention: Retention {
                max_bytes: s.max_bytes.and_then(|v| u64::try_from(v).ok()),
                max_files: s.max_files.and_then(|v| u64::try_from(v).ok()),
                // NaN and durations too large to represent also mean "none".
                max_age: s
                    .max_age_days
                    .filter(|d| *d >= 0.0)
                    .and_then(|d| Duration::try_from_secs_f64(d * 86_400.0).ok()),
            },
        })
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub removed_files: usize,
    pub removed_bytes: u64,
    /// Files left afterwards (open captures and failed removals included).
    pub kept_files: usize,
    pub kept_bytes: u64,
    /// Removals that failed (logged; the files are counted as kept).
    pub failed_files: usize,
}

/// The server-wide capture store: a cheap clone over shared state.
#[derive(Clone)]
pub struct CaptureStore {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CaptureConfig,
    /// Names of open captures and the number of live writer threads. A std
    /// mutex: held only to read or update the set, never across file I/O.
    writers: Mutex<Writers>,
    /// Notified whenever a writer thread ends (for [`CaptureStore::wait_idle`]).
    idle: Condvar,
    /// Serialises retention passes, so two sessions closing together do not
    /// both count (and try to remove) the same files. Held across directory
    /// I/O, so only ever taken on blocking threads.
    retention_lock: Mutex<()>,
    /// Makes file names unique within this process.
    next_seq: AtomicU64,
    /// [`MAX_FILE_SAMPLES`] outside tests.
    max_file_samples: u64,
    dropped_chunks: AtomicU64,
    files_written: AtomicU64,
    bytes_written: AtomicU64,
    write_errors: AtomicU64,
    files_removed: AtomicU64,
    retention_errors: AtomicU64,
}

#[derive(Default)]
struct Writers {
    /// File names (not paths, so no normalisation question arises) that
    /// retention must not remove.
    open: HashSet<OsString>,
    running: usize,
}

impl CaptureStore {
    /// Creates the capture directory if needed.
    pub fn new(cfg: CaptureConfig) -> io::Result<Self> {
        Self::with_file_limit(cfg, MAX_FILE_SAMPLES)
    }

    fn with_file_limit(mut cfg: CaptureConfig, max_file_samples: u64) -> io::Result<Self> {
        fs::create_dir_all(&cfg.directory).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the audio capture directory {} (storage.directory): {e}",
                    cfg.directory.display()
                ),
            )
        })?;
        cfg.queue_max_chunks = cfg.queue_max_chunks.max(1);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                writers: Mutex::new(Writers::default()),
                idle: Condvar::new(),
                retention_lock: Mutex::new(()),
                next_seq: AtomicU64::new(1),
                max_file_samples,
                dropped_chunks: AtomicU64::new(0),
                files_written: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
                write_errors: AtomicU64::new(0),
                files_removed: AtomicU64::new(0),
                retention_errors: AtomicU64::new(0),
            }),
        })
    }

    /// Starts a capture for `session_id` (any string: it is sanitised). The
    /// file exists, as a valid empty WAV, when this returns. Creating it is a
    /// short blocking call; on slow storage call this from `spawn_blocking`.
    pub fn open(&self, session_id: &str) -> io::Result<SessionCapture> {
        let inner = &self.inner;
        let (path, guard, writer) = create_file(inner, session_id)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            capacity: inner.cfg.queue_max_chunks,
        });
        let job = Job {
            store: inner.clone(),
            shared: shared.clone(),
            session_id: session_id.to_string(),
            path: path.clone(),
            guard,
        };
        let spawned = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || job.run(writer));
        if let Err(e) = spawned {
            // The closure (writer and guard) is dropped: the file is closed
            // and unregistered; an empty WAV is not worth keeping.
            inner.write_errors.fetch_add(1, Ordering::Relaxed);
            let _ = fs::remove_file(&path);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot start the audio capture writer thread: {e}"),
            ));
        }
        tracing::debug!(session_id = %session_id, path = %path.display(), "audio capture opened");
        Ok(SessionCapture {
            path,
            shared,
            store: inner.clone(),
        })
    }

    /// Chunks dropped because a session's queue was full (all sessions).
    pub fn dropped_chunks(&self) -> u64 {
        self.inner.dropped_chunks.load(Ordering::Relaxed)
    }

    /// Captures whose file was finalised.
    pub fn files_written(&self) -> u64 {
        self.inner.files_written.load(Ordering::Relaxed)
    }

    /// PCM bytes appended to capture files (headers not included).
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written.load(Ordering::Relaxed)
    }

    /// Captures cut short: a failed create, append or finalise, or a file that
    /// reached the WAV size limit.
    pub fn write_errors(&self) -> u64 {
        self.inner.write_errors.load(Ordering::Relaxed)
    }

    /// Files removed by retention.
    pub fn files_removed(&self) -> u64 {
        self.inner.files_removed.load(Ordering::Relaxed)
    }

    /// Files retention wanted to remove but could not.
    pub fn retention_errors(&self) -> u64 {
        self.inner.retention_errors.load(Ordering::Relaxed)
    }

    /// Captures whose writer has not finished yet.
    pub fn open_captures(&self) -> usize {
        lock(&self.inner.writers).running
    }

    /// Blocks until every writer has drained, finalised and run retention, or
    /// `timeout` passes; true when idle. For shutdown (after the sessions have
    /// ended) and tests; call it from a blocking thread.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let writers = lock(&self.inner.writers);
        let (writers, _) = self
            .inner
            .idle
            .wait_timeout_while(writers, timeout, |w| w.running > 0)
            .unwrap_or_else(PoisonError::into_inner);
        writers.running == 0
    }

    /// Applies the retention limits now. Blocking (directory I/O). Also runs
    /// on the writer thread after each capture closes.
    pub fn apply_retention(&self) -> io::Result<RetentionReport> {
        self.inner.apply_retention()
    }
}

/// Registers a unique name, then creates the file under it. The name is
/// registered first so that retention can never see the file unprotected.
fn create_file(
    inner: &Arc<Inner>,
    session_id: &str,
) -> io::Result<(PathBuf, Guard, CaptureWriter)> {
    let id = sanitize_id(session_id);
    // Another process sharing the directory could pick the same name; the
    // sequence number moves us past it.
    for _ in 0..8 {
        let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}_{seq:06}_{id}.wav", utc_stamp(SystemTime::now()));
        let path = inner.cfg.directory.join(&name);
        let guard = Guard::register(inner.clone(), name.into());
        // `create_new` claims the name atomically; CaptureWriter then
        // truncates the (empty) file we own.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                inner.write_errors.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create audio capture {}: {e}", path.display()),
                ));
            }
        }
        return match CaptureWriter::create(&path) {
            Ok(writer) => Ok((path, guard, writer)),
            Err(e) => {
                inner.write_errors.fetch_add(1, Ordering::Relaxed);
                let _ = fs::remove_file(&path);
                Err(write_error(&path, e))
            }
        };
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "cannot find a free audio capture file name in {}",
            inner.cfg.directory.display()
        ),
    ))
}

/// One session's capture. Dropping it (or [`finish`](Self::finish)) closes
/// the file; either way the WAV on disk is valid.
pub struct SessionCapture {
    path: PathBuf,
    shared: Arc<Shared>,
    /// For the server-wide drop counter.
    store: Arc<Inner>,
}

/// The queue between one session and its writer thread.
struct Shared {
    /// Std mutex: pushes and pops are O(1) and nothing blocks while holding it.
    queue: Mutex<Queue>,
    /// Wakes the writer when a chunk arrives or the capture closes.
    ready: Condvar,
    /// `queue_max_chunks`: when this many chunks wait, the oldest is dropped.
    capacity: usize,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<f32>>,
    /// Set once by the session side; the writer drains what is left and stops.
    closed: bool,
    /// Set by the writer when the file can take no more; pushes are discarded.
    stopped: bool,
    /// Chunks this session lost to a full queue.
    dropped: u64,
    /// Test hook: the writer takes nothing until the capture closes.
    #[cfg(test)]
    paused: bool,
}

impl Queue {
    fn writer_may_take(&self) -> bool {
        #[cfg(test)]
        if self.paused && !self.closed {
            return false;
        }
        self.closed || !self.chunks.is_empty()
    }
}

impl SessionCapture {
    /// The WAV being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues 16 kHz mono samples for the writer. Never waits for disk: when
    /// `queue_max_chunks` chunks are already waiting, the oldest is dropped
    /// and counted (a warning is logged for the first drop of a session, and
    /// a summary when it closes).
    pub fn push(&self, samples: &[f32]) {
        if samples.is_empty() {
            return;
        }
        let chunk = samples.to_vec();
        let first_drop = {
            let mut q = lock(&self.shared.queue);
            if q.closed || q.stopped {
                return;
            }
            let mut first_drop = false;
            if q.chunks.len() >= self.shared.capacity {
                q.chunks.pop_front();
                q.dropped += 1;
                first_drop = q.dropped == 1;
                self.store.dropped_chunks.fetch_add(1, Ordering::Relaxed);
            }
            q.chunks.push_back(chunk);
            first_drop
        };
        self.shared.ready.notify_one();
        if first_drop {
            tracing::warn!(
                path = %self.path.display(),
                queue_max_chunks = self.shared.capacity,
                "audio capture queue full: dropping the oldest audio (a summary follows when the session ends)"
            );
        }
    }

    /// Closes the capture: the writer drains what is queued, finalises the
    /// header, then runs retention. Returns at once.
    pub fn finish(self) {
        drop(self);
    }

    /// Test hook: while paused the writer takes nothing from the queue.
    #[cfg(test)]
    fn set_paused(&self, paused: bool) {
        lock(&self.shared.queue).paused = paused;
        self.shared.ready.notify_one();
    }
}

impl Drop for SessionCapture {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_one();
    }
}

// === impl Job (the writer thread) ===

/// Everything one writer thread owns.
struct Job {
    store: Arc<Inner>,
    shared: Arc<Shared>,
    session_id: String,
    path: PathBuf,
    guard: Guard,
}

impl Job {
    fn run(self, mut writer: CaptureWriter) {
        let store = &self.store;
        let mut state = Appended::Open;
        let dropped = loop {
            let (batch, closed, dropped) = {
                let mut q = lock(&self.shared.queue);
                while !q.writer_may_take() {
                    q = self
                        .shared
                        .ready
                        .wait(q)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                (std::mem::take(&mut q.chunks), q.closed, q.dropped)
            };
            if state == Appended::Open && !batch.is_empty() {
                state = self.append(&mut writer, batch);
                if state != Appended::Open {
                    let mut q = lock(&self.shared.queue);
                    q.stopped = true;
                    q.chunks.clear();
                }
            }
            // Pushes stop once `closed` is set, so this batch was the last.
            if closed {
                break dropped;
            }
        };
        let samples = writer.samples();
        match writer.finish() {
            Ok(()) => {
                store.files_written.fetch_add(1, Ordering::Relaxed);
            }
            // After a failed append this is expected, and already counted.
            Err(e) if state != Appended::Failed => {
                store.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(session_id = %self.session_id, error = %write_error(&self.path, e), "audio capture could not be finalised");
            }
            Err(_) => {}
        }
        if dropped > 0 {
            tracing::warn!(
                session_id = %self.session_id,
                dropped_chunks = dropped,
                queue_max_chunks = self.shared.capacity,
                "audio capture lost chunks to a full queue"
            );
        }
        tracing::debug!(
            session_id = %self.session_id,
            path = %self.path.display(),
            seconds = crate::audio::seconds(samples as usize),
            "audio capture closed"
        );
        self.guard.unprotect();
        if store.cfg.retention.is_limited() {
            if let Err(e) = store.apply_retention() {
                tracing::warn!(error = %e, "audio capture retention failed");
            }
        }
        // `self.guard` drops here: `wait_idle` sees this writer end only
        // after retention.
    }

    /// Appends one batch as a single append (one header checkpoint per batch
    /// rather than per chunk).
    fn append(&self, writer: &mut CaptureWriter, batch: VecDeque<Vec<f32>>) -> Appended {
        let store = &self.store;
        let mut samples: Vec<f32> = batch.into_iter().flatten().collect();
        let room = store.max_file_samples.saturating_sub(writer.samples());
        let full = samples.len() as u64 > room;
        if full {
            samples.truncate(room as usize);
        }
        if let Err(e) = writer.append(&samples) {
            store.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(session_id = %self.session_id, error = %write_error(&self.path, e), "audio capture stopped: write failed");
            return Appended::Failed;
        }
        store
            .bytes_written
            .fetch_add(samples.len() as u64 * SAMPLE_BYTES, Ordering::Relaxed);
        if full {
            store.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session_id = %self.session_id,
                path = %self.path.display(),
                "audio capture stopped: the WAV size limit (4 GiB) is reached; the rest of the session is not captured"
            );
            return Appended::Full;
        }
        Appended::Open
    }
}

/// Whether a capture's file takes more audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Appended {
    Open,
    /// At the WAV size limit; the file itself is fine.
    Full,
    /// An append failed; the header still describes what was written before.
    Failed,
}

/// Keeps a capture's name protected from retention and its writer counted
/// for `wait_idle`; dropping it (even by a panic) releases both.
struct Guard {
    store: Arc<Inner>,
    name: OsString,
}

impl Guard {
    fn register(store: Arc<Inner>, name: OsString) -> Self {
        {
            let mut w = lock(&store.writers);
            w.open.insert(name.clone());
            w.running += 1;
        }
        Self { store, name }
    }

    /// The file is complete: retention may remove it from now on.
    fn unprotect(&self) {
        lock(&self.store.writers).open.remove(&self.name);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        {
            let mut w = lock(&self.store.writers);
            w.open.remove(&self.name);
            w.running = w.running.saturating_sub(1);
        }
        self.store.idle.notify_all();
    }
}

/// An [`AudioError`] from writing, as an `io::Error` that says so (the WAV
/// error's own text is worded for reading).
fn write_error(path: &Path, e: AudioError) -> io::Error {
    let (kind, cause) = match e {
        AudioError::Wav {
            source: hound::Error::IoError(io),
            ..
        } => (io.kind(), io.to_string()),
        AudioError::Wav { source, .. } => (io::ErrorKind::Other, source.to_string()),
        AudioError::Io { source, .. } => (source.kind(), source.to_string()),
        other => (io::ErrorKind::Other, other.to_string()),
    };
    io::Error::new(
        kind,
        format!("cannot write audio capture {}: {cause}", path.display()),
    )
}

/// Locks, tolerating poison: every critical section here leaves the data
/// consistent, so a panicked holder is no reason to stop capturing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
