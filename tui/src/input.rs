//! Keys and clicks, turned into changes of the [`App`]. Pure: no I/O, so every binding is tested
//! without a terminal.

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use crate::state::{App, Jump, Open, RANGES, REFRESHES, Tab};
use crate::view;

/// Every key the dashboard knows, as `?` lists them.
pub const KEYS: [(&str, &str); 17] = [
    ("1-5, Tab, S-Tab", "switch view"),
    ("Up/Down, j/k", "select a row"),
    ("PgUp/PgDn, Home/End", "move by a page, to the ends"),
    ("Enter", "open the selected GPU or trace"),
    ("Esc", "close, clear the filter"),
    ("/", "filter the list (Enter keeps it)"),
    ("t / T", "next / previous time range"),
    ("r", "refresh interval"),
    ("s", "sort models by calls, p95, errors, cost, name"),
    ("e", "traces: all, errors only, ok only"),
    ("g", "alerts: jump to the alert's GPU or model"),
    ("F5", "refresh now"),
    ("mouse", "click a tab or a row"),
    ("wheel", "scroll the list"),
    ("?", "this help"),
    ("q", "quit"),
    ("Ctrl-C", "quit"),
];

/// What the loop must do after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed.
    Ignored,
    /// Redraw; refetch if the data asked for changed.
    Changed,
    /// Refetch now, even if nothing asked for changed.
    Refresh,
}

/// Applies one terminal event. `size` is the terminal's, for mapping clicks to rows and tabs.
pub fn handle(app: &mut App, event: &Event, size: Rect) -> Outcome {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => handle_key(app, key, size),
        Event::Mouse(mouse) => handle_mouse(app, mouse, size),
        Event::Resize(..) => Outcome::Changed,
        _ => Outcome::Ignored,
    }
}

fn handle_key(app: &mut App, key: &KeyEvent, size: Rect) -> Outcome {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        return Outcome::Changed;
    }
    if app.filter_editing {
        match key.code {
            KeyCode::Enter => app.filter_editing = false,
            KeyCode::Esc => {
                app.filter_editing = false;
                app.filter.clear();
            }
            KeyCode::Backspace => {
                app.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() => app.filter.push(c),
            _ => return Outcome::Ignored,
        }
        reset_selection(app);
        return Outcome::Changed;
    }
    if app.help {
        app.help = false;
        return if key.code == KeyCode::Char('q') {
            app.quit = true;
            Outcome::Changed
        } else {
            Outcome::Changed
        };
    }
    let page = view::list_rows(app, size).max(1);
    match key.code {
        KeyCode::Char('q') => app.quit = true,
        KeyCode::Char('?') => app.help = true,
        KeyCode::Char(c @ '1'..='5') => switch(app, Tab::ALL[(c as u8 - b'1') as usize]),
        KeyCode::Tab => switch(app, app.tab.next()),
        KeyCode::BackTab => switch(app, app.tab.previous()),
        KeyCode::Up | KeyCode::Char('k') => move_selection(app, -1),
        KeyCode::Down | KeyCode::Char('j') => move_selection(app, 1),
        KeyCode::PageUp => move_selection(app, -(page as i64)),
        KeyCode::PageDown => move_selection(app, page as i64),
        KeyCode::Home => move_selection(app, i64::MIN / 2),
        KeyCode::End => move_selection(app, i64::MAX / 2),
        KeyCode::Enter => open(app),
        KeyCode::Esc => {
            if app.open.is_some() {
                app.open = None;
                app.span_selected = 0;
            } else if !app.filter.is_empty() {
                app.filter.clear();
                reset_selection(app);
            } else {
                return Outcome::Ignored;
            }
        }
        KeyCode::Char('/') => {
            app.filter_editing = true;
            app.filter.clear();
            reset_selection(app);
        }
        KeyCode::Char('t') => app.range = (app.range + 1) % RANGES.len(),
        KeyCode::Char('T') => app.range = (app.range + RANGES.len() - 1) % RANGES.len(),
        KeyCode::Char('r') => app.refresh = (app.refresh + 1) % REFRESHES.len(),
        KeyCode::Char('s') if matches!(app.tab, Tab::Overview | Tab::Models) => {
            app.model_sort = app.model_sort.next();
            reset_selection(app);
        }
        KeyCode::Char('e') if app.tab == Tab::Traces => {
            app.status_filter = app.status_filter.next();
            app.open = None;
            reset_selection(app);
        }
        KeyCode::Char('g') if app.tab == Tab::Alerts => return jump(app),
        KeyCode::F(5) => return Outcome::Refresh,
        _ => return Outcome::Ignored,
    }
    Outcome::Changed
}

