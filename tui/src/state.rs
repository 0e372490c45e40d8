//! What the dashboard knows: the data of the last refresh and the operator's choices. Views draw
//! from this alone, so that a view is a pure function of an [`App`].

use std::collections::BTreeMap;
use std::time::Duration;

/// The screens, in the order of their number keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Models,
    Gpus,
    Traces,
    Alerts,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Overview,
        Tab::Models,
        Tab::Gpus,
        Tab::Traces,
        Tab::Alerts,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Models => "Models",
            Tab::Gpus => "GPUs",
            Tab::Traces => "Traces",
            Tab::Alerts => "Alerts",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    pub fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }

    pub fn previous(self) -> Tab {
        Tab::ALL[(self.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }
}

/// The time ranges `t` cycles through.
pub const RANGES: [(&str, Duration); 6] = [
    ("5m", Duration::from_secs(300)),
    ("15m", Duration::from_secs(900)),
    ("1h", Duration::from_secs(3600)),
    ("6h", Duration::from_secs(6 * 3600)),
    ("24h", Duration::from_secs(24 * 3600)),
    ("7d", Duration::from_secs(7 * 24 * 3600)),
];

/// The refresh intervals `r` cycles through.
pub const REFRESHES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// How many buckets a trend (sparkline) has across the time range.
pub const TREND_BUCKETS: usize = 60;

/// The LLM golden signals over the time range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Golden {
    pub calls: u64,
    /// Calls per second since the first call in the range (not diluted by an empty start).
    pub requests_per_s: f64,
    pub p50_s: Option<f64>,
    pub p95_s: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p95_s: Option<f64>,
    pub input_tokens_per_s: f64,
    pub output_tokens_per_s: f64,
    pub cost_per_hour: f64,
    pub error_rate: Option<f64>,
}

/// The golden signals per time bucket, oldest first: what the sparklines draw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trend {
    pub calls: Vec<u64>,
    pub p95_ms: Vec<u64>,
    pub ttft_p95_ms: Vec<u64>,
    pub tokens: Vec<u64>,
    /// Cost in millionths of a dollar, so that it fits a sparkline's integers.
    pub cost_micro_usd: Vec<u64>,
    pub errors: Vec<u64>,
}

/// One (service, model) pair over the time range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelRow {
    pub service: String,
    pub model: String,
    pub calls: u64,
    pub requests_per_s: f64,
    pub p50_s: Option<f64>,
    pub p95_s: Option<f64>,
    pub ttft_p95_s: Option<f64>,
    pub output_tokens_per_s: f64,
    pub cost_per_hour: f64,
    pub error_rate: f64,
}

/// The column the model table is sorted by (`s` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelSort {
    #[default]
    Calls,
    P95,
    Errors,
    Cost,
    Name,
}

impl ModelSort {
    pub fn next(self) -> ModelSort {
        match self {
            ModelSort::Calls => ModelSort::P95,
            ModelSort::P95 => ModelSort::Errors,
            ModelSort::Errors => ModelSort::Cost,
            ModelSort::Cost => ModelSort::Name,
            ModelSort::Name => ModelSort::Calls,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ModelSort::Calls => "calls",
            ModelSort::P95 => "p95",
            ModelSort::Errors => "errors",
            ModelSort::Cost => "cost",
            ModelSort::Name => "name",
        }
    }
}

/// One GPU: its latest readings in the range, and the alerts firing on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuRow {
    pub host: String,
    pub gpu: String,
    pub uuid: String,
    pub model_name: String,
    pub util_pct: Option<f64>,
    pub mem_used_mib: Option<f64>,
    pub mem_free_mib: Option<f64>,
    pub temp_c: Option<f64>,
    pub power_w: Option<f64>,
    pub sm_clock_mhz: Option<f64>,
    /// The GPU's mean SM clock over the range: what "slow" is measured against.
    pub sm_clock_baseline_mhz: Option<f64>,
    /// The clock throttle reasons active at the last reading, benign ones (idle, application
    /// clocks, display clock) left out.
    pub throttle_reasons: Vec<String>,
    /// The last XID error code seen in the range (0: none).
    pub last_xid: u64,
    /// How much the double-bit ECC counter grew in the range.
    pub ecc_dbe: u64,
    /// False when the exporter reported the GPU lost (`vigil_gpu_up 0`).
    pub up: bool,
    /// The names of the alerts firing on this GPU.
    pub alerts: Vec<String>,
}

