//! One sampling round's worth of metrics, grouped by metric, and its Prometheus text rendering.
//! The `/metrics` page and the OTLP export are both read from the same [`Snapshot`], so the two
//! can never disagree about a value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use crate::fields::{MetricDef, MetricKind};

/// Label names and values; names are dcgm-exporter's (`gpu`, `UUID`, `Hostname`, …).
pub type Labels = Vec<(Arc<str>, Arc<str>)>;

/// A cumulative histogram: `bucket_counts[i]` counts observations `<= bounds[i]` and above the
/// previous bound; the last entry counts those above every bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: Arc<[f64]>,
    pub bucket_counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = bounds.len() + 1;
        Histogram {
            bounds,
            bucket_counts: vec![0; buckets],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let index = self.bounds.partition_point(|bound| *bound < value);
        self.bucket_counts[index] += 1;
        self.sum += value;
        self.count += 1;
    }
}

/// A series' value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Histogram(Histogram),
}

/// One labelled series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub value: Value,
}

/// All series of one metric.
#[derive(Debug, Clone)]
pub struct Family {
    pub def: &'static MetricDef,
    pub series: Vec<Series>,
}

/// Everything one sampling round produced.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    pub families: BTreeMap<&'static str, Family>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            taken_at: SystemTime::UNIX_EPOCH,
            families: BTreeMap::new(),
        }
    }
}

impl Snapshot {
    pub fn new(taken_at: SystemTime) -> Self {
        Snapshot {
            taken_at,
            families: BTreeMap::new(),
        }
    }

    /// Add one scalar sample.
    pub fn push(&mut self, def: &'static MetricDef, labels: Labels, value: f64) {
        self.push_value(def, labels, Value::Scalar(value));
    }

    pub fn push_value(&mut self, def: &'static MetricDef, labels: Labels, value: Value) {
        self.families
            .entry(def.name)
            .or_insert_with(|| Family {
                def,
                series: Vec::new(),
            })
            .series
            .push(Series { labels, value });
    }

    /// The scalar value of the first series of `name` whose labels include every pair in `matching`.
    pub fn value(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        self.series(name, matching)
            .find_map(|series| match series.value {
                Value::Scalar(value) => Some(value),
                Value::Histogram(_) => None,
            })
    }

    /// Series of `name` whose labels include every pair in `matching`.
    pub fn series<'a>(
        &'a self,
        name: &str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Series> + 'a {
        self.families.get(name).into_iter().flat_map(move |family| {
            family.series.iter().filter(move |series| {
                matching.iter().all(|(key, want)| {
                    series
                        .labels
                        .iter()
                        .any(|(k, v)| &**k == *key && &**v == *want)
                })
            })
        })
    }

    /// Total number of series.
    pub fn series_count(&self) -> usize {
        self.families
            .values()
            .map(|family| family.series.len())
            .sum()
    }

    /// Prometheus text exposition format 0.0.4, the format dcgm-exporter serves.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(self.series_count() * 160);
        for family in self.families.values() {
            let def = family.def;
            let kind = match def.kind {
                MetricKind::Gauge => "gauge",
                MetricKind::Counter => "counter",
                MetricKind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}", def.name, escape_help(def.help));
            let _ = writeln!(out, "# TYPE {} {kind}", def.name);
            for series in &family.series {
                match &series.value {
                    Value::Scalar(value) => {
                        write_sample(&mut out, def.name, &series.labels, None, *value);
                    }
                    Value::Histogram(histogram) => {
                        let bucket = format!("{}_bucket", def.name);
                        let mut cumulative = 0u64;
                        for (index, count) in histogram.bucket_counts.iter().enumerate() {
                            cumulative += count;
                            let le = match histogram.bounds.get(index) {
                                Some(bound) => format_float(*bound),
                                None => "+Inf".to_string(),
                            };
                            write_sample(
                                &mut out,
                                &bucket,
                                &series.labels,
                                Some(("le", &le)),
                                cumulative as f64,
                            );
                        }
                        let sum = format!("{}_sum", def.name);
                        write_sample(&mut out, &sum, &series.labels, None, histogram.sum);
                        let count = format!("{}_count", def.name);
                        write_sample(
                            &mut out,
                            &count,
                            &series.labels,
                            None,
                            histogram.count as f64,
                        );
                    }
                }
            }
        }
        out
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    labels: &Labels,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for (key, val) in labels.iter().map(|(k, v)| (&**k, &**v)).chain(extra) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, val);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_float(value));
    out.push('\n');
}

/// Shortest text that parses back to the same f64, in Prometheus' spelling of the specials.
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{value}")
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Build a label list from static names and owned values.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (Arc::from(k), Arc::from(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields;

    #[test]
    fn renders_gauges_counters_and_histograms_with_escaped_labels() {
        let mut snapshot = Snapshot::new(SystemTime::UNIX_EPOCH);
        snapshot.push(
            &fields::GPU_TEMP,
            labels([("gpu", "0"), ("modelName", "A \"quoted\"\\name")]),
            41.0,
        );
        snapshot.push(&fields::TOTAL_ENERGY, labels([("gpu", "0")]), 1.5e12);
        let mut histogram = Histogram::new(Arc::from(vec![10.0, 100.0]));
        for value in [5.0, 50.0, 500.0, 7.0] {
            histogram.observe(value);
        }
        snapshot.push_value(
            &fields::NCCL_EXEC_TIME,
            labels([("rank", "1")]),
            Value::Histogram(histogram),
        );
        let text = snapshot.render_prometheus();
        assert!(
            text.contains("# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"DCGM_FI_DEV_GPU_TEMP{gpu="0",modelName="A \"quoted\"\\name"} 41"#),
            "{text}"
        );
        assert!(
            text.contains("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu=\"0\"} 1500000000000\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_nccl_coll_exec_time_seconds_bucket{rank=\"1\",le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_nccl_coll_exec_time_seconds_bucket{rank=\"1\",le=\"100\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_nccl_coll_exec_time_seconds_bucket{rank=\"1\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_nccl_coll_exec_time_seconds_sum{rank=\"1\"} 562\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_nccl_coll_exec_time_seconds_count{rank=\"1\"} 4\n"),
            "{text}"
        );
    }

    #[test]
    fn floats_round_trip() {
        for value in [0.1, 1e-9, 123456789.123, 2.0f64.powi(60)] {
            assert_eq!(format_float(value).parse::<f64>().unwrap(), value);
        }
    }
}
