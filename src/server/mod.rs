//! The server's components. Only transport modules (added with the gRPC
//! server) import tonic or axum types; the engine sees `&[f32]` and
//! `DecodeParams`, the VAD sees samples.

pub mod engine;
pub mod vad;
