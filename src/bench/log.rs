//! Session log writers: jsonl, csv, tsv and markdown, to any `Write`.
//! csv/tsv/jsonl hold data only (csv/tsv with one header row); markdown is
//! a document with a title, start/end time, column definitions and a table.
//! Choosing where logs go and how many is the caller's business.

use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::record::{SessionRecord, COLUMNS};
use crate::cli::SessionLogFormat;

/// What a markdown log says about the run besides its rows.
#[derive(Debug, Clone)]
pub struct LogMeta {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The server, as the user named it.
    pub server: String,
    /// Measured sessions in the run (the log may show fewer).
    pub total_sessions: usize,
}

impl SessionLogFormat {
    /// The format a file's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Self::Jsonl,
            "csv" => Self::Csv,
            "tsv" | "tab" => Self::Tsv,
            "md" | "markdown" => Self::Markdown,
            _ => return None,
        })
    }
}

/// Writes `records` to `out` in `format`.
pub fn write_log(
    out: &mut dyn Write,
    format: SessionLogFormat,
    records: &[SessionRecord],
    meta: &LogMeta,
) -> io::Result<()> {
    match format {
        SessionLogFormat::Jsonl => write_jsonl(out, records),
        SessionLogFormat::Csv => write_delimited(out, b',', records),
        SessionLogFormat::Tsv => write_delimited(out, b'\t', records),
        SessionLogFormat::Markdown => write_markdown(out, records, meta),
    }?;
    out.flush()
}

fn write_jsonl(out: &mut dyn Write, records: &[SessionRecord]) -> io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn write_delimited(
    out: &mut dyn Write,
    delimiter: u8,
    records: &[SessionRecord],
) -> io::Result<()> {
    // The header comes from COLUMNS rather than serde, so an empty log still
    // has one.
    let mut w = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_writer(out);
    w.write_record(COLUMNS.iter().map(|(name, _)| name))?;
    for r in records {
        w.serialize(r)?;
    }
    w.flush()
}

fn write_markdown(
    out: &mut dyn Write,
    records: &[SessionRecord],
    meta: &LogMeta,
) -> io::Result<()> {
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    writeln!(out, "# stt bench session log\n")?;
    writeln!(out, "- started: {}", time(&meta.started))?;
    writeln!(out, "- finished: {}", time(&meta.finished))?;
    writeln!(out, "- server: {}", meta.server)?;
    if records.len() == meta.total_sessions {
        writeln!(out, "- sessions: {}", meta.total_sessions)?;
    } else {
        writeln!(
            out,
            "- sessions: {} of {} shown",
            records.len(),
            meta.total_sessions
        )?;
    }
    writeln!(out, "\n## Columns\n")?;
    for (name, meaning) in COLUMNS {
        writeln!(out, "- `{name}`: {meaning}")?;
    }
    writeln!(out, "\n## Sessions\n")?;
    let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    writeln!(out, "| {} |", names.join(" | "))?;
    writeln!(out, "|{}", " --- |".repeat(names.len()))?;
    for r in records {
        let value = serde_json::to_value(r)?;
        let cells: Vec<String> = names.iter().map(|n| markdown_cell(&value[*n])).collect();
        writeln!(out, "| {} |", cells.join(" | "))?;
    }
    Ok(())
}

