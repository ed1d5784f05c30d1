//! Shared test helpers: the built binary, provisioned model paths, speech
//! fixtures made with espeak-ng and sox, and word-level comparison.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `stt` binary cargo built for this test run.
pub fn stt() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stt"));
    cmd.env("GGML_NO_BACKTRACE", "1");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// The longest any one `stt` command in a test may run.
pub const COMMAND_LIMIT_SEC: u32 = 600;

/// Runs `stt` with `args`, returning the output. A command still running
/// after [`COMMAND_LIMIT_SEC`] is killed (coreutils `timeout`) and fails
/// the test instead of hanging the suite.
pub fn run_stt(args: &[&str]) -> Output {
    run_stt_env(args, &[])
}

/// [`run_stt`] with extra environment variables.
pub fn run_stt_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new("timeout")
        .args(["--kill-after=10", &COMMAND_LIMIT_SEC.to_string()])
        .arg(env!("CARGO_BIN_EXE_stt"))
        .args(args)
        .envs(env.iter().copied())
        .env("GGML_NO_BACKTRACE", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running the stt binary under timeout");
    assert_ne!(
        out.status.code(),
        Some(124),
        "stt {args:?} ran past {COMMAND_LIMIT_SEC} s"
    );
    out
}

/// Provisioned models directory (scripts/setup.sh fills it).
pub fn models_dir() -> PathBuf {
    stt::models::store::models_dir()
}

/// The provisioned CTranslate2 tiny.en: the default engine's model.
pub fn tiny_en_ct2() -> PathBuf {
    ct2_model("tiny.en")
}

/// The provisioned CTranslate2 multilingual base.
pub fn base_ct2() -> PathBuf {
    ct2_model("base")
}

fn ct2_model(name: &str) -> PathBuf {
    let p = stt::models::store::ct2_dir(name);
    assert!(
        p.join("model.bin").is_file(),
        "{} missing: run scripts/setup.sh first",
        p.display()
    );
    p
}

/// The provisioned ggml tiny.en (whisper.cpp).
pub fn tiny_en() -> PathBuf {
    let p = models_dir().join("ggml-tiny.en.bin");
    assert!(
        p.is_file(),
        "{} missing: run scripts/setup.sh first",
        p.display()
    );
    p
}

/// A repository asset.
pub fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(rel)
}

/// A scratch directory for this test process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// Speaks `text` with espeak-ng (language voice `voice`, male variant 3 at
/// 140 words a minute, which tiny.en hears far better than the default) into
/// a WAV at espeak's own rate (22050 Hz), cached by name.
pub fn speak(name: &str, voice: &str, text: &str) -> PathBuf {
    let out = scratch().join(format!("{name}.wav"));
    if !out.exists() {
        let status = Command::new("espeak-ng")
            .args(["-v", &format!("{voice}+m3"), "-s", "140", "-w"])
            .arg(&out)
            .arg(text)
            .status()
            .expect("espeak-ng must be installed (scripts/setup.sh installs it)");
        assert!(status.success(), "espeak-ng failed");
    }
    out
}

/// Converts `input` with sox to `rate` Hz and `channels` channels
/// (an independent resampler, so our own is tested against another).
pub fn sox_convert(input: &Path, name: &str, rate: u32, channels: u32) -> PathBuf {
    let out = scratch().join(format!("{name}.wav"));
    let status = Command::new("sox")
        .arg(input)
        .args([
            "-r",
            &rate.to_string(),
            "-c",
            &channels.to_string(),
            "-b",
            "16",
        ])
        .arg(&out)
        .status()
        .expect("sox must be installed (scripts/setup.sh installs it)");
    assert!(status.success(), "sox failed");
    out
}

/// Lower-case words without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Fraction of `expected`'s words found in `got` (order-free, tolerant of
/// tiny.en's usual slips such as "speech-to-text" vs "speech to text").
pub fn word_recall(expected: &str, got: &str) -> f64 {
    let got_words = words(&got.replace('-', " "));
    let exp = words(&expected.replace('-', " "));
    let hits = exp.iter().filter(|w| got_words.contains(w)).count();
    hits as f64 / exp.len().max(1) as f64
}

/// Asserts that `got` holds at least `min` of `expected`'s words.
pub fn assert_words(expected: &str, got: &str, min: f64) {
    let r = word_recall(expected, got);
    assert!(
        r >= min,
        "recall {r:.2} < {min}: expected {expected:?}, got {got:?}"
    );
}
