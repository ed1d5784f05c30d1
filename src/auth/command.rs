//! `stt keys add|list|revoke`: manages the keys file a server reads
//! (`auth.keys_file`). A new key's secret is printed once and never stored.

use anyhow::{bail, Context};

use super::{hash_secret, KeyEntry, KeyFile};
use crate::cli::{KeysArgs, KeysCommand};
use crate::UsageError;

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let mut file = if path.exists() {
        KeyFile::load(path).map_err(UsageError)?
    } else {
        KeyFile::default()
    };
    match args.command {
        KeysCommand::Add {
            id,
            name,
            max_sessions,
            models,
            audio_seconds_per_minute,
        } => {
            if audio_seconds_per_minute.is_some_and(|a| !(a.is_finite() && a > 0.0)) {
                bail!(UsageError(
                    "--audio-seconds-per-minute must be a positive number".into()
                ));
            }
            if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
                bail!(UsageError("--id must be non-empty, without spaces".into()));
            }
            if file.keys.iter().any(|k| k.id == id) {
                bail!(UsageError(format!(
                    "a key with id {id:?} is already in {} (revoke it, or pick another id)",
                    path.display()
                )));
            }
            let secret = new_secret()?;
            file.keys.push(KeyEntry {
                id: id.clone(),
                hash: hash_secret(&secret),
                name,
                max_sessions,
                models,
                audio_seconds_per_minute,
                revoked: false,
            });
            file.save(path).map_err(anyhow::Error::msg)?;
            eprintln!(
                "added key {id:?} to {}; its secret is shown once, here — store it now:",
                path.display()
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            if file.keys.is_empty() {
                eprintln!("no keys in {}", path.display());
            }
            println!(
                "{:<20} {:<8} {:<12} {:<20} name",
                "id", "state", "max_sessions", "models"
            );
            for k in &file.keys {
                println!(
                    "{:<20} {:<8} {:<12} {:<20} {}",
                    k.id,
                    if k.revoked { "revoked" } else { "active" },
                    k.max_sessions.map_or("-".to_string(), |n| n.to_string()),
                    if k.models.is_empty() {
                        "any".to_string()
                    } else {
                        k.models.join(",")
                    },
                    k.name.as_deref().unwrap_or("")
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let Some(k) = file.keys.iter_mut().find(|k| k.id == id) else {
                bail!(UsageError(format!("no key {id:?} in {}", path.display())));
            };
            k.revoked = true;
            file.save(path).map_err(anyhow::Error::msg)?;
            eprintln!("revoked key {id:?}; running servers refuse it within a second");
        }
    }
    Ok(())
}

/// `stt_` and 256 random bits in hex.
fn new_secret() -> anyhow::Result<String> {
    let hex = crate::server::secret::random_hex(32).context("no randomness for a new key")?;
    Ok(format!("stt_{hex}"))
}