impl GpuRow {
    pub fn degraded(&self) -> bool {
        !self.alerts.is_empty()
    }

    pub fn label(&self) -> String {
        format!("{} gpu {}", self.host, self.gpu)
    }

    /// The SM clock as a share of its baseline.
    pub fn clock_ratio(&self) -> Option<f64> {
        match (self.sm_clock_mhz, self.sm_clock_baseline_mhz) {
            (Some(now), Some(base)) if base > 0.0 => Some(now / base),
            _ => None,
        }
    }

    pub fn throttled(&self) -> bool {
        !self.throttle_reasons.is_empty()
    }

    pub fn busy(&self) -> bool {
        self.util_pct.is_some_and(|u| u >= 50.0)
    }
}

/// The fleet in four numbers, as the overview shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetSummary {
    pub gpus: usize,
    pub busy: usize,
    pub throttled: usize,
    pub degraded: usize,
}

impl FleetSummary {
    pub fn of(gpus: &[GpuRow]) -> FleetSummary {
        FleetSummary {
            gpus: gpus.len(),
            busy: gpus.iter().filter(|g| g.busy()).count(),
            throttled: gpus.iter().filter(|g| g.throttled()).count(),
            degraded: gpus.iter().filter(|g| g.degraded()).count(),
        }
    }
}

/// An alert's latest state (one row per fingerprint).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertRow {
    pub time_ns: i64,
    pub state: String,
    pub severity: String,
    pub alertname: String,
    pub detector: String,
    pub subject: String,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    pub summary: String,
    /// The evidence as JSON text, as the analyzer wrote it.
    pub evidence: String,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
}

impl AlertRow {
    pub fn firing(&self) -> bool {
        self.state == "firing"
    }

    /// Where one key jumps from this alert: its GPU, else its model.
    pub fn target(&self) -> Option<Jump> {
        if let Some(uuid) = self.labels.get("UUID") {
            return Some(Jump::Gpu(uuid.clone()));
        }
        self.labels.get("model").map(|model| Jump::Model {
            service: self.labels.get("service").cloned(),
            model: model.clone(),
        })
    }
}

/// Where an alert points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jump {
    Gpu(String),
    Model {
        service: Option<String>,
        model: String,
    },
}

/// One LLM call, as the traces list shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceRow {
    pub time_ns: i64,
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub model: String,
    pub name: String,
    pub duration_s: f64,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub status: String,
    pub error_type: Option<String>,
    pub cost_usd: Option<f64>,
}

impl TraceRow {
    pub fn failed(&self) -> bool {
        self.status.eq_ignore_ascii_case("error") || self.error_type.is_some()
    }
}

/// Which calls the traces list shows (`e` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    All,
    Errors,
    Ok,
}

impl StatusFilter {
    pub fn next(self) -> StatusFilter {
        match self {
            StatusFilter::All => StatusFilter::Errors,
            StatusFilter::Errors => StatusFilter::Ok,
            StatusFilter::Ok => StatusFilter::All,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StatusFilter::All => "all",
            StatusFilter::Errors => "errors",
            StatusFilter::Ok => "ok",
        }
    }
}

/// One span of an open trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanRow {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub service: String,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub status: String,
    pub status_message: Option<String>,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub attributes: Vec<(String, String)>,
    pub input_messages: Option<String>,
    pub output_messages: Option<String>,
    /// Depth in the span tree (0: a root, or a span whose parent is not stored).
    pub depth: usize,
}

/// An open trace: its spans in tree order (each parent before its children, siblings by start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceDetail {
    pub trace_id: String,
    pub spans: Vec<SpanRow>,
}

