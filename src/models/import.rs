//! `stt models import`: converts a CTranslate2 (faster-whisper) Whisper model
//! directory into one ggml file whisper.cpp loads.
//!
//! It owns the conversion run — finding the files, dequantising, splitting
//! fused projections and writing atomically (`<out>.part`, then rename). The
//! byte layouts live in [`super::ct2`] and [`super::ggml`], the name mapping in
//! [`super::plan`]; whisper.cpp is never called here.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::ct2::{Ct2Error, Ct2Model, DType, Variable};
use super::ggml::GgmlWriter;
use super::mel::{self, N_FFT, SAMPLE_RATE};
use super::plan::{missing, odd, Output, Plan};
use super::vocab::{VocabError, Vocabulary};

/// Files a CTranslate2 Whisper directory must hold.
pub const REQUIRED_FILES: [&str; 3] = ["model.bin", "config.json", "vocabulary.txt"];

const DIR_HINT: &str = "hint: pass a CTranslate2 (faster-whisper) Whisper model directory \
                        holding model.bin, config.json and vocabulary.txt";

/// How to run an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Draw a progress bar over the tensors on stderr.
    pub show_progress: bool,
}

/// What an import produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Size of the ggml file in bytes.
    pub bytes: u64,
    /// Vocabulary size of the model (rows of the token embedding).
    pub n_vocab: i32,
    /// Whether the model is multilingual (`n_vocab >= 51865`).
    pub multilingual: bool,
    /// CTranslate2 dtype of the weight matrices: `float16`, `float32`, `int8`, …
    pub source_dtype: String,
}

/// Ways an import can fail.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source path is not a directory.
    #[error("{path} is not a directory\n{DIR_HINT}")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A required file is absent from the source directory.
    #[error("{dir} has no {file}\n{DIR_HINT}")]
    MissingFile {
        /// The missing file's name.
        file: &'static str,
        /// The source directory.
        dir: PathBuf,
    },
    /// Reading a source file failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write {path}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `config.json` is not JSON.
    #[error("{path} is not valid JSON")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `vocabulary.txt` cannot be decoded.
    #[error("cannot use the vocabulary in {path}")]
    Vocab {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: VocabError,
    },
    /// `model.bin` is not a readable CTranslate2 model (version, truncation, …).
    #[error("cannot read the CTranslate2 model {path}")]
    Model {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Ct2Error,
    },
    /// `model.bin` holds a model that is not Whisper.
    #[error("{path} holds a CTranslate2 `{spec}` model, not Whisper (`WhisperSpec`)")]
    NotWhisper {
        /// The file.
        path: PathBuf,
        /// The spec name found.
        spec: String,
    },
    /// Reading one variable's data failed.
    #[error("cannot read variable `{name}`")]
    Variable {
        /// The variable.
        name: String,
        /// The cause.
        #[source]
        source: Ct2Error,
    },
    /// A variable the conversion needs is absent.
    #[error("model.bin has no variable `{name}`: not a complete CTranslate2 Whisper model")]
    MissingTensor {
        /// The CT2 variable name.
        name: String,
    },
    /// A variable has a shape that does not fit the model.
    #[error("variable `{name}` has shape {shape:?}, expected {expected}")]
    OddShape {
        /// The CT2 variable name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What was expected.
        expected: String,
    },
    /// A scalar or scale holds a value that cannot be right.
    #[error("variable `{name}` holds {value}, expected {expected}")]
    BadValue {
        /// The CT2 variable name.
        name: String,
        /// The value found.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A variable's dtype cannot be converted.
    #[error("variable `{name}` has dtype {dtype}, which cannot be converted")]
    UnsupportedDtype {
        /// The CT2 variable name.
        name: String,
        /// Its dtype.
        dtype: &'static str,
    },
    /// A fused attention bias has a non-zero key part; whisper.cpp's keys have no bias.
    #[error(
        "the key part of `{name}` is not zero (max |b| = {max_abs}); whisper.cpp keys have no bias"
    )]
    NonZeroKeyBias {
        /// The CT2 bias variable.
        name: String,
        /// Largest magnitude in the key part.
        max_abs: f32,
    },
    /// The vocabulary is longer than the token embedding.
    #[error("vocabulary.txt has {tokens} tokens up to <|endoftext|>, but the model has {n_vocab}")]
    VocabMismatch {
        /// Tokens up to and including `<|endoftext|>`.
        tokens: usize,
        /// Rows of the token embedding.
        n_vocab: i32,
    },
}

