//! Draws a [`State`] into a ratatui frame: a header line and one panel per
//! concern. Reads state only — no I/O, no clocks — so every panel is tested
//! with `TestBackend`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline, Wrap};
use ratatui::Frame;

use super::state::{Metrics, Ring, Series, State, System, STAGES};
use super::text::{bytes, counts, gpu_lines, model_line, opt, secs};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, state: &State) {
    let [header, body] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(frame.area());
    draw_header(frame, header, state);
    let Some(m) = &state.metrics else {
        draw_unreachable(frame, body, state);
        return;
    };
    // Figures from before the server went away stay up, dimmed.
    let style = if state.unreachable() {
        Style::default().add_modifier(Modifier::DIM)
    } else {
        Style::default()
    };
    let [top, latency, bottom] = Layout::vertical([
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Min(6),
    ])
    .areas(body);
    let [sessions, decode, vad] = Layout::horizontal([
        Constraint::Percentage(34),
        Constraint::Percentage(33),
        Constraint::Percentage(33),
    ])
    .areas(top);
    draw_sessions(frame, sessions, state, m, style);
    draw_decode(frame, decode, m, style);
    draw_vad(frame, vad, state, m, style);
    draw_latency(frame, latency, state, m, style);
    let [errors, system, models] = Layout::horizontal([
        Constraint::Percentage(25),
        Constraint::Percentage(40),
        Constraint::Percentage(35),
    ])
    .areas(bottom);
    draw_errors(frame, errors, m, style);
    draw_system(frame, system, state, style);
    draw_models(frame, models, state, m, style);
}

fn draw_header(frame: &mut Frame, area: Rect, state: &State) {
    let mut first = vec![Span::styled(
        "stt dashboard ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    first.push(Span::raw(state.source.clone()));
    let status = match (&state.metrics_error, state.paused) {
        (_, true) => Span::styled(
            "PAUSED (p resumes)",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ),
        (Some(e), false) => Span::styled(
            format!(
                "server unreachable: {e} (retrying; {} failed polls)",
                state.failures_in_a_row
            ),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        (None, false) if state.polls == 0 => Span::raw("connecting…"),
        (None, false) => Span::styled(
            format!("ok, poll {}", state.polls),
            Style::default().fg(Color::Green),
        ),
    };
    let lines = vec![
        Line::from(first),
        Line::from(vec![status, Span::raw("   q quit  p pause")]),
    ];
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_unreachable(frame: &mut Frame, area: Rect, state: &State) {
    let msg = match &state.metrics_error {
        Some(e) => vec![
            Line::styled(
                "server unreachable",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Line::raw(e.clone()),
            Line::raw("retrying every interval; is `stt serve` running with its HTTP port here?"),
        ],
        None => vec![Line::raw("waiting for the first answer…")],
    };
    frame.render_widget(
        Paragraph::new(msg)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" server ")),
        area,
    );
}

/// `label value` lines inside a titled border.
fn panel<'a>(title: &'a str, lines: Vec<Line<'a>>, style: Style) -> Paragraph<'a> {
    Paragraph::new(lines)
        .style(style)
        .block(Block::bordered().title(format!(" {title} ")))
}

fn kv(label: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<18}"), Style::default().fg(Color::Gray)),
        Span::raw(value),
    ])
}

/// A sparkline of the newest samples that fit `area`, scaled by `unit`
/// (samples are seconds or percentages; the widget wants integers).
fn spark(frame: &mut Frame, area: Rect, ring: Option<&Ring>, unit: f64, color: Color) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let data: Vec<u64> = ring
        .map(|r| {
            r.tail(usize::from(area.width))
                .map(|v| (v * unit).round() as u64)
                .collect()
        })
        .unwrap_or_default();
    frame.render_widget(
        Sparkline::default()
            .data(data)
            .style(Style::default().fg(color)),
        area,
    );
}

/// Draws a titled border and splits its inside into text rows and a
/// sparkline on the last `spark_rows` lines.
fn framed_with_spark(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    style: Style,
    spark_rows: u16,
) -> (Rect, Rect) {
    let block = Block::bordered().title(format!(" {title} ")).style(style);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text, graph] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(spark_rows)]).areas(inner);
    (text, graph)
}

fn draw_sessions(frame: &mut Frame, area: Rect, state: &State, m: &Metrics, style: Style) {
    let mut lines = vec![
        kv("active", m.active_sessions.to_string()),
        kv("streaming", opt(m.streaming_sessions)),
        kv(
            "started / ended",
            format!("{} / {}", m.sessions_started_total, m.sessions_ended_total),
        ),
    ];
    if let Some(keys) = &m.active_sessions_by_api_key {
        lines.push(kv("by api key", counts(keys)));
    }
    let (text, graph) = framed_with_spark(frame, area, "sessions", style, 2);
    frame.render_widget(Paragraph::new(lines).style(style), text);
    spark(
        frame,
        graph,
        state.series(Series::ActiveSessions),
        1.0,
        Color::Cyan,
    );
}