impl TraceDetail {
    /// Orders `spans` as a tree and sets each one's depth. Spans whose parent is missing (not
    /// yet arrived, or outside the stored range) become roots rather than disappearing.
    pub fn from_spans(trace_id: String, mut spans: Vec<SpanRow>) -> TraceDetail {
        spans.sort_by(|a, b| a.start_ns.cmp(&b.start_ns).then(a.span_id.cmp(&b.span_id)));
        let ids: std::collections::HashSet<String> =
            spans.iter().map(|s| s.span_id.clone()).collect();
        let mut children: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            match &span.parent_span_id {
                Some(parent) if ids.contains(parent) && parent != &span.span_id => {
                    children.entry(parent.clone()).or_default().push(i)
                }
                _ => roots.push(i),
            }
        }
        let mut order = Vec::with_capacity(spans.len());
        let mut visited = vec![false; spans.len()];
        let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (i, 0)).collect();
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            order.push((i, depth));
            if let Some(kids) = children.get(&spans[i].span_id) {
                stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
        // A cycle of parents (malformed input) leaves spans unvisited: show them as roots.
        for (i, seen) in visited.iter().enumerate() {
            if !seen {
                order.push((i, 0));
            }
        }
        let mut slots: Vec<Option<SpanRow>> = spans.into_iter().map(Some).collect();
        let spans = order
            .into_iter()
            .filter_map(|(i, depth)| {
                slots[i].take().map(|mut s| {
                    s.depth = depth;
                    s
                })
            })
            .collect();
        TraceDetail { trace_id, spans }
    }

    /// The trace's start and end, for the waterfall's scale.
    pub fn bounds(&self) -> (i64, i64) {
        let start = self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = self
            .spans
            .iter()
            .map(|s| s.start_ns.saturating_add(s.duration_ns.max(0)))
            .max()
            .unwrap_or(start);
        (start, end.max(start))
    }
}

/// A count per labelled bucket, for bar charts and short tables.
pub type Counts = Vec<(String, u64)>;

/// One model's detail: distributions, trend, finish reasons, errors and drift status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelDetail {
    pub service: String,
    pub model: String,
    pub latency: Counts,
    pub ttft: Counts,
    pub output_tokens: Counts,
    pub calls_trend: Vec<u64>,
    pub p95_trend_ms: Vec<u64>,
    pub finish_reasons: Counts,
    pub errors: Counts,
    /// The drift detector's latest verdict on this model, alert or not; `None` when the
    /// collector keeps none (its analyzer is off or runs apart) or has not judged it yet.
    pub drift: Option<DriftEvaluation>,
}

/// What the drift detector saw the last time it judged a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriftEvaluation {
    pub time_ns: i64,
    /// The scope that holds the model when that is what was judged (`all LLM traffic`);
    /// empty when the verdict is on the model itself.
    pub subject: String,
    /// Past the threshold: drifting.
    pub active: bool,
    pub score: f64,
    pub threshold: f64,
    /// The features that moved.
    pub moved: Vec<String>,
    /// One line per test: the feature, its adjusted p-value and how far it moved.
    pub tests: Vec<String>,
    /// The reference window it was judged against.
    pub reference: String,
    /// Why the scope was seen and not judged (a reference still filling, too few calls).
    pub not_judged: Option<String>,
}

/// One rank of a NCCL communicator against its peers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NcclRow {
    pub comm: String,
    pub rank: String,
    pub busbw_gbs: f64,
    pub peer_median_gbs: f64,
}

/// A model served from a GPU's host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServedRow {
    pub service: String,
    pub model: String,
    pub calls: u64,
    pub p95_s: Option<f64>,
}

/// One GPU's detail: its signals over the range, NCCL against peers, and what its host served.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuDetail {
    pub uuid: String,
    pub util: Vec<u64>,
    pub sm_clock: Vec<u64>,
    pub power: Vec<u64>,
    pub temp: Vec<u64>,
    pub mem_used: Vec<u64>,
    pub nccl: Vec<NcclRow>,
    pub served: Vec<ServedRow>,
}

/// Everything the last refreshes brought back. Each part is replaced when its query answers,
/// so that a failing query leaves the last good answer on screen under the banner.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Data {
    pub golden: Golden,
    pub trend: Trend,
    pub models: Vec<ModelRow>,
    pub gpus: Vec<GpuRow>,
    /// The latest state of every alert that fired or changed in the range, firing first.
    pub alerts: Vec<AlertRow>,
    pub traces: Vec<TraceRow>,
    pub model_detail: Option<ModelDetail>,
    pub gpu_detail: Option<GpuDetail>,
    pub trace_detail: Option<TraceDetail>,
}

impl Data {
    pub fn firing(&self) -> impl Iterator<Item = &AlertRow> {
        self.alerts.iter().filter(|a| a.firing())
    }
}

/// How the last refresh went.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Connection {
    #[default]
    Connecting,
    Ok {
        /// When the data on screen was fetched (UTC, HH:MM:SS).
        at: String,
        took_ms: u64,
    },
    Failed {
        message: String,
        /// When the last good data was fetched, if ever.
        last_ok: Option<String>,
    },
}

