//! Snapshots of every view on fixed data, at 80x24 and 200x60: with data, empty, with the
//! collector down, and with names longer than any column.

use std::collections::BTreeMap;

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::draw;
use crate::state::{
    AlertRow, App, Connection, Data, Golden, GpuDetail, GpuRow, ModelDetail, ModelRow, NcclRow,
    Open, ServedRow, SpanRow, Tab, TraceDetail, TraceRow, Trend,
};

/// 2026-12-02T08:00:00Z.
const T0: i64 = 1_796_198_400_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let mut line = String::new();
        for x in 0..width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn wave(n: usize, base: u64, amplitude: u64) -> Vec<u64> {
    (0..n)
        .map(|i| base + (i as u64 * 7 % 11) * amplitude / 10)
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gpu(host: &str, index: u32, util: f64, clock: f64) -> GpuRow {
    GpuRow {
        host: host.into(),
        gpu: index.to_string(),
        uuid: format!("GPU-{host}-{index}"),
        model_name: "NVIDIA H100 80GB HBM3".into(),
        util_pct: Some(util),
        mem_used_mib: Some(61_440.0),
        mem_free_mib: Some(20_480.0),
        temp_c: Some(64.0),
        power_w: Some(512.0),
        sm_clock_mhz: Some(clock),
        sm_clock_baseline_mhz: Some(1980.0),
        up: true,
        ..GpuRow::default()
    }
}

fn data() -> Data {
    let mut gpus: Vec<GpuRow> = (0..4)
        .flat_map(|i| {
            [
                gpu("node-1", i, 92.0, 1980.0),
                gpu("node-2", i, 88.0, 1975.0),
            ]
        })
        .collect();
    gpus[5].sm_clock_mhz = Some(1410.0);
    gpus[5].throttle_reasons = vec!["sw_power_cap".into()];
    gpus[5].alerts = vec!["GpuClockLow".into()];
    gpus[2].last_xid = 79;
    gpus[2].up = false;
    let gpu_alert = AlertRow {
        time_ns: T0 - 120 * SECOND,
        state: "firing".into(),
        severity: "warning".into(),
        alertname: "GpuClockLow".into(),
        detector: "gpu_peer".into(),
        subject: "GPU-node-2-2".into(),
        score: Some(0.71),
        threshold: Some(0.9),
        summary: "node-2 gpu 2 runs its SM clock at 71% of its peers' with no error reported"
            .into(),
        evidence: r#"{"sm_clock_mhz":1410,"peer_median_mhz":1980,"served_models":"chat/gpt-4o"}"#
            .into(),
        fingerprint: "a1b2c3d4e5f60718".into(),
        labels: labels(&[
            ("alertname", "GpuClockLow"),
            ("UUID", "GPU-node-2-2"),
            ("gpu", "2"),
            ("Hostname", "node-2"),
        ]),
    };
    let drift = AlertRow {
        time_ns: T0 - 60 * SECOND,
        state: "firing".into(),
        severity: "warning".into(),
        alertname: "ModelDrift".into(),
        detector: "drift".into(),
        subject: "chat/gpt-4o".into(),
        score: Some(0.42),
        threshold: Some(0.18),
        summary: "gpt-4o on chat: output tokens moved (median 212 → 96)".into(),
        evidence: r#"{"output_tokens":{"ks":0.42,"limit":0.18},"reference":"trailing 1h"}"#.into(),
        fingerprint: "0f1e2d3c4b5a6978".into(),
        labels: labels(&[
            ("alertname", "ModelDrift"),
            ("model", "gpt-4o"),
            ("service", "chat"),
        ]),
    };
    let resolved = AlertRow {
        time_ns: T0 - 600 * SECOND,
        state: "resolved".into(),
        severity: "critical".into(),
        alertname: "GpuXidError".into(),
        detector: "gpu_counters".into(),
        subject: "GPU-node-1-1".into(),
        summary: "XID 79 on node-1 gpu 1".into(),
        evidence: "{}".into(),
        fingerprint: "9988776655443322".into(),
        labels: labels(&[("alertname", "GpuXidError"), ("UUID", "GPU-node-1-1")]),
        ..AlertRow::default()
    };
    let models = vec![
        ModelRow {
            service: "chat".into(),
            model: "gpt-4o".into(),
            calls: 18_240,
            requests_per_s: 10.1,
            p50_s: Some(0.84),
            p95_s: Some(2.31),
            ttft_p95_s: Some(0.41),
            output_tokens_per_s: 1_930.0,
            cost_per_hour: 4.12,
            error_rate: 0.012,
        },
        ModelRow {
            service: "rag".into(),
            model: "llama-3.1-70b-instruct".into(),
            calls: 9_120,
            requests_per_s: 5.0,
            p50_s: Some(1.2),
            p95_s: Some(3.9),
            ttft_p95_s: Some(0.66),
            output_tokens_per_s: 640.0,
            cost_per_hour: 0.0,
            error_rate: 0.071,
        },
        ModelRow {
            service: "batch".into(),
            model: "claude-3-5-sonnet".into(),
            calls: 310,
            requests_per_s: 0.2,
            p50_s: Some(6.5),
            p95_s: Some(14.0),
            ttft_p95_s: None,
            output_tokens_per_s: 88.0,
            cost_per_hour: 1.05,
            error_rate: 0.0,
        },
    ];
    let traces: Vec<TraceRow> = (0..30)
        .map(|i| TraceRow {
            time_ns: T0 - i * 2 * SECOND,
            trace_id: format!("{:032x}", 0xabc0 + i),
            span_id: format!("{:016x}", 0x10 + i),
            service: if i % 3 == 0 { "rag" } else { "chat" }.into(),
            model: if i % 3 == 0 {
                "llama-3.1-70b-instruct"
            } else {
                "gpt-4o"
            }
            .into(),
            name: "chat gpt-4o".into(),
            duration_s: 0.5 + (i % 7) as f64 * 0.3,
            input_tokens: Some(800 + i * 13),
            output_tokens: Some(120 + i * 7),
            status: if i == 4 { "ERROR" } else { "UNSET" }.into(),
            error_type: (i == 4).then(|| "RateLimitError".into()),
            cost_usd: Some(0.00231),
        })
        .collect();
    let root = SpanRow {
        span_id: "00000000000000a1".into(),
        name: "POST /answer".into(),
        service: "rag".into(),
        start_ns: T0 - 10 * SECOND,
        duration_ns: 3 * SECOND,
        status: "UNSET".into(),
        attributes: vec![("http.route".into(), "/answer".into())],
        ..SpanRow::default()
    };
    let retrieve = SpanRow {
        span_id: "00000000000000a2".into(),
        parent_span_id: Some("00000000000000a1".into()),
        name: "retrieve".into(),
        service: "rag".into(),
        start_ns: T0 - 10 * SECOND + 100_000_000,
        duration_ns: 400_000_000,
        status: "UNSET".into(),
        ..SpanRow::default()
    };
    let llm = SpanRow {
        span_id: "00000000000000a3".into(),
        parent_span_id: Some("00000000000000a1".into()),
        name: "chat llama-3.1-70b-instruct".into(),
        service: "rag".into(),
        start_ns: T0 - 10 * SECOND + 600_000_000,
        duration_ns: 2_300_000_000,
        status: "UNSET".into(),
        model: Some("llama-3.1-70b-instruct".into()),
        input_tokens: Some(1_042),
        output_tokens: Some(187),
        cost_usd: Some(0.000912),
        attributes: vec![
            ("gen_ai.request.temperature".into(), "0.2".into()),
            ("gen_ai.system".into(), "openai".into()),
        ],
        input_messages: Some(r#"[{"role":"user","content":"What is our refund policy?"}]"#.into()),
        output_messages: Some(
            r#"[{"role":"assistant","content":"Refunds within 30 days."}]"#.into(),
        ),
        ..SpanRow::default()
    };
    Data {
        golden: Golden {
            calls: 27_670,
            requests_per_s: 15.3,
            p50_s: Some(0.92),
            p95_s: Some(3.1),
            ttft_p50_s: Some(0.21),
            ttft_p95_s: Some(0.55),
            input_tokens_per_s: 12_400.0,
            output_tokens_per_s: 2_658.0,
            cost_per_hour: 5.17,
            error_rate: Some(0.0301),
        },
        trend: Trend {
            calls: wave(60, 80, 40),
            p95_ms: wave(60, 2_000, 1_500),
            ttft_p95_ms: wave(60, 300, 300),
            tokens: wave(60, 70_000, 30_000),
            cost_micro_usd: wave(60, 25_000, 10_000),
            errors: wave(60, 0, 5),
        },
        models,
        gpus,
        alerts: vec![gpu_alert, drift, resolved],
        traces,
        model_detail: Some(ModelDetail {
            service: "chat".into(),
            model: "gpt-4o".into(),
            latency: vec![
                ("256ms".into(), 120),
                ("512ms".into(), 4_200),
                ("1.02s".into(), 9_800),
                ("2.05s".into(), 3_900),
                ("4.10s".into(), 220),
            ],
            ttft: vec![
                ("64ms".into(), 900),
                ("128ms".into(), 11_000),
                ("256ms".into(), 6_340),
            ],
            output_tokens: vec![
                ("32".into(), 400),
                ("64".into(), 3_000),
                ("128".into(), 14_840),
            ],
            calls_trend: wave(60, 150, 50),
            p95_trend_ms: wave(60, 2_100, 400),
            finish_reasons: vec![("stop".into(), 17_900), ("length".into(), 340)],
            errors: vec![("RateLimitError".into(), 219)],
            drift: None,
        }),
        gpu_detail: Some(GpuDetail {
            uuid: "GPU-node-2-2".into(),
            util: wave(60, 80, 15),
            sm_clock: wave(60, 1_400, 100),
            power: wave(60, 480, 60),
            temp: wave(60, 60, 8),
            mem_used: wave(60, 61_000, 500),
            nccl: vec![NcclRow {
                comm: "0x7f3a".into(),
                rank: "6".into(),
                busbw_gbs: 61.0,
                peer_median_gbs: 182.0,
            }],
            served: vec![ServedRow {
                service: "chat".into(),
                model: "gpt-4o".into(),
                calls: 18_240,
                p95_s: Some(2.31),
            }],
        }),
        trace_detail: Some(TraceDetail::from_spans(
            format!("{:032x}", 0xabc0),
            vec![llm, retrieve, root],
        )),
    }
}

fn app(tab: Tab) -> App {
    let mut app = App::new("http://127.0.0.1:50051");
    app.tab = tab;
    app.data = data();
    app.connection = Connection::Ok {
        at: "08:00:00".into(),
        took_ms: 42,
    };
    app
}

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 60)];

