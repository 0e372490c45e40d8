//! Overview: the LLM golden signals with sparklines, the per-model table, the GPU fleet in one
//! line and the firing alerts.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::{
    BAD, DIM, HEADER, HIGHLIGHT, WARN, clock, empty, number, percent, seconds, sparkline,
    table_state,
};
use crate::state::{App, FleetSummary, ModelRow};

struct Areas {
    golden: Rect,
    fleet: Rect,
    models: Rect,
    alerts: Rect,
}

fn layout(app: &App, body: Rect) -> Areas {
    let firing = app.data.firing().count() as u16;
    let alerts_height = (firing.max(1) + 2).min(body.height.saturating_sub(12).max(3));
    let [golden, fleet, models, alerts] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(alerts_height),
    ])
    .areas(body);
    Areas {
        golden,
        fleet,
        models,
        alerts,
    }
}

pub fn list_area(app: &App, body: Rect) -> Option<Rect> {
    // Inside the border, below the header row.
    let models = layout(app, body).models;
    Some(super::table_rows(models))
}

pub fn draw(frame: &mut Frame, app: &App, body: Rect) {
    let areas = layout(app, body);
    draw_golden(frame, app, areas.golden);
    draw_fleet(frame, app, areas.fleet);
    draw_models(frame, app, areas.models, true);
    draw_alerts(frame, app, areas.alerts);
}

