//! API keys: who may open a session. Keys live in a YAML file
//! (`auth.keys_file`) as an id, a SHA-256 of the secret — never the secret —
//! and optional limits, and/or in `STT_API_KEYS` (`id=secret,…`, hashed as
//! it is read). A presented secret is hashed and compared in constant time
//! with every entry; metrics and logs only ever name the key id. The file is
//! read again when it changes, so `stt keys add|revoke` take effect on a
//! running server.

pub mod command;
pub mod signed;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Environment variable with keys as `id=secret` pairs, comma-separated.
pub const KEYS_ENV: &str = "STT_API_KEYS";

/// How often a running server looks at the keys file's modification time.
const RECHECK: Duration = Duration::from_secs(1);

/// The keys file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// One key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Shown in metrics and logs in place of the key.
    pub id: String,
    /// `sha256:` and the hex digest of the secret.
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sessions this key may hold open at once (all transports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// Model ids this key may use; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Seconds of audio a minute this key may stream, over all its
    /// sessions (ERR1016 beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_seconds_per_minute: Option<f64>,
    /// A revoked key is refused (kept so the refusal can say so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the keys file {}: {e}", path.display()))?;
        let file: Self = serde_yaml_ng::from_str(&text)
            .map_err(|e| format!("{}: not a keys file: {e}", path.display()))?;
        file.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), String> {
        for (i, k) in self.keys.iter().enumerate() {
            if k.id.is_empty() || k.id.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("keys[{i}]: id must be non-empty, without spaces"));
            }
            if digest_of(&k.hash).is_none() {
                return Err(format!(
                    "keys[{i}] ({}): hash must be sha256: and 64 hex digits (stt keys add writes it)",
                    k.id
                ));
            }
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                return Err(format!("keys[{i}]: id {:?} is listed twice", k.id));
            }
        }
        Ok(())
    }

    /// Writes the file atomically (a temporary file renamed over it), owner
    /// read/write only.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_yaml_ng::to_string(self).map_err(|e| e.to_string())?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        std::io::Write::write_all(
            &mut tmp,
            format!("# stt API keys: ids and SHA-256 hashes, never secrets (stt keys add|list|revoke)\n{text}").as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600));
        }
        tmp.persist(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(())
    }
}

/// `sha256:<hex>` of a secret.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("sha256:{}", hex::encode(digest))
}

fn digest_of(hash: &str) -> Option<[u8; 32]> {
    let hex_part = hash.strip_prefix("sha256:")?;
    let bytes = hex::decode(hex_part).ok()?;
    bytes.try_into().ok()
}

/// A key that was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub id: String,
    pub max_sessions: Option<usize>,
    pub models: Vec<String>,
    pub audio_seconds_per_minute: Option<f64>,
}

/// Why a presented secret was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Revoked(String),
}

/// The keys a server accepts; cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Mutex<Loaded>>,
}

struct Loaded {
    file: Option<PathBuf>,
    /// (digest, entry) for every key, file and environment.
    keys: Vec<([u8; 32], KeyEntry)>,
    env_keys: Vec<([u8; 32], KeyEntry)>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl KeyStore {
    /// Keys from `file` (if any) and the `STT_API_KEYS` value `env` (if
    /// any). `None` when neither names a key source.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<Self>, String> {
        if file.is_none() && env.is_none() {
            return Ok(None);
        }
        let env_keys = match env {
            Some(v) => parse_env(v)?,
            None => Vec::new(),
        };
        let mut loaded = Loaded {
            file: file.map(Path::to_path_buf),
            keys: Vec::new(),
            env_keys,
            modified: None,
            checked: Instant::now(),
        };
        loaded.read_file()?;
        Ok(Some(Self {
            inner: Arc::new(Mutex::new(loaded)),
        }))
    }