fn snapshot_all(name: &str, app: &App) {
    for (w, h) in SIZES {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(app, w, h));
    }
}

#[test]
fn overview() {
    snapshot_all("overview", &app(Tab::Overview));
}

#[test]
fn models() {
    snapshot_all("models", &app(Tab::Models));
}

/// The drift detector's verdict, read from evidence shaped as the detector writes it.
#[test]
fn models_with_the_drift_verdict() {
    let evidence = serde_json::json!({
        "output_tokens": {"p_adjusted": 3.2e-9, "reference_median": 180.0, "current_median": 13.0,
                          "median_shift": -0.93, "ks_distance": 0.61},
        "input_tokens": {"p_adjusted": 0.41, "reference_median": 950.0, "current_median": 1010.0,
                         "median_shift": 0.063},
        "error_rate": {"p_adjusted": 0.9, "reference_rate": 0.01, "current_rate": 0.012},
        "finish_reasons": {"p_adjusted": 0.7, "jensen_shannon": 0.004},
        "moved": ["output_tokens"],
        "reference": {"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T09:50:00Z", "coverage": 1.0},
        "model": "gpt-4o", "service": "chat",
    });
    let mut evaluation =
        crate::fetch::read_drift_evidence(T0 - 30 * SECOND, true, 8.5, 1.3, &evidence);
    evaluation.subject = "all LLM traffic".into();
    assert_eq!(evaluation.moved, vec!["output_tokens".to_string()]);
    assert!(
        evaluation
            .tests
            .contains(&"output_tokens p 3.2e-9 median 180 → 13 (-93%)".to_string()),
        "{:?}",
        evaluation.tests
    );
    let mut app = app(Tab::Models);
    if let Some(detail) = app.data.model_detail.as_mut() {
        detail.drift = Some(evaluation);
    }
    snapshot_all("models_drift_verdict", &app);
}

