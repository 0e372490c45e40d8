//! `target_info`: the series that carries a resource's attributes other than the ones that make
//! `job` and `instance`, as the OpenTelemetry-to-Prometheus specification gives it: a gauge of 1
//! labelled with `job`, `instance` and those attributes (under their Prometheus names), at every
//! time the resource sent a metric. Queries join it to add resource attributes to a series
//! (`… * on (job, instance) group_left (k8s_cluster_name) target_info`).
//!
//! It is worked out from the rows of `metrics` when a selector asks for it, not stored: the
//! resource attributes are already in every row. A resource with no other attribute (everything
//! that came by remote-write or scraping, where `job` and `instance` are the whole resource) has
//! none, as in Prometheus' own OTLP translation.

use std::collections::HashMap;

use arrow::array::{AsArray, TimestampNanosecondArray};
use futures::StreamExt;
use promql_parser::label::Matcher;
use vigil_schemas::{col, metric_col};

use super::PromError;
use super::names::{self, NAME_LABEL};
use super::select::{
    FnvMap, SampleBudget, SeriesBuilder, first_times, id_column, map_entries, matches, rows_at,
    sql_time,
};
use crate::query::QueryEngine;

/// The metric name.
pub const TARGET_INFO: &str = "target_info";

/// The resource attributes that become `job` and `instance` instead.
const JOB_AND_INSTANCE_KEYS: [&str; 3] =
    ["service.name", "service.namespace", "service.instance.id"];

/// Whether a group of matchers may select `target_info`: its `__name__` matchers accept it.
pub(super) fn asked(matchers: &[Matcher]) -> bool {
    matchers
        .iter()
        .filter(|m| m.name == NAME_LABEL)
        .all(|m| m.is_match(TARGET_INFO))
}

