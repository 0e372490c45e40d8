//! `gpu_minutes`: each GPU series of `metrics` (a data point with a `UUID` attribute, as
//! dcgm-exporter and `vigil gpu-exporter` label them) per minute: count, sum, min, max and the
//! last value, derived as metrics are stored, so that a fleet's list over an hour reads its
//! series' minutes instead of every point of every metric. NCCL series keep their communicator
//! and rank apart, so that a rank's bandwidth can be set against its peers' from the minutes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Array, Int64Builder, MapArray, RecordBatch,
    StringDictionaryBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::rollup::{floats, missing, strings, times};
use crate::tables::{dict_type, timestamp_type};
use crate::{col, metric_col};

/// Columns of `gpu_minutes` (besides `time` and `metric_name`).
pub mod gpu_minute_col {
    pub const UUID: &str = "uuid";
    pub const GPU: &str = "gpu";
    pub const HOSTNAME: &str = "hostname";
    pub const MODEL_NAME: &str = "model_name";
    pub const REASON: &str = "reason";
    pub const COMM: &str = "comm";
    pub const RANK: &str = "rank";
    pub const COUNT: &str = "count";
    pub const SUM: &str = "sum";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    pub const LAST: &str = "last";
    pub const LAST_TIME: &str = "last_time";
}

const MINUTE_NS: i64 = 60_000_000_000;

/// The attributes a GPU series is told apart by, in the key's order: dcgm-exporter's labels,
/// the throttle reason of `vigil_gpu_clock_throttle_active`, and an NCCL series' communicator
/// and rank. (Files written before `comm` and `rank` were added read them as null.)
const LABELS: [&str; 7] = [
    "UUID",
    "gpu",
    "Hostname",
    "modelName",
    "reason",
    "comm",
    "rank",
];

pub(crate) static GPU_MINUTES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use gpu_minute_col::*;
    let d = DataType::Float64;
    Arc::new(Schema::new(vec![
        Field::new(col::TIME, timestamp_type(), false),
        Field::new(metric_col::METRIC_NAME, dict_type(), false),
        Field::new(UUID, dict_type(), false),
        Field::new(GPU, dict_type(), true),
        Field::new(HOSTNAME, dict_type(), true),
        Field::new(MODEL_NAME, dict_type(), true),
        Field::new(REASON, dict_type(), true),
        Field::new(COMM, dict_type(), true),
        Field::new(RANK, dict_type(), true),
        Field::new(COUNT, DataType::Int64, false),
        Field::new(SUM, d.clone(), false),
        Field::new(MIN, d.clone(), false),
        Field::new(MAX, d.clone(), false),
        Field::new(LAST, d, false),
        Field::new(LAST_TIME, timestamp_type(), false),
    ]))
});

#[derive(Hash, PartialEq, Eq, PartialOrd, Ord)]
struct Key<S> {
    minute: i64,
    metric: S,
    /// [`LABELS`]' values.
    labels: [Option<S>; LABELS.len()],
}

struct Minute {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_time: i64,
}

impl Minute {
    fn first(value: f64, time: i64) -> Minute {
        Minute {
            count: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
            last_time: time,
        }
    }

    fn absorb(&mut self, other: &Minute) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_time >= self.last_time {
            self.last = other.last;
            self.last_time = other.last_time;
        }
    }
}

