//! Retention of finished captures: after each capture closes, the oldest
//! `*.wav` files beyond `max_files` / `max_bytes`, and any older than
//! `max_age`, are removed; open captures never are.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{lock, Inner, RetentionReport};

/// A `*.wav` file in the capture directory.
struct Entry {
    name: OsString,
    bytes: u64,
    modified: SystemTime,
}

impl Inner {
    pub(super) fn apply_retention(&self) -> io::Result<RetentionReport> {
        let _serial = lock(&self.retention_lock);
        let limits = self.cfg.retention;
        let dir = &self.cfg.directory;
        let mut entries = list_wavs(dir)?;
        // Taken after listing: a capture opened since is not in the listing,
        // and one listed was registered before its file existed.
        let open = lock(&self.writers).open.clone();
        entries.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.name.cmp(&b.name)));
        let now = SystemTime::now();
        let mut files = entries.len() as u64;
        let mut bytes: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut report = RetentionReport::default();
        for e in &entries {
            if open.contains(&e.name) {
                continue;
            }
            let expired = limits
                .max_age
                .is_some_and(|max| now.duration_since(e.modified).is_ok_and(|age| age > max));
            let over = limits.max_files.is_some_and(|max| files > max)
                || limits.max_bytes.is_some_and(|max| bytes > max);
            if !(expired || over) {
                continue;
            }
            let path = dir.join(&e.name);
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed_files += 1;
                    report.removed_bytes += e.bytes;
                }
                // Someone else removed it: no longer ours to count.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    report.failed_files += 1;
                    self.retention_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), error = %err, "audio capture retention could not remove a file");
                    continue;
                }
            }
            files -= 1;
            bytes -= e.bytes;
        }
        report.kept_files = files as usize;
        report.kept_bytes = bytes;
        self.files_removed
            .fetch_add(report.removed_files as u64, Ordering::Relaxed);
        if report.removed_files > 0 {
            tracing::info!(
                removed_files = report.removed_files,
                removed_bytes = report.removed_bytes,
                kept_files = report.kept_files,
                kept_bytes = report.kept_bytes,
                "audio capture retention"
            );
        }
        Ok(report)
    }
}

/// Regular `*.wav` files directly in `dir`; symlinks, directories and other
/// names are not ours and are left alone.
fn list_wavs(dir: &Path) -> io::Result<Vec<Entry>> {
    let read = fs::read_dir(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot list the audio capture directory {}: {e}",
                dir.display()
            ),
        )
    })?;
    let mut out = Vec::new();
    for entry in read {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if Path::new(&name).extension().is_none_or(|ext| ext != "wav") {
            continue;
        }
        // Not following links: a link's size is not disk we use.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        out.push(Entry {
            name,
            bytes: meta.len(),
            // Unknown times sort as new and never expire: unsure means keep.
            modified: meta.modified().unwrap_or_else(|_| SystemTime::now()),
        });
    }
    Ok(out)
}

// === helpers ===
