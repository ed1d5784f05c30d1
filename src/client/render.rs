//! Client output: the live partial line, finals, and the `--metrics` report,
//! as text or as JSON lines. Rendering state lives here and nowhere else; the
//! stream code only hands over results and the final outcome.
//!
//! On a terminal a partial is one line rewritten in place (`\r` + clear) and
//! each final replaces it on its own line. Elsewhere (a pipe, a file) partials
//! are skipped, because a rewritten line would turn into noise.

use std::io::{self, IsTerminal, Write};

use serde_json::json;

use super::timing::{DecodeTimings, LatencySummary, ResultTiming};
use super::StreamOutcome;
use crate::pb;

/// ANSI: return to column 0 and clear the line.
const CLEAR_LINE: &str = "\r\x1b[2K";
/// Widest partial shown on a terminal; longer ones show their tail, so the
/// line never wraps (a wrapped line cannot be cleared with `\r`).
const PARTIAL_WIDTH: usize = 78;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// One JSON object per line.
    Json,
}

/// Writes results and reports to `out`.
pub struct Renderer<W: Write> {
    out: W,
    format: Format,
    /// Rewrite partials in place (only on a terminal).
    live: bool,
    /// A partial is on screen and must be cleared before the next line.
    partial_shown: bool,
    /// The first write error; output stops after it, the stream does not.
    failed: Option<io::Error>,
}

impl Renderer<io::Stdout> {
    /// Renders to stdout, live when stdout is a terminal.
    pub fn stdout(format: Format) -> Self {
        let live = io::stdout().is_terminal();
        Self::new(io::stdout(), format, live)
    }
}

impl<W: Write> Renderer<W> {
    /// Renders to `out`; `live` rewrites partials in place.
    pub fn new(out: W, format: Format, live: bool) -> Self {
        Self {
            out,
            format,
            live,
            partial_shown: false,
            failed: None,
        }
    }

    /// Shows one result.
    pub fn result(&mut self, r: &pb::SttResult, t: &ResultTiming) {
        let written = match self.format {
            Format::Json => writeln!(self.out, "{}", result_json(r, t)),
            Format::Text if r.is_final => self.final_line(r),
            Format::Text if self.live => self.partial_line(r),
            Format::Text => Ok(()),
        };
        self.note(written);
    }

    /// Clears a partial left on screen (the stream ended without a final).
    pub fn finish(&mut self) {
        if self.partial_shown {
            let written = write!(self.out, "{CLEAR_LINE}").and_then(|()| self.out.flush());
            self.partial_shown = false;
            self.note(written);
        }
    }

    /// The `--metrics` report.
    pub fn report(&mut self, o: &StreamOutcome) {
        self.finish();
        let written = match self.format {
            Format::Json => writeln!(self.out, "{}", json!({ "metrics": metrics_json(o) })),
            Format::Text => write!(self.out, "{}", metrics_text(o)),
        };
        self.note(written);
    }

    /// The first write error, if any (a closed pipe is not one).
    pub fn into_error(self) -> Option<io::Error> {
        self.failed
    }

    fn final_line(&mut self, r: &pb::SttResult) -> io::Result<()> {
        let clear = if self.partial_shown { CLEAR_LINE } else { "" };
        self.partial_shown = false;
        let language = language_tag(r).map(|t| t + " ").unwrap_or_default();
        writeln!(
            self.out,
            "{clear}[{:.2} → {:.2}] {language}{}",
            r.start_sec,
            r.end_sec,
            r.text.trim()
        )?;
        if !r.words.is_empty() {
            writeln!(self.out, "    {}", words_line(&r.words))?;
        }
        self.out.flush()
    }

    fn partial_line(&mut self, r: &pb::SttResult) -> io::Result<()> {
        self.partial_shown = true;
        write!(
            self.out,
            "{CLEAR_LINE}… {}",
            tail(r.text.trim(), PARTIAL_WIDTH)
        )?;
        self.out.flush()
    }

