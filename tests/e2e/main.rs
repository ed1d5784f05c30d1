//! The single end-to-end test binary: real models, real audio, the real
//! `stt` binary. Needs the provisioned models (scripts/setup.sh, which the
//! README's test command runs first).

mod harness;
mod process;

mod access;
mod admin;
mod bad_models;
mod bench;
mod browser;
mod capture;
mod cli;
mod compat;
mod dashboard;
mod density;
mod engine;
mod errors;
#[cfg(feature = "fault-injection")]
mod faults;
mod http;
mod keys;
mod lifecycle;
mod load_faults;
mod mic;
mod models;
mod multilingual;
mod rest;
mod serve;
mod server;
mod signed;
mod streaming;
mod tls;
mod transcribe;
mod vad;
mod words;
mod ws;
