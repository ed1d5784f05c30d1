//! The transcript log: with `logging.log_transcripts: true`, each final's
//! text goes here, and only here — never into the main log, which operators
//! ship to places user speech should not go. One JSON object per line, a
//! new file each day (`<stem>.YYYY-MM-DD.<ext>`), files older than
//! `logging.transcript_retention_days` removed (0 keeps one file forever).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;
use tracing_appender::rolling::{RollingFileAppender, Rotation};

/// One final as the log keeps it.
#[derive(Debug, Serialize)]
pub struct TranscriptLine<'a> {
    pub session_id: &'a str,
    pub start_sec: f64,
    pub end_sec: f64,
    pub language: &'a str,
    pub text: &'a str,
}

pub struct TranscriptLog {
    out: Mutex<RollingFileAppender>,
}

impl std::fmt::Debug for TranscriptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TranscriptLog")
    }
}

impl TranscriptLog {
    /// Opens (creating its directory) the log at `path`.
    pub fn open(path: &Path, retention_days: u32) -> anyhow::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create {} for logging.transcript_file",
                dir.display()
            )
        })?;
        let name = path.file_name().and_then(|n| n.to_str()).with_context(|| {
            format!(
                "logging.transcript_file {} needs a file name",
                path.display()
            )
        })?;
        let (stem, ext) = match name.rsplit_once('.') {
            Some((s, e)) if !s.is_empty() => (s, Some(e)),
            _ => (name, None),
        };
        let mut builder = RollingFileAppender::builder();
        builder = if retention_days == 0 {
            builder.rotation(Rotation::NEVER).filename_prefix(name)
        } else {
            let b = builder
                .rotation(Rotation::DAILY)
                .filename_prefix(stem)
                .max_log_files(retention_days as usize);
            match ext {
                Some(e) => b.filename_suffix(e),
                None => b,
            }
        };
        let out = builder.build(dir).with_context(|| {
            format!(
                "cannot open the transcript log {} (logging.transcript_file)",
                path.display()
            )
        })?;
        tracing::info!(file = %path.display(), retention_days, "transcripts are logged to their own file only");
        Ok(Self {
            out: Mutex::new(out),
        })
    }

    /// Appends one final. A write failure is logged (without the text) and
    /// the session goes on.
    pub fn write(&self, line: &TranscriptLine<'_>) {
        let Ok(mut json) = serde_json::to_vec(&TimedLine {
            ts: chrono::Utc::now().to_rfc3339(),
            line,
        }) else {
            return;
        };
        json.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = out.write_all(&json).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, session_id = line.session_id, "cannot write the transcript log");
        }
    }
}

#[derive(Serialize)]
struct TimedLine<'a> {
    ts: String,
    #[serde(flatten)]
    line: &'a TranscriptLine<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_land_in_a_dated_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = TranscriptLog::open(&dir.path().join("logs/transcripts.jsonl"), 7).unwrap();
        log.write(&TranscriptLine {
            session_id: "s1",
            start_sec: 0.5,
            end_sec: 2.0,
            language: "en",
            text: "hello there",
        });
        let files: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("transcripts.") && name.ends_with(".jsonl"),
            "{name}"
        );
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["text"], "hello there");
        assert_eq!(v["session_id"], "s1");
        assert!(v["ts"].as_str().is_some());
    }
}
