//! GPUs: every GPU as a row (utilization, memory, temperature, power, SM clock against its own
//! mean over the range, throttle and error flags), degraded ones first and marked; Enter opens a
//! GPU's detail: its signals over the range, its NCCL bandwidth against its peers', and the
//! models served from its host.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::{BAD, DIM, HEADER, HIGHLIGHT, WARN, empty, number, opt_number, seconds, sparkline};
use crate::state::{App, GpuDetail, GpuRow};

fn split(app: &App, body: Rect) -> (Rect, Option<Rect>) {
    if app.open_gpu().is_none() {
        return (body, None);
    }
    let list_height = (body.height * 2 / 5).max(5).min(body.height);
    let [list, detail] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(0)]).areas(body);
    (list, Some(detail))
}

pub fn list_area(app: &App, body: Rect) -> Option<Rect> {
    let (list, _) = split(app, body);
    Some(super::table_rows(list))
}

pub fn draw(frame: &mut Frame, app: &App, body: Rect) {
    let (list, detail) = split(app, body);
    draw_list(frame, app, list);
    if let (Some(area), Some(gpu)) = (detail, app.open_gpu()) {
        let shown = app.data.gpu_detail.as_ref().filter(|d| d.uuid == gpu.uuid);
        draw_detail(frame, gpu, shown, area);
    }
}

fn flags(gpu: &GpuRow) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    if !gpu.up {
        out.push(Span::styled("LOST ", BAD));
    }
    if gpu.throttled() {
        out.push(Span::styled(
            format!("THROTTLE:{} ", gpu.throttle_reasons.join(",")),
            WARN,
        ));
    }
    if gpu.last_xid > 0 {
        out.push(Span::styled(format!("XID{} ", gpu.last_xid), BAD));
    }
    if gpu.ecc_dbe > 0 {
        out.push(Span::styled(format!("ECC-DBE+{} ", gpu.ecc_dbe), BAD));
    }
    if gpu.degraded() {
        out.push(Span::styled(
            format!("DEGRADED: {}", gpu.alerts.join(", ")),
            BAD,
        ));
    }
    out
}

