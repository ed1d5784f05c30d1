//! `stt mic` end to end on a machine without a sound card: ALSA captures from
//! a recording instead of a microphone.
//!
//! A generated ALSA config (pointed at by `ALSA_CONFIG_PATH`; it includes the
//! system's `alsa.conf` first) defines PCM `sttmic`: a `plug` fixed to S16_LE,
//! 16 kHz, mono over a `file` PCM whose capture side reads raw samples from
//! `infile`, with `null` as the slave. `null` has no clock (it hands out
//! frames as fast as they are asked for), so `infile` is a FIFO and the test
//! paces the audio itself: one 100 ms block every 100 ms, exactly one period
//! of the stream (`stt mic` asks for a period of one `--chunk-ms`), so every
//! `read()` ALSA makes is a whole block and capture waits for the next block
//! as it would for a real microphone. The real `stt mic` binary captures it
//! through cpal, streams to a real in-process server, and is stopped with
//! SIGINT like a person pressing Ctrl-C.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::server::TestServer;

/// Sentences tiny.en hears reliably in espeak's voice (the streaming tests use them too).
const SPEECH: &str =
    "Good morning everyone, let us begin the meeting. Please call me back tomorrow afternoon.";
/// The system ALSA configuration our generated one builds on.
const SYSTEM_ALSA_CONF: &str = "/usr/share/alsa/alsa.conf";
/// 100 ms of S16_LE mono at 16 kHz: one chunk, one ALSA period, one FIFO
/// write (under PIPE_BUF, so it is atomic and never read in halves).
const BLOCK_BYTES: usize = 3200;
const BLOCK: Duration = Duration::from_millis(100);

/// A scratch directory with an ALSA config whose PCM `sttmic` captures from
/// `infile` (raw S16_LE, 16 kHz, mono).
struct AlsaFileDevice {
    /// Holds the config; removed on drop.
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl AlsaFileDevice {
    fn new(infile: &Path) -> Self {
        assert!(
            Path::new(SYSTEM_ALSA_CONF).is_file(),
            "{SYSTEM_ALSA_CONF} missing: install libasound2 (scripts/setup.sh)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("asound.conf");
        let text = format!(
            r#"<{SYSTEM_ALSA_CONF}>
pcm.sttmic {{
    type plug
    slave {{
        pcm "sttmic_raw"
        format S16_LE
        rate 16000
        channels 1
    }}
    hint.description "stt test microphone (raw file)"
}}
pcm.sttmic_raw {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{}"
    format "raw"
    hint.show off
}}
"#,
            infile.display()
        );
        fs::write(&config, text).expect("writing the ALSA config");
        Self { _dir: dir, config }
    }

    fn stt(&self) -> Command {
        let mut cmd = stt();
        cmd.env("ALSA_CONFIG_PATH", &self.config);
        cmd
    }
}

/// `input` as raw S16_LE 16 kHz mono, converted by sox.
fn raw_16k(input: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new("sox")
        .arg(input)
        .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"])
        .args(["-t", "raw"])
        .arg(out)
        .status()
        .expect("sox must be installed (scripts/setup.sh installs it)");
    assert!(status.success(), "sox failed");
    fs::read(out).expect("reading raw audio")
}

/// Plays `speech` into a FIFO at real time: 0.3 s of silence, the speech,
/// then silence until stopped (capture must never wait on a silent pipe, or
/// the device could not be closed). Reports when the speech has been written.
struct Player {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    speech_done: mpsc::Receiver<Instant>,
}

impl Player {
    /// Opens the FIFO read-write, so opening it never blocks and the pipe
    /// stays open while `stt` opens and closes the device.
    fn open(fifo: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(fifo)
            .expect("opening the FIFO")
    }

