//! Series a user names in `[[analyzer.anomaly.series]]`: any SQL with a `time` and a numeric
//! `value` column (vLLM's `vllm:num_requests_waiting`, dcgm's `DCGM_FI_DEV_FB_USED`, a business
//! metric), optionally told apart by a `key` column, binned at the anomaly detector's resolution
//! and scored by the same scorer and anomaly rules as the golden signals. Alerts are
//! `SeriesAnomaly` with `series_name` (and `series`, the key) labels.
//!
//! Its own detector, so that a user's query that fails shows as `named_series` failing in
//! `vigil alerts` and never stops the golden signals.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::golden_signals::{AnomalyConfig, Series, complete_until, steps_due};
use super::{Detector, alert_labels};
use crate::AnalyzerError;
use crate::alert::{Finding, Severity};
use crate::source::{QuerySource, floats, strings, ts};
use crate::state::Timing;

/// One `[[analyzer.anomaly.series]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedSeriesConfig {
    /// The alerts' `series_name` label.
    pub name: String,
    /// A query with a `time` (timestamp) and a numeric `value` column.
    pub sql: String,
    /// A column of the query that tells series apart (a host, a GPU, an instance), if any.
    #[serde(default)]
    pub key: Option<String>,
    /// How the values within one step are combined.
    #[serde(default)]
    pub aggregate: Aggregate,
    #[serde(default = "warning")]
    pub severity: Severity,
}

fn warning() -> Severity {
    Severity::Warning
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    #[default]
    Avg,
    Max,
    Min,
    Sum,
    Count,
}

impl Aggregate {
    fn sql(self) -> &'static str {
        match self {
            Aggregate::Avg => "avg",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Sum => "sum",
            Aggregate::Count => "count",
        }
    }
}

pub struct NamedSeries {
    config: AnomalyConfig,
    /// By (index of the named series in the config, key).
    series: HashMap<(usize, String), Series>,
    next_step: Option<SystemTime>,
    warned_full: bool,
}

impl NamedSeries {
    pub fn new(config: AnomalyConfig) -> Self {
        NamedSeries {
            config,
            series: HashMap::new(),
            next_step: None,
            warned_full: false,
        }
    }

    /// The user's query, binned: (key, step start in ns, value), for [from, until).
    fn binned_sql(&self, named: &NamedSeriesConfig, from: SystemTime, until: SystemTime) -> String {
        let res = self.config.resolution.as_secs().max(1);
        let key = match &named.key {
            Some(column) => format!("CAST(\"{}\" AS VARCHAR)", column.replace('"', "\"\"")),
            None => "''".to_string(),
        };
        let user = named.sql.trim().trim_end_matches(';');
        format!(
            "SELECT {key} AS series_key, \
             CAST(date_bin(INTERVAL '{res} seconds', time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) AS step, \
             {}(CAST(value AS DOUBLE)) AS value \
             FROM ({user}) AS named WHERE time >= {} AND time < {} GROUP BY 1, 2 ORDER BY 2",
            named.aggregate.sql(),
            ts(from),
            ts(until)
        )
    }

