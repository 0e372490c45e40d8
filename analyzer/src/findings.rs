//! `evaluations`: the latest verdict of every detector on every scope it judged, alert or not,
//! as a SQL table. An alert says when something moved; this says what the detector saw the
//! last time it looked, so that a model that is fine can show why it is judged fine.
//!
//! Kept in memory (a DataFusion `MemTable` the analyzer rewrites after each round): after a
//! restart it fills again within one round.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use vigil_schemas::tables::{new_string_map_builder, string_map_type, timestamp_type};

use crate::AnalyzerError;
use crate::alert::{Finding, fingerprint};

/// The SQL name of the table.
pub const TABLE: &str = "evaluations";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("detector", DataType::Utf8, false),
        Field::new("alertname", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
        Field::new("active", DataType::Boolean, false),
        Field::new("clear", DataType::Boolean, false),
        Field::new("message", DataType::Utf8, false),
        Field::new("evidence", DataType::Utf8, false),
        Field::new("fingerprint", DataType::Utf8, false),
        Field::new("labels", string_map_type(), false),
    ]))
});

/// The `evaluations` table and what it holds.
pub struct Evaluations {
    table: Arc<MemTable>,
    /// The latest finding per fingerprint, with its detector and time.
    latest: tokio::sync::Mutex<BTreeMap<String, (String, SystemTime, Finding)>>,
}

impl Evaluations {
    pub fn new() -> Result<Evaluations, AnalyzerError> {
        let table = MemTable::try_new(SCHEMA.clone(), vec![vec![]])
            .map_err(|e| AnalyzerError::Shape(format!("evaluations table: {e}")))?;
        Ok(Evaluations {
            table: Arc::new(table),
            latest: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The table, to register in a `SessionContext` as [`TABLE`].
    pub fn provider(&self) -> Arc<dyn TableProvider> {
        self.table.clone()
    }

    /// Replaces what `detector` said in its previous round with what it says now: scopes it no
    /// longer judges leave the table.
    pub async fn record(
        &self,
        detector: &str,
        findings: &[Finding],
        now: SystemTime,
    ) -> Result<(), AnalyzerError> {
        let mut latest = self.latest.lock().await;
        latest.retain(|_, (d, _, _)| d != detector);
        for finding in findings {
            latest.insert(
                fingerprint(&finding.labels),
                (detector.to_string(), now, finding.clone()),
            );
        }
        let batch = build(&latest)?;
        let mut partition = self.table.batches[0].write().await;
        *partition = vec![batch];
        Ok(())
    }
}

fn build(
    latest: &BTreeMap<String, (String, SystemTime, Finding)>,
) -> Result<RecordBatch, AnalyzerError> {
    let n = latest.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut detector = StringBuilder::new();
    let mut alertname = StringBuilder::new();
    let mut subject = StringBuilder::new();
    let mut score = Float64Builder::with_capacity(n);
    let mut threshold = Float64Builder::with_capacity(n);
    let mut active = BooleanBuilder::with_capacity(n);
    let mut clear = BooleanBuilder::with_capacity(n);
    let mut message = StringBuilder::new();
    let mut evidence = StringBuilder::new();
    let mut fingerprints = StringBuilder::new();
    let mut labels = new_string_map_builder(n);
    for (print, (name, at, finding)) in latest {
        let nanos = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .min(i64::MAX as u128) as i64;
        time.append_value(nanos);
        detector.append_value(name);
        alertname.append_value(
            finding
                .labels
                .get("alertname")
                .map(String::as_str)
                .unwrap_or(""),
        );
        subject.append_value(&finding.subject);
        score.append_value(finding.score);
        threshold.append_value(finding.threshold);
        active.append_value(finding.active);
        clear.append_value(finding.clear);
        message.append_value(&finding.message);
        evidence.append_value(serde_json::Value::Object(finding.evidence.clone()).to_string());
        fingerprints.append_value(print);
        for (k, v) in &finding.labels {
            labels.keys().append_value(k);
            labels.values().append_value(v);
        }
        labels
            .append(true)
            .map_err(|e| AnalyzerError::Shape(format!("evaluations labels: {e}")))?;
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(detector.finish()),
        Arc::new(alertname.finish()),
        Arc::new(subject.finish()),
        Arc::new(score.finish()),
        Arc::new(threshold.finish()),
        Arc::new(active.finish()),
        Arc::new(clear.finish()),
        Arc::new(message.finish()),
        Arc::new(evidence.finish()),
        Arc::new(fingerprints.finish()),
        Arc::new(labels.finish()),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns)
        .map_err(|e| AnalyzerError::Shape(format!("evaluations row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use crate::source::{QuerySource, strings};
    use datafusion::prelude::SessionContext;

    fn finding(model: &str, active: bool) -> Finding {
        Finding {
            labels: crate::detectors::alert_labels(
                "ModelDrift",
                "drift",
                &[("service", "api"), ("model", model)],
            ),
            severity: Severity::Warning,
            subject: format!("model {model}"),
            score: if active { 9.0 } else { 0.2 },
            threshold: 2.0,
            active,
            clear: !active,
            message: "m".into(),
            evidence: serde_json::json!({"moved": []})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    #[tokio::test]
    async fn each_round_replaces_the_detectors_previous_verdicts() {
        let evaluations = Evaluations::new().unwrap();
        let ctx = SessionContext::new();
        ctx.register_table(TABLE, evaluations.provider()).unwrap();
        let now = SystemTime::now();
        evaluations
            .record("drift", &[finding("a", false), finding("b", true)], now)
            .await
            .unwrap();
        let mut gpu = finding("x", true);
        gpu.labels.insert("alertname".into(), "GpuThrottled".into());
        evaluations.record("gpu", &[gpu], now).await.unwrap();
        let sql = "SELECT labels['model'] AS model, active, detector FROM evaluations ORDER BY 1";
        let models = strings(
            &ctx.sql(sql).await.unwrap().collect().await.unwrap(),
            "model",
        )
        .unwrap();
        assert_eq!(
            models,
            vec![Some("a".to_string()), Some("b".into()), Some("x".into())]
        );
        // The next drift round no longer sees model a; gpu's row stays.
        evaluations
            .record("drift", &[finding("b", false)], now)
            .await
            .unwrap();
        let batches = QuerySource::sql(&ctx, sql).await.unwrap();
        assert_eq!(
            strings(&batches, "model").unwrap(),
            vec![Some("b".to_string()), Some("x".into())]
        );
        assert_eq!(
            strings(&batches, "active").unwrap(),
            vec![Some("false".to_string()), Some("true".into())]
        );
    }
}
