//! The single end-to-end test binary: real models, real audio, the real
//! `stt` binary. Needs the provisioned models (scripts/setup.sh, which the
//! README's test command runs first).

mod harness;

mod admin;
mod capture;
mod cli;
mod compat;
mod dashboard;
mod engine;
mod errors;
mod http;
mod models;
mod serve;
mod server;
mod streaming;
mod transcribe;
mod vad;
