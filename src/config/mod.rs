//! Configuration: the original's YAML files (`config/server.yaml`,
//! `config/model.yaml`, and the client defaults under `config/client/`) read
//! into typed sections with every key's default in one place. Unknown keys and
//! bad values are errors that name the file and the key path, e.g.
//! `config/server.yaml: server.max_chunk_ms: …`.

pub mod client;
pub mod model;
pub mod server;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use client::ClientFile;
pub use model::{DecodeProfileConfig, ModelFile, ModelSection};
pub use server::ServerFile;

/// A configuration problem, always tied to a file and, where known, a key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Seconds from a config file (or a request) as a duration, for any
/// value: negative and NaN are zero; a positive value is at least a
/// millisecond (a positive setting never turns into the zero that means
/// "off" or panics `tokio::time::interval`) and at most a century, so
/// `Instant::now() + d` and timers built from it cannot overflow: a
/// 1e300-second timeout means "never", not a panic when first used.
pub fn seconds(v: f64) -> std::time::Duration {
    const MIN: std::time::Duration = std::time::Duration::from_millis(1);
    const MAX: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);
    if v.is_nan() || v <= 0.0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::try_from_secs_f64(v).map_or(MAX, |d| d.clamp(MIN, MAX))
}

/// Reads a YAML file into `T`, reporting the key path of the first problem.
/// A missing file is an error; an empty file means "all defaults".
pub fn load_yaml<T: DeserializeOwned + Default>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text, path)
}

/// Parses YAML text (`origin` names it in errors).
pub fn parse_yaml<T: DeserializeOwned + Default>(
    text: &str,
    origin: &Path,
) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Parse {
            path: origin.to_path_buf(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// Collects validation failures for one file.
pub(crate) struct Checker<'a> {
    path: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(path: &'a Path) -> Self {
        Self {
            path,
            errors: Vec::new(),
        }
    }

    pub(crate) fn check(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.errors.push(ConfigError::Invalid {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                message: message.into(),
            });
        }
    }

    /// The first failure, if any (one clear message beats a wall of them).
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