    /// How many keys are accepted now.
    pub fn len(&self) -> usize {
        let l = self.lock();
        l.keys
            .iter()
            .chain(&l.env_keys)
            .filter(|(_, k)| !k.revoked)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key `secret` belongs to. Every entry is compared (in constant
    /// time), so the answer's timing says nothing about which key is near.
    pub fn check(&self, secret: &str) -> Result<KeyInfo, KeyRefusal> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut l = self.lock();
        l.refresh();
        let mut found: Option<&KeyEntry> = None;
        for (d, entry) in l.keys.iter().chain(&l.env_keys) {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        match found {
            None => Err(KeyRefusal::Unknown),
            Some(k) if k.revoked => Err(KeyRefusal::Revoked(k.id.clone())),
            Some(k) => Ok(KeyInfo {
                id: k.id.clone(),
                max_sessions: k.max_sessions,
                models: k.models.clone(),
                audio_seconds_per_minute: k.audio_seconds_per_minute,
            }),
        }
    }
}

impl Loaded {
    /// Reads the file again if it changed since the last read (looked at
    /// once per [`RECHECK`]). A file that became unreadable keeps the keys
    /// last read, loudly.
    fn refresh(&mut self) {
        if self.checked.elapsed() < RECHECK {
            return;
        }
        self.checked = Instant::now();
        let Some(path) = self.file.clone() else {
            return;
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.modified {
            return;
        }
        match self.read_file() {
            Ok(()) => {
                tracing::info!(file = %path.display(), keys = self.keys.len(), "API keys reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "API keys file unreadable; keeping the keys last read")
            }
        }
    }

    fn read_file(&mut self) -> Result<(), String> {
        let Some(path) = self.file.clone() else {
            return Ok(());
        };
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let file = KeyFile::load(&path)?;
        self.keys = file
            .keys
            .into_iter()
            .filter_map(|k| digest_of(&k.hash).map(|d| (d, k)))
            .collect();
        self.modified = modified;
        Ok(())
    }
}

/// `id=secret,id2=secret2`.
fn parse_env(value: &str) -> Result<Vec<([u8; 32], KeyEntry)>, String> {
    let mut out = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, secret) = pair
            .split_once('=')
            .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
            .ok_or_else(|| format!("{KEYS_ENV}: expected id=secret pairs separated by commas"))?;
        let entry = KeyEntry {
            id: id.trim().to_string(),
            hash: hash_secret(secret.trim()),
            name: None,
            max_sessions: None,
            models: Vec::new(),
            audio_seconds_per_minute: None,
            revoked: false,
        };
        let digest = digest_of(&entry.hash).ok_or("hashing failed")?;
        out.push((digest, entry));
    }
    Ok(out)
}

/// A label for a key when no key list is configured: a short hash, so a
/// metric never shows the secret itself.
pub fn anonymous_label(secret: &str) -> String {
    let h = hash_secret(secret);
    format!("sha256:{}", &h["sha256:".len().."sha256:".len() + 12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, secret: &str) -> KeyEntry {
        KeyEntry {
            id: id.into(),
            hash: hash_secret(secret),
            name: None,
            max_sessions: Some(2),
            models: vec!["tiny.en".into()],
            audio_seconds_per_minute: None,
            revoked: false,
        }
    }

    #[test]
    fn listed_keys_pass_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let mut revoked = entry("old", "s3");
        revoked.revoked = true;
        KeyFile {
            keys: vec![entry("team-a", "s1"), revoked],
        }
        .save(&path)
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s1") || text.contains("sha256:"), "{text}");
        let store = KeyStore::load(Some(&path), Some("ci=s2")).unwrap().unwrap();
        let a = store.check("s1").unwrap();
        assert_eq!((a.id.as_str(), a.max_sessions), ("team-a", Some(2)));
        assert_eq!(store.check("s2").unwrap().id, "ci");
        assert_eq!(store.check("s3"), Err(KeyRefusal::Revoked("old".into())));
        assert_eq!(store.check("nope"), Err(KeyRefusal::Unknown));
        assert_eq!(store.check(""), Err(KeyRefusal::Unknown));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn bad_files_and_env_values_are_errors() {
        assert!(parse_env("no-equals-sign").is_err());
        assert!(parse_env("id=").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        std::fs::write(&path, "keys:\n  - id: a\n    hash: plain-secret\n").unwrap();
        assert!(KeyFile::load(&path).unwrap_err().contains("sha256"));
        assert!(KeyStore::load(None, None).unwrap().is_none());
    }

    #[test]
    fn anonymous_labels_hide_the_secret() {
        let l = anonymous_label("super-secret");
        assert!(l.starts_with("sha256:") && l.len() == 19 && !l.contains("secret"));
    }
}
