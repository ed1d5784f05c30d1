//! # stt — streaming speech-to-text
//!
//! Audio flows one way: `grpc (transport) → session (owns the stream) → vad →
//! scheduler → engine (whisper threads) → results back through session →
//! grpc`. Every module is named for the stage it holds.
//!
//! - [`audio`]: PCM16 ↔ f32, resampling to 16 kHz, WAV read/write.
//! - [`config`]: the YAML files, their defaults and validation.
//! - [`engine`]: Whisper decoding behind one seam — CTranslate2 (the
//!   default CPU engine) or whisper.cpp — as a pool of worker threads.
//! - [`vad`]: Silero VAD and endpointing.
//! - [`server`]: `stt serve` — transport, sessions, scheduler, HTTP plane.
//! - [`client`]: the gRPC clients (`stt file`, `stt batch`) and the
//!   library calls behind them ([`client::stream_audio`]).
//! - [`bench`]: the gRPC load tester (`stt bench`), on top of [`client`].
//! - [`dashboard`]: the terminal dashboard (`stt dashboard`) over the
//!   HTTP control plane.
//! - [`models`]: model provisioning (`stt models`) and where files live.
//! - [`transcribe`]: offline transcription (`stt transcribe`).
//! - [`auth`]: API keys (`stt keys`) and how a server checks them.
//! - [`cli`], [`telemetry`], [`env`], [`error`]: the binary's glue;
//!   [`fault`]: test-only fault injection (feature `fault-injection`).
//!
//! Tests only: `fuzz`, property-based fuzzing of every input reader.

pub mod audio;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod env;
pub mod error;
pub mod fault;
pub mod models;
pub mod server;
pub mod signal;
pub mod telemetry;
pub mod transcribe;
pub mod vad;

#[cfg(test)]
mod fuzz;

/// Generated protobuf and gRPC code for `proto/stt.proto`.
pub mod pb {
    tonic::include_proto!("stt");

    /// Encoded descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/stt_descriptor.bin"));
}

pub use error::{ErrorCode, SttError};

/// A mistake in how the program was invoked or configured (exit code 2),
/// as opposed to a failure while running (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