/// `job` and `instance` from a resource's attributes, as every series of it carries them.
pub(super) fn job_and_instance(
    resource: &[(String, String)],
) -> [(&'static str, Option<String>); 2] {
    let get = |key: &str| {
        resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let job = names::job(get("service.namespace"), get("service.name"));
    let instance = get("service.instance.id")
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    [("job", job), ("instance", instance)]
}

/// The labels of a resource's `target_info`, `__name__` included and sorted; `None` when the
/// resource has no attribute besides those that make `job` and `instance`.
pub(super) fn labels(resource: &[(String, String)]) -> Option<Vec<(String, String)>> {
    let mut labels: Vec<(String, String)> = resource
        .iter()
        .filter(|(k, v)| !v.is_empty() && !JOB_AND_INSTANCE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (names::label_name(k), v.clone()))
        .filter(|(k, _)| !matches!(k.as_str(), NAME_LABEL | "job" | "instance"))
        .collect();
    if labels.is_empty() {
        return None;
    }
    // Two keys that sanitize to one label: the first (in key order) wins, as for other series.
    labels.sort();
    labels.dedup_by(|b, a| a.0 == b.0);
    for (key, value) in job_and_instance(resource) {
        if let Some(value) = value {
            labels.push((key.to_string(), value));
        }
    }
    labels.push((NAME_LABEL.to_string(), TARGET_INFO.to_string()));
    labels.sort();
    Some(labels)
}

/// The `target_info` series `matchers` select, with a sample of 1 at every time between
/// `start_ms` and `end_ms` (inclusive) at which their resource has a row, into `builder`.
pub(super) async fn select(
    engine: &QueryEngine,
    matchers: &[Matcher],
    start_ms: i64,
    end_ms: i64,
    budget: &mut SampleBudget,
    builder: &mut SeriesBuilder,
) -> Result<(), PromError> {
    let range = format!(
        "{time} >= {} AND {time} <= {}",
        sql_time(start_ms),
        sql_time(end_ms),
        time = col::TIME
    );
    let mut found = Found::new(matchers);

    // Rows with a series id: each series' resource from its first row, then the times of the
    // rows of the series whose resource has a `target_info`, without reading the maps again.
    let with_id = format!("{range} AND {} IS NOT NULL", metric_col::SERIES_ID);
    let first = first_times(engine, &with_id).await?;
    if let Some(first) = &first {
        let columns = format!("{}, {}", metric_col::SERIES_ID, col::RESOURCE_ATTRIBUTES);
        let mut of_id: FnvMap<u64, Option<usize>> = FnvMap::default();
        for sql in rows_at(&columns, &with_id, first) {
            let mut stream = engine.stream(&sql, Vec::new()).await?;
            while let Some(batch) = stream.batches.next().await {
                let batch = batch?;
                let (ids, resources) = (id_column(&batch, 0)?, map_column(&batch, 1)?);
                for row in 0..batch.num_rows() {
                    of_id
                        .entry(ids.value(row))
                        .or_insert_with(|| found.series_of(&map_entries(resources, row)));
                }
            }
        }
        // The series, labels and label values APIs need no samples: a series found in the
        // first rows is in the range.
        if budget.keep_samples && of_id.values().any(Option::is_some) {
            let sql = format!(
                "SELECT {}, {} FROM metrics WHERE {with_id}",
                metric_col::SERIES_ID,
                col::TIME
            );
            let mut stream = engine.stream(&sql, Vec::new()).await?;
            while let Some(batch) = stream.batches.next().await {
                let batch = batch?;
                let (ids, times) = (id_column(&batch, 0)?, time_column(&batch, 1)?);
                for row in 0..batch.num_rows() {
                    // A series first stored after the first statement ran is not in this answer.
                    if let Some(Some(series)) = of_id.get(&ids.value(row)) {
                        found.at(*series, times.value(row), budget)?;
                    }
                }
            }
        }
    }

    // Rows stored before series ids (or every row, when two series' ids collided): their
    // resources read with every row.
    let rest = match first {
        Some(_) => format!("{range} AND {} IS NULL", metric_col::SERIES_ID),
        None => range,
    };
    let sql = format!(
        "SELECT {}, {} FROM metrics WHERE {rest}",
        col::TIME,
        col::RESOURCE_ATTRIBUTES
    );
    let mut stream = engine.stream(&sql, Vec::new()).await?;
    while let Some(batch) = stream.batches.next().await {
        let batch = batch?;
        let (times, resources) = (time_column(&batch, 0)?, map_column(&batch, 1)?);
        for row in 0..batch.num_rows() {
            if let Some(series) = found.series_of(&map_entries(resources, row)) {
                found.at(series, times.value(row), budget)?;
            }
        }
    }

    found.finish(budget, &mut *builder);
    Ok(())
}

/// The `target_info` series found so far and the times each has a sample at.
pub(super) struct Found<'a> {
    matchers: &'a [Matcher],
    /// Per resource's attributes, its series (`None`: it has none, or the matchers refuse it).
    series: HashMap<Vec<(String, String)>, Option<usize>>,
    /// Per series, its labels and its sample times in milliseconds.
    times: Vec<(LabelPairs, FnvSet<i64>)>,
}

type LabelPairs = Vec<(String, String)>;
type FnvSet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<fnv::FnvHasher>>;

impl<'a> Found<'a> {
    pub(super) fn new(matchers: &'a [Matcher]) -> Found<'a> {
        Found {
            matchers,
            series: HashMap::new(),
            times: Vec::new(),
        }
    }

    /// The series of a resource with these attributes, if it has one the matchers accept.
    pub(super) fn series_of(&mut self, resource: &[(String, String)]) -> Option<usize> {
        if let Some(known) = self.series.get(resource) {
            return *known;
        }
        let series = labels(resource)
            .filter(|labels| matches(labels, self.matchers))
            .map(|labels| {
                // Two resources can differ only in attributes that sanitize to one label.
                match self.times.iter().position(|(l, _)| *l == labels) {
                    Some(i) => i,
                    None => {
                        self.times.push((labels, FnvSet::default()));
                        self.times.len() - 1
                    }
                }
            });
        self.series.insert(resource.to_vec(), series);
        series
    }

    /// A sample of `series` at `time_ns`, counted against the budget when it is a new one.
    fn at(
        &mut self,
        series: usize,
        time_ns: i64,
        budget: &mut SampleBudget,
    ) -> Result<(), PromError> {
        if self.times[series].1.insert(time_ns.div_euclid(1_000_000)) {
            budget.take(1)?;
        }
        Ok(())
    }

    /// Puts the series found into `builder`, with their samples when the budget keeps them.
    pub(super) fn finish(self, budget: &SampleBudget, builder: &mut SeriesBuilder) {
        for (labels, times) in self.times {
            let index = builder.index_of(labels);
            if budget.keep_samples {
                let mut times: Vec<i64> = times.into_iter().collect();
                times.sort_unstable();
                builder.series[index]
                    .1
                    .extend(times.into_iter().map(|t| (t, 1.0)));
            }
        }
    }
}

fn time_column(
    batch: &arrow::record_batch::RecordBatch,
    i: usize,
) -> Result<&TimestampNanosecondArray, PromError> {
    batch
        .column(i)
        .as_primitive_opt()
        .ok_or_else(|| PromError::Internal("time is not a timestamp".into()))
}

fn map_column(
    batch: &arrow::record_batch::RecordBatch,
    i: usize,
) -> Result<&arrow::array::MapArray, PromError> {
    batch
        .column(i)
        .as_map_opt()
        .ok_or_else(|| PromError::Internal("resource_attributes is not a map".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::promql::select::select as select_series;
    use crate::query::promql::select::tests::with_series_ids;
    use crate::query::promql::select::{Catalog, Labels, RawSeries, label};
    use crate::storage::{StorageConfig, Store};
    use crate::telemetry::Telemetry;
    use arrow::array::RecordBatch;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use promql_parser::label::MatchOp;
    use std::sync::Arc;
    use vigil_schemas::Table;

    const T0_S: u64 = 1_700_000_000;

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    /// Gauge `metric` of a resource with `resource` attributes, a point at each of `seconds`.
    fn rows(resource: &[(&str, &str)], metric: &str, seconds: &[u64]) -> RecordBatch {
        let points = seconds
            .iter()
            .map(|s| NumberDataPoint {
                time_unix_nano: (T0_S + s) * 1_000_000_000,
                value: Some(number_data_point::Value::AsDouble(1.5)),
                ..Default::default()
            })
            .collect();
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource.iter().map(|(k, v)| string(k, v)).collect(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: metric.into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        vigil_schemas::convert::metrics_to_batch(&request).batch
    }

    async fn read(engine: &QueryEngine, matchers: Vec<Matcher>) -> Vec<RawSeries> {
        read_with(engine, matchers, true).await
    }

    async fn read_with(
        engine: &QueryEngine,
        matchers: Vec<Matcher>,
        keep_samples: bool,
    ) -> Vec<RawSeries> {
        let (lo, hi) = (T0_S as i64 * 1000, (T0_S as i64 + 100) * 1000);
        let catalog = Catalog::load(engine, lo, hi).await.unwrap();
        let mut budget = SampleBudget {
            loaded: 0,
            limit: u64::MAX,
            keep_samples,
        };
        select_series(engine, &catalog, &[matchers], lo, hi, &mut budget)
            .await
            .unwrap()
    }

    fn seconds(series: &RawSeries) -> Vec<i64> {
        assert!(series.samples.iter().all(|(_, v)| *v == 1.0));
        series
            .samples
            .iter()
            .map(|(t, _)| t / 1000 - T0_S as i64)
            .collect()
    }

    #[test]
    fn a_resource_gives_its_other_attributes_under_prometheus_names_with_job_and_instance() {
        let resource = pairs(&[
            ("service.name", "api"),
            ("service.namespace", "shop"),
            ("service.instance.id", "pod-7"),
            ("k8s.cluster.name", "prod"),
            ("host.name", ""),
            ("telemetry.sdk.language", "python"),
        ]);
        assert_eq!(
            labels(&resource).unwrap(),
            pairs(&[
                ("__name__", "target_info"),
                ("instance", "pod-7"),
                ("job", "shop/api"),
                ("k8s_cluster_name", "prod"),
                ("telemetry_sdk_language", "python"),
            ])
        );
        // What remote-write and scraping store: job and instance are the whole resource.
        let bare = pairs(&[("service.name", "node"), ("service.instance.id", "n1:9400")]);
        assert_eq!(labels(&bare), None);
        // An attribute cannot stand in for job or instance.
        let sneaky = pairs(&[("service.name", "api"), ("job", "other")]);
        assert_eq!(labels(&sneaky), None);
        assert!(asked(&[Matcher::new(
            MatchOp::Equal,
            NAME_LABEL,
            "target_info"
        )]));
        assert!(asked(&[Matcher::new(MatchOp::Equal, "job", "api")]));
        assert!(!asked(&[Matcher::new(MatchOp::Equal, NAME_LABEL, "up")]));
    }

    #[tokio::test]
    async fn target_info_has_a_sample_wherever_its_resource_sent_a_metric() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let store = Store::open(config, Arc::new(Telemetry::default())).unwrap();
        let engine = QueryEngine::new(store.clone(), Default::default()).unwrap();
        let api = [
            ("service.name", "api"),
            ("service.instance.id", "pod-1"),
            ("host.name", "h1"),
        ];
        let worker = [
            ("service.name", "worker"),
            ("service.instance.id", "pod-2"),
            ("host.name", "h2"),
        ];
        let remote_written = [("service.name", "node"), ("service.instance.id", "n1:9400")];
        for batch in [
            rows(&api, "a", &[0, 10]),
            rows(&api, "b", &[5, 10]),
            rows(&remote_written, "c", &[0, 20]),
            // Stored before series ids: read with their resources.
            with_series_ids(rows(&worker, "a", &[30]), None),
            rows(&worker, "a", &[40]),
        ] {
            store.append(Table::Metrics, batch).await.unwrap();
        }
        let name = || Matcher::new(MatchOp::Equal, NAME_LABEL, TARGET_INFO);
        for flushed in [false, true] {
            if flushed {
                store.flush_due_tables(true).await.unwrap();
            }
            let all = read(&engine, vec![name()]).await;
            assert_eq!(all.len(), 2, "flushed {flushed}: {all:?}");
            assert_eq!(label(&all[0].labels, "job"), "api");
            assert_eq!(label(&all[0].labels, "instance"), "pod-1");
            assert_eq!(label(&all[0].labels, "host_name"), "h1");
            assert_eq!(seconds(&all[0]), [0, 5, 10]);
            assert_eq!(label(&all[1].labels, "job"), "worker");
            assert_eq!(seconds(&all[1]), [30, 40]);
            // As the series and labels APIs read it: the same series, no samples.
            let listed = read_with(&engine, vec![name()], false).await;
            let labels = |series: &[RawSeries]| -> Vec<Labels> {
                series.iter().map(|s| s.labels.clone()).collect()
            };
            assert_eq!(labels(&listed), labels(&all));

            let one = read(
                &engine,
                vec![name(), Matcher::new(MatchOp::Equal, "host_name", "h2")],
            )
            .await;
            assert_eq!(one.len(), 1, "{one:?}");
            assert_eq!(label(&one[0].labels, "job"), "worker");
            // A selector of a job's every metric shows its target_info among them.
            let job = read(&engine, vec![Matcher::new(MatchOp::Equal, "job", "api")]).await;
            let names: Vec<&str> = job.iter().map(|s| label(&s.labels, NAME_LABEL)).collect();
            assert_eq!(names, ["a", "b", "target_info"], "{job:?}");
            let job_listed = read_with(
                &engine,
                vec![Matcher::new(MatchOp::Equal, "job", "api")],
                false,
            )
            .await;
            assert_eq!(labels(&job_listed), labels(&job));
            // Every series (the labels APIs without match[]): target_info found from the other
            // metrics' first rows, the same series as when its samples are read.
            let every = || match promql_parser::parser::parse(r#"{__name__=~".+"}"#) {
                Ok(promql_parser::parser::Expr::VectorSelector(vs)) => vs.matchers.matchers,
                other => panic!("{other:?}"),
            };
            let every_listed = read_with(&engine, every(), false).await;
            let every_read = read(&engine, every()).await;
            assert_eq!(labels(&every_listed), labels(&every_read));
            let infos = every_listed
                .iter()
                .filter(|s| label(&s.labels, NAME_LABEL) == TARGET_INFO)
                .count();
            assert_eq!(infos, 2, "{every_listed:?}");
        }
    }
}