/// One table cell: `-` for nothing, text with its pipes escaped and its
/// line breaks flattened so the row stays one table row.
fn markdown_cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) if s.is_empty() => "-".into(),
        serde_json::Value::String(s) => s
            .replace('\\', "\\\\")
            .replace('|', "\\|")
            .replace(['\r', '\n'], " "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::tests::{outcome, slot};
    use crate::client::ClientError;

    fn records() -> Vec<SessionRecord> {
        let err = ClientError::Session(tonic::Status::resource_exhausted("ERR1008: full"));
        vec![
            SessionRecord::ok(slot(0, 0), &outcome()),
            SessionRecord::failed(slot(1, 0), &err),
        ]
    }

    fn meta() -> LogMeta {
        LogMeta {
            started: DateTime::from_timestamp(1_700_000_000, 0).expect("valid time"),
            finished: DateTime::from_timestamp(1_700_000_042, 500_000_000).expect("valid time"),
            server: "127.0.0.1:50051".into(),
            total_sessions: 2,
        }
    }

    fn render(format: SessionLogFormat, records: &[SessionRecord]) -> String {
        let mut out = Vec::new();
        write_log(&mut out, format, records, &meta()).expect("written");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn jsonl_is_one_object_per_line() {
        let text = render(SessionLogFormat::Jsonl, &records());
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["final_text"], "hello, \"world\" bye");
        assert_eq!(lines[0]["decode_total_seconds"], 0.545);
        assert_eq!(lines[0]["error_code"], serde_json::Value::Null);
        assert_eq!(lines[1]["error_code"], "ERR1008");
    }

    #[test]
    fn csv_has_a_header_in_column_order_and_quotes_text() {
        let text = render(SessionLogFormat::Csv, &records());
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(header, names);
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), 2);
        let col = |name: &str| names.iter().position(|n| *n == name).expect("column");
        // The comma and the quotes survive the round trip.
        assert_eq!(&rows[0][col("final_text")], "hello, \"world\" bye");
        assert_eq!(&rows[0][col("decode_inference_seconds")], "0.334");
        assert_eq!(&rows[0][col("error_code")], "");
        assert_eq!(&rows[1][col("error_code")], "ERR1008");
        assert!(text.contains("\"hello, \"\"world\"\" bye\""), "{text}");
    }

    #[test]
    fn tsv_is_tab_separated_and_empty_logs_keep_the_header() {
        let text = render(SessionLogFormat::Tsv, &records());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split('\t').count(), COLUMNS.len());
        assert!(lines[0].starts_with("session_id\tchannel\titeration\t"));
        let empty = render(SessionLogFormat::Tsv, &[]);
        assert_eq!(empty.lines().count(), 1);
    }

    #[test]
    fn markdown_has_times_definitions_and_one_row_per_session() {
        let mut recs = records();
        recs[0].final_text = "a | b\nc".into();
        let text = render(SessionLogFormat::Markdown, &recs);
        assert!(text.starts_with("# stt bench session log\n"), "{text}");
        assert!(
            text.contains("- started: 2023-11-14T22:13:20.000Z"),
            "{text}"
        );
        assert!(
            text.contains("- finished: 2023-11-14T22:14:02.500Z"),
            "{text}"
        );
        assert!(text.contains("- `decode_queue_wait_seconds`: "), "{text}");
        let table: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        // Header, separator, two sessions.
        assert_eq!(table.len(), 4, "{text}");
        assert!(table[2].contains("a \\| b c"), "{}", table[2]);
        assert!(table[3].contains("| ERR1008 |"), "{}", table[3]);
        // Escaped pipes aside, every row has one cell per column.
        let cells = |l: &str| l.replace("\\|", "").matches('|').count() - 1;
        assert!(table.iter().all(|l| cells(l) == COLUMNS.len()), "{text}");
        let shown = render(SessionLogFormat::Markdown, &recs[..1]);
        assert!(shown.contains("- sessions: 1 of 2 shown"), "{shown}");
    }

    #[test]
    fn format_from_extension() {
        let f = |p: &str| SessionLogFormat::from_path(Path::new(p));
        assert_eq!(f("a.csv"), Some(SessionLogFormat::Csv));
        assert_eq!(f("a.TSV"), Some(SessionLogFormat::Tsv));
        assert_eq!(f("a.md"), Some(SessionLogFormat::Markdown));
        assert_eq!(f("a.jsonl"), Some(SessionLogFormat::Jsonl));
        assert_eq!(f("a.log"), None);
        assert_eq!(f("a"), None);
    }
}
