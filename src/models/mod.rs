//! `stt models`: list, import, verify and fetch Whisper models.

pub mod ct2;
pub mod ggml;
pub mod mel;
pub mod vocab;