/// The `gpu_minutes` rows of a `metrics` batch: one per minute and GPU series of its points
/// that carry a `UUID` and a value. `None` when it has none (an app's own metrics).
pub fn gpu_minutes(metrics: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
    let attributes = metrics
        .column_by_name(col::ATTRIBUTES)
        .and_then(|c| c.as_any().downcast_ref::<MapArray>())
        .ok_or_else(|| missing(col::ATTRIBUTES))?;
    let keys = attributes.keys().as_string::<i32>();
    let values = attributes.values().as_string::<i32>();
    let offsets = attributes.value_offsets();
    // Most batches are an app's own metrics, without a GPU among them: one look at the keys.
    if !keys.iter().any(|k| k == Some(LABELS[0])) {
        return Ok(None);
    }
    let value = floats(metrics, metric_col::VALUE)?;
    let time = times(metrics, col::TIME)?;
    let names = strings(metrics, metric_col::METRIC_NAME)?;
    let mut minutes: HashMap<Key<&str>, Minute> = HashMap::new();
    for row in 0..metrics.num_rows() {
        if value.is_null(row) {
            continue;
        }
        let mut labels: [Option<&str>; LABELS.len()] = [None; LABELS.len()];
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            if let Some(slot) = LABELS.iter().position(|l| *l == keys.value(i))
                && values.is_valid(i)
            {
                labels[slot] = Some(values.value(i));
            }
        }
        if labels[0].is_none() {
            continue;
        }
        let metric = names.value(row);
        let (v, t) = (value.value(row), time.value(row));
        let key = Key {
            minute: t.div_euclid(MINUTE_NS) * MINUTE_NS,
            metric,
            labels,
        };
        match minutes.get_mut(&key) {
            Some(m) => m.absorb(&Minute::first(v, t)),
            None => {
                minutes.insert(key, Minute::first(v, t));
            }
        }
    }
    if minutes.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<(Key<&str>, Minute)> = minutes.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    build(rows).map(Some)
}

/// `gpu_minutes` rows merged: one row per minute and series. What a flush writes.
pub fn merge(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, ArrowError> {
    use gpu_minute_col::*;
    let mut minutes: HashMap<Key<String>, Minute> = HashMap::new();
    for batch in batches {
        let time = times(batch, col::TIME)?;
        let metric = strings(batch, metric_col::METRIC_NAME)?;
        let labels = [
            strings(batch, UUID)?,
            strings(batch, GPU)?,
            strings(batch, HOSTNAME)?,
            strings(batch, MODEL_NAME)?,
            strings(batch, REASON)?,
            strings(batch, COMM)?,
            strings(batch, RANK)?,
        ];
        let count = batch
            .column_by_name(COUNT)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| missing(COUNT))?;
        let (sum, min, max, last) = (
            floats(batch, SUM)?,
            floats(batch, MIN)?,
            floats(batch, MAX)?,
            floats(batch, LAST)?,
        );
        let last_time = times(batch, LAST_TIME)?;
        for row in 0..batch.num_rows() {
            let key = Key {
                minute: time.value(row),
                metric: metric.value(row).to_string(),
                labels: std::array::from_fn(|i| {
                    labels[i]
                        .is_valid(row)
                        .then(|| labels[i].value(row).to_string())
                }),
            };
            let minute = Minute {
                count: count.value(row),
                sum: sum.value(row),
                min: min.value(row),
                max: max.value(row),
                last: last.value(row),
                last_time: last_time.value(row),
            };
            match minutes.get_mut(&key) {
                Some(m) => m.absorb(&minute),
                None => {
                    minutes.insert(key, minute);
                }
            }
        }
    }
    if minutes.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<(Key<String>, Minute)> = minutes.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    build(rows).map(Some)
}

