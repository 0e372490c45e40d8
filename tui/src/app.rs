//! The loop: terminal events in, queries out, a redraw after each. Queries run in a task of their
//! own, one at a time, so that a slow or unreachable collector never freezes the keys.

use std::io::{Stdout, stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::layout::Rect;
use tokio::sync::mpsc;

use crate::TuiError;
use crate::fetch::{Client, Fetched, Request, fetch};
use crate::input::{Outcome, handle};
use crate::state::{App, Connection, Open, REFRESHES, Tab};
use crate::view;

/// Where the dashboard reads from and how it starts.
#[derive(Clone, Debug)]
pub struct TuiConfig {
    /// The collector's Flight SQL address, e.g. `http://127.0.0.1:50051`.
    pub url: String,
    /// A query token, when the collector requires one.
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` collector, besides the public roots.
    pub ca_cert: Option<Vec<u8>>,
    /// The first refresh interval (the nearest of those `r` cycles through).
    pub refresh: Duration,
    /// The view shown first.
    pub tab: Tab,
}

impl TuiConfig {
    pub fn new(url: impl Into<String>) -> TuiConfig {
        TuiConfig {
            url: url.into(),
            token: None,
            ca_cert: None,
            refresh: Duration::from_secs(2),
            tab: Tab::Overview,
        }
    }
}

/// Puts the terminal back as it was: cooked mode, main screen, no mouse reports. Safe to call
/// twice; errors are ignored because there is nothing better to do with them on the way out.
fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), DisableMouseCapture, LeaveAlternateScreen);
}

/// Restores the terminal when dropped: on return, on `?`, and while unwinding from a panic.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard, TuiError> {
        enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        // The default hook prints to a terminal still in raw mode on the alternate screen, where
        // the message would be lost: restore first, then let it print.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// What a refresh asks for, less the clock: a change means "fetch now", not at the next tick.
fn wanted(app: &App) -> Request {
    let mut request = Request::now(app.tab, app.range().1);
    request.now_ns = 0;
    request.status_filter = app.status_filter;
    if app.tab == Tab::Models {
        request.model = app
            .selected_model()
            .map(|m| (m.service.clone(), m.model.clone()));
    }
    if matches!(app.tab, Tab::Gpus | Tab::Traces) {
        request.open = app.open.clone();
    }
    if let Some(Open::Gpu { .. }) = &request.open {
        request.open_gpu_host = app.open_gpu().map(|g| g.host.clone());
    }
    request
}

/// The time of each view's full refresh, `runs` times over, against the collector as it is:
/// what BENCHMARKS.md reports. Models and GPUs open their first row's detail, Traces its first
/// call's trace, as a user looking at them would.
pub async fn bench(
    config: &TuiConfig,
    range: Duration,
    runs: usize,
) -> Result<Vec<(Tab, Vec<Duration>)>, TuiError> {
    let mut client = Client::new(
        &config.url,
        config.token.as_deref(),
        config.ca_cert.as_deref(),
    )?;
    let mut app = App::new(config.url.clone());
    let mut out = Vec::new();
    for tab in Tab::ALL {
        app.tab = tab;
        // One refresh to learn what to open, as the screen would show it.
        let mut request = wanted(&app);
        request.now_ns = Request::now(tab, range).now_ns;
        request.range = range;
        fetch(&mut client, &request).await?.apply(&mut app.data);
        match tab {
            Tab::Gpus => {
                app.open = app.selected_gpu().map(|g| Open::Gpu {
                    uuid: g.uuid.clone(),
                })
            }
            Tab::Traces => {
                app.open = app.selected_trace().map(|t| Open::Trace {
                    trace_id: t.trace_id.clone(),
                    time_ns: t.time_ns,
                })
            }
            _ => app.open = None,
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut request = wanted(&app);
            request.now_ns = Request::now(tab, range).now_ns;
            request.range = range;
            let started = Instant::now();
            fetch(&mut client, &request).await?.apply(&mut app.data);
            times.push(started.elapsed());
        }
        out.push((tab, times));
    }
    Ok(out)
}

/// Runs the dashboard until `q` or Ctrl-C. Queries that fail are shown and retried; only a
/// terminal that cannot be used is an error.
pub async fn run(config: TuiConfig) -> Result<(), TuiError> {
    let client = Client::new(
        &config.url,
        config.token.as_deref(),
        config.ca_cert.as_deref(),
    )?;
    let mut app = App::new(config.url.clone());
    app.tab = config.tab;
    app.refresh = REFRESHES
        .iter()
        .position(|r| *r >= config.refresh)
        .unwrap_or(REFRESHES.len() - 1);

    let guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout()))?;
    terminal.clear()?;
    let result = event_loop(&mut terminal, &mut app, client).await;
    drop(terminal);
    drop(guard);
    result
}

/// Stops the event-reading thread when the loop ends, also when its future is dropped (a demo
/// that ends on a signal), so that no thread is left taking keys from the shell.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    mut client: Client,
) -> Result<(), TuiError> {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_reader = StopOnDrop(stop.clone());
    let (event_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let reader_stop = stop.clone();
    // crossterm's reads block; a thread that polls lets the loop stop it on the way out.
    let reader = std::thread::spawn(move || {
        while !reader_stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if event_tx.send(e).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                },
                Ok(false) => {}
                Err(_) => break,
            }
        }
    });

    let (request_tx, mut requests) = mpsc::channel::<Request>(1);
    let (result_tx, mut results) = mpsc::unbounded_channel::<Result<Fetched, TuiError>>();
    let fetcher = tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let answer = fetch(&mut client, &request).await;
            if result_tx.send(answer).is_err() {
                break;
            }
        }
    });

    let mut in_flight = false;
    let mut last_wanted: Option<Request> = None;
    let mut last_sent = Instant::now();
    let mut force = true;
    let mut last_ok: Option<String> = None;
    let outcome = loop {
        if let Err(e) = terminal.draw(|frame| view::draw(frame, app)) {
            break Err(TuiError::Terminal(e));
        }
        if app.quit {
            break Ok(());
        }
        let want = wanted(app);
        let due = last_sent.elapsed() >= app.refresh_every();
        if !in_flight && (force || due || last_wanted.as_ref() != Some(&want)) {
            let mut request = want.clone();
            request.now_ns = Request::now(app.tab, app.range().1).now_ns;
            if request_tx.send(request).await.is_err() {
                break Err(TuiError::Query("the query task stopped".into()));
            }
            in_flight = true;
            force = false;
            last_sent = Instant::now();
            last_wanted = Some(want);
        }
        let next_tick = app.refresh_every().saturating_sub(last_sent.elapsed());
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break Ok(()) };
                let size = terminal.size().map(Rect::from).unwrap_or_default();
                if handle(app, &event, size) == Outcome::Refresh {
                    force = true;
                }
            }
            answer = results.recv() => {
                in_flight = false;
                match answer {
                    Some(Ok(fetched)) => {
                        let took_ms = fetched.took.as_millis() as u64;
                        fetched.apply(&mut app.data);
                        let at = Utc::now().format("%H:%M:%S").to_string();
                        last_ok = Some(at.clone());
                        app.connection = Connection::Ok { at, took_ms };
                    }
                    Some(Err(e)) => {
                        app.connection = Connection::Failed {
                            message: e.to_string(),
                            last_ok: last_ok.clone(),
                        };
                    }
                    None => break Err(TuiError::Query("the query task stopped".into())),
                }
            }
            _ = tokio::time::sleep(next_tick), if !in_flight => {}
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
    };
    stop.store(true, Ordering::Relaxed);
    fetcher.abort();
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    outcome
}