fn handle_mouse(app: &mut App, mouse: &MouseEvent, size: Rect) -> Outcome {
    match mouse.kind {
        MouseEventKind::Down(MouseButton::Left) => {
            let at = Position::new(mouse.column, mouse.row);
            if let Some(tab) = view::tab_at(app, size, at) {
                switch(app, tab);
                return Outcome::Changed;
            }
            if let Some(row) = view::row_at(app, size, at) {
                if app.help {
                    app.help = false;
                }
                select(app, row);
                return Outcome::Changed;
            }
            Outcome::Ignored
        }
        MouseEventKind::ScrollDown => {
            move_selection(app, 3);
            Outcome::Changed
        }
        MouseEventKind::ScrollUp => {
            move_selection(app, -3);
            Outcome::Changed
        }
        _ => Outcome::Ignored,
    }
}

fn switch(app: &mut App, tab: Tab) {
    if app.tab != tab {
        app.tab = tab;
        app.open = None;
        app.span_selected = 0;
        app.filter.clear();
        app.filter_editing = false;
    }
}

fn reset_selection(app: &mut App) {
    app.selected[app.tab.index()] = 0;
}

fn select(app: &mut App, row: usize) {
    if let (Tab::Traces, Some(Open::Trace { .. })) = (app.tab, &app.open) {
        let len = app.data.trace_detail.as_ref().map_or(0, |t| t.spans.len());
        app.span_selected = row.min(len.saturating_sub(1));
        return;
    }
    let len = app.visible_len();
    app.selected[app.tab.index()] = row.min(len.saturating_sub(1));
}

fn move_selection(app: &mut App, by: i64) {
    let (current, len) = match (app.tab, &app.open) {
        (Tab::Traces, Some(Open::Trace { .. })) => (
            app.span_selected,
            app.data.trace_detail.as_ref().map_or(0, |t| t.spans.len()),
        ),
        _ => (app.selection(), app.visible_len()),
    };
    let next = (current as i64)
        .saturating_add(by)
        .clamp(0, len.saturating_sub(1) as i64) as usize;
    select(app, next);
}

fn open(app: &mut App) {
    match app.tab {
        Tab::Gpus => {
            if let Some(gpu) = app.selected_gpu() {
                app.open = Some(Open::Gpu {
                    uuid: gpu.uuid.clone(),
                });
            }
        }
        Tab::Traces if app.open.is_none() => {
            if let Some(trace) = app.selected_trace() {
                app.open = Some(Open::Trace {
                    trace_id: trace.trace_id.clone(),
                    time_ns: trace.time_ns,
                });
                app.span_selected = 0;
                app.data.trace_detail = None;
            }
        }
        Tab::Overview => {
            // From the overview's model table, Enter shows that model.
            let picked = app
                .visible_models()
                .get(app.selection())
                .map(|m| (m.service.clone(), m.model.clone()));
            if let Some((service, model)) = picked {
                show_model(app, Some(service), &model);
            }
        }
        _ => {}
    }
}

/// From the selected alert to its GPU or model.
fn jump(app: &mut App) -> Outcome {
    match app.selected_alert().and_then(|a| a.target()) {
        Some(Jump::Gpu(uuid)) => {
            switch(app, Tab::Gpus);
            if let Some(i) = app.visible_gpus().iter().position(|g| g.uuid == uuid) {
                app.selected[Tab::Gpus.index()] = i;
            }
            app.open = Some(Open::Gpu { uuid });
            Outcome::Changed
        }
        Some(Jump::Model { service, model }) => {
            show_model(app, service, &model);
            Outcome::Changed
        }
        None => Outcome::Ignored,
    }
}

