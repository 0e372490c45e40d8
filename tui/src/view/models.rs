//! Models: the model list on the left; on the right the selected model's numbers, its drift
//! status (the drift detector's latest verdict, else its latest drift alert), its trend, its
//! latency, TTFT and output token distributions, its finish reasons and its errors.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Wrap};

use super::overview::draw_models;
use super::{BAD, DIM, HEADER, clock, empty, number, seconds, sparkline};
use crate::state::{App, Counts, DriftEvaluation, ModelDetail, ModelRow};

fn split(body: Rect) -> [Rect; 2] {
    let left = (body.width * 2 / 5).clamp(24.min(body.width), 60);
    Layout::horizontal([Constraint::Length(left), Constraint::Min(0)]).areas(body)
}

pub fn list_area(_app: &App, body: Rect) -> Option<Rect> {
    let [list, _] = split(body);
    Some(super::table_rows(list))
}

pub fn draw(frame: &mut Frame, app: &App, body: Rect) {
    let [list, detail] = split(body);
    draw_models(frame, app, list, false);
    let Some(model) = app.selected_model() else {
        let block = Block::bordered().title(" Model ");
        super::empty_block(frame, block, detail, "No model selected.");
        return;
    };
    let block = Block::bordered().title(format!(" {} · {} ", model.service, model.model));
    let inner = block.inner(detail);
    frame.render_widget(block, detail);
    // The detail arrives a refresh after the selection; until then, the list row's numbers.
    let shown = app
        .data
        .model_detail
        .as_ref()
        .filter(|d| d.model == model.model && d.service == model.service);
    draw_detail(frame, app, model, shown, inner);
}

fn draw_detail(
    frame: &mut Frame,
    app: &App,
    model: &ModelRow,
    detail: Option<&ModelDetail>,
    area: Rect,
) {
    let [summary, drift, trend, charts, tail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(2),
    ])
    .areas(area);
    frame.render_widget(
        Line::from(vec![
            Span::raw(format!("{} calls", number(model.calls as f64))),
            Span::styled(" · p50 ", DIM),
            Span::raw(seconds(model.p50_s)),
            Span::styled(" · p95 ", DIM),
            Span::raw(seconds(model.p95_s)),
            Span::styled(" · TTFT p95 ", DIM),
            Span::raw(seconds(model.ttft_p95_s)),
            Span::styled(" · errors ", DIM),
            Span::raw(format!("{:.1}%", model.error_rate * 100.0)),
        ]),
        summary,
    );
    match detail.and_then(|d| d.drift.as_ref()) {
        Some(evaluation) => draw_evaluation(frame, evaluation, drift),
        None => draw_drift(frame, app, model, drift),
    }
    let Some(detail) = detail else {
        empty(frame, charts, "Loading this model's distributions …");
        return;
    };
    let [calls_line, p95_line] = Layout::vertical([Constraint::Length(1); 2]).areas(trend);
    for (line, label, values, color) in [
        (calls_line, "calls", &detail.calls_trend, Color::Cyan),
        (p95_line, "p95 ms", &detail.p95_trend_ms, Color::Green),
    ] {
        let [text, spark] =
            Layout::horizontal([Constraint::Length(14), Constraint::Min(0)]).areas(line);
        let last = values.iter().rev().find(|v| **v > 0).copied().unwrap_or(0);
        frame.render_widget(
            Line::from(vec![
                Span::styled(format!("{label:<7}"), DIM),
                Span::raw(number(last as f64)),
            ]),
            text,
        );
        sparkline(frame, values, Style::new().fg(color), spark);
    }
    let [latency, ttft, tokens] = Layout::horizontal([Constraint::Ratio(1, 3); 3]).areas(charts);
    histogram(frame, "latency", &detail.latency, latency);
    histogram(frame, "TTFT", &detail.ttft, ttft);
    histogram(frame, "output tokens", &detail.output_tokens, tokens);
    let listing = |counts: &Counts| {
        if counts.is_empty() {
            "none".to_string()
        } else {
            counts
                .iter()
                .map(|(label, n)| format!("{label} {}", number(*n as f64)))
                .collect::<Vec<_>>()
                .join(" · ")
        }
    };
    let [finish, errors] = Layout::vertical([Constraint::Length(1); 2]).areas(tail);
    frame.render_widget(
        Line::from(vec![
            Span::styled("finish  ", DIM),
            Span::raw(listing(&detail.finish_reasons)),
        ]),
        finish,
    );
    frame.render_widget(
        Line::from(vec![
            Span::styled("errors  ", DIM),
            Span::styled(
                listing(&detail.errors),
                if detail.errors.is_empty() {
                    Style::new()
                } else {
                    BAD
                },
            ),
        ]),
        errors,
    );
}

