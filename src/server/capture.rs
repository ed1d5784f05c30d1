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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::audio::wav::CaptureWriter;
use crate::audio::AudioError;
use crate::config::server::StorageSection;

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

// === impl Inner (retention) ===

/// A `*.wav` file in the capture directory.
struct Entry {
    name: OsString,
    bytes: u64,
    modified: SystemTime,
}

impl Inner {
    fn apply_retention(&self) -> io::Result<RetentionReport> {
        let _serial = lock(&self.retention_lock);
        let limits = self.cfg.retention;
        let dir = &self.cfg.directory;
        let mut entries = list_wavs(dir)?;
        // Taken after listing: a capture opened since is not in the listing,
        // and one listed was registered before its file existed.
        let open = lock(&self.writers).open.clone();
        entries.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.name.cmp(&b.name)));
        let now = SystemTime::now();
        let mut files = entries.len() as u64;
        let mut bytes: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut report = RetentionReport::default();
        for e in &entries {
            if open.contains(&e.name) {
                continue;
            }
            let expired = limits
                .max_age
                .is_some_and(|max| now.duration_since(e.modified).is_ok_and(|age| age > max));
            let over = limits.max_files.is_some_and(|max| files > max)
                || limits.max_bytes.is_some_and(|max| bytes > max);
            if !(expired || over) {
                continue;
            }
            let path = dir.join(&e.name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed_files += 1;
                    report.removed_bytes += e.bytes;
                }
                // Someone else removed it: no longer ours to count.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    report.failed_files += 1;
                    self.retention_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), error = %err, "audio capture retention could not remove a file");
                    continue;
                }
            }
            files -= 1;
            bytes -= e.bytes;
        }
        report.kept_files = files as usize;
        report.kept_bytes = bytes;
        self.files_removed
            .fetch_add(report.removed_files as u64, Ordering::Relaxed);
        if report.removed_files > 0 {
            tracing::info!(
                removed_files = report.removed_files,
                removed_bytes = report.removed_bytes,
                kept_files = report.kept_files,
                kept_bytes = report.kept_bytes,
                "audio capture retention"
            );
        }
        Ok(report)
    }
}

/// Regular `*.wav` files directly in `dir`; symlinks, directories and other
/// names are not ours and are left alone.
fn list_wavs(dir: &Path) -> io::Result<Vec<Entry>> {
    let read = fs::read_dir(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot list the audio capture directory {}: {e}",
                dir.display()
            ),
        )
    })?;
    let mut out = Vec::new();
    for entry in read {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if Path::new(&name).extension().is_none_or(|ext| ext != "wav") {
            continue;
        }
        // Not following links: a link's size is not disk we use.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Entry {
            name,
            bytes: meta.len(),
            // Unknown times sort as new and never expire: unsure means keep.
            modified: meta.modified().unwrap_or_else(|_| SystemTime::now()),
        });
    }
    Ok(out)
}

// === helpers ===

