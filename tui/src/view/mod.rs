//! Drawing: pure functions of an [`App`] onto a ratatui frame. The frame is the tab bar, a status
//! line (or the banner when the collector cannot be read), the current view and a line of keys.
//! The geometry helpers ([`list_rows`], [`row_at`], [`tab_at`]) use the same layout as drawing,
//! so that clicks land where the rows are.

mod alerts;
mod gpus;
mod models;
mod overview;
mod traces;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap};

use crate::input::KEYS;
use crate::state::{App, Connection, Tab};

pub(crate) const HIGHLIGHT: Style = Style::new()
    .bg(Color::DarkGray)
    .add_modifier(Modifier::BOLD);
pub(crate) const HEADER: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
pub(crate) const BAD: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
pub(crate) const WARN: Style = Style::new().fg(Color::Yellow);
pub(crate) const DIM: Style = Style::new().fg(Color::DarkGray);

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [tabs, status, body, footer] = frame_layout(app, frame.area());
    draw_tabs(frame, app, tabs);
    draw_status(frame, app, status);
    match app.tab {
        Tab::Overview => overview::draw(frame, app, body),
        Tab::Models => models::draw(frame, app, body),
        Tab::Gpus => gpus::draw(frame, app, body),
        Tab::Traces => traces::draw(frame, app, body),
        Tab::Alerts => alerts::draw(frame, app, body),
    }
    draw_footer(frame, app, footer);
    if app.help {
        draw_help(frame, body);
    }
}

fn frame_layout(app: &App, area: Rect) -> [Rect; 4] {
    // The banner of a failing collector takes two lines, so that its reason is not cut off.
    let status = match app.connection {
        Connection::Failed { .. } => 2,
        _ => 1,
    };
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(status),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// The tab titles as drawn ("1 Overview", …, "5 Alerts 3" with the firing count).
pub fn tab_titles(app: &App) -> Vec<String> {
    let firing = app.data.firing().count();
    Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, tab)| match tab {
            Tab::Alerts if firing > 0 => format!("{} {} {firing}", i + 1, tab.title()),
            _ => format!("{} {}", i + 1, tab.title()),
        })
        .collect()
}

const BRAND: &str = " vigil ";

/// Where each tab's title is on the tab bar: `(tab, first column, one past the last)`.
pub fn tab_spans(app: &App) -> Vec<(Tab, u16, u16)> {
    let mut x = BRAND.chars().count() as u16;
    let mut out = Vec::new();
    for (tab, title) in Tab::ALL.iter().zip(tab_titles(app)) {
        let width = title.chars().count() as u16 + 2;
        out.push((*tab, x, x + width));
        x += width;
    }
    out
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let mut spans = vec![Span::styled(
        BRAND,
        Style::new().fg(Color::Black).bg(Color::Cyan).bold(),
    )];
    let firing = app.data.firing().count();
    for (tab, title) in Tab::ALL.iter().zip(tab_titles(app)) {
        let style = if *tab == app.tab {
            Style::new().fg(Color::Black).bg(Color::White).bold()
        } else if *tab == Tab::Alerts && firing > 0 {
            BAD
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!(" {title} "), style));
    }
    let (range, _) = app.range();
    let right = format!(
        " range {range} · every {}s · ? help ",
        app.refresh_every().as_secs()
    );
    let used: usize = spans.iter().map(|s| s.width()).sum();
    if used + right.chars().count() <= area.width as usize {
        let pad = area.width as usize - used - right.chars().count();
        spans.push(Span::raw(" ".repeat(pad)));
        spans.push(Span::styled(right, DIM));
    }
    frame.render_widget(Line::from(spans), area);
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.connection {
        Connection::Connecting => Line::from(Span::styled(
            format!(" connecting to {} …", app.collector),
            WARN,
        )),
        Connection::Ok { at, took_ms } => Line::from(vec![
            Span::styled(format!(" {} ", app.collector), DIM),
            Span::raw(format!("· data at {at} UTC ({took_ms} ms)")),
        ]),
        Connection::Failed { message, last_ok } => {
            let shown = match last_ok {
                Some(at) => format!("showing data from {at}"),
                None => "no data yet".to_string(),
            };
            Line::from(Span::styled(
                format!(
                    " ✖ cannot read the collector at {}: {} · retrying every {}s · {shown}",
                    app.collector,
                    one_line(message),
                    app.refresh_every().as_secs()
                ),
                Style::new().fg(Color::White).bg(Color::Red).bold(),
            ))
        }
    };
    frame.render_widget(Paragraph::new(line).wrap(Wrap { trim: true }), area);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = if app.filter_editing {
        Line::from(vec![
            Span::styled(" filter: ", HEADER),
            Span::raw(format!("{}▏", app.filter)),
            Span::styled("  Enter keep · Esc clear", DIM),
        ])
    } else {
        let mut spans = Vec::new();
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!(" filter: {} (Esc clears) ", app.filter),
                HEADER,
            ));
        }
        let keys = match app.tab {
            Tab::Overview => "Enter model · s sort",
            Tab::Models => "s sort",
            Tab::Gpus if app.open.is_some() => "Esc close",
            Tab::Gpus => "Enter detail",
            Tab::Traces if app.open.is_some() => "Up/Down span · Esc close",
            Tab::Traces => "Enter open · e status",
            Tab::Alerts => "g jump to GPU/model",
        };
        spans.push(Span::styled(
            format!(" {keys} · / filter · t range · r refresh · ? help · q quit"),
            DIM,
        ));
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.min(64);
    let height = area.height.min(KEYS.len() as u16 + 2);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    frame.render_widget(Clear, popup);
    let rows = KEYS
        .iter()
        .map(|(k, what)| Row::new(vec![k.to_string(), what.to_string()]));
    let table = Table::new(rows, [Constraint::Length(20), Constraint::Min(10)]).block(
        Block::bordered()
            .title(" keys (any key closes) ")
            .border_style(HEADER),
    );
    frame.render_widget(table, popup);
}