/// The drift detector's latest verdict: what it judged, which tests moved and by how much,
/// against which reference.
fn draw_evaluation(frame: &mut Frame, evaluation: &DriftEvaluation, area: Rect) {
    let verdict = if evaluation.active {
        Span::styled("DRIFTING", BAD)
    } else if evaluation.not_judged.is_some() {
        Span::styled("not judged yet", Style::new().fg(Color::Yellow))
    } else {
        Span::styled("stable", Style::new().fg(Color::Green))
    };
    let tests: Vec<&String> = if evaluation.moved.is_empty() {
        evaluation.tests.iter().collect()
    } else {
        // The moved features first: they are the verdict.
        let (moved, rest): (Vec<&String>, Vec<&String>) = evaluation.tests.iter().partition(|t| {
            evaluation
                .moved
                .iter()
                .any(|m| t.starts_with(&format!("{m} ")))
        });
        moved.into_iter().chain(rest).collect()
    };
    let tests: Vec<&str> = tests.iter().map(|t| t.as_str()).collect();
    let lines = vec![
        Line::from(vec![
            Span::styled("drift   ", DIM),
            verdict,
            Span::styled(
                format!(
                    " · {} {} · score {:.1}, alerts past {:.1}{}",
                    if evaluation.not_judged.is_some() {
                        "seen"
                    } else {
                        "judged"
                    },
                    clock(evaluation.time_ns),
                    evaluation.score,
                    evaluation.threshold,
                    if evaluation.subject.is_empty() {
                        String::new()
                    } else {
                        format!(" · on {}", evaluation.subject)
                    }
                ),
                DIM,
            ),
        ]),
        Line::from(vec![
            Span::styled("tests   ", DIM),
            Span::raw(match &evaluation.not_judged {
                Some(reason) => reason.clone(),
                None if tests.is_empty() => "none ran (too few calls)".to_string(),
                None => tests.join(" · "),
            }),
        ]),
        Line::from(vec![
            Span::styled("against ", DIM),
            Span::styled(evaluation.reference.clone(), DIM),
        ]),
    ];
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_drift(frame: &mut Frame, app: &App, model: &ModelRow, area: Rect) {
    let lines = match app.drift_of(&model.service, &model.model) {
        Some(alert) if alert.firing() => vec![
            Line::from(vec![
                Span::styled("drift   DRIFTING ", BAD),
                Span::styled(format!("since {} ", clock(alert.time_ns)), DIM),
                Span::raw(super::one_line(&alert.summary)),
            ]),
            Line::from(Span::styled(format!("evidence {}", alert.evidence), DIM)),
        ],
        Some(alert) => vec![
            Line::from(vec![
                Span::styled("drift   ", DIM),
                Span::styled("resolved ", Style::new().fg(Color::Green)),
                Span::styled(format!("at {} ", clock(alert.time_ns)), DIM),
                Span::raw(super::one_line(&alert.summary)),
            ]),
            Line::from(Span::styled(format!("evidence {}", alert.evidence), DIM)),
        ],
        None => vec![Line::from(vec![
            Span::styled("drift   ", DIM),
            Span::styled("stable", Style::new().fg(Color::Green)),
            Span::styled(" · no drift alert in this range", DIM),
        ])],
    };
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
}

/// A distribution as horizontal bars, one per power-of-two bucket.
fn histogram(frame: &mut Frame, title: &str, counts: &Counts, area: Rect) {
    let block = Block::bordered()
        .title(Span::styled(format!(" {title} "), HEADER))
        .border_style(DIM);
    if counts.is_empty() {
        super::empty_block(frame, block, area, "no data");
        return;
    }
    let bars: Vec<Bar> = counts
        .iter()
        .map(|(label, n)| {
            Bar::default()
                .label(Line::from(label.clone()))
                .value(*n)
                .text_value(number(*n as f64))
        })
        .collect();
    let chart = BarChart::default()
        .block(block)
        .direction(Direction::Horizontal)
        .bar_width(1)
        .bar_gap(0)
        .bar_style(Style::new().fg(Color::Cyan))
        .value_style(Style::new().fg(Color::Black).bg(Color::Cyan))
        .data(BarGroup::default().bars(&bars));
    frame.render_widget(chart, area);
}