    async fn read(
        &mut self,
        source: &dyn QuerySource,
        from: SystemTime,
        until: SystemTime,
        alerting: bool,
    ) -> Result<(), AnalyzerError> {
        let judging = alerting.then_some((self.config.threshold, self.config.resolve_after));
        for (index, named) in self.config.series.clone().iter().enumerate() {
            let batches = source
                .sql(&self.binned_sql(named, from, until))
                .await
                .map_err(|e| match e {
                    AnalyzerError::Query { sql, message } => AnalyzerError::Query {
                        sql,
                        message: format!("[[analyzer.anomaly.series]] {:?}: {message}", named.name),
                    },
                    other => other,
                })?;
            let keys = strings(&batches, "series_key")?;
            let steps = floats(&batches, "step")?;
            let values = floats(&batches, "value")?;
            for i in 0..keys.len() {
                let (Some(step), Some(value)) = (steps[i], values[i]) else {
                    continue;
                };
                let at = SystemTime::UNIX_EPOCH
                    + Duration::from_secs((step.max(0.0) / 1e9).round() as u64);
                let key = (index, keys[i].clone().unwrap_or_default());
                if !self.series.contains_key(&key) {
                    if self.series.len() >= self.config.max_series {
                        if !self.warned_full {
                            tracing::warn!(
                                max_series = self.config.max_series,
                                "named series: series limit reached; new keys are not scored (analyzer.anomaly.max_series)"
                            );
                            self.warned_full = true;
                        }
                        continue;
                    }
                    self.series
                        .insert(key.clone(), Series::new(self.config.warmup));
                }
                if let Some(series) = self.series.get_mut(&key) {
                    series.update(at, value, value, true, judging);
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Detector for NamedSeries {
    fn name(&self) -> &'static str {
        "named_series"
    }

    fn timing(&self) -> Timing {
        // As the golden signals: the anomaly rules are the hysteresis.
        Timing {
            for_duration: Duration::ZERO,
            resolve_after: Duration::ZERO,
        }
    }

    fn next_due(&self) -> Option<SystemTime> {
        // The step after the last judged is complete once it has settled.
        self.next_step
            .map(|next| next + self.config.resolution + self.config.settle)
    }

    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let until = complete_until(now, self.config.resolution, self.config.settle);
        let (from, alerting) = steps_due(self.next_step, until, self.config.history);
        if from < until {
            self.read(source, from, until, alerting).await?;
            self.next_step = Some(until);
        }
        let mut findings = Vec::new();
        for ((index, key), series) in &self.series {
            let named = &self.config.series[*index];
            let subject = if key.is_empty() {
                named.name.clone()
            } else {
                format!("{} of {key}", named.name)
            };
            let labels = alert_labels(
                "SeriesAnomaly",
                self.name(),
                &[("series_name", &named.name), ("series", key)],
            );
            let mut evidence = serde_json::Map::new();
            evidence.insert("sql".into(), json!(named.sql));
            findings.extend(series.finding(
                labels,
                named.severity,
                subject,
                &self.config,
                |_, scored| scored,
                evidence,
            ));
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray,
    };
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const START: u64 = 1_800_000_000;

    /// vLLM's queue length on two hosts, a point every 5 s for `minutes`; on host `b` it jumps
    /// from about 5 to about 40 at minute 30.
    fn metrics(minutes: u64) -> RecordBatch {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut time, mut name, mut host, mut value) = (vec![], vec![], vec![], vec![]);
        for second in (0..minutes * 60).step_by(5) {
            for h in ["a", "b"] {
                let queue = if h == "b" && second >= 30 * 60 {
                    40.0
                } else {
                    5.0
                };
                time.push(((START + second) * 1_000_000_000) as i64);
                name.push("vllm:num_requests_waiting");
                host.push(h);
                value.push(queue + rng.gen_range(-2.0..2.0));
            }
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            ),
            ("metric_name", Arc::new(StringArray::from(name))),
            ("host", Arc::new(StringArray::from(host))),
            ("value", Arc::new(Float64Array::from(value))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn context(batch: RecordBatch) -> SessionContext {
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("metrics", Arc::new(table)).unwrap();
        ctx
    }

    fn config(sql: &str) -> AnomalyConfig {
        AnomalyConfig {
            series: vec![NamedSeriesConfig {
                name: "vllm_queue".into(),
                sql: sql.into(),
                key: Some("host".into()),
                aggregate: Aggregate::Max,
                severity: Severity::Warning,
            }],
            ..AnomalyConfig::default()
        }
    }

    #[tokio::test]
    async fn a_queue_that_jumps_on_one_host_raises_series_anomaly_for_that_host_only() {
        let ctx = context(metrics(40));
        let mut detector = NamedSeries::new(config(
            "SELECT time, host, value FROM metrics WHERE metric_name = 'vllm:num_requests_waiting';",
        ));
        let mut first = HashMap::new();
        for second in (0..=40 * 60).step_by(10) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(START + second);
            for finding in detector.evaluate(&ctx, now).await.unwrap() {
                if finding.active {
                    first
                        .entry(finding.labels["series"].clone())
                        .or_insert((second, finding));
                }
            }
        }
        assert_eq!(first.len(), 1, "{first:?}");
        let (second, finding) = &first["b"];
        // The step of the jump ends 10 s after it, settles 10 s, and the next step confirms.
        assert!((30 * 60..=30 * 60 + 40).contains(second), "{second}");
        assert_eq!(finding.labels["alertname"], "SeriesAnomaly");
        assert_eq!(finding.labels["series_name"], "vllm_queue");
        assert!(
            finding.message.starts_with("vllm_queue of b is"),
            "{}",
            finding.message
        );
    }

    #[tokio::test]
    async fn a_query_that_fails_names_its_series() {
        let ctx = context(metrics(1));
        let mut detector = NamedSeries::new(config("SELECT time, host, value FROM no_such_table"));
        let error = detector
            .evaluate(
                &ctx,
                SystemTime::UNIX_EPOCH + Duration::from_secs(START + 60),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"vllm_queue\"") && error.contains("no_such_table"),
            "{error}"
        );
    }

    #[test]
    fn the_config_refuses_an_unknown_aggregate_by_name() {
        let error = toml::from_str::<NamedSeriesConfig>(
            "name = \"q\"\nsql = \"SELECT 1\"\naggregate = \"median\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("median") && error.contains("avg"), "{error}");
    }
}
