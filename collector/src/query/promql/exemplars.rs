//! Exemplars for Prometheus' `/api/v1/query_exemplars`: the ones OTLP points carried (stored
//! as JSON in `metrics.exemplars`), on the series Prometheus would show them on. Grafana draws
//! them on a panel's graph and links each one's `trace_id` to the trace.
//!
//! As Prometheus' OTLP translation places them: a gauge's or sum's exemplars on its value's
//! series, a histogram's on the `_bucket` series whose `le` holds the exemplar's value; `_sum`,
//! `_count` and summaries show none. An exemplar's labels are its `trace_id` and `span_id` and
//! the attributes it kept (`filtered_attributes`).

use std::collections::BTreeMap;

use arrow::array::AsArray;
use futures::StreamExt;
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use serde_json::Value as Json;
use vigil_schemas::{col, metric_col};

use super::PromError;
use super::names::{self, BUCKET_LABEL, NAME_LABEL, Part};
use super::select::{Catalog, LabelColumns, list_f64, matches, quote, sql_time};
use crate::query::QueryEngine;

/// A point is exported after the measurements it samples, so the rows holding a range's
/// exemplars may be timed up to an export interval after it; this much later is looked at.
const EXPORT_SLACK_MS: i64 = 10 * 60 * 1000;

/// One exemplar: its labels, value and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub time_ms: i64,
}

/// A series and its exemplars, oldest first.
pub type SeriesExemplars = (Vec<(String, String)>, Vec<Exemplar>);

