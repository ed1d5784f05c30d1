//! The plain-text snapshot of `--once` and `--no-clear`: one `key value`
//! line per figure, stable enough to grep. Also the number formats the
//! terminal view shares.

use std::fmt::Write;

use super::state::{Metrics, Recent, State, System, STAGES};

/// Seconds as milliseconds below 10 s, the unit most decode figures need.
pub fn secs(v: f64) -> String {
    if v < 10.0 {
        format!("{:.0} ms", v * 1000.0)
    } else {
        format!("{v:.1} s")
    }
}

/// Bytes in binary units.
pub fn bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v} B")
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `count=… p50=… p95=… max=… inference=… queue=… rtf=…` for one kind.
pub fn recent(r: &Recent) -> String {
    if r.count == 0 {
        return "no recent decodes".to_string();
    }
    format!(
        "n {}  p50 {}  p95 {}  max {}  inference {}  queue {}  rtf {}",
        r.count,
        secs(r.total_p50_sec),
        secs(r.total_p95_sec),
        secs(r.total_max_sec),
        secs(r.inference_mean_sec),
        secs(r.queue_wait_mean_sec),
        opt(r.rtf_mean.map(|v| format!("{v:.3}"))),
    )
}

/// `code n, code n` or `none`.
pub fn counts<'a>(it: impl IntoIterator<Item = (&'a String, &'a u64)>) -> String {
    let parts: Vec<String> = it.into_iter().map(|(k, n)| format!("{k} {n}")).collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// The whole snapshot. `source` names the metrics URL.
pub fn render(state: &State, source: &str) -> String {
    let mut out = String::new();
    // `writeln!` into a String cannot fail.
    let _ = writeln!(out, "stt dashboard: {source}");
    // Figures from an earlier answer would read as current in a log.
    if let Some(e) = &state.metrics_error {
        let _ = writeln!(out, "server unreachable: {e}");
        return out;
    }
    if let Some(m) = &state.metrics {
        metrics(&mut out, m);
    }
    match (&state.system, &state.system_error) {
        (_, Some(e)) => {
            let _ = writeln!(out, "system            unavailable: {e}");
        }
        (Some(s), None) => system(&mut out, s),
        (None, None) => {}
    }
    out
}

fn metrics(out: &mut String, m: &Metrics) {
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<18}{v}");
    };
    line("active sessions", m.active_sessions.to_string());
    if let Some(keys) = &m.active_sessions_by_api_key {
        line("  by api key", counts(keys));
    }
    line(
        "sessions",
        format!(
            "streaming {}  started {}  ended {}  client disconnects {}",
            opt(m.streaming_sessions),
            m.sessions_started_total,
            m.sessions_ended_total,
            m.client_disconnects_total
        ),
    );
    line("  ended by reason", counts(&m.sessions_ended_by_reason));
    let d = &m.decode;
    line(
        "decode",
        format!(
            "count {}  pending {}  workers busy {}  partials dropped {}  final queue timeouts {}",
            d.count,
            d.pending,
            d.workers_busy,
            d.partials_dropped_total,
            d.finals_queue_timeouts_total
        ),
    );
    if d.count > 0 {
        let n = d.count as f64;
        let totals = [
            d.buffer_wait_sec_total,
            d.queue_wait_sec_total,
            d.inference_sec_total,
            d.response_emit_sec_total,
            d.total_sec_total,
        ];
        let stages: Vec<String> = STAGES
            .iter()
            .zip(totals)
            .map(|((name, _), t)| format!("{name} {}", secs(t / n)))
            .collect();
        line("  mean by stage", stages.join("  "));
    }
    line("latency final", recent(&m.latency.final_));
    line("latency partial", recent(&m.latency.partial));
    line(
        "rtf",
        format!(
            "{} over {:.1} s of audio",
            opt(m.rtf.map(|v| format!("{v:.3}"))),
            m.audio_sec_total
        ),
    );
    line(
        "vad",
        format!(
            "active utterances {}  utterances {}  quiet {}  pool in use {}",
            m.vad.active_utterances,
            m.vad.utterances_total,
            m.vad.quiet_utterances_total,
            m.vad.pool_in_use
        ),
    );
    line(
        "results",
        format!(
            "partials {}  finals {}",
            m.results.partials_total, m.results.finals_total
        ),
    );
    line("errors", counts(&m.errors));
    line("buffered audio", bytes(m.buffer_bytes));
    if let Some(c) = &m.capture {
        line(
            "capture",
            format!(
                "open {}  files {}  {}  dropped chunks {}  write errors {}",
                c.open_files,
                c.files_total,
                bytes(c.bytes_total),
                c.dropped_chunks_total,
                c.write_errors_total
            ),
        );
    }
    if m.models.is_empty() {
        line("models", "none".to_string());
    }
    for model in &m.models {
        line("model", model_line(model));
    }
}

