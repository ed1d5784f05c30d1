//! `stt dashboard`: watches a server's HTTP control plane. Three modes over
//! one [`State`]: the interactive terminal UI, `--once` (one plain-text
//! snapshot, then exit) and `--no-clear` (a plain-text snapshot per poll,
//! for logs; also what happens when stdout is not a terminal).
//!
//! [`poll`] fetches, [`state`] folds answers into figures and history,
//! [`view`] and [`text`] render. This module only wires them to a terminal,
//! keys and signals, and puts the terminal back however the program ends.

pub mod poll;
pub mod state;
pub mod text;
pub mod view;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::cli::DashboardArgs;
use poll::Poller;
use state::State;

/// The server could not be reached for `--once`.
#[derive(Debug, thiserror::Error)]
#[error("server unreachable: {0}")]
pub struct Unreachable(pub String);

/// What the user can do about a dashboard error, where we know.
pub fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Unreachable>())
        .map(|_| {
            "start the server with `stt serve`, or point --metrics-url and --system-url at its \
         HTTP control plane (`--metrics-port`, default 8000)"
                .to_string()
        })
}

/// Runs the dashboard until `q`, Esc, Ctrl-C or SIGTERM (or, with `--once`,
/// for one poll).
pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let every = poll::interval(args.interval)?;
    let poller = Poller::new(
        &args.metrics_url,
        &args.system_url,
        args.tls.client().as_ref(),
    )?;
    let mut state = State {
        source: poller.metrics_url.to_string(),
        ..State::default()
    };
    if args.once {
        state.apply(poller.poll().await);
        if let Some(e) = &state.metrics_error {
            return Err(Unreachable(e.clone()).into());
        }
        let text = text::render(&state, &state.source);
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head -1`) is the reader's choice, not a failure.
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(anyhow::anyhow!("cannot write to stdout: {e}"))
            }
            _ => return Ok(()),
        }
    }
    let (tx, polls) = mpsc::channel(4);
    let poll_task = tokio::spawn(poller.run(every, tx));
    let result = if args.no_clear || !std::io::stdout().is_terminal() {
        log_loop(state, polls).await
    } else {
        tui_loop(state, polls).await
    };
    poll_task.abort();
    result
}

/// `--no-clear`: a timestamped plain-text snapshot per poll.
async fn log_loop(mut state: State, mut polls: mpsc::Receiver<state::Poll>) -> anyhow::Result<()> {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            poll = polls.recv() => {
                let Some(poll) = poll else { return Ok(()) };
                state.apply(poll);
                let mut out = std::io::stdout().lock();
                let text = text::render(&state, &state.source);
                // A closed pipe (`| head`) ends the dashboard quietly.
                if writeln!(out, "--- {} UTC\n{text}", clock()).is_err() || out.flush().is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM. Quietly: a log line would land on the
/// dashboard's own screen.
async fn stop_signal() {
    crate::signal::stop_requested().await;
}

/// HH:MM:SS of the current UTC time, for log lines.
fn clock() -> String {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    TogglePause,
}

/// Maps a key press to an action; other keys do nothing.
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => Some(Action::Quit),
        // Raw mode turns Ctrl-C into a key rather than a signal.
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(Action::Quit),
        KeyCode::Char('p') | KeyCode::Char('P') => Some(Action::TogglePause),
        _ => None,
    }
}

/// The interactive UI. Redraws only when a poll lands, a key is pressed or
/// the terminal is resized: between those nothing runs but two waits.
async fn tui_loop(mut state: State, mut polls: mpsc::Receiver<state::Poll>) -> anyhow::Result<()> {
    let _restore = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| anyhow::anyhow!("cannot draw on the terminal: {e}"))?;
    let (key_tx, mut keys) = mpsc::channel(16);
    let stop_keys = Arc::new(AtomicBool::new(false));
    spawn_key_reader(key_tx, stop_keys.clone());
    let stop = stop_signal();
    tokio::pin!(stop);
    let result = loop {
        if let Err(e) = terminal.draw(|f| view::draw(f, &state)) {
            break Err(anyhow::anyhow!("cannot draw on the terminal: {e}"));
        }
        tokio::select! {
            () = &mut stop => break Ok(()),
            poll = polls.recv() => match poll {
                Some(poll) => state.apply(poll),
                None => break Ok(()),
            },
            ev = keys.recv() => match ev {
                Some(Ok(Event::Key(key))) => match action(key) {
                    Some(Action::Quit) => break Ok(()),
                    Some(Action::TogglePause) => state.paused = !state.paused,
                    None => {}
                },
                // Resize and the rest: just redraw.
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(anyhow::anyhow!("cannot read the keyboard: {e}")),
                None => break Ok(()),
            },
        }
    };
    stop_keys.store(true, Ordering::Relaxed);
    result
}

/// Reads terminal events on a thread of its own (crossterm's reader
/// blocks). It wakes every 250 ms to see whether the UI has gone.
fn spawn_key_reader(tx: mpsc::Sender<std::io::Result<Event>>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("dashboard-keys".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ev = match event::poll(Duration::from_millis(250)) {
                    Ok(false) => continue,
                    Ok(true) => event::read(),
                    Err(e) => Err(e),
                };
                let failed = ev.is_err();
                if tx.blocking_send(ev).is_err() || failed {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the key reader; quit with Ctrl-C");
    }
}

/// Raw mode and the alternate screen for as long as it lives. Dropping it —
/// on return, on error or while unwinding — gives the terminal back; a panic
/// hook does the same before the panic message prints, so it stays legible.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        enable_raw_mode().map_err(|e| anyhow::anyhow!("cannot set up the terminal: {e}"))?;
        // From here on, Drop restores whatever partly succeeded.
        let guard = Self;
        // Cleared here rather than with `Terminal::clear`, which asks the
        // terminal for the cursor position and fails where nothing answers.
        execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            Clear(ClearType::All),
            cursor::Hide
        )
        .map_err(|e| anyhow::anyhow!("cannot set up the terminal: {e}"))?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Idempotent: safe from both the panic hook and `Drop`.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys() {
        let none = KeyModifiers::NONE;
        assert_eq!(action(press(KeyCode::Char('q'), none)), Some(Action::Quit));
        assert_eq!(action(press(KeyCode::Esc, none)), Some(Action::Quit));
        assert_eq!(
            action(press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action(press(KeyCode::Char('c'), none)), None);
        assert_eq!(
            action(press(KeyCode::Char('p'), none)),
            Some(Action::TogglePause)
        );
        let mut release = press(KeyCode::Char('q'), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release), None);
    }

    #[test]
    fn unreachable_has_a_hint() {
        let err = anyhow::Error::from(Unreachable("refused".into()));
        assert!(hint_for(&err).is_some_and(|h| h.contains("stt serve")));
        assert!(hint_for(&anyhow::anyhow!("other")).is_none());
    }

    #[test]
    fn clock_is_hh_mm_ss() {
        let c = clock();
        assert_eq!(c.len(), 8, "{c}");
        assert_eq!(c.as_bytes()[2], b':');
    }
}
