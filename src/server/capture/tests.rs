//! Capture: files, queue drops, names and retention.

use std::time::UNIX_EPOCH;

use super::naming::{sanitize_id, utc_stamp};
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
        CaptureStore::with_file_limit(config(dir.path(), 64, Retention::default()), 1000).unwrap();
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