/// `tiny.en ready (default) sessions 1 workers 2 threads 4`.
pub fn model_line(m: &super::state::Model) -> String {
    let mut s = format!("{} {}", m.id, m.status);
    if m.default {
        s.push_str(" (default)");
    }
    let _ = write!(
        s,
        "  sessions {}  workers {}  threads {}",
        m.sessions,
        opt(m.workers),
        opt(m.threads)
    );
    if let Some(e) = &m.error {
        let _ = write!(s, "  error: {e}");
    }
    s
}

fn system(out: &mut String, s: &System) {
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<18}{v}");
    };
    match &s.process {
        Some(p) => line(
            "process",
            format!(
                "cpu {:.1}%  rss {}  threads {}",
                p.cpu_percent,
                bytes(p.rss_bytes),
                opt(p.threads)
            ),
        ),
        None => line("process", "-".to_string()),
    }
    let h = &s.host;
    line(
        "host",
        format!(
            "{} cpus  cpu {:.1}%  memory {} / {}  load {:.2} {:.2} {:.2}",
            h.cpus,
            h.cpu_percent,
            bytes(h.memory_used_bytes),
            bytes(h.memory_total_bytes),
            h.load_average.one,
            h.load_average.five,
            h.load_average.fifteen
        ),
    );
    for g in gpu_lines(s) {
        line("gpu", g);
    }
}

/// One line per GPU, or one saying why there are none.
pub fn gpu_lines(s: &System) -> Vec<String> {
    let g = &s.gpu;
    if !g.enabled {
        return vec!["off (server runs without STT_ENABLE_GPU_METRICS=1)".to_string()];
    }
    if g.available == Some(false) || g.devices.is_empty() {
        return vec![format!(
            "unavailable: {}",
            g.reason.as_deref().unwrap_or("no devices")
        )];
    }
    g.devices
        .iter()
        .map(|d| {
            if let Some(e) = &d.error {
                return format!("{} error: {e}", d.index);
            }
            format!(
                "{} {}  util {}%  memory {} / {}  {}°C  {} W",
                d.index,
                d.name.as_deref().unwrap_or("?"),
                opt(d.utilization_percent),
                opt(d.memory_used_bytes.map(bytes)),
                opt(d.memory_total_bytes.map(bytes)),
                opt(d.temperature_c),
                opt(d.power_watts.map(|w| format!("{w:.0}"))),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::state::tests::busy_state;
    use super::super::state::Poll;
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(secs(0.3504), "350 ms");
        assert_eq!(secs(12.0), "12.0 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(524_288_000), "500.0 MiB");
    }

    #[test]
    fn snapshot_text_has_every_section() {
        let text = render(&busy_state(), "http://x/metrics.json");
        for want in [
            "active sessions   3",
            "by api key      team-a 2, team-b 1",
            "partials dropped 5",
            "latency final     n 12  p50 350 ms  p95 900 ms",
            "rtf               0.125 over 64.0 s of audio",
            "active utterances 2",
            "errors            ERR1003 2, ERR1006 1",
            "model             tiny.en ready (default)",
            "process           cpu 150.5%  rss 500.0 MiB  threads 17",
            "host              8 cpus  cpu 40.",
            "gpu               0 NVIDIA H100  util 55%",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn unreachable_text_says_so() {
        let mut st = super::super::state::State::default();
        st.apply(Poll {
            metrics: Err("connection refused".into()),
            system: Err("connection refused".into()),
        });
        let text = render(&st, "http://x/metrics.json");
        assert!(
            text.contains("server unreachable: connection refused"),
            "{text}"
        );
    }
}