fn show_model(app: &mut App, service: Option<String>, model: &str) {
    switch(app, Tab::Models);
    let found = app
        .visible_models()
        .iter()
        .position(|m| m.model == model && service.as_ref().is_none_or(|s| s == &m.service));
    if let Some(i) = found {
        app.selected[Tab::Models.index()] = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AlertRow, GpuRow, ModelRow, TraceRow};
    use ratatui::crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    fn app() -> App {
        let mut app = App::new("http://127.0.0.1:50051");
        app.data.models = vec![
            ModelRow {
                service: "chat".into(),
                model: "gpt-4o".into(),
                calls: 5,
                ..ModelRow::default()
            },
            ModelRow {
                service: "rag".into(),
                model: "llama".into(),
                calls: 9,
                ..ModelRow::default()
            },
        ];
        app.data.gpus = vec![
            GpuRow {
                host: "node-1".into(),
                gpu: "0".into(),
                uuid: "GPU-a".into(),
                ..GpuRow::default()
            },
            GpuRow {
                host: "node-1".into(),
                gpu: "1".into(),
                uuid: "GPU-b".into(),
                ..GpuRow::default()
            },
        ];
        app.data.traces = vec![TraceRow {
            trace_id: "abc".into(),
            time_ns: 7,
            ..TraceRow::default()
        }];
        let mut gpu_alert = AlertRow {
            alertname: "GpuClockLow".into(),
            state: "firing".into(),
            ..AlertRow::default()
        };
        gpu_alert.labels.insert("UUID".into(), "GPU-b".into());
        let mut drift = AlertRow {
            alertname: "ModelDrift".into(),
            state: "firing".into(),
            ..AlertRow::default()
        };
        drift.labels.insert("model".into(), "gpt-4o".into());
        drift.labels.insert("service".into(), "chat".into());
        app.data.alerts = vec![gpu_alert, drift];
        app
    }

    const SIZE: Rect = Rect::new(0, 0, 80, 24);

    #[test]
    fn number_keys_and_tab_switch_views() {
        let mut app = app();
        handle(&mut app, &key(KeyCode::Char('3')), SIZE);
        assert_eq!(app.tab, Tab::Gpus);
        handle(&mut app, &key(KeyCode::Tab), SIZE);
        assert_eq!(app.tab, Tab::Traces);
        handle(&mut app, &key(KeyCode::BackTab), SIZE);
        handle(&mut app, &key(KeyCode::BackTab), SIZE);
        assert_eq!(app.tab, Tab::Models);
    }

    #[test]
    fn filter_narrows_the_list_and_esc_clears_it() {
        let mut app = app();
        handle(&mut app, &key(KeyCode::Char('2')), SIZE);
        for c in "/rag".chars() {
            handle(&mut app, &key(KeyCode::Char(c)), SIZE);
        }
        assert!(app.filter_editing);
        // Keys typed into the filter are not commands.
        assert_eq!(app.tab, Tab::Models);
        handle(&mut app, &key(KeyCode::Enter), SIZE);
        assert!(!app.filter_editing);
        assert_eq!(app.visible_models().len(), 1);
        handle(&mut app, &key(KeyCode::Esc), SIZE);
        assert_eq!(app.visible_models().len(), 2);
    }

    #[test]
    fn selection_stays_inside_the_list() {
        let mut app = app();
        handle(&mut app, &key(KeyCode::Char('3')), SIZE);
        handle(&mut app, &key(KeyCode::Up), SIZE);
        assert_eq!(app.selection(), 0);
        handle(&mut app, &key(KeyCode::End), SIZE);
        assert_eq!(app.selection(), 1);
        handle(&mut app, &key(KeyCode::PageDown), SIZE);
        assert_eq!(app.selection(), 1);
        handle(&mut app, &key(KeyCode::Enter), SIZE);
        assert_eq!(
            app.open,
            Some(Open::Gpu {
                uuid: "GPU-b".into()
            })
        );
        handle(&mut app, &key(KeyCode::Esc), SIZE);
        assert_eq!(app.open, None);
    }

    #[test]
    fn g_jumps_from_an_alert_to_its_gpu_or_model() {
        let mut app = app();
        handle(&mut app, &key(KeyCode::Char('5')), SIZE);
        handle(&mut app, &key(KeyCode::Char('g')), SIZE);
        assert_eq!(app.tab, Tab::Gpus);
        assert_eq!(app.selected_gpu().unwrap().uuid, "GPU-b");
        handle(&mut app, &key(KeyCode::Char('5')), SIZE);
        handle(&mut app, &key(KeyCode::Down), SIZE);
        handle(&mut app, &key(KeyCode::Char('g')), SIZE);
        assert_eq!(app.tab, Tab::Models);
        assert_eq!(app.selected_model().unwrap().model, "gpt-4o");
    }

    #[test]
    fn enter_opens_a_trace_and_range_and_refresh_cycle() {
        let mut app = app();
        handle(&mut app, &key(KeyCode::Char('4')), SIZE);
        handle(&mut app, &key(KeyCode::Enter), SIZE);
        assert_eq!(
            app.open,
            Some(Open::Trace {
                trace_id: "abc".into(),
                time_ns: 7
            })
        );
        let (range, refresh) = (app.range, app.refresh);
        handle(&mut app, &key(KeyCode::Char('t')), SIZE);
        handle(&mut app, &key(KeyCode::Char('r')), SIZE);
        assert_ne!((app.range, app.refresh), (range, refresh));
        handle(&mut app, &key(KeyCode::Char('T')), SIZE);
        assert_eq!(app.range, range);
    }

    #[test]
    fn help_opens_and_any_key_closes_it_and_q_quits() {
        let mut app = app();
        handle(&mut app, &key(KeyCode::Char('?')), SIZE);
        assert!(app.help);
        handle(&mut app, &key(KeyCode::Char('x')), SIZE);
        assert!(!app.help);
        assert!(!app.quit);
        handle(&mut app, &key(KeyCode::Char('q')), SIZE);
        assert!(app.quit);
    }

    #[test]
    fn a_click_on_a_tab_title_switches_to_it() {
        let mut app = app();
        let (_, start, end) = view::tab_spans(&app)[Tab::Gpus.index()];
        let x = (start + end) / 2;
        let click = Event::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: x,
            row: 0,
            modifiers: KeyModifiers::NONE,
        });
        handle(&mut app, &click, SIZE);
        assert_eq!(app.tab, Tab::Gpus);
    }
}