/// What is open on top of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Open {
    /// A trace's waterfall (on Traces).
    Trace { trace_id: String, time_ns: i64 },
    /// A GPU's detail (on GPUs).
    Gpu { uuid: String },
}

/// The dashboard: the data and every choice the operator made.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// The collector's Flight SQL address, as shown in the title.
    pub collector: String,
    pub tab: Tab,
    pub data: Data,
    pub range: usize,
    pub refresh: usize,
    /// The `/` filter of the current list (case-insensitive substring of any shown column).
    pub filter: String,
    pub filter_editing: bool,
    pub help: bool,
    /// The selected row of each tab's list, by index into its visible (filtered) rows.
    pub selected: [usize; 5],
    pub model_sort: ModelSort,
    pub status_filter: StatusFilter,
    pub open: Option<Open>,
    /// The selected span of an open trace.
    pub span_selected: usize,
    pub connection: Connection,
    pub quit: bool,
}

impl App {
    pub fn new(collector: impl Into<String>) -> App {
        App {
            collector: collector.into(),
            tab: Tab::Overview,
            data: Data::default(),
            range: 1,
            refresh: 1,
            filter: String::new(),
            filter_editing: false,
            help: false,
            selected: [0; 5],
            model_sort: ModelSort::default(),
            status_filter: StatusFilter::default(),
            open: None,
            span_selected: 0,
            connection: Connection::default(),
            quit: false,
        }
    }

    pub fn range(&self) -> (&'static str, Duration) {
        RANGES[self.range.min(RANGES.len() - 1)]
    }

    pub fn refresh_every(&self) -> Duration {
        REFRESHES[self.refresh.min(REFRESHES.len() - 1)]
    }

    fn matches(&self, fields: &[&str]) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let needle = self.filter.to_lowercase();
        fields.iter().any(|f| f.to_lowercase().contains(&needle))
    }

    /// The model table as shown: filtered, then sorted.
    pub fn visible_models(&self) -> Vec<&ModelRow> {
        let mut rows: Vec<&ModelRow> = self
            .data
            .models
            .iter()
            .filter(|m| self.matches(&[&m.service, &m.model]))
            .collect();
        let key = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
        rows.sort_by(|a, b| match self.model_sort {
            ModelSort::Calls => b.calls.cmp(&a.calls),
            ModelSort::P95 => key(b.p95_s).total_cmp(&key(a.p95_s)),
            ModelSort::Errors => b.error_rate.total_cmp(&a.error_rate),
            ModelSort::Cost => b.cost_per_hour.total_cmp(&a.cost_per_hour),
            ModelSort::Name => (&a.model, &a.service).cmp(&(&b.model, &b.service)),
        });
        rows
    }

    /// GPUs as shown: filtered, degraded first, then by host and index.
    pub fn visible_gpus(&self) -> Vec<&GpuRow> {
        let mut rows: Vec<&GpuRow> = self
            .data
            .gpus
            .iter()
            .filter(|g| {
                let alerts = g.alerts.join(" ");
                self.matches(&[&g.host, &g.gpu, &g.uuid, &g.model_name, &alerts])
            })
            .collect();
        rows.sort_by(|a, b| {
            b.degraded()
                .cmp(&a.degraded())
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| gpu_index(&a.gpu).cmp(&gpu_index(&b.gpu)))
        });
        rows
    }

    pub fn visible_traces(&self) -> Vec<&TraceRow> {
        self.data
            .traces
            .iter()
            .filter(|t| {
                let error = t.error_type.as_deref().unwrap_or("");
                self.matches(&[&t.service, &t.model, &t.status, &t.name, &t.trace_id, error])
            })
            .collect()
    }

    pub fn visible_alerts(&self) -> Vec<&AlertRow> {
        self.data
            .alerts
            .iter()
            .filter(|a| {
                self.matches(&[
                    &a.alertname,
                    &a.state,
                    &a.severity,
                    &a.subject,
                    &a.summary,
                    &a.detector,
                ])
            })
            .collect()
    }

    /// How many rows the current tab's list shows (what selection moves within).
    pub fn visible_len(&self) -> usize {
        match self.tab {
            Tab::Overview | Tab::Models => self.visible_models().len(),
            Tab::Gpus => self.visible_gpus().len(),
            Tab::Traces => self.visible_traces().len(),
            Tab::Alerts => self.visible_alerts().len(),
        }
    }

    /// The selected row of the current tab, kept inside the visible rows.
    pub fn selection(&self) -> usize {
        let len = self.visible_len();
        self.selected[self.tab.index()].min(len.saturating_sub(1))
    }

    pub fn selected_model(&self) -> Option<&ModelRow> {
        let rows = self.visible_models();
        let i = self.selected[Tab::Models.index()].min(rows.len().saturating_sub(1));
        rows.get(i).copied()
    }

    pub fn selected_gpu(&self) -> Option<&GpuRow> {
        let rows = self.visible_gpus();
        let i = self.selected[Tab::Gpus.index()].min(rows.len().saturating_sub(1));
        rows.get(i).copied()
    }

    pub fn selected_trace(&self) -> Option<&TraceRow> {
        let rows = self.visible_traces();
        let i = self.selected[Tab::Traces.index()].min(rows.len().saturating_sub(1));
        rows.get(i).copied()
    }

    pub fn selected_alert(&self) -> Option<&AlertRow> {
        let rows = self.visible_alerts();
        let i = self.selected[Tab::Alerts.index()].min(rows.len().saturating_sub(1));
        rows.get(i).copied()
    }

    /// The latest drift alert of a model (firing or resolved), for the Models view.
    pub fn drift_of(&self, service: &str, model: &str) -> Option<&AlertRow> {
        self.data
            .alerts
            .iter()
            .filter(|a| {
                a.alertname == "ModelDrift"
                    && a.labels.get("model").map(String::as_str) == Some(model)
            })
            .filter(|a| a.labels.get("service").is_none_or(|s| s == service))
            .max_by_key(|a| (a.firing(), a.time_ns))
    }

    /// The open GPU, when GPUs shows a detail.
    pub fn open_gpu(&self) -> Option<&GpuRow> {
        match &self.open {
            Some(Open::Gpu { uuid }) => self.data.gpus.iter().find(|g| &g.uuid == uuid),
            _ => None,
        }
    }
}