/// `session_id` as a file-name part: only `[A-Za-z0-9._-]` (anything else
/// becomes `_`), at most [`MAX_ID_CHARS`], never empty. It always follows a
/// timestamp prefix, so it can never form `.`, `..` or a hidden file.
fn sanitize_id(session_id: &str) -> String {
    let id: String = session_id
        .chars()
        .take(MAX_ID_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.is_empty() {
        "session".into()
    } else {
        id
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC), so names sort by start time. Hand-written
/// (Hinnant's `civil_from_days`) rather than adding a date crate for one
/// file-name part.
fn utc_stamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav::read_wav;

    /// Long enough never to matter on a healthy machine; only a hang hits it.
    const WAIT: Duration = Duration::from_secs(20);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn config(dir: &Path, queue_max_chunks: usize, retention: Retention) -> CaptureConfig {
        CaptureConfig {
            directory: dir.to_path_buf(),
            queue_max_chunks,
            retention,
        }
    }

    fn store(dir: &Path, retention: Retention) -> CaptureStore {
        CaptureStore::new(config(dir, 64, retention)).unwrap()
    }

    /// A chunk whose samples all hold `value`, so the file shows which
    /// chunks survived.
    fn chunk(value: f32, len: usize) -> Vec<f32> {
        vec![value; len]
    }

    fn finish_and_wait(store: &CaptureStore, capture: SessionCapture) -> PathBuf {
        let path = capture.path().to_path_buf();
        capture.finish();
        assert!(store.wait_idle(WAIT), "writer did not finish");
        path
    }

    /// A finished capture stand-in of `bytes` bytes, last modified `age` ago.
    fn old_wav(dir: &Path, name: &str, bytes: usize, age: Duration) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, vec![0u8; bytes]).unwrap();
        set_age(&path, age);
        path
    }

    fn set_age(path: &Path, age: Duration) {
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn written_wav_has_the_pushed_duration() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), Retention::default());
        let capture = store.open("call-1").unwrap();
        for _ in 0..10 {
            capture.push(&chunk(0.25, 1600));
        }
        let path = finish_and_wait(&store, capture);
        let clip = read_wav(&path).unwrap();
        assert_eq!(clip.samples.len(), 16_000);
        assert!((clip.samples[0] - 0.25).abs() < 1e-3);
        assert_eq!(store.files_written(), 1);
        assert_eq!(store.bytes_written(), 32_000);
        assert_eq!((store.dropped_chunks(), store.write_errors()), (0, 0));
        assert_eq!(store.open_captures(), 0);
    }

    /// What a SIGKILL would leave: the file read while its capture is still
    /// open (nothing finalised) holds everything appended so far.
    #[test]
    fn file_is_a_valid_wav_while_the_capture_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), Retention::default());
        let capture = store.open("live").unwrap();
        capture.push(&chunk(0.5, 8000));
        let deadline = std::time::Instant::now() + WAIT;
        while store.bytes_written() < 16_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "writer never appended"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let clip = read_wav(capture.path()).unwrap();
        assert_eq!(clip.samples.len(), 8000);
        assert_eq!(store.files_written(), 0);
        finish_and_wait(&store, capture);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_chunks_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = CaptureStore::new(config(dir.path(), 4, Retention::default())).unwrap();
        let capture = store.open("slow-disk").unwrap();
        // Nothing has been queued yet, so the paused writer has taken nothing.
        capture.set_paused(true);
        for i in 0..10 {
            capture.push(&chunk(i as f32 / 10.0, 100));
        }
        assert_eq!(store.dropped_chunks(), 6);
        // Closing overrides the pause: the writer drains the 4 survivors.
        let path = finish_and_wait(&store, capture);
        let clip = read_wav(&path).unwrap();
        let firsts: Vec<f32> = clip.samples.chunks(100).map(|c| c[0]).collect();
        let want = [0.6, 0.7, 0.8, 0.9];
        assert_eq!(firsts.len(), want.len());
        for (got, want) in firsts.iter().zip(want) {
            assert!((got - want).abs() < 1e-3, "{firsts:?}");
        }
        assert_eq!(store.dropped_chunks(), 6);
    }

    #[test]
    fn dropping_without_finish_leaves_a_valid_wav() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), Retention::default());
        let path = {
            let capture = store.open("aborted").unwrap();
            capture.push(&chunk(0.1, 4000));
            capture.push(&chunk(0.1, 4000));
            capture.path().to_path_buf()
            // The session task "panics" here: the capture is only dropped.
        };
        assert!(store.wait_idle(WAIT));
        assert_eq!(read_wav(&path).unwrap().samples.len(), 8000);
        assert_eq!(store.files_written(), 1);
    }

    #[test]
    fn hostile_session_ids_give_safe_unique_names_inside_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("captures");
        let store = store(&dir, Retention::default());
        let long = "x".repeat(10_000);
        let ids = [
            "../../etc/passwd",
            "/absolute/path",
            "a\0b",
            "..",
            ".",
            "",
            "back\\slash\\..\\..",
            "ünïcødé 🎤",
            "line\nbreak",
            long.as_str(),
            "same",
            "same",
        ];
        let mut paths = HashSet::new();
        for id in ids {
            let capture = store.open(id).unwrap();
            let path = capture.path().to_path_buf();
            assert_eq!(path.parent(), Some(dir.as_path()), "{id:?}");
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.ends_with(".wav"), "{name}");
            assert!(name.len() < 120, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
                "{name}"
            );
            assert!(!name.starts_with('.'), "{name}");
            assert!(paths.insert(path), "reused name for {id:?}");
            capture.finish();
        }
        assert!(store.wait_idle(WAIT));
        // Nothing escaped: the root holds only the capture directory.
        assert_eq!(names(root.path()), ["captures"]);
        assert_eq!(names(&dir).len(), ids.len());
        assert_eq!(sanitize_id("../a/b\0"), ".._a_b_");
        assert_eq!(sanitize_id(""), "session");
    }

    #[test]
    fn retention_by_files_removes_the_oldest_by_modified_time() {
        let dir = tempfile::tempdir().unwrap();
        // Names sort opposite to age, so only mtime can give the right order.
        old_wav(dir.path(), "a.wav", 10, HOUR);
        old_wav(dir.path(), "b.wav", 10, 2 * HOUR);
        old_wav(dir.path(), "c.wav", 10, 3 * HOUR);
        old_wav(dir.path(), "d.wav", 10, 4 * HOUR);
        old_wav(dir.path(), "notes.txt", 10, 9 * DAY);
        fs::create_dir(dir.path().join("sub.wav")).unwrap();
        let store = store(
            dir.path(),
            Retention {
                max_files: Some(2),
                ..Retention::default()
            },
        );
        let report = store.apply_retention().unwrap();
        assert_eq!(
            report,
            RetentionReport {
                removed_files: 2,
                removed_bytes: 20,
                kept_files: 2,
                kept_bytes: 20,
                failed_files: 0,
            }
        );
        assert_eq!(
            names(dir.path()),
            ["a.wav", "b.wav", "notes.txt", "sub.wav"]
        );
        assert_eq!(store.files_removed(), 2);
    }

    #[test]
    fn retention_by_bytes_removes_oldest_until_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["1.wav", "2.wav", "3.wav", "4.wav", "5.wav"]
            .iter()
            .enumerate()
        {
            old_wav(dir.path(), name, 100, (5 - i as u32) * HOUR);
        }
        let store = store(
            dir.path(),
            Retention {
                max_bytes: Some(250),
                ..Retention::default()
            },
        );
        let report = store.apply_retention().unwrap();
        assert_eq!((report.removed_files, report.removed_bytes), (3, 300));
        assert_eq!((report.kept_files, report.kept_bytes), (2, 200));
        assert_eq!(names(dir.path()), ["4.wav", "5.wav"]);
    }

    #[test]
    fn retention_by_age_removes_files_older_than_max_age() {
        let dir = tempfile::tempdir().unwrap();
        old_wav(dir.path(), "fresh.wav", 10, HOUR);
        old_wav(dir.path(), "stale.wav", 10, 3 * DAY);
        old_wav(dir.path(), "ancient.wav", 10, 10 * DAY);
        let store = store(
            dir.path(),
            Retention {
                max_age: Some(2 * DAY),
                ..Retention::default()
            },
        );
        let report = store.apply_retention().unwrap();
        assert_eq!(report.removed_files, 2);
        assert_eq!(names(dir.path()), ["fresh.wav"]);
    }

    #[test]
    fn open_captures_are_never_removed_and_retention_runs_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(
            dir.path(),
            Retention {
                max_files: Some(0),
                max_age: Some(DAY),
                ..Retention::default()
            },
        );
        old_wav(dir.path(), "done.wav", 10, 30 * DAY);
        let capture = store.open("still-talking").unwrap();
        // Older than anything, and over every limit: still kept while open.
        set_age(capture.path(), 60 * DAY);
        let report = store.apply_retention().unwrap();
        assert_eq!((report.removed_files, report.kept_files), (1, 1));
        assert!(capture.path().exists());
        // Closing runs retention, which may now remove it.
        let path = finish_and_wait(&store, capture);
        assert!(!path.exists());
        assert!(names(dir.path()).is_empty());
        assert_eq!(store.files_removed(), 2);
    }

    #[test]
    fn a_file_at_the_wav_size_limit_stops_and_counts_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            CaptureStore::with_file_limit(config(dir.path(), 64, Retention::default()), 1000)
                .unwrap();
        let capture = store.open("marathon").unwrap();
        capture.set_paused(true);
        for _ in 0..3 {
            capture.push(&chunk(0.2, 600));
        }
        let path = finish_and_wait(&store, capture);
        assert_eq!(read_wav(&path).unwrap().samples.len(), 1000);
        assert_eq!(store.write_errors(), 1);
        assert_eq!(store.bytes_written(), 2000);
        assert_eq!(store.files_written(), 1);
    }

    #[test]
    fn config_from_storage_maps_null_and_negative_limits_to_none() {
        let mut s = StorageSection::default();
        assert!(CaptureConfig::from_storage(&s).is_none());
        s.persist_audio = true;
        s.queue_max_chunks = 0;
        s.max_bytes = Some(-1);
        s.max_files = None;
        s.max_age_days = Some(-2.0);
        let c = CaptureConfig::from_storage(&s).unwrap();
        assert_eq!(c.queue_max_chunks, 1);
        assert_eq!(c.retention, Retention::default());
        s.max_bytes = Some(1 << 30);
        s.max_files = Some(100);
        s.max_age_days = Some(1.5);
        let c = CaptureConfig::from_storage(&s).unwrap();
        assert_eq!(
            c.retention,
            Retention {
                max_bytes: Some(1 << 30),
                max_files: Some(100),
                max_age: Some(Duration::from_secs(129_600)),
            }
        );
        s.max_age_days = Some(f64::NAN);
        assert_eq!(
            CaptureConfig::from_storage(&s).unwrap().retention.max_age,
            None
        );
    }

    #[test]
    fn new_names_the_directory_it_cannot_create() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let dir = file.join("audio");
        let err = match CaptureStore::new(config(&dir, 1, Retention::default())) {
            Ok(_) => panic!("a directory under a file was created"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains("storage.directory"), "{err}");
    }

    #[test]
    fn utc_stamp_formats_known_instants() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000.000Z");
        assert_eq!(at(951_782_400), "20000229T000000.000Z");
        assert_eq!(at(1_709_164_800), "20240229T000000.000Z");
        assert_eq!(at(4_102_444_799), "20991231T235959.000Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_millis(1_500)),
            "19700101T000001.500Z"
        );
    }
}