/// Converts the CTranslate2 Whisper model in `src_dir` into the ggml file
/// `out`, replacing it only once the new file is complete.
pub fn import_ct2(
    src_dir: &Path,
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportSummary, ImportError> {
    if !src_dir.is_dir() {
        return Err(ImportError::NotADirectory {
            path: src_dir.to_owned(),
        });
    }
    for file in REQUIRED_FILES {
        if !src_dir.join(file).is_file() {
            return Err(ImportError::MissingFile {
                file,
                dir: src_dir.to_owned(),
            });
        }
    }
    // Nothing in config.json is needed (shapes say it all), but a broken one
    // means a broken download, which is better reported now.
    let config_path = src_dir.join("config.json");
    let config = fs::read(&config_path).map_err(read_err(&config_path))?;
    serde_json::from_slice::<serde_json::Value>(&config).map_err(|source| ImportError::Config {
        path: config_path,
        source,
    })?;

    let vocab_path = src_dir.join("vocabulary.txt");
    let text = fs::read_to_string(&vocab_path).map_err(read_err(&vocab_path))?;
    let vocab = Vocabulary::parse(&text).map_err(|source| ImportError::Vocab {
        path: vocab_path,
        source,
    })?;

    let model_path = src_dir.join("model.bin");
    let mut model = Ct2Model::open(&model_path).map_err(|source| ImportError::Model {
        path: model_path.clone(),
        source,
    })?;
    if model.spec != "WhisperSpec" {
        return Err(ImportError::NotWhisper {
            path: model_path,
            spec: model.spec,
        });
    }

    let plan = Plan::build(&mut model)?;
    let n_vocab = plan.hparams.n_vocab;
    if vocab.tokens.len() > n_vocab as usize {
        return Err(ImportError::VocabMismatch {
            tokens: vocab.tokens.len(),
            n_vocab,
        });
    }
    // Check every variable before the first byte is written, so a bad
    // model fails in a second rather than halfway through a long write.
    for job in &plan.jobs {
        let var = model.get(&job.source).ok_or_else(|| missing(&job.source))?;
        if var.shape != job.shape {
            return Err(odd(&job.source, &var.shape, format!("{:?}", job.shape)));
        }
    }
    let source_dtype = model
        .get("encoder/layer_0/self_attention/linear_0/weight")
        .map_or("unknown", |v| v.dtype.name())
        .to_owned();

    let bytes = write_atomically(out, |file| {
        write_ggml(file, &plan, &vocab, &mut model, opts)
    })?;
    Ok(ImportSummary {
        tensors: plan.tensor_count(),
        bytes,
        n_vocab,
        multilingual: plan.hparams.is_multilingual(),
        source_dtype,
    })
}

fn write_ggml<R: Read + Seek>(
    file: File,
    plan: &Plan,
    vocab: &Vocabulary,
    model: &mut Ct2Model<R>,
    opts: &ImportOptions,
) -> Result<(File, u64), Step> {
    let n_mels = plan.hparams.n_mels as usize;
    let filters = mel::filterbank(n_mels, N_FFT, SAMPLE_RATE);
    let mut w = GgmlWriter::new(BufWriter::with_capacity(1 << 20, file), &plan.hparams)?;
    w.write_mel_filters(n_mels, N_FFT / 2 + 1, &filters)?;
    w.write_vocab(&vocab.tokens)?;

    let progress = progress_bar(opts, plan.tensor_count());
    for job in &plan.jobs {
        let var = model
            .get(&job.source)
            .cloned()
            .ok_or_else(|| missing(&job.source))?;
        let values = read_values(model, &var)?;
        let parts = job.outputs.len();
        let rows = job.shape[0] / parts;
        let mut part_shape = job.shape.clone();
        part_shape[0] = rows;
        let part_len = values.len() / parts;
        for (output, chunk) in job.outputs.iter().zip(values.chunks_exact(part_len)) {
            match output {
                Output::ZeroBias => {
                    let max_abs = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    if max_abs != 0.0 {
                        let name = job.source.clone();
                        return Err(ImportError::NonZeroKeyBias { name, max_abs }.into());
                    }
                }
                Output::Tensor {
                    name,
                    ttype,
                    column,
                } => {
                    progress.set_message(name.clone());
                    let ne: Vec<usize> = match column {
                        true => vec![1, rows],
                        false => part_shape.iter().rev().copied().collect(),
                    };
                    w.write_tensor(name, &ne, *ttype, chunk)?;
                    progress.inc(1);
                }
            }
        }
    }
    progress.finish_and_clear();
    let written = w.written();
    let file = w.finish()?.into_inner().map_err(|e| e.into_error())?;
    Ok((file, written))
}

/// A variable's values as f32; int8/int16 weights are divided by their
/// `…_scale` (CTranslate2 stores `q = round(w * scale)`, per row or scalar).
fn read_values<R: Read + Seek>(
    model: &mut Ct2Model<R>,
    var: &Variable,
) -> Result<Vec<f32>, ImportError> {
    let variable_err = |name: &str| {
        let name = name.to_owned();
        move |source| ImportError::Variable { name, source }
    };
    let mut values = model.read_f32(var).map_err(variable_err(&var.name))?;
    match var.dtype {
        DType::F32 | DType::F16 | DType::Bf16 => return Ok(values),
        DType::I8 | DType::I16 => {}
        DType::I32 => {
            return Err(ImportError::UnsupportedDtype {
                name: var.name.clone(),
                dtype: var.dtype.name(),
            })
        }
    }
    let scale_name = format!("{}_scale", var.name);
    let scale_var = model
        .get(&scale_name)
        .cloned()
        .ok_or_else(|| missing(&scale_name))?;
    if !matches!(scale_var.dtype, DType::F32 | DType::F16 | DType::Bf16) {
        return Err(ImportError::UnsupportedDtype {
            name: scale_name,
            dtype: scale_var.dtype.name(),
        });
    }
    let scales = model
        .read_f32(&scale_var)
        .map_err(variable_err(&scale_name))?;
    if let Some(bad) = scales.iter().find(|s| !s.is_finite() || **s == 0.0) {
        return Err(ImportError::BadValue {
            name: scale_name,
            value: bad.to_string(),
            expected: "finite, non-zero scales".to_owned(),
        });
    }
    let rows = var.shape.first().copied().unwrap_or(1);
    match scales.len() {
        1 => values.iter_mut().for_each(|v| *v /= scales[0]),
        n if n == rows && rows > 0 => {
            let row_len = values.len() / rows;
            for (row, scale) in values.chunks_exact_mut(row_len).zip(&scales) {
                row.iter_mut().for_each(|v| *v /= scale);
            }
        }
        _ => {
            let expected = format!("[{rows}] (one per row) or a scalar");
            return Err(odd(&scale_name, &scale_var.shape, expected));
        }
    }
    Ok(values)
}

fn progress_bar(opts: &ImportOptions, tensors: usize) -> ProgressBar {
    if !opts.show_progress {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{spinner} converting [{bar:32}] {pos}/{len} tensors {elapsed} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(tensors as u64).with_style(style)
}

/// A failure inside the write: an I/O error on the part file, or a problem
/// with the model found while converting.
enum Step {
    Io(io::Error),
    Import(ImportError),
}

impl From<io::Error> for Step {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ImportError> for Step {
    fn from(e: ImportError) -> Self {
        Self::Import(e)
    }
}

/// Runs `write` on `<out>.part`, then syncs and renames it to `out`; on any
/// failure the part file is removed so no half-written model is left.
fn write_atomically(
    out: &Path,
    write: impl FnOnce(File) -> Result<(File, u64), Step>,
) -> Result<u64, ImportError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ImportError::Write { path, source }
    };
    let file_name = out.file_name().ok_or_else(|| {
        write_err(out)(io::Error::new(io::ErrorKind::InvalidInput, "no file name"))
    })?;
    let mut part_name = file_name.to_owned();
    part_name.push(".part");
    let part = out.with_file_name(part_name);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(write_err(parent))?;
    }

    let mut guard = PartFile {
        path: &part,
        keep: false,
    };
    let file = File::create(&part).map_err(write_err(&part))?;
    let (file, bytes) = write(file).map_err(|step| match step {
        Step::Io(e) => write_err(&part)(e),
        Step::Import(e) => e,
    })?;
    file.sync_all().map_err(write_err(&part))?;
    drop(file);
    fs::rename(&part, out).map_err(write_err(out))?;
    guard.keep = true;
    Ok(bytes)
}

/// Removes the part file when dropped, unless it was renamed into place.
struct PartFile<'a> {
    path: &'a Path,
    /// Set once the rename succeeded.
    keep: bool,
}

impl Drop for PartFile<'_> {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: the original error matters more than a failed cleanup.
            let _ = fs::remove_file(self.path);
        }
    }
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ImportError {
    let path = path.to_owned();
    move |source| ImportError::Read { path, source }
}

#[cfg(test)]
mod tests;