fn draw_decode(frame: &mut Frame, area: Rect, m: &Metrics, style: Style) {
    let d = &m.decode;
    let lines = vec![
        kv("pending", d.pending.to_string()),
        kv("workers busy", d.workers_busy.to_string()),
        kv("decodes", d.count.to_string()),
        kv("partials dropped", d.partials_dropped_total.to_string()),
        kv("final timeouts", d.finals_queue_timeouts_total.to_string()),
        kv("rtf", opt(m.rtf.map(|v| format!("{v:.3}")))),
        kv("buffered audio", bytes(m.buffer_bytes)),
    ];
    frame.render_widget(panel("decode queue", lines, style), area);
}

fn draw_vad(frame: &mut Frame, area: Rect, state: &State, m: &Metrics, style: Style) {
    let lines = vec![
        kv("active utterances", m.vad.active_utterances.to_string()),
        kv("utterances", m.vad.utterances_total.to_string()),
        kv("quiet utterances", m.vad.quiet_utterances_total.to_string()),
        kv(
            "partials / finals",
            format!("{} / {}", m.results.partials_total, m.results.finals_total),
        ),
    ];
    let (text, graph) = framed_with_spark(frame, area, "vad", style, 2);
    frame.render_widget(Paragraph::new(lines).style(style), text);
    spark(
        frame,
        graph,
        state.series(Series::ActiveUtterances),
        1.0,
        Color::Magenta,
    );
}

/// One row per figure: label, latest value, sparkline of its history.
fn draw_latency(frame: &mut Frame, area: Rect, state: &State, m: &Metrics, style: Style) {
    let f = &m.latency.final_;
    let p = &m.latency.partial;
    let mut rows: Vec<(String, String, Series, f64)> = vec![
        (
            "final p50".into(),
            secs(f.total_p50_sec),
            Series::FinalP50,
            1e3,
        ),
        (
            "final p95".into(),
            secs(f.total_p95_sec),
            Series::FinalP95,
            1e3,
        ),
        (
            "partial p50".into(),
            secs(p.total_p50_sec),
            Series::PartialP50,
            1e3,
        ),
        (
            "partial p95".into(),
            secs(p.total_p95_sec),
            Series::PartialP95,
            1e3,
        ),
    ];
    for (name, series) in STAGES {
        let last = state.series(series).and_then(Ring::last).unwrap_or(0.0);
        rows.push((format!("{name} (mean)"), secs(last), series, 1e3));
    }
    let dropped = state
        .series(Series::PartialsDropped)
        .and_then(Ring::last)
        .unwrap_or(0.0);
    rows.push((
        "partials dropped".into(),
        format!("+{dropped:.0}"),
        Series::PartialsDropped,
        1.0,
    ));
    let title = format!(
        " decode latency (recent {} final / {} partial; stages per interval) ",
        f.count, p.count
    );
    let block = Block::bordered().title(title).style(style);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = Layout::vertical(vec![Constraint::Length(1); rows.len()]).split(inner);
    for ((label, value, series, unit), line) in rows.into_iter().zip(lines.iter()) {
        let [l, v, g] = Layout::horizontal([
            Constraint::Length(20),
            Constraint::Length(10),
            Constraint::Min(0),
        ])
        .areas(*line);
        frame.render_widget(Paragraph::new(label).style(style), l);
        frame.render_widget(Paragraph::new(value).style(style), v);
        spark(frame, g, state.series(series), unit, Color::Yellow);
    }
}

fn draw_errors(frame: &mut Frame, area: Rect, m: &Metrics, style: Style) {
    let mut lines: Vec<Line> = if m.errors.is_empty() {
        vec![Line::raw("none")]
    } else {
        m.errors
            .iter()
            .map(|(code, n)| {
                Line::from(vec![
                    Span::styled(format!("{code:<10}"), Style::default().fg(Color::Red)),
                    Span::raw(n.to_string()),
                ])
            })
            .collect()
    };
    if !m.sessions_ended_by_reason.is_empty() {
        lines.push(Line::raw(format!(
            "ended: {}",
            counts(&m.sessions_ended_by_reason)
        )));
    }
    frame.render_widget(
        panel("errors by code", lines, style).wrap(Wrap { trim: true }),
        area,
    );
}

fn draw_system(frame: &mut Frame, area: Rect, state: &State, style: Style) {
    let (text, graph) = framed_with_spark(frame, area, "system", style, 1);
    let lines = match (&state.system, &state.system_error) {
        (_, Some(e)) => vec![Line::raw(format!("/system unavailable: {e}"))],
        (None, None) => vec![Line::raw("-")],
        (Some(s), None) => system_lines(s),
    };
    frame.render_widget(
        Paragraph::new(lines).style(style).wrap(Wrap { trim: true }),
        text,
    );
    spark(
        frame,
        graph,
        state.series(Series::ProcessCpu),
        10.0,
        Color::Green,
    );
}