fn draw_list(frame: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible_gpus();
    let block = Block::bordered().title(format!(" GPUs ({}) ", rows.len()));
    if rows.is_empty() {
        let text = if app.data.gpus.is_empty() {
            "No GPU metrics in this range: run `vigil gpu-exporter` on each GPU node (or `vigil gpu-exporter --simulate` to try it), pointed at the collector."
        } else {
            "No GPU matches the filter (Esc clears it)."
        };
        super::empty_block(frame, block, area, text);
        return;
    }
    let header = Row::new([
        "host", "gpu", "model", "util", "mem GiB", "temp", "power", "SM MHz", "vs mean", "flags",
    ])
    .style(HEADER);
    let body: Vec<Row> = rows
        .iter()
        .map(|g| {
            let ratio = g.clock_ratio();
            let ratio_text = Span::styled(
                ratio.map_or("–".to_string(), |r| format!("{:.0}%", r * 100.0)),
                if ratio.is_some_and(|r| r < 0.9) {
                    BAD
                } else {
                    Style::new()
                },
            );
            let marker = if g.degraded() { "▲ " } else { "" };
            let style = if g.degraded() { BAD } else { Style::new() };
            Row::new(vec![
                Line::from(Span::styled(format!("{marker}{}", g.host), style)),
                Line::from(g.gpu.clone()),
                Line::from(g.model_name.trim_start_matches("NVIDIA ").to_string()),
                Line::from(g.util_pct.map_or("–".into(), |u| format!("{u:.0}%"))),
                Line::from(
                    g.mem_used_mib
                        .map_or("–".into(), |m| format!("{:.1}", m / 1024.0)),
                ),
                Line::from(g.temp_c.map_or("–".into(), |t| format!("{t:.0}C"))),
                Line::from(g.power_w.map_or("–".into(), |p| format!("{p:.0}W"))),
                Line::from(opt_number(g.sm_clock_mhz)),
                Line::from(ratio_text),
                Line::from(flags(g)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(3),
        Constraint::Fill(1),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Fill(2),
    ];
    let selected = app.selected[app.tab.index()].min(rows.len() - 1);
    let table = Table::new(body, widths)
        .header(header)
        .block(block)
        .row_highlight_style(HIGHLIGHT);
    let mut state = super::table_state(Some(selected), area.height.saturating_sub(3) as usize);
    frame.render_stateful_widget(table, area, &mut state);
}

type Signal<'a> = (&'a str, &'a Vec<u64>, Option<f64>, &'a str, Color);

fn draw_detail(frame: &mut Frame, gpu: &GpuRow, detail: Option<&GpuDetail>, area: Rect) {
    let block = Block::bordered().title(format!(" {} · {} ", gpu.label(), gpu.uuid));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(detail) = detail else {
        empty(frame, inner, "Loading this GPU's signals …");
        return;
    };
    let [signals, side] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(inner);
    let lines = Layout::vertical([Constraint::Length(1); 5]).split(signals);
    // (label, values over the range, latest reading, unit, colour)
    let series: [Signal; 5] = [
        ("util", &detail.util, gpu.util_pct, "%", Color::Cyan),
        (
            "SM MHz",
            &detail.sm_clock,
            gpu.sm_clock_mhz,
            "",
            Color::Green,
        ),
        ("power", &detail.power, gpu.power_w, "W", Color::Yellow),
        ("temp", &detail.temp, gpu.temp_c, "C", Color::Red),
        (
            "mem MiB",
            &detail.mem_used,
            gpu.mem_used_mib,
            "",
            Color::Magenta,
        ),
    ];
    for (i, (label, values, now, unit, color)) in series.into_iter().enumerate() {
        let Some(line) = lines.get(i) else { break };
        let [text, spark] =
            Layout::horizontal([Constraint::Length(16), Constraint::Min(0)]).areas(*line);
        frame.render_widget(
            Line::from(vec![
                Span::styled(format!("{label:<8}"), DIM),
                Span::raw(format!("{}{unit}", opt_number(now))),
            ]),
            text,
        );
        let spark = Rect::new(
            spark.x,
            spark.y,
            spark.width.saturating_sub(2),
            spark.height,
        );
        sparkline(frame, values, Style::new().fg(color), spark);
    }
    let mut text: Vec<Line> = vec![Line::from(Span::styled(
        "NCCL bus bandwidth vs peers",
        HEADER,
    ))];
    if detail.nccl.is_empty() {
        text.push(Line::from(Span::styled("no NCCL telemetry", DIM)));
    }
    for row in &detail.nccl {
        let ratio = if row.peer_median_gbs > 0.0 {
            row.busbw_gbs / row.peer_median_gbs
        } else {
            1.0
        };
        text.push(Line::from(vec![
            Span::styled(format!("{} rank {} ", row.comm, row.rank), DIM),
            Span::styled(
                format!(
                    "{} GB/s vs {} ({:.0}%)",
                    number(row.busbw_gbs),
                    number(row.peer_median_gbs),
                    ratio * 100.0
                ),
                if ratio < 0.8 { BAD } else { Style::new() },
            ),
        ]));
    }
    text.push(Line::from(Span::styled(
        format!("Models served from {}", gpu.host),
        HEADER,
    )));
    if detail.served.is_empty() {
        text.push(Line::from(Span::styled(
            "none with host.name on their spans",
            DIM,
        )));
    }
    for served in &detail.served {
        text.push(Line::from(vec![
            Span::raw(format!("{} · {} ", served.service, served.model)),
            Span::styled(
                format!(
                    "{} calls p95 {}",
                    number(served.calls as f64),
                    seconds(served.p95_s)
                ),
                DIM,
            ),
        ]));
    }
    frame.render_widget(Paragraph::new(text), side);
}