/// A GPU index as a number where it is one, so that gpu 10 sorts after gpu 9.
fn gpu_index(gpu: &str) -> (u64, String) {
    (gpu.parse().unwrap_or(u64::MAX), gpu.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start: i64) -> SpanRow {
        SpanRow {
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            start_ns: start,
            duration_ns: 10,
            ..SpanRow::default()
        }
    }

    #[test]
    fn spans_are_ordered_as_a_tree_with_orphans_and_cycles_kept() {
        let detail = TraceDetail::from_spans(
            "t".into(),
            vec![
                span("c", Some("a"), 5),
                span("a", None, 0),
                span("b", Some("a"), 2),
                span("d", Some("b"), 3),
                span("orphan", Some("gone"), 1),
                span("x", Some("y"), 8),
                span("y", Some("x"), 9),
            ],
        );
        let order: Vec<(&str, usize)> = detail
            .spans
            .iter()
            .map(|s| (s.span_id.as_str(), s.depth))
            .collect();
        assert_eq!(
            order,
            vec![
                ("a", 0),
                ("b", 1),
                ("d", 2),
                ("c", 1),
                ("orphan", 0),
                ("x", 0),
                ("y", 0)
            ]
        );
        assert_eq!(detail.bounds(), (0, 19));
    }

    #[test]
    fn filter_and_sort_pick_the_rows_shown() {
        let mut app = App::new("http://x");
        app.data.models = vec![
            ModelRow {
                service: "chat".into(),
                model: "gpt-4o".into(),
                calls: 10,
                p95_s: Some(2.0),
                ..ModelRow::default()
            },
            ModelRow {
                service: "rag".into(),
                model: "llama".into(),
                calls: 30,
                p95_s: Some(1.0),
                ..ModelRow::default()
            },
        ];
        assert_eq!(app.visible_models()[0].model, "llama");
        app.model_sort = ModelSort::P95;
        assert_eq!(app.visible_models()[0].model, "gpt-4o");
        app.filter = "RAG".into();
        let shown = app.visible_models();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].service, "rag");
    }

    #[test]
    fn an_alert_jumps_to_its_gpu_before_its_model() {
        let mut alert = AlertRow::default();
        assert_eq!(alert.target(), None);
        alert.labels.insert("model".into(), "m".into());
        assert_eq!(
            alert.target(),
            Some(Jump::Model {
                service: None,
                model: "m".into()
            })
        );
        alert.labels.insert("UUID".into(), "GPU-1".into());
        assert_eq!(alert.target(), Some(Jump::Gpu("GPU-1".into())));
    }
}