/// A scope the drift detector saw and did not judge reads as "not judged yet", with why, never
/// as "stable".
#[test]
fn models_with_a_drift_scope_not_judged_yet() {
    let evidence = serde_json::json!({
        "not_judged": "the reference is too short to judge: traffic across 58% of its span (90% needed), 11 windows of this length (7 needed)",
        "reference": {"from": "2026-12-01T09:00:00Z", "to": "2026-12-01T09:50:00Z", "coverage": 0.58},
        "model": "gpt-4o", "service": "chat",
    });
    let evaluation =
        crate::fetch::read_drift_evidence(T0 - 30 * SECOND, false, 0.0, 3.0, &evidence);
    assert!(evaluation.not_judged.is_some() && evaluation.tests.is_empty());
    let mut app = app(Tab::Models);
    if let Some(detail) = app.data.model_detail.as_mut() {
        detail.drift = Some(evaluation);
    }
    snapshot_all("models_drift_not_judged", &app);
}

#[test]
fn gpus() {
    snapshot_all("gpus", &app(Tab::Gpus));
}

#[test]
fn gpu_detail() {
    let mut app = app(Tab::Gpus);
    app.open = Some(Open::Gpu {
        uuid: "GPU-node-2-2".into(),
    });
    snapshot_all("gpu_detail", &app);
}