fn draw_golden(frame: &mut Frame, app: &App, area: Rect) {
    let g = &app.data.golden;
    let t = &app.data.trend;
    let block = Block::bordered().title(format!(
        " LLM calls · {} in {} ",
        number(g.calls as f64),
        app.range().0
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = Layout::vertical([Constraint::Length(1); 3]).split(inner);
    let cells: [(String, String, &[u64], Style); 6] = [
        (
            "req/s".into(),
            number(g.requests_per_s),
            &t.calls,
            Style::new().fg(Color::Cyan),
        ),
        (
            "p50/p95".into(),
            format!("{}/{}", seconds(g.p50_s), seconds(g.p95_s)),
            &t.p95_ms,
            Style::new().fg(Color::Green),
        ),
        (
            "TTFT".into(),
            format!("{}/{}", seconds(g.ttft_p50_s), seconds(g.ttft_p95_s)),
            &t.ttft_p95_ms,
            Style::new().fg(Color::Green),
        ),
        (
            "tok/s".into(),
            format!(
                "{} in {} out",
                number(g.input_tokens_per_s),
                number(g.output_tokens_per_s)
            ),
            &t.tokens,
            Style::new().fg(Color::Magenta),
        ),
        (
            "$/hour".into(),
            format!("{:.2}", g.cost_per_hour),
            &t.cost_micro_usd,
            Style::new().fg(Color::Yellow),
        ),
        (
            "errors".into(),
            percent(g.error_rate),
            &t.errors,
            Style::new().fg(Color::Red),
        ),
    ];
    for (i, (label, value, trend, style)) in cells.into_iter().enumerate() {
        let row = rows[i / 2];
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(row);
        let cell = if i % 2 == 0 { left } else { right };
        let [text, spark] =
            Layout::horizontal([Constraint::Length(25), Constraint::Min(0)]).areas(cell);
        frame.render_widget(
            Line::from(vec![
                Span::styled(format!("{label:<8}"), DIM),
                Span::styled(value, Style::new().bold()),
            ]),
            text,
        );
        sparkline(
            frame,
            trend,
            style,
            spark.inner(ratatui::layout::Margin::new(1, 0)),
        );
    }
}

fn draw_fleet(frame: &mut Frame, app: &App, area: Rect) {
    let fleet = FleetSummary::of(&app.data.gpus);
    let mut spans = vec![
        Span::styled(" GPUs ", DIM),
        Span::raw(fleet.gpus.to_string()),
        Span::styled(" · busy ", DIM),
        Span::raw(fleet.busy.to_string()),
        Span::styled(" · throttled ", DIM),
        Span::styled(
            fleet.throttled.to_string(),
            if fleet.throttled > 0 {
                WARN
            } else {
                Style::new()
            },
        ),
        Span::styled(" · degraded ", DIM),
        Span::styled(
            fleet.degraded.to_string(),
            if fleet.degraded > 0 {
                BAD
            } else {
                Style::new()
            },
        ),
    ];
    let degraded: Vec<String> = app
        .data
        .gpus
        .iter()
        .filter(|g| g.degraded())
        .map(|g| format!("{} ({})", g.label(), g.alerts.join(", ")))
        .collect();
    if !degraded.is_empty() {
        spans.push(Span::styled(format!(": {}", degraded.join("; ")), BAD));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The per-model table; on the overview it is the list, on Models the narrow picker.
pub(super) fn draw_models(frame: &mut Frame, app: &App, area: Rect, wide: bool) {
    let rows = app.visible_models();
    let title = format!(" Models by {} ({}) ", app.model_sort.label(), rows.len());
    let block = Block::bordered().title(title);
    if rows.is_empty() {
        let text = if app.data.models.is_empty() {
            "No LLM calls in this range: point an app's OpenTelemetry exporter at the collector (OTLP :4317 or :4318), or press t for a longer range."
        } else {
            "No model matches the filter (Esc clears it)."
        };
        super::empty_block(frame, block, area, text);
        return;
    }
    // The full set where it fits; the columns an operator looks at first where it does not.
    let columns = match (wide, area.width >= 110) {
        (true, true) => Columns::Full,
        (true, false) => Columns::Medium,
        (false, _) => Columns::Narrow,
    };
    let header = Row::new(columns.header().to_vec()).style(HEADER);
    let body: Vec<Row> = rows.iter().map(|m| model_row(m, columns)).collect();
    let widths = columns.widths();
    let inner_rows = area.height.saturating_sub(3) as usize;
    let selected = app.selected[app.tab.index()].min(rows.len() - 1);
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(HIGHLIGHT);
    let mut state = table_state(Some(selected), inner_rows);
    frame.render_stateful_widget(table, area, &mut state);
}

#[derive(Clone, Copy)]
enum Columns {
    Full,
    Medium,
    Narrow,
}

impl Columns {
    fn header(self) -> &'static [&'static str] {
        match self {
            Columns::Full => &[
                "service",
                "model",
                "calls",
                "req/s",
                "p50",
                "p95",
                "TTFT p95",
                "out tok/s",
                "$/h",
                "errors",
            ],
            Columns::Medium => &[
                "service", "model", "calls", "req/s", "p95", "TTFT p95", "errors",
            ],
            Columns::Narrow => &["service", "model", "calls", "p95"],
        }
    }

    fn widths(self) -> Vec<Constraint> {
        let text = [Constraint::Fill(2), Constraint::Fill(3)];
        let numbers: &[u16] = match self {
            Columns::Full => &[6, 6, 6, 6, 8, 9, 6, 6],
            Columns::Medium => &[6, 6, 6, 8, 6],
            Columns::Narrow => &[6, 6],
        };
        text.into_iter()
            .chain(numbers.iter().map(|w| Constraint::Length(*w)))
            .collect()
    }
}

fn model_row(m: &ModelRow, columns: Columns) -> Row<'static> {
    let errors = Span::styled(
        format!("{:.1}%", m.error_rate * 100.0),
        if m.error_rate >= 0.05 {
            BAD
        } else {
            Style::new()
        },
    );
    let text = |s: String| Line::from(s);
    let mut cells = vec![
        text(m.service.clone()),
        text(m.model.clone()),
        text(number(m.calls as f64)),
    ];
    match columns {
        Columns::Full => cells.extend([
            text(number(m.requests_per_s)),
            text(seconds(m.p50_s)),
            text(seconds(m.p95_s)),
            text(seconds(m.ttft_p95_s)),
            text(number(m.output_tokens_per_s)),
            text(format!("{:.2}", m.cost_per_hour)),
            Line::from(errors),
        ]),
        Columns::Medium => cells.extend([
            text(number(m.requests_per_s)),
            text(seconds(m.p95_s)),
            text(seconds(m.ttft_p95_s)),
            Line::from(errors),
        ]),
        Columns::Narrow => cells.push(text(seconds(m.p95_s))),
    }
    Row::new(cells)
}

fn draw_alerts(frame: &mut Frame, app: &App, area: Rect) {
    let firing: Vec<_> = app.data.firing().collect();
    let block = Block::bordered().title(format!(" Firing alerts ({}) ", firing.len()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if firing.is_empty() {
        empty(frame, inner, "None firing.");
        return;
    }
    let lines: Vec<Line> = firing
        .iter()
        .map(|a| {
            Line::from(vec![
                Span::styled(format!("{:<8} ", a.severity), BAD),
                Span::styled(format!("{} ", a.alertname), Style::new().bold()),
                Span::styled(format!("since {} ", clock(a.time_ns)), DIM),
                Span::raw(super::one_line(&a.summary)),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
