//! Declarations of `shim.h`, the C interface over CTranslate2's Whisper
//! (compiled by build.rs against the provisioned CTranslate2 headers).

use std::ffi::{c_char, c_int};

#[repr(C)]
pub struct Model {
    _private: [u8; 0],
}

#[repr(C)]
pub struct Replica {
    _private: [u8; 0],
}

#[repr(C)]
pub struct Encoded {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Info {
    pub n_mels: usize,
    pub num_languages: usize,
    pub multilingual: c_int,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub beam_size: usize,
    pub patience: f32,
    pub length_penalty: f32,
    pub repetition_penalty: f32,
    pub no_repeat_ngram_size: usize,
    pub max_length: usize,
    pub sampling_topk: usize,
    pub sampling_temperature: f32,
    pub max_initial_timestamp_index: usize,
    pub suppress_blank: c_int,
}

#[repr(C)]
#[derive(Debug)]
pub struct GenResult {
    pub ids: *mut usize,
    pub n_ids: usize,
    pub score: f32,
    pub no_speech_prob: f32,
}

/// `stt_ct2_alignment`: one row's token start positions and probabilities.
#[repr(C)]
#[derive(Debug)]
pub struct Alignment {
    pub starts: *mut std::ffi::c_longlong,
    pub n_starts: usize,
    pub probs: *mut f32,
    pub n_probs: usize,
}

impl Default for Alignment {
    fn default() -> Self {
        Self {
            starts: std::ptr::null_mut(),
            n_starts: 0,
            probs: std::ptr::null_mut(),
            n_probs: 0,
        }
    }
}

impl Default for GenResult {
    fn default() -> Self {
        Self {
            ids: std::ptr::null_mut(),
            n_ids: 0,
            score: 0.0,
            no_speech_prob: 0.0,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Language {
    pub token: [c_char; 16],
    pub probability: f32,
}

extern "C" {
    pub fn stt_ct2_string_free(s: *mut c_char);
    pub fn stt_ct2_model_load(
        dir: *const c_char,
        compute_type: *const c_char,
        out: *mut *mut Model,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn stt_ct2_model_free(model: *mut Model);
    pub fn stt_ct2_model_info(model: *const Model, out: *mut Info, err: *mut *mut c_char) -> c_int;
    pub fn stt_ct2_model_compute_type(model: *const Model, out: *mut c_char, cap: usize) -> c_int;
    pub fn stt_ct2_replica_new(
        model: *const Model,
        threads: usize,
        out: *mut *mut Replica,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn stt_ct2_replica_free(replica: *mut Replica);
    pub fn stt_ct2_encode(
        replica: *mut Replica,
        mel: *const f32,
        batch: usize,
        n_mels: usize,
        n_frames: usize,
        out: *mut *mut Encoded,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn stt_ct2_encoded_free(encoded: *mut Encoded);
    pub fn stt_ct2_detect_language(
        replica: *mut Replica,
        encoded: *const Encoded,
        out: *mut Language,
        cap: usize,
        n_out: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn stt_ct2_generate(
        replica: *mut Replica,
        encoded: *const Encoded,
        prompts: *const usize,
        prompt_len: usize,
        options: *const Options,
        results: *mut GenResult,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn stt_ct2_results_free(results: *mut GenResult, batch: usize);
    pub fn stt_ct2_align(
        replica: *mut Replica,
        encoded: *const Encoded,
        start_sequence: *const usize,
        start_len: usize,
        tokens: *const usize,
        counts: *const usize,
        num_frames: *const usize,
        median_filter_width: usize,
        out: *mut Alignment,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn stt_ct2_alignments_free(out: *mut Alignment, batch: usize);
}