    fn note(&mut self, written: io::Result<()>) {
        match written {
            Ok(()) => {}
            // `stt file … | head` closes the pipe early; that is not a failure.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }
}

/// `[de 0.78]` for a final whose language was detected, `[de]` for one in
/// a forced language other than English; nothing for forced English
/// (tiny.en's every result) or a server that does not say. The server
/// reports forced languages with probability 1.0, so a detection that is
/// certain shows as forced; on a multilingual model without `--language`,
/// English finals are tagged too, since they were detected.
fn language_tag(r: &pb::SttResult) -> Option<String> {
    let code = r.language_code.trim();
    let detected = r.probability > 0.0 && r.probability < 1.0;
    match (code, detected) {
        ("", _) | ("en", false) => None,
        (_, true) => Some(format!("[{code} {:.2}]", r.probability)),
        (_, false) => Some(format!("[{code}]")),
    }
}

/// `word@start` for each word of a final.
fn words_line(words: &[pb::Word]) -> String {
    let shown: Vec<String> = words
        .iter()
        .map(|w| format!("{}@{:.2}", w.word.trim(), w.start_sec))
        .collect();
    shown.join(" ")
}

/// The last `width` characters of `text`, marked with `…` when cut.
fn tail(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        return text.to_string();
    }
    let kept: String = text.chars().skip(n - width + 1).collect();
    format!("…{kept}")
}

fn result_json(r: &pb::SttResult, t: &ResultTiming) -> serde_json::Value {
    json!({
        "text": r.text,
        "is_final": r.is_final,
        "start_sec": r.start_sec,
        "end_sec": r.end_sec,
        "language_code": r.language_code,
        "language": r.language,
        "probability": r.probability,
        "committed_text": r.committed_text,
        "unstable_text": r.unstable_text,
        "words": r.words.iter().map(|w| json!({
            "word": w.word,
            "start_sec": w.start_sec,
            "end_sec": w.end_sec,
            "probability": w.probability,
        })).collect::<Vec<_>>(),
        "received_sec": round3(t.received_sec),
        "latency_sec": t.latency_sec.map(round3),
    })
}

fn metrics_json(o: &StreamOutcome) -> serde_json::Value {
    json!({
        "session_id": o.session_id,
        "audio_sec": round3(o.audio_sec),
        "sent_sec": round3(o.sent_sec),
        "wall_sec": round3(o.wall_sec),
        "rtf": o.rtf().map(round3),
        "first_partial_sec": o.first_partial_sec.map(round3),
        "results": o.results.len(),
        "finals": o.finals().count(),
        "final_latency": LatencySummary::of(&o.final_latencies()).map(|l| json!({
            "count": l.count,
            "mean_sec": round3(l.mean_sec),
            "p50_sec": round3(l.p50_sec),
            "p90_sec": round3(l.p90_sec),
            "max_sec": round3(l.max_sec),
        })),
        "final_latencies_sec": o.final_latencies().into_iter().map(round3).collect::<Vec<_>>(),
        "server_decode": o.trailers,
    })
}

fn metrics_text(o: &StreamOutcome) -> String {
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3} s"));
    let mut s = String::from("\nmetrics\n");
    s += &format!("  session          {}\n", o.session_id);
    s += &format!(
        "  audio            {:.3} s sent of {:.3} s\n",
        o.sent_sec, o.audio_sec
    );
    s += &format!(
        "  wall             {:.3} s (RTF {})\n",
        o.wall_sec,
        o.rtf().map_or_else(|| "-".into(), |r| format!("{r:.3}"))
    );
    s += &format!("  first partial    {}\n", secs(o.first_partial_sec));
    match LatencySummary::of(&o.final_latencies()) {
        Some(l) => {
            s += &format!(
                "  final latency    n={} mean {:.3} s, p50 {:.3} s, p90 {:.3} s, max {:.3} s\n",
                l.count, l.mean_sec, l.p50_sec, l.p90_sec, l.max_sec
            );
            for (r, t) in o.results.iter().zip(&o.timings).filter(|(r, _)| r.is_final) {
                s += &format!(
                    "    [{:.2} → {:.2}] {}\n",
                    r.start_sec,
                    r.end_sec,
                    secs(t.latency_sec)
                );
            }
        }
        None => s += "  final latency    - (no finals)\n",
    }
    s += &decode_text(&o.trailers);
    s
}

