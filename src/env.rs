//! Every environment variable stt reads, in one place.

/// Directory holding provisioned models (ggml files, Silero, ONNX Runtime).
pub const ENV_MODELS_DIR: &str = "STT_MODELS_DIR";
/// Path of the ONNX Runtime shared library (the name `ort` itself uses).
pub const ENV_ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// Set by the process: stops ggml from forking gdb on a failed assert, which
/// can deadlock when several threads abort together.
pub const ENV_GGML_NO_BACKTRACE: &str = "GGML_NO_BACKTRACE";
/// CTranslate2's instruction set for its own kernels. CTranslate2 only uses
/// AVX-512 when this asks for it; where the CPU has it we ask, which made a
/// tiny.en encode on two cores 1.7× faster (0.40 → 0.23 s on an AMD EPYC
/// with AVX-512). Set it yourself (e.g. `AVX2`) to override.
pub const ENV_CT2_FORCE_CPU_ISA: &str = "CT2_FORCE_CPU_ISA";
/// Enables the admin HTTP API (`true`).
pub const ENV_ADMIN_ENABLED: &str = "STT_ADMIN_ENABLED";
/// Bearer token for the admin API.
pub const ENV_ADMIN_TOKEN: &str = "STT_ADMIN_TOKEN";
/// Bearer token `/metrics`, `/metrics.json`, `/system` and a detailed
/// `/health` require when set.
pub const ENV_OBSERVABILITY_TOKEN: &str = "STT_OBSERVABILITY_TOKEN";
/// `minimal`: with an observability token, `/health` still answers without
/// it, with a bare status (for probes).
pub const ENV_PUBLIC_HEALTH: &str = "STT_PUBLIC_HEALTH";
/// Allows `model_path` in admin load requests (`true`).
pub const ENV_ADMIN_ALLOW_MODEL_PATH: &str = "STT_ADMIN_ALLOW_MODEL_PATH";
/// Comma-separated path prefixes `model_path` must fall under.
pub const ENV_ADMIN_MODEL_PATH_ALLOWLIST: &str = "STT_ADMIN_MODEL_PATH_ALLOWLIST";
/// Enables GPU figures on `/system` (`1`) where NVML is present.
pub const ENV_ENABLE_GPU_METRICS: &str = "STT_ENABLE_GPU_METRICS";

/// Marks this process so ggml never forks a debugger, and lets CTranslate2
/// use AVX-512 where the CPU has it. Call before any thread is spawned
/// (start of `main`, test harness set-up).
pub fn set_process_defaults() {
    if std::env::var_os(ENV_GGML_NO_BACKTRACE).is_none() {
        // SAFETY: called at start-up, before other threads read the environment.
        unsafe { std::env::set_var(ENV_GGML_NO_BACKTRACE, "1") };
    }
    if std::env::var_os(ENV_CT2_FORCE_CPU_ISA).is_none() && has_avx512() {
        // SAFETY: as above.
        unsafe { std::env::set_var(ENV_CT2_FORCE_CPU_ISA, "AVX512") };
    }
}

/// The AVX-512 subsets CTranslate2's AVX-512 kernels need.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
