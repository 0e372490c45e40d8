//! Wires the analyzer into a running collector: detectors read through the collector's
//! DataFusion context, alert rows go into the `alerts` table through the WAL, notifications leave
//! from an outbox in the data directory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use vigil_analyzer::alert::Alert;
use vigil_analyzer::findings::Evaluations;
use vigil_analyzer::notify::Notifier;
use vigil_analyzer::{
    AlertSink, AlertingConfig, Analyzer, AnalyzerConfig, AnalyzerError, ServedModels,
};
use vigil_collector::storage::Store;
use vigil_collector::{CollectorConfig, RunningCollector};
use vigil_schemas::tables::Table;

/// Everything `vigil serve` reads from its TOML file: the collector's settings at the top level,
/// plus `[analyzer]` and `[alerting]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeConfig {
    #[serde(flatten)]
    pub collector: CollectorConfig,
    pub analyzer: AnalyzerConfig,
    pub alerting: AlertingConfig,
}

/// Appends alert rows to the collector's `alerts` table (WAL first, like every other row).
struct StoreSink(Arc<Store>);

#[async_trait]
impl AlertSink for StoreSink {
    async fn record(&self, batch: RecordBatch) -> Result<(), AnalyzerError> {
        self.0
            .append(Table::Alerts, batch)
            .await
            .map_err(|e| AnalyzerError::Delivery(format!("alerts table: {e}")))
    }
}

/// A running analyzer.
pub struct RunningAnalyzer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub events: broadcast::Receiver<Alert>,
}

impl RunningAnalyzer {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Start the analyzer over `collector`, or `None` when it is disabled.
pub fn start(
    collector: &RunningCollector,
    analyzer: &AnalyzerConfig,
    alerting: &AlertingConfig,
    data_dir: &Path,
) -> anyhow::Result<Option<RunningAnalyzer>> {
    if !analyzer.enabled {
        return Ok(None);
    }
    let outbox_dir = match &alerting.outbox_dir {
        Some(dir) => vigil_collector::storage::paths::resolve_dir(dir, "alerting.outbox_dir")?,
        None => data_dir.join("outbox"),
    };
    let notifier = Notifier::new(alerting.clone(), outbox_dir)?;
    let stats = notifier.stats.clone();
    collector
        .telemetry
        .add_exposition(Box::new(move |out: &mut String| {
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            out.push_str(
                "# HELP vigil_alert_notifications_total Webhook notification attempts: delivered, failed and retried later, dead-lettered.\n\
                 # TYPE vigil_alert_notifications_total counter\n",
            );
            for (outcome, counter) in [
                ("delivered", &stats.delivered),
                ("retried", &stats.retried),
                ("dead_lettered", &stats.dead_lettered),
            ] {
                out.push_str(&format!(
                    "vigil_alert_notifications_total{{outcome=\"{outcome}\"}} {}\n",
                    get(counter)
                ));
            }
            out.push_str(&format!(
                "# HELP vigil_alertmanager_push_errors_total Pushes to an Alertmanager that failed.\n\
                 # TYPE vigil_alertmanager_push_errors_total counter\n\
                 vigil_alertmanager_push_errors_total {}\n",
                get(&stats.alertmanager_errors)
            ));
        }));
    let source = Arc::new(collector.engine.analysis_context().clone());
    let sink: Arc<dyn AlertSink> = Arc::new(StoreSink(collector.store.clone()));
    let evaluations = Arc::new(Evaluations::new()?);
    collector
        .engine
        .analysis_context()
        .register_table(vigil_analyzer::findings::TABLE, evaluations.provider())?;
    let mut runner = Analyzer::new(analyzer.detectors(), source, Some(sink), Some(notifier))
        .with_alert_cap(analyzer.max_alerts_per_detector)
        .with_evaluations(evaluations);
    if analyzer.served_models {
        runner = runner.with_served_models(ServedModels {
            host_label: analyzer.gpu.hostname_label.clone(),
            lookback: analyzer.gpu.window + analyzer.gpu.for_duration,
        });
    }
    let health = runner.health();
    let rendered = health.clone();
    collector
        .telemetry
        .add_exposition(Box::new(move |out: &mut String| rendered.render(out)));
    collector
        .telemetry
        .add_status_section("analyzer", Box::new(move || health.status()));
    let events = runner.subscribe();
    let (stop, stopped) = watch::channel(false);
    let interval = analyzer.interval;
    let task = tokio::spawn(async move {
        // Alerts that were firing when the collector stopped resolve (or stay) from here on,
        // instead of being raised a second time.
        match runner.restore().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(alerts = n, "took back alerts firing before the restart"),
            Err(e) => {
                tracing::warn!(error = %e, "could not read firing alerts back from the alerts table")
            }
        }
        runner.run(interval, stopped).await
    });
    Ok(Some(RunningAnalyzer { stop, task, events }))
}
