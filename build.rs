//! Compiles `proto/stt.proto` with protox (pure Rust, no system protoc) and
//! writes the descriptor set that gRPC server reflection serves. With the
//! `ctranslate2` feature (default) it also compiles the C++ shim over
//! CTranslate2 and links the provisioned library.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// The CTranslate2 release whose library (PyPI wheel) and headers (ct2rs
/// crate) scripts/provision-models.py installs. A C++ ABI holds only within
/// one release, so both come from this exact version.
const CT2_VERSION: &str = "4.8.4";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/stt.proto");
    let fds = protox::compile(["stt.proto"], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("stt_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    if env::var_os("CARGO_FEATURE_CTRANSLATE2").is_some() {
        build_ctranslate2_shim()?;
    }
    Ok(())
}

/// The models directory, by the same rules as `stt` itself
/// (`src/models/store.rs`).
fn models_dir() -> PathBuf {
    if let Some(d) = env::var_os("STT_MODELS_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("stt").join("models")
}

fn build_ctranslate2_shim() -> Result<(), Box<dyn std::error::Error>> {
    for var in ["STT_CT2_DIR", "STT_MODELS_DIR", "XDG_CACHE_HOME", "HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=src/engine/ctranslate2/shim.cpp");
    println!("cargo:rerun-if-changed=src/engine/ctranslate2/shim.h");
    let root = env::var_os("STT_CT2_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| models_dir().join(format!("ctranslate2-{CT2_VERSION}")));
    let include = root.join("include");
    let lib = root.join("lib");
    if !include.join("ctranslate2/models/whisper.h").is_file()
        || !lib.join("libctranslate2.so").exists()
    {
        return Err(format!(
            "CTranslate2 {CT2_VERSION} (headers and library) not found in {}\n\
             hint: run `python3 scripts/provision-models.py` (scripts/setup.sh does), \
             set STT_CT2_DIR, or build without it: `cargo build --no-default-features`",
            root.display()
        )
        .into());
    }
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("libctranslate2.so").display()
    );
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/engine/ctranslate2/shim.cpp")
        .include(&include)
        // CTranslate2's headers trip these; they are not ours to fix.
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-copy")
        .compile("stt_ct2_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=ctranslate2");
    // Found at run time where it was provisioned, or beside the binary in
    // an install (`../lib`, as the container image lays it out).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib");
    Ok(())
}