fn decode_text(d: &DecodeTimings) -> String {
    if d.is_empty() {
        return "  server decode    - (the server sent no timing trailers)\n".into();
    }
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3} s"));
    format!(
        "  server decode    {} decodes: buffer wait {}, queue wait {}, inference {}, \
         emit {}, total {}\n",
        d.count.map_or_else(|| "-".to_string(), |c| c.to_string()),
        f(d.buffer_wait_sec),
        f(d.queue_wait_sec),
        f(d.inference_sec),
        f(d.response_emit_sec),
        f(d.total_sec),
    )
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(text: &str, is_final: bool, start: f64, end: f64) -> pb::SttResult {
        pb::SttResult {
            text: text.into(),
            is_final,
            start_sec: start,
            end_sec: end,
            ..Default::default()
        }
    }

    const T: ResultTiming = ResultTiming {
        received_sec: 1.0,
        latency_sec: Some(0.25),
    };

    fn render(live: bool, format: Format, results: &[pb::SttResult]) -> String {
        let mut buf = Vec::new();
        let mut r = Renderer::new(&mut buf, format, live);
        for res in results {
            r.result(res, &T);
        }
        r.finish();
        assert!(r.into_error().is_none());
        String::from_utf8(buf).expect("utf-8")
    }

    #[test]
    fn terminal_rewrites_partials_and_keeps_finals() {
        let out = render(
            true,
            Format::Text,
            &[
                result("hel", false, 0.0, 0.5),
                result(" hello ", true, 0.0, 1.0),
            ],
        );
        assert_eq!(out, "\r\x1b[2K… hel\r\x1b[2K[0.00 → 1.00] hello\n");
    }

    #[test]
    fn pipes_get_finals_only() {
        let out = render(
            false,
            Format::Text,
            &[
                result("hel", false, 0.0, 0.5),
                result("hello", true, 0.5, 1.25),
            ],
        );
        assert_eq!(out, "[0.50 → 1.25] hello\n");
    }

    #[test]
    fn finals_say_which_language_unless_plain_english() {
        let with = |code: &str, p: f64| pb::SttResult {
            language_code: code.into(),
            probability: p,
            ..result("hallo", true, 0.0, 1.0)
        };
        let out = render(
            false,
            Format::Text,
            &[
                with("de", 0.783),
                with("de", 1.0),
                with("en", 1.0),
                with("en", 0.95),
            ],
        );
        assert_eq!(
            out,
            "[0.00 → 1.00] [de 0.78] hallo\n[0.00 → 1.00] [de] hallo\n\
             [0.00 → 1.00] hallo\n[0.00 → 1.00] [en 0.95] hallo\n"
        );
    }

    #[test]
    fn dangling_partial_is_cleared() {
        let out = render(true, Format::Text, &[result("hel", false, 0.0, 0.5)]);
        assert!(out.ends_with(CLEAR_LINE));
    }

    #[test]
    fn json_lines_include_partials() {
        let out = render(
            false,
            Format::Json,
            &[result("a", false, 0.0, 0.5), result("ab", true, 0.0, 1.0)],
        );
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["is_final"], true);
        assert_eq!(lines[1]["text"], "ab");
        assert_eq!(lines[1]["latency_sec"], 0.25);
    }

    #[test]
    fn long_partials_show_their_tail() {
        let long = "x".repeat(100) + "END";
        let shown = tail(&long, 10);
        assert_eq!(shown.chars().count(), 10);
        assert!(shown.starts_with('…') && shown.ends_with("END"));
        assert_eq!(tail("short", 10), "short");
    }

    #[test]
    fn report_names_every_figure() {
        let o = StreamOutcome {
            session_id: "s".into(),
            session: pb::SessionResponse::default(),
            results: vec![result("a", false, 0.0, 0.5), result("ab", true, 0.0, 1.0)],
            timings: vec![T, T],
            trailers: DecodeTimings {
                inference_sec: Some(0.5),
                count: Some(2),
                ..Default::default()
            },
            audio_sec: 1.0,
            sent_sec: 1.0,
            wall_sec: 1.5,
            first_partial_sec: Some(0.6),
        };
        let text = metrics_text(&o);
        for needle in [
            "RTF 1.500",
            "first partial    0.600 s",
            "n=1",
            "[0.00 → 1.00] 0.250 s",
            "2 decodes",
            "inference 0.500 s",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        let j = metrics_json(&o);
        assert_eq!(j["rtf"], 1.5);
        assert_eq!(j["server_decode"]["count"], 2);
        assert_eq!(j["server_decode"]["total_sec"], serde_json::Value::Null);
    }
}