fn system_lines(s: &System) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(p) = &s.process {
        lines.push(kv("process cpu", format!("{:.1}%", p.cpu_percent)));
        lines.push(kv("rss", bytes(p.rss_bytes)));
        lines.push(kv("threads", opt(p.threads)));
    }
    let h = &s.host;
    lines.push(kv(
        "host cpu",
        format!("{:.1}% of {} cpus", h.cpu_percent, h.cpus),
    ));
    lines.push(kv(
        "host memory",
        format!(
            "{} / {}",
            bytes(h.memory_used_bytes),
            bytes(h.memory_total_bytes)
        ),
    ));
    lines.push(kv(
        "load",
        format!(
            "{:.2} {:.2} {:.2}",
            h.load_average.one, h.load_average.five, h.load_average.fifteen
        ),
    ));
    lines
}

fn draw_models(frame: &mut Frame, area: Rect, state: &State, m: &Metrics, style: Style) {
    let mut lines: Vec<Line> = m.models.iter().map(|x| Line::raw(model_line(x))).collect();
    if lines.is_empty() {
        lines.push(Line::raw("no models"));
    }
    if let Some(s) = &state.system {
        for g in gpu_lines(s) {
            lines.push(Line::raw(format!("gpu {g}")));
        }
    }
    frame.render_widget(
        panel("models / gpu", lines, style).wrap(Wrap { trim: true }),
        area,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::Terminal;

    use super::super::state::tests::busy_state;
    use super::super::state::{Poll, State};
    use super::*;

    /// The rendered screen as text, one line per row.
    fn screen(state: &State, width: u16, height: u16) -> String {
        let mut term = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        term.draw(|f| draw(f, state)).expect("draws");
        text(term.backend().buffer())
    }

    fn text(buf: &Buffer) -> String {
        let area = buf.area;
        let mut out = String::new();
        for y in 0..area.height {
            for x in 0..area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn full_snapshot_shows_every_panel() {
        let mut state = busy_state();
        state.source = "http://127.0.0.1:8000/metrics.json".into();
        let s = screen(&state, 120, 40);
        for want in [
            "stt dashboard http://127.0.0.1:8000/metrics.json",
            "ok, poll 1",
            " sessions ",
            "active            3",
            "by api key        team-a 2, team-b 1",
            " decode queue ",
            "partials dropped  5",
            "rtf               0.125",
            " vad ",
            "active utterances 2",
            "decode latency (recent 12 final / 28 partial",
            "final p50           350 ms",
            "final p95           900 ms",
            "inference (mean)",
            " errors by code ",
            "ERR1003   2",
            "process cpu       150.5%",
            "rss               500.0 MiB",
            "threads           17",
            "tiny.en ready (default)",
            "gpu 0 NVIDIA H100",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }

    #[test]
    fn sparklines_draw_history() {
        let mut state = busy_state();
        let mut m = state.metrics.clone().expect("metrics");
        for n in [1, 5, 2] {
            m.active_sessions = n;
            state.apply(Poll {
                metrics: Ok(m.clone()),
                system: Err("down".into()),
            });
        }
        let s = screen(&state, 120, 40);
        // A full-height bar for the peak of active sessions.
        assert!(s.contains('█'), "{s}");
        assert!(s.contains("/system unavailable: down"), "{s}");
    }

    #[test]
    fn unreachable_server_before_any_answer() {
        let mut state = State {
            source: "http://127.0.0.1:1/metrics.json".into(),
            ..State::default()
        };
        state.apply(Poll {
            metrics: Err("GET http://127.0.0.1:1/metrics.json: Connection refused".into()),
            system: Err("refused".into()),
        });
        let s = screen(&state, 100, 20);
        assert!(s.contains("server unreachable"), "{s}");
        assert!(s.contains("Connection refused"), "{s}");
        assert!(s.contains("retrying"), "{s}");
        assert!(!s.contains(" sessions "), "{s}");
    }

    #[test]
    fn unreachable_after_answers_keeps_the_panels() {
        let mut state = busy_state();
        state.apply(Poll {
            metrics: Err("connection reset".into()),
            system: Err("connection reset".into()),
        });
        let s = screen(&state, 120, 40);
        assert!(
            s.contains("server unreachable: connection reset (retrying; 1 failed polls)"),
            "{s}"
        );
        assert!(s.contains("active            3"), "{s}");
    }

    #[test]
    fn paused_says_so_and_tiny_terminals_do_not_panic() {
        let mut state = busy_state();
        state.paused = true;
        assert!(screen(&state, 120, 40).contains("PAUSED"));
        for (w, h) in [(1, 1), (20, 5), (40, 10), (0, 0)] {
            screen(&state, w, h);
        }
    }
}