    fn start(mut pipe: File, speech: Vec<u8>, go: mpsc::Receiver<()>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, speech_done) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Wait until `stt mic` listens: earlier blocks would queue up in
            // the pipe and arrive in a burst.
            if go.recv().is_err() {
                return;
            }
            let mut audio = vec![0u8; 3 * BLOCK_BYTES];
            audio.extend_from_slice(&speech);
            audio.resize(audio.len().div_ceil(BLOCK_BYTES) * BLOCK_BYTES, 0);
            let speech_blocks = audio.len() / BLOCK_BYTES;
            let silence = [0u8; BLOCK_BYTES];
            let start = Instant::now();
            for i in 0.. {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let block = audio
                    .get(i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES)
                    .unwrap_or(&silence);
                if pipe.write_all(block).is_err() {
                    return;
                }
                if i + 1 == speech_blocks {
                    let _ = done_tx.send(Instant::now());
                }
                let next = start + BLOCK * (i as u32 + 1);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Self {
            stop,
            thread: Some(thread),
            speech_done,
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("running mkfifo");
    assert!(status.success(), "mkfifo failed");
}

/// Waits up to `limit` for `child` to exit, killing it on timeout.
fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for stt mic") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("stt mic did not exit within {limit:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stt_mic_captures_an_alsa_device_and_flushes_the_final_on_ctrl_c() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let speech = raw_16k(
        &speak("mic_speech", "en-us", SPEECH),
        &scratch.path().join("speech.raw"),
    );
    let fifo = scratch.path().join("mic.fifo");
    mkfifo(&fifo);
    let device = AlsaFileDevice::new(&fifo);
    let pipe = Player::open(&fifo);
    let (go_tx, go_rx) = mpsc::channel();
    let player = Player::start(pipe, speech, go_rx);
    let server = TestServer::start(|_| {});

    let mut child = device
        .stt()
        .args(["mic", "--server", &server.addr.to_string()])
        .args(["--device", "sttmic", "--sample-rate", "16000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting stt mic");
    let mut stdout = child.stdout.take().expect("stdout");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let stderr = child.stderr.take().expect("stderr");
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        let mut go = Some(go_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                if let Some(go) = go.take() {
                    let _ = go.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });

    // The speech lasts about 6 s; then 2 s of silence, then Ctrl-C.
    let done = match player.speech_done.recv_timeout(Duration::from_secs(60)) {
        Ok(done) => done,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "the speech was never played (stt mic did not start listening?): {}",
                err_thread.join().unwrap_or_default()
            )
        }
    };
    std::thread::sleep((done + Duration::from_secs(2)).saturating_duration_since(Instant::now()));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -INT failed");
    let exit = wait_with_timeout(&mut child, Duration::from_secs(30));
    drop(player);
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();

    assert!(
        exit.success(),
        "exit {exit:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("listening on `sttmic` (1 ch, 16000 Hz, i16)"),
        "{stderr}"
    );
    assert!(stderr.contains("stopping"), "{stderr}");
    let finals: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert!(!finals.is_empty(), "no final printed:\n{stdout}\n{stderr}");
    assert_words(SPEECH, &finals.join(" "), 0.8);
}

#[test]
fn stt_mic_lists_devices_including_an_alsa_file_device() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let raw = scratch.path().join("silence.raw");
    fs::write(&raw, vec![0u8; 16_000]).expect("writing raw audio");
    let device = AlsaFileDevice::new(&raw);
    let out = device
        .stt()
        .args(["mic", "--list-devices"])
        .output()
        .expect("running stt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("sttmic"))
        .unwrap_or_else(|| panic!("sttmic not listed:\n{stdout}"));
    assert!(line.contains("stt test microphone"), "{line}");
    assert!(line.contains(" Hz"), "{line}");
    assert!(!stdout.contains("sttmic_raw"), "{stdout}");

    // The machine's own ALSA setup, whatever it has (here: no sound card).
    let out = run_stt(&["mic", "--list-devices"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("input devices") || stdout.starts_with("no input devices"),
        "{stdout}"
    );
}

#[test]
fn stt_mic_with_an_unknown_device_lists_the_devices_there_are() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let device = AlsaFileDevice::new(&scratch.path().join("never-opened.raw"));
    let out = device
        .stt()
        .args([
            "mic",
            "--server",
            "127.0.0.1:1",
            "--device",
            "no-such-device",
        ])
        .output()
        .expect("running stt");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no input device matches `no-such-device`"),
        "{stderr}"
    );
    assert!(stderr.contains("sttmic"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