/// Every vector selector in `expr`, as Prometheus' exemplar API reads a query: the selectors'
/// matchers, whatever functions, offsets or ranges surround them.
pub fn selectors(expr: &Expr, out: &mut Vec<Vec<Matcher>>) {
    match expr {
        Expr::VectorSelector(vs) => out.extend(super::eval::selector_groups(vs)),
        Expr::MatrixSelector(ms) => out.extend(super::eval::selector_groups(&ms.vs)),
        Expr::Subquery(sq) => selectors(&sq.expr, out),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(p) = &a.param {
                selectors(p, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Call(c) => {
            for arg in &c.args.args {
                selectors(arg, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The exemplars timed between `start_ms` and `end_ms` of the series any of `groups` selects,
/// at most `limit` of them.
pub async fn read(
    engine: &QueryEngine,
    groups: &[Vec<Matcher>],
    start_ms: i64,
    end_ms: i64,
    limit: u64,
) -> Result<Vec<SeriesExemplars>, PromError> {
    let catalog = Catalog::load(engine, start_ms, end_ms.saturating_add(EXPORT_SLACK_MS)).await?;
    let mut found: BTreeMap<Vec<(String, String)>, Vec<Exemplar>> = BTreeMap::new();
    let mut count = 0u64;
    for matchers in groups {
        // Only a value's and a bucket's series show exemplars.
        let mut parts: BTreeMap<&str, Vec<(Part, &str)>> = BTreeMap::new();
        for (entry, part, name) in catalog.selected(matchers) {
            if matches!(part, Part::Value | Part::Bucket) {
                parts
                    .entry(entry.metric_name.as_str())
                    .or_default()
                    .push((part, name));
            }
        }
        if parts.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT CAST({name} AS VARCHAR), {resource}, {attrs}, {exemplars}, {bounds} \
             FROM metrics WHERE {name} IN ({names}) AND {exemplars} IS NOT NULL \
             AND {time} >= {start} AND {time} <= {end}",
            name = metric_col::METRIC_NAME,
            resource = col::RESOURCE_ATTRIBUTES,
            attrs = col::ATTRIBUTES,
            exemplars = metric_col::EXEMPLARS,
            bounds = metric_col::BUCKET_BOUNDS,
            time = col::TIME,
            names = parts
                .keys()
                .map(|n| quote(n))
                .collect::<Vec<_>>()
                .join(", "),
            start = sql_time(start_ms),
            end = sql_time(end_ms.saturating_add(EXPORT_SLACK_MS)),
        );
        let mut stream = engine.stream(&sql, Vec::new()).await?;
        while let Some(batch) = stream.batches.next().await {
            let batch = batch?;
            let labels = LabelColumns::new(&batch, 0)?;
            let stored = batch.column(3).as_string_opt::<i32>().ok_or_else(|| {
                PromError::Internal("metrics column exemplars is not text".into())
            })?;
            let bounds = batch.column(4).as_list_opt::<i32>().ok_or_else(|| {
                PromError::Internal("metrics column bucket_bounds is not a list".into())
            })?;
            for row in 0..batch.num_rows() {
                let Some(parts) = parts.get(labels.name.value(row)) else {
                    continue;
                };
                let exemplars: Vec<Exemplar> = parse(stored.value(row))
                    .into_iter()
                    .filter(|e| (start_ms..=end_ms).contains(&e.time_ms))
                    .collect();
                if exemplars.is_empty() {
                    continue;
                }
                let base = labels.base_labels(row);
                let bounds = list_f64(bounds, row);
                for exemplar in exemplars {
                    for (part, name) in parts {
                        let mut series = base.clone();
                        series.push((NAME_LABEL.to_string(), name.to_string()));
                        if *part == Part::Bucket {
                            // The bucket the value fell in: the first bound at or above it.
                            let le = bounds
                                .iter()
                                .copied()
                                .find(|b| exemplar.value <= *b)
                                .unwrap_or(f64::INFINITY);
                            series.retain(|(k, _)| k != BUCKET_LABEL);
                            series.push((BUCKET_LABEL.to_string(), names::float_label(le)));
                        }
                        series.sort();
                        if !matches(&series, matchers) {
                            continue;
                        }
                        let list = found.entry(series).or_default();
                        if !list.contains(&exemplar) {
                            count += 1;
                            if count > limit {
                                return Err(PromError::Execution(format!(
                                    "the query's exemplars are more than {limit} (query.max_samples); narrow the selector or the range"
                                )));
                            }
                            list.push(exemplar.clone());
                        }
                    }
                }
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(series, mut exemplars)| {
            exemplars.sort_by_key(|e| e.time_ms);
            (series, exemplars)
        })
        .collect())
}

/// The exemplars of a row, as `metrics.exemplars` holds them (written by the OTLP conversion);
/// an entry it cannot read is left out.
fn parse(stored: &str) -> Vec<Exemplar> {
    let Ok(Json::Array(list)) = serde_json::from_str::<Json>(stored) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let time_ns = e.get("time_unix_nano")?.as_u64()?;
            let value = e.get("value")?.as_f64()?;
            let mut labels: Vec<(String, String)> = Vec::new();
            for key in ["trace_id", "span_id"] {
                if let Some(id) = e.get(key).and_then(Json::as_str) {
                    labels.push((key.to_string(), id.to_string()));
                }
            }
            if let Some(Json::Object(attributes)) = e.get("filtered_attributes") {
                for (key, value) in attributes {
                    let text = match value {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    labels.push((names::label_name(key), text));
                }
            }
            labels.sort();
            labels.dedup_by(|b, a| a.0 == b.0);
            Some(Exemplar {
                labels,
                value,
                time_ms: (time_ns / 1_000_000) as i64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_exemplars_read_with_their_ids_and_kept_attributes() {
        let stored = r#"[{"time_unix_nano":1700000000123000000,"value":0.4,"trace_id":"ab","span_id":"cd","filtered_attributes":{"user.id":"u1","n":3}},
                         {"time_unix_nano":1700000001000000000,"value":7},
                         {"value":1}]"#;
        let found = parse(stored);
        assert_eq!(found.len(), 2, "the entry without a time is left out");
        assert_eq!(found[0].time_ms, 1_700_000_000_123);
        assert_eq!(found[0].value, 0.4);
        let labels: Vec<(&str, &str)> = found[0]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("n", "3"),
                ("span_id", "cd"),
                ("trace_id", "ab"),
                ("user_id", "u1")
            ]
        );
        assert_eq!(found[1].value, 7.0);
        assert!(found[1].labels.is_empty());
        assert!(parse("not json").is_empty());
    }

    #[test]
    fn every_selector_of_a_query_is_read() {
        let expr = super::super::parse(
            "histogram_quantile(0.9, sum by (le) (rate(a_bucket{x=\"1\"}[5m]))) / on() b offset 1m",
        )
        .unwrap();
        let mut groups = Vec::new();
        selectors(&expr, &mut groups);
        let names: Vec<String> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|m| format!("{}{}", m.name, m.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(names, ["x1,__name__a_bucket", "__name__b"]);
    }
}