/// How many list rows the current view shows (what PageUp/PageDown move by).
pub fn list_rows(app: &App, size: Rect) -> usize {
    list_area(app, size).map_or(0, |a| a.height as usize)
}

/// The rows of the current view's list, below its header.
fn list_area(app: &App, size: Rect) -> Option<Rect> {
    let [_, _, body, _] = frame_layout(app, size);
    match app.tab {
        Tab::Overview => overview::list_area(app, body),
        Tab::Models => models::list_area(app, body),
        Tab::Gpus => gpus::list_area(app, body),
        Tab::Traces => traces::list_area(app, body),
        Tab::Alerts => alerts::list_area(app, body),
    }
}

/// The list row under a click, if any.
pub fn row_at(app: &App, size: Rect, at: Position) -> Option<usize> {
    let area = list_area(app, size)?;
    if !area.contains(at) {
        return None;
    }
    let (selected, _) = current_selection(app);
    let offset = scroll_offset(selected, area.height as usize);
    Some(offset + (at.y - area.y) as usize)
}

/// The tab under a click on the tab bar.
pub fn tab_at(app: &App, size: Rect, at: Position) -> Option<Tab> {
    let [tabs, ..] = frame_layout(app, size);
    if !tabs.contains(at) {
        return None;
    }
    tab_spans(app)
        .into_iter()
        .find(|(_, start, end)| (*start..*end).contains(&at.x))
        .map(|(tab, ..)| tab)
}

/// The selected row of what the current view's list shows (spans of an open trace, or rows).
fn current_selection(app: &App) -> (usize, usize) {
    match (app.tab, &app.open) {
        (Tab::Traces, Some(crate::state::Open::Trace { .. })) => {
            let len = app.data.trace_detail.as_ref().map_or(0, |t| t.spans.len());
            (app.span_selected.min(len.saturating_sub(1)), len)
        }
        _ => (app.selection(), app.visible_len()),
    }
}

/// The first row shown when `selected` must be visible in `height` rows: the list scrolls only
/// as far as the selection needs, so a click maps to a row without remembering past frames.
pub(crate) fn scroll_offset(selected: usize, height: usize) -> usize {
    selected.saturating_sub(height.saturating_sub(1))
}

/// A table state that shows `selected` at the offset [`row_at`] assumes.
pub(crate) fn table_state(selected: Option<usize>, area_rows: usize) -> TableState {
    let mut state = TableState::default().with_selected(selected);
    *state.offset_mut() = selected.map_or(0, |s| scroll_offset(s, area_rows));
    state
}

/// A sparkline of the most recent values that fit `area`.
pub(crate) fn sparkline(frame: &mut Frame, values: &[u64], style: Style, area: Rect) {
    let shown = &values[values.len().saturating_sub(area.width as usize)..];
    frame.render_widget(Sparkline::default().data(shown.to_vec()).style(style), area);
}

/// The rows of a bordered table with a header row: inside the border, below the header.
pub(crate) fn table_rows(area: Rect) -> Rect {
    Rect::new(
        area.x + 1,
        area.y + 2,
        area.width.saturating_sub(2),
        area.height.saturating_sub(3),
    )
}

/// A bordered block with a line saying why there is nothing in it.
pub(crate) fn empty_block(frame: &mut Frame, block: Block, area: Rect, text: &str) {
    let inner = block.inner(area);
    frame.render_widget(block, area);
    empty(frame, inner, text);
}

/// A paragraph that says there is nothing to show, and why.
pub(crate) fn empty(frame: &mut Frame, area: Rect, text: &str) {
    frame.render_widget(
        Paragraph::new(Span::styled(text.to_string(), DIM)).wrap(Wrap { trim: true }),
        area,
    );
}

/// HH:MM:SS of a time in nanoseconds (UTC).
pub(crate) fn clock(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns)
        .format("%H:%M:%S")
        .to_string()
}

/// A duration in seconds, in the unit that reads best.
pub(crate) fn seconds(value: Option<f64>) -> String {
    match value {
        None => "–".to_string(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) if s < 100.0 => format!("{s:.2}s"),
        Some(s) => format!("{s:.0}s"),
    }
}

pub(crate) fn percent(value: Option<f64>) -> String {
    match value {
        None => "–".to_string(),
        Some(v) => format!("{:.1}%", v * 100.0),
    }
}

pub(crate) fn number(value: f64) -> String {
    crate::fetch::human(value)
}

pub(crate) fn opt_number(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), number)
}

/// The first line of a message, for one-line places.
pub(crate) fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests;
