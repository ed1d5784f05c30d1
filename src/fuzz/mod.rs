//! Property-based fuzzing on stable Rust (proptest): everything a client, a
//! file or an operator hands the server, thrown at the code that reads it.
//! Every property holds for any input — the code answers or refuses with
//! a coded error, never panics — and checks what an answer promises.
//!
//! The test command runs each target with a fixed seed and a few hundred
//! cases. A long run takes `STT_FUZZ_CASES` (and `STT_FUZZ_SEED` for
//! another sequence):
//!
//! ```text
//! STT_FUZZ_CASES=100000 cargo test --release --lib fuzz:: -- --test-threads=1
//! ```
//!
//! A failure proptest finds is shrunk and saved under
//! `proptest-regressions/`; commit that file and the case runs first in
//! every later run.
//!
//! - [`audio`]: PCM chunks, resampling, WAV and compressed file readers.
//! - [`requests`]: CreateSession from the proto and the WebSocket start
//!   frame, through to the session's options.
//! - [`config`]: the server, model, client and keys YAML loaders.
//! - [`models`]: the CTranslate2 `model.bin` and ggml readers.

mod audio;
mod config;
mod models;
mod requests;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// The seed every target runs with unless `STT_FUZZ_SEED` names another:
/// the test command sees the same cases on every machine.
const SEED: u64 = 0x5717_f022;

/// Cases per target: `STT_FUZZ_CASES`, else `default` (each target's
/// share of the test command's time).
fn fuzz_config(default: u32) -> Config {
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    Config {
        cases: number("STT_FUZZ_CASES").map_or(default, |n| n.min(u64::from(u32::MAX)) as u32),
        rng_seed: RngSeed::Fixed(number("STT_FUZZ_SEED").unwrap_or(SEED)),
        // Shrinking a failure can take long; a found case is what matters.
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

/// A valid input with a few bytes changed and maybe cut short: how a
/// truncated download or a flipped bit looks, and the inputs most likely
/// to get past a reader's first checks.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    (
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        prop_oneof![3 => Just(None), 1 => (0..len).prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(move |(flips, cut, tail)| {
            let mut bytes = valid.clone();
            for (at, b) in flips {
                if let Some(x) = bytes.get_mut(at) {
                    *x = b;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes.extend(tail);
            bytes
        })
}

/// A little-endian u32 or i32 field overwritten with a value readers must
/// bound: 0, -1, huge, or anything.
fn hostile_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(i32::MAX as u32),
        Just(i32::MIN as u32),
        any::<u32>()
    ]
}

/// `valid` with one aligned 4-byte word replaced by a hostile value: sizes
/// and counts are where readers over-allocate or overflow.
fn word_patched(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let words = (valid.len() / 4).max(1);
    (0..words, hostile_u32()).prop_map(move |(w, v)| {
        let mut bytes = valid.clone();
        if let Some(slot) = bytes.get_mut(w * 4..w * 4 + 4) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        bytes
    })
}