#[test]
fn traces() {
    snapshot_all("traces", &app(Tab::Traces));
}

#[test]
fn trace_waterfall() {
    let mut app = app(Tab::Traces);
    app.open = Some(Open::Trace {
        trace_id: format!("{:032x}", 0xabc0),
        time_ns: T0,
    });
    app.span_selected = 2;
    snapshot_all("trace_waterfall", &app);
}

#[test]
fn alerts() {
    snapshot_all("alerts", &app(Tab::Alerts));
}

#[test]
fn help_and_filter() {
    let mut app = app(Tab::Overview);
    app.help = true;
    insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
    let mut app = self::app(Tab::Traces);
    app.filter = "rag".into();
    app.filter_editing = true;
    insta::assert_snapshot!("filter_80x24", render(&app, 80, 24));
}

#[test]
fn every_view_empty() {
    for tab in Tab::ALL {
        let mut app = App::new("http://127.0.0.1:50051");
        app.tab = tab;
        app.connection = Connection::Ok {
            at: "08:00:00".into(),
            took_ms: 3,
        };
        snapshot_all(&format!("empty_{}", tab.title().to_lowercase()), &app);
    }
}

#[test]
fn collector_down() {
    let mut app = App::new("http://127.0.0.1:50051");
    app.connection = Connection::Failed {
        message: "transport error: tcp connect error: Connection refused (os error 111)".into(),
        last_ok: None,
    };
    snapshot_all("down_never_reached", &app);
    let mut app = self::app(Tab::Gpus);
    app.connection = Connection::Failed {
        message: "transport error: tcp connect error: Connection refused (os error 111)".into(),
        last_ok: Some("07:59:58".into()),
    };
    snapshot_all("down_with_last_data", &app);
}

#[test]
fn very_long_names() {
    let long = "x".repeat(150);
    for tab in Tab::ALL {
        let mut app = app(tab);
        for m in &mut app.data.models {
            m.service = format!("service-{long}");
            m.model = format!("model-{long}");
        }
        for t in &mut app.data.traces {
            t.service = format!("service-{long}");
            t.model = format!("model-{long}");
        }
        for g in &mut app.data.gpus {
            g.host = format!("host-{long}");
        }
        for a in &mut app.data.alerts {
            a.subject = format!("subject-{long}");
            a.summary = format!("summary-{long}");
        }
        app.data.model_detail = None;
        let text = render(&app, 80, 24);
        // Nothing spills past the screen, and the view still draws its frame.
        assert_eq!(text.lines().count(), 24);
        insta::assert_snapshot!(
            format!("long_names_{}_80x24", tab.title().to_lowercase()),
            text
        );
    }
}
