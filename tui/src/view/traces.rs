//! Traces: the recent LLM calls; Enter opens a call's trace as a waterfall of its span tree, with
//! the selected span's attributes, tokens, cost, and prompt and completion as stored.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};

use super::{BAD, DIM, HEADER, HIGHLIGHT, clock, empty, number, table_state};
use crate::state::{App, Open, SpanRow, TraceDetail};

fn split(app: &App, body: Rect) -> (Rect, Option<Rect>) {
    if !matches!(app.open, Some(Open::Trace { .. })) {
        return (body, None);
    }
    let list_height = (body.height / 2).max(4).min(body.height);
    let [list, detail] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(0)]).areas(body);
    (list, Some(detail))
}

pub fn list_area(app: &App, body: Rect) -> Option<Rect> {
    let (list, _) = split(app, body);
    // The waterfall has no header row; the call list has one.
    let header = if app.open.is_some() { 0 } else { 1 };
    Some(Rect::new(
        list.x + 1,
        list.y + 1 + header,
        list.width.saturating_sub(2),
        list.height.saturating_sub(2 + header),
    ))
}

pub fn draw(frame: &mut Frame, app: &App, body: Rect) {
    let (list, detail) = split(app, body);
    match (&app.open, detail) {
        (Some(Open::Trace { trace_id, .. }), Some(detail_area)) => {
            let shown = app
                .data
                .trace_detail
                .as_ref()
                .filter(|t| &t.trace_id == trace_id);
            match shown {
                Some(trace) if !trace.spans.is_empty() => {
                    draw_waterfall(frame, app, trace, list);
                    let span = &trace.spans[app.span_selected.min(trace.spans.len() - 1)];
                    draw_span(frame, span, detail_area);
                }
                Some(_) => {
                    let block = Block::bordered().title(format!(" trace {trace_id} "));
                    let inner = block.inner(body);
                    frame.render_widget(block, body);
                    empty(
                        frame,
                        inner,
                        "No spans stored for this trace within an hour of the call.",
                    );
                }
                None => {
                    let block = Block::bordered().title(format!(" trace {trace_id} "));
                    super::empty_block(frame, block, body, "Loading the trace …");
                }
            }
        }
        _ => draw_calls(frame, app, list),
    }
}

fn draw_calls(frame: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible_traces();
    let block = Block::bordered().title(format!(
        " Recent LLM calls ({}, {}) ",
        rows.len(),
        app.status_filter.label()
    ));
    if rows.is_empty() {
        let text = if app.data.traces.is_empty() {
            "No LLM calls in this range (e cycles all / errors / ok; t picks the range)."
        } else {
            "No call matches the filter (Esc clears it)."
        };
        super::empty_block(frame, block, area, text);
        return;
    }
    let header = Row::new([
        "time", "service", "model", "duration", "in", "out", "status", "cost $",
    ])
    .style(HEADER);
    let body: Vec<Row> = rows
        .iter()
        .map(|t| {
            let status = match &t.error_type {
                Some(e) => format!("ERROR {e}"),
                None if t.status.is_empty() => "UNSET".to_string(),
                None => t.status.clone(),
            };
            Row::new(vec![
                Line::from(clock(t.time_ns)),
                Line::from(t.service.clone()),
                Line::from(t.model.clone()),
                Line::from(super::seconds(Some(t.duration_s))),
                Line::from(t.input_tokens.map_or("–".into(), |v| number(v as f64))),
                Line::from(t.output_tokens.map_or("–".into(), |v| number(v as f64))),
                Line::from(Span::styled(
                    status,
                    if t.failed() { BAD } else { Style::new() },
                )),
                Line::from(t.cost_usd.map_or("–".into(), |c| format!("{c:.5}"))),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Fill(2),
        Constraint::Fill(3),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(2),
        Constraint::Length(8),
    ];
    let selected = app.selected[app.tab.index()].min(rows.len() - 1);
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(HIGHLIGHT);
    let mut state = table_state(Some(selected), area.height.saturating_sub(3) as usize);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_waterfall(frame: &mut Frame, app: &App, trace: &TraceDetail, area: Rect) {
    let (start, end) = trace.bounds();
    let total = (end - start).max(1) as f64;
    let block = Block::bordered().title(format!(
        " trace {} · {} spans · {} ",
        trace.trace_id,
        trace.spans.len(),
        super::seconds(Some(total / 1e9))
    ));
    let inner = block.inner(area);
    let name_width = (inner.width / 3).max(10);
    let bar_width = inner.width.saturating_sub(name_width + 10).max(1) as f64;
    let rows: Vec<Row> = trace
        .spans
        .iter()
        .map(|s| {
            let from = ((s.start_ns - start) as f64 / total * bar_width).floor() as usize;
            let len = ((s.duration_ns.max(0) as f64 / total * bar_width).round() as usize).max(1);
            let color = if s.status.eq_ignore_ascii_case("error") {
                Color::Red
            } else if s.model.is_some() {
                Color::Magenta
            } else {
                Color::Cyan
            };
            Row::new(vec![
                Line::from(format!("{}{}", "  ".repeat(s.depth.min(12)), s.name)),
                Line::from(super::seconds(Some(s.duration_ns as f64 / 1e9))),
                Line::from(vec![
                    Span::raw(" ".repeat(from)),
                    Span::styled("█".repeat(len), Style::new().fg(color)),
                ]),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(name_width),
        Constraint::Length(8),
        Constraint::Min(1),
    ];
    let selected = app.span_selected.min(trace.spans.len() - 1);
    let table = Table::new(rows, widths)
        .block(block)
        .row_highlight_style(HIGHLIGHT);
    let mut state = table_state(Some(selected), area.height.saturating_sub(2) as usize);
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_span(frame: &mut Frame, span: &SpanRow, area: Rect) {
    let block = Block::bordered().title(format!(" span {} · {} ", span.span_id, span.name));
    let mut lines = vec![Line::from(vec![
        Span::styled("service ", DIM),
        Span::raw(span.service.clone()),
        Span::styled("  status ", DIM),
        Span::styled(
            match &span.status_message {
                Some(m) => format!("{} ({m})", span.status),
                None => span.status.clone(),
            },
            if span.status.eq_ignore_ascii_case("error") {
                BAD
            } else {
                Style::new()
            },
        ),
        Span::styled("  duration ", DIM),
        Span::raw(super::seconds(Some(span.duration_ns as f64 / 1e9))),
    ])];
    if let Some(model) = &span.model {
        lines.push(Line::from(vec![
            Span::styled("model ", DIM),
            Span::raw(model.clone()),
            Span::styled("  tokens in/out ", DIM),
            Span::raw(format!(
                "{}/{}",
                span.input_tokens.map_or("–".into(), |v| v.to_string()),
                span.output_tokens.map_or("–".into(), |v| v.to_string())
            )),
            Span::styled("  cost ", DIM),
            Span::raw(span.cost_usd.map_or("–".into(), |c| format!("${c:.6}"))),
        ]));
    }
    let message = |label: &str, text: &Option<String>| {
        Line::from(vec![
            Span::styled(format!("{label} "), HEADER),
            Span::raw(match text {
                Some(t) => t.clone(),
                None => "(not stored: not sent, or dropped by the content policy)".to_string(),
            }),
        ])
    };
    if span.model.is_some() {
        lines.push(message("prompt", &span.input_messages));
        lines.push(message("completion", &span.output_messages));
    }
    for (key, value) in &span.attributes {
        lines.push(Line::from(vec![
            Span::styled(format!("{key} = "), DIM),
            Span::raw(value.clone()),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}