fn build<S: AsRef<str>>(rows: Vec<(Key<S>, Minute)>) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut labels: [StringDictionaryBuilder<Int32Type>; LABELS.len()] =
        std::array::from_fn(|_| StringDictionaryBuilder::new());
    let mut count = Int64Builder::with_capacity(n);
    let [mut sum, mut min, mut max, mut last] =
        std::array::from_fn(|_| Float64Builder::with_capacity(n));
    let mut last_time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    for (key, m) in rows {
        time.append_value(key.minute);
        metric.append_value(key.metric.as_ref());
        for (builder, label) in labels.iter_mut().zip(&key.labels) {
            builder.append_option(label.as_ref().map(|l| l.as_ref()));
        }
        count.append_value(m.count);
        sum.append_value(m.sum);
        min.append_value(m.min);
        max.append_value(m.max);
        last.append_value(m.last);
        last_time.append_value(m.last_time);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish()), Arc::new(metric.finish())];
    columns.extend(labels.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend([
        Arc::new(count.finish()) as ArrayRef,
        Arc::new(sum.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
        Arc::new(last.finish()),
        Arc::new(last_time.finish()),
    ]);
    RecordBatch::try_new(GPU_MINUTES_SCHEMA.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::metrics_to_batch;
    use crate::test_util::kv;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };

    fn gauge(name: &str, points: &[(u64, f64, Option<&str>)]) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points
                    .iter()
                    .map(|(t, v, uuid)| NumberDataPoint {
                        time_unix_nano: *t,
                        value: Some(number_data_point::Value::AsDouble(*v)),
                        attributes: uuid
                            .map(|u| vec![kv("UUID", u), kv("gpu", "0"), kv("Hostname", "n1")])
                            .unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        }
    }

    fn batch(metrics: Vec<Metric>) -> RecordBatch {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        metrics_to_batch(&request).batch
    }

    fn column(batch: &RecordBatch, name: &str) -> Vec<f64> {
        let c =
            arrow::compute::cast(batch.column_by_name(name).unwrap(), &DataType::Float64).unwrap();
        c.as_primitive::<arrow::datatypes::Float64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn gpu_series_roll_up_per_minute_and_merge_into_the_same_rows() {
        let m = 1_700_000_040_000_000_000u64; // a minute boundary
        let s = 1_000_000_000u64;
        let first = batch(vec![
            gauge(
                "DCGM_FI_DEV_SM_CLOCK",
                &[
                    (m + s, 1400.0, Some("GPU-a")),
                    (m + 5 * s, 1000.0, Some("GPU-a")),
                ],
            ),
            // An app's metric: no UUID, not rolled up.
            gauge("http.server.duration", &[(m + s, 3.0, None)]),
        ]);
        let second = batch(vec![gauge(
            "DCGM_FI_DEV_SM_CLOCK",
            &[
                (m + 3 * s, 1300.0, Some("GPU-a")),
                (m + 61 * s, 900.0, Some("GPU-a")),
            ],
        )]);
        let parts = [
            gpu_minutes(&first).unwrap().unwrap(),
            gpu_minutes(&second).unwrap().unwrap(),
        ];
        assert_eq!(parts[0].schema(), crate::Table::GpuMinutes.schema());
        assert_eq!(parts[0].num_rows(), 1);
        let merged = merge(&parts).unwrap().unwrap();
        assert_eq!(merged.num_rows(), 2, "two minutes of one series");
        assert_eq!(column(&merged, "count"), vec![3.0, 1.0]);
        assert_eq!(column(&merged, "sum"), vec![3700.0, 900.0]);
        assert_eq!(column(&merged, "min"), vec![1000.0, 900.0]);
        assert_eq!(column(&merged, "max"), vec![1400.0, 900.0]);
        assert_eq!(
            column(&merged, "last"),
            vec![1000.0, 900.0],
            "the latest point's value"
        );
        assert!(
            gpu_minutes(&batch(vec![gauge("x", &[(m, 1.0, None)])]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn each_nccl_rank_is_a_series_of_its_own() {
        let m = 1_700_000_040_000_000_000u64;
        let point = |rank: &str, value: f64| NumberDataPoint {
            time_unix_nano: m + 1_000_000_000,
            value: Some(number_data_point::Value::AsDouble(value)),
            attributes: vec![
                kv("UUID", "GPU-a"),
                kv("comm", "0xc0"),
                kv("rank", rank),
                kv("coll", "AllReduce"),
            ],
            ..Default::default()
        };
        let busbw = Metric {
            name: "vigil_nccl_coll_busbw_gbs".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![point("0", 400.0), point("1", 100.0), point("1", 200.0)],
            })),
            ..Default::default()
        };
        let rows = gpu_minutes(&batch(vec![busbw])).unwrap().unwrap();
        let merged = merge(&[rows]).unwrap().unwrap();
        assert_eq!(
            merged.num_rows(),
            2,
            "one row per rank, the ops of a rank together"
        );
        let ranks = strings(&merged, gpu_minute_col::RANK).unwrap();
        assert_eq!(ranks.iter().collect::<Vec<_>>(), vec![Some("0"), Some("1")]);
        assert_eq!(column(&merged, "sum"), vec![400.0, 300.0]);
        assert_eq!(column(&merged, "count"), vec![1.0, 2.0]);
    }
}
