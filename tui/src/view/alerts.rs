//! Alerts: the latest state of every alert firing or changed in the range, firing first, and the
//! selected one's evidence and labels; `g` jumps to its GPU or model.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, Wrap};

use super::{BAD, DIM, HEADER, HIGHLIGHT, clock, table_state};
use crate::state::{AlertRow, App, Jump};

fn split(body: Rect) -> [Rect; 2] {
    let list_height = (body.height / 2).max(4).min(body.height);
    Layout::vertical([Constraint::Length(list_height), Constraint::Min(0)]).areas(body)
}

pub fn list_area(_app: &App, body: Rect) -> Option<Rect> {
    let [list, _] = split(body);
    Some(super::table_rows(list))
}

pub fn draw(frame: &mut Frame, app: &App, body: Rect) {
    let [list, detail] = split(body);
    let rows = app.visible_alerts();
    let firing = rows.iter().filter(|a| a.firing()).count();
    let block = Block::bordered().title(format!(
        " Alerts: {firing} firing, {} resolved in {} ",
        rows.len() - firing,
        app.range().0
    ));
    if rows.is_empty() {
        let text = if app.data.alerts.is_empty() {
            "No alert fired or changed in this range (t picks a longer one)."
        } else {
            "No alert matches the filter (Esc clears it)."
        };
        super::empty_block(frame, block, body, text);
        return;
    }
    let header =
        Row::new(["state", "severity", "since", "alert", "subject", "summary"]).style(HEADER);
    let body_rows: Vec<Row> = rows
        .iter()
        .map(|a| {
            let state = if a.firing() {
                Span::styled("FIRING", BAD)
            } else {
                Span::styled(a.state.clone(), Style::new().fg(Color::Green))
            };
            Row::new(vec![
                Line::from(state),
                Line::from(a.severity.clone()),
                Line::from(clock(a.time_ns)),
                Line::from(a.alertname.clone()),
                Line::from(a.subject.clone()),
                Line::from(super::one_line(&a.summary)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Fill(5),
    ];
    let selected = app.selection();
    let table = Table::new(body_rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(HIGHLIGHT);
    let mut state = table_state(Some(selected), list.height.saturating_sub(3) as usize);
    frame.render_stateful_widget(table, list, &mut state);
    if let Some(alert) = rows.get(selected) {
        draw_detail(frame, alert, detail);
    }
}

fn draw_detail(frame: &mut Frame, alert: &AlertRow, area: Rect) {
    let jump = match alert.target() {
        Some(Jump::Gpu(uuid)) => format!(" · g: GPU {uuid}"),
        Some(Jump::Model { model, .. }) => format!(" · g: model {model}"),
        None => String::new(),
    };
    let block = Block::bordered().title(format!(" {} · {}{jump} ", alert.alertname, alert.subject));
    let score = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    let mut lines = vec![
        Line::from(alert.summary.clone()),
        Line::from(vec![
            Span::styled("score ", DIM),
            Span::raw(score(alert.score)),
            Span::styled(" threshold ", DIM),
            Span::raw(score(alert.threshold)),
            Span::styled(" detector ", DIM),
            Span::raw(alert.detector.clone()),
            Span::styled(" fingerprint ", DIM),
            Span::raw(alert.fingerprint.clone()),
        ]),
    ];
    let labels: Vec<String> = alert
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.push(Line::from(vec![
        Span::styled("labels ", DIM),
        Span::raw(labels.join(" ")),
    ]));
    lines.push(Line::from(Span::styled("evidence", HEADER)));
    lines.push(Line::from(pretty(&alert.evidence)));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// Evidence JSON with its keys spaced out, or as it is when it is not JSON.
fn pretty(evidence: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(evidence) {
        Ok(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(" · "),
        _ => evidence.to_string(),
    }
}
