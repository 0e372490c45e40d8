//! PromQL and Prometheus' HTTP API, measured against a real Prometheus: the same samples are
//! remote-written into both, then a corpus of queries runs in both as instant queries at several
//! times and as range queries at several steps, and the answers are compared.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use serde_json::Value;
use vigil_collector::receive::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use vigil_tests::{Collector, Prometheus};

const STEP_MS: i64 = 15_000;
const MINUTE: i64 = 60_000;

/// A deterministic pseudo-random sequence (no dependency, same data every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Series {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An hour of samples every 15 s from `t0`: counters with a reset, gauges, a classic histogram,
/// dcgm-exporter's GPU series, a series that stops, one with a staleness marker and one with NaN.
fn corpus_data(t0: i64) -> Vec<Series> {
    let mut rng = Lcg(42);
    let points = 241;
    let times: Vec<i64> = (0..points).map(|i| t0 + i * STEP_MS).collect();
    let mut out = Vec::new();
    for instance in ["10.0.0.1:8080", "10.0.0.2:8080"] {
        for method in ["GET", "POST"] {
            for code in ["200", "500"] {
                let mut v = 0.0;
                let reset_at = if instance.ends_with("1:8080") && method == "GET" && code == "200" {
                    Some(120)
                } else {
                    None
                };
                let samples = times
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        v += (rng.next() * 20.0).floor();
                        if Some(i) == reset_at {
                            v = 3.0;
                        }
                        (*t, v)
                    })
                    .collect();
                out.push(Series {
                    labels: labels(&[
                        ("__name__", "http_requests_total"),
                        ("job", "api"),
                        ("instance", instance),
                        ("method", method),
                        ("code", code),
                    ]),
                    samples,
                });
            }
        }
        for sensor in ["a", "b"] {
            let mut v = 40.0;
            let samples = times
                .iter()
                .map(|t| {
                    v += rng.next() * 4.0 - 2.0;
                    (
                        *t,
                        (v * 100.0f64).round() / 100.0 - if sensor == "b" { 45.0 } else { 0.0 },
                    )
                })
                .collect();
            out.push(Series {
                labels: labels(&[
                    ("__name__", "node_temperature_celsius"),
                    ("job", "node"),
                    ("instance", instance),
                    ("sensor", sensor),
                ]),
                samples,
            });
        }
        // A classic histogram: cumulative buckets, sum and count.
        let bounds = ["0.1", "0.5", "1", "+Inf"];
        let mut counts = [0.0f64; 4];
        let mut sum = 0.0;
        let mut bucket_samples: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 4];
        let mut sum_samples = Vec::new();
        let mut count_samples = Vec::new();
        for t in &times {
            for _ in 0..(rng.next() * 10.0) as usize {
                let observation = rng.next() * rng.next() * 2.0;
                sum += observation;
                for (i, bound) in [0.1, 0.5, 1.0, f64::INFINITY].iter().enumerate() {
                    if observation <= *bound {
                        counts[i] += 1.0;
                    }
                }
            }
            for i in 0..4 {
                bucket_samples[i].push((*t, counts[i]));
            }
            sum_samples.push((*t, sum));
            count_samples.push((*t, counts[3]));
        }
        for (bound, samples) in bounds.iter().zip(bucket_samples) {
            out.push(Series {
                labels: labels(&[
                    ("__name__", "request_duration_seconds_bucket"),
                    ("job", "api"),
                    ("instance", instance),
                    ("le", bound),
                ]),
                samples,
            });
        }
        for (name, samples) in [
            ("request_duration_seconds_sum", sum_samples),
            ("request_duration_seconds_count", count_samples),
        ] {
            out.push(Series {
                labels: labels(&[("__name__", name), ("job", "api"), ("instance", instance)]),
                samples,
            });
        }
    }
    // dcgm-exporter's series, as its page names them.
    for (host, gpus) in [("node-a", 0..4), ("node-b", 0..2)] {
        for gpu in gpus {
            let uuid = format!("GPU-{host}-{gpu:04}");
            let gpu_label = gpu.to_string();
            let instance = format!("{host}:9400");
            for (name, base, spread) in [
                ("DCGM_FI_DEV_GPU_UTIL", 70.0, 30.0),
                ("DCGM_FI_DEV_GPU_TEMP", 60.0, 10.0),
                ("DCGM_FI_DEV_POWER_USAGE", 400.0, 150.0),
                ("DCGM_FI_DEV_SM_CLOCK", 1800.0, 180.0),
                ("DCGM_FI_DEV_MEM_CLOCK", 2600.0, 0.0),
                ("DCGM_FI_DEV_FB_USED", 50000.0, 20000.0),
                ("DCGM_FI_DEV_FB_FREE", 30000.0, 20000.0),
                ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.5, 0.4),
            ] {
                let samples = times
                    .iter()
                    .map(|t| {
                        (
                            *t,
                            ((base + (rng.next() - 0.5) * spread) * 10.0f64).round() / 10.0,
                        )
                    })
                    .collect();
                out.push(Series {
                    labels: labels(&[
                        ("__name__", name),
                        ("job", "dcgm"),
                        ("instance", &instance),
                        ("gpu", &gpu_label),
                        ("UUID", &uuid),
                        ("modelName", "NVIDIA H100 80GB HBM3"),
                        ("Hostname", host),
                    ]),
                    samples,
                });
            }
            let mut energy = 1e6;
            let samples = times
                .iter()
                .map(|t| {
                    energy += 400.0 * 15.0 * 1000.0 * (0.8 + rng.next() * 0.4);
                    (*t, energy.round())
                })
                .collect();
            out.push(Series {
                labels: labels(&[
                    ("__name__", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"),
                    ("job", "dcgm"),
                    ("instance", &instance),
                    ("gpu", &gpu_label),
                    ("UUID", &uuid),
                    ("modelName", "NVIDIA H100 80GB HBM3"),
                    ("Hostname", host),
                ]),
                samples,
            });
        }
    }
    // A series that stops 20 minutes before the end: gone after the lookback.
    out.push(Series {
        labels: labels(&[("__name__", "batch_last_success_seconds"), ("job", "batch")]),
        samples: times[..points as usize - 80]
            .iter()
            .map(|t| (*t, (*t / 1000) as f64))
            .collect(),
    });
    // A staleness marker in the middle: absent at once, then back.
    out.push(Series {
        labels: labels(&[("__name__", "flappy"), ("job", "x")]),
        samples: times
            .iter()
            .enumerate()
            .filter(|(i, _)| !(121..130).contains(i))
            .map(|(i, t)| {
                let v = if i == 120 {
                    f64::from_bits(0x7ff0_0000_0000_0002)
                } else {
                    i as f64
                };
                (*t, v)
            })
            .collect(),
    });
    // NaN values among numbers.
    out.push(Series {
        labels: labels(&[("__name__", "nan_gauge"), ("job", "x")]),
        samples: times
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, if i % 7 == 3 { f64::NAN } else { i as f64 }))
            .collect(),
    });
    out
}

/// The samples of `series` between `from` (inclusive) and `to` (exclusive), as one request.
fn write_request(series: &[Series], from: i64, to: i64) -> WriteRequest {
    WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .filter(|(t, _)| *t >= from && *t < to)
                    .map(|(t, v)| Sample {
                        value: *v,
                        timestamp: *t,
                    })
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect(),
        metadata: Vec::new(),
    }
}

fn remote_write(url: &str, request: &WriteRequest) -> reqwest::blocking::Response {
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses");
    reqwest::blocking::Client::new()
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .expect("remote-write request sent")
}

fn get(url: &str, params: &[(&str, String)]) -> Value {
    let response = reqwest::blocking::Client::new()
        .get(url)
        .query(params)
        .timeout(Duration::from_secs(60))
        .send()
        .expect("query sent");
    response.json().expect("a JSON answer")
}

/// A query answer reduced to what must agree: the result type and each series' points.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Error(String),
    Scalar(f64),
    String(String),
    /// Series by label set, each with its (time, value) points; `ordered` keeps result order.
    Series {
        kind: String,
        series: Vec<(String, Vec<(i64, f64)>)>,
    },
}

fn number(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn millis(v: &Value) -> i64 {
    (v.as_f64().unwrap_or(0.0) * 1000.0).round() as i64
}

fn answer(response: &Value, ordered: bool) -> Answer {
    if response["status"] != "success" {
        return Answer::Error(response["errorType"].as_str().unwrap_or("?").to_string());
    }
    let data = &response["data"];
    let kind = data["resultType"].as_str().unwrap_or("").to_string();
    match kind.as_str() {
        "scalar" => Answer::Scalar(number(&data["result"][1])),
        "string" => Answer::String(data["result"][1].as_str().unwrap_or("").to_string()),
        _ => {
            let mut series: Vec<(String, Vec<(i64, f64)>)> = data["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let metric: BTreeMap<String, String> = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let points = if let Some(values) = s["values"].as_array() {
                        values
                            .iter()
                            .map(|p| (millis(&p[0]), number(&p[1])))
                            .collect()
                    } else {
                        vec![(millis(&s["value"][0]), number(&s["value"][1]))]
                    };
                    (format!("{metric:?}"), points)
                })
                .collect();
            if !ordered {
                series.sort_by(|a, b| a.0.cmp(&b.0));
            }
            Answer::Series { kind, series }
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 + 1e-7 * a.abs().max(b.abs())
}

/// For `topk`/`bottomk`: the same values at each time, whichever of several equal-valued series
/// was kept. Prometheus breaks ties by the order its storage created the series in, which is not
/// part of the API and which vigil does not know; vigil breaks them by labels.
fn same_values_per_time(a: &Answer, b: &Answer) -> bool {
    let by_time = |answer: &Answer| -> Option<BTreeMap<i64, Vec<f64>>> {
        let Answer::Series { series, .. } = answer else {
            return None;
        };
        let mut out: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (_, points) in series {
            for (t, v) in points {
                out.entry(*t).or_default().push(*v);
            }
        }
        for values in out.values_mut() {
            values.sort_by(|x, y| x.total_cmp(y));
        }
        Some(out)
    };
    match (by_time(a), by_time(b)) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter().zip(&y).all(|((t1, v1), (t2, v2))| {
                    t1 == t2
                        && v1.len() == v2.len()
                        && v1.iter().zip(v2).all(|(p, q)| close(*p, *q))
                })
        }
        _ => same(a, b),
    }
}

fn same(a: &Answer, b: &Answer) -> bool {
    match (a, b) {
        (Answer::Error(x), Answer::Error(y)) => x == y,
        (Answer::Scalar(x), Answer::Scalar(y)) => close(*x, *y),
        (Answer::String(x), Answer::String(y)) => x == y,
        (
            Answer::Series {
                kind: k1,
                series: s1,
            },
            Answer::Series {
                kind: k2,
                series: s2,
            },
        ) => {
            k1 == k2
                && s1.len() == s2.len()
                && s1.iter().zip(s2).all(|((l1, p1), (l2, p2))| {
                    l1 == l2
                        && p1.len() == p2.len()
                        && p1
                            .iter()
                            .zip(p2)
                            .all(|((t1, v1), (t2, v2))| t1 == t2 && close(*v1, *v2))
                })
        }
        _ => false,
    }
}

/// The queries, by construct. Queries whose result order is part of the answer come last, in
/// `ORDERED`.
fn corpus() -> Vec<String> {
    let mut q: Vec<String> = Vec::new();
    let mut add = |s: &str| q.push(s.to_string());
    // Selectors and every matcher.
    for s in [
        "http_requests_total",
        "http_requests_total{method=\"GET\"}",
        "http_requests_total{method!=\"GET\"}",
        "http_requests_total{code=~\"5..\"}",
        "http_requests_total{code!~\"2.*\"}",
        "http_requests_total{code=~\"(2|5)00\", instance=~\"10.0.0.1:8080|10.0.0.2:8080\"}",
        "http_requests_total{method=~\"get\"}",
        "http_requests_total{method=~\"G.*\", method!=\"GET\"}",
        "http_requests_total{nonexistent=\"\"}",
        "http_requests_total{nonexistent!=\"\"}",
        "{__name__=\"http_requests_total\", code=\"500\"}",
        "{__name__=~\"node_.*\"}",
        "{__name__=~\"node_.*|request_duration_seconds_(sum|count)\", instance=\"10.0.0.2:8080\"}",
        "{job=\"node\"}",
        "{job=~\"no.e\", sensor=\"b\"}",
        "node_temperature_celsius offset 5m",
        "node_temperature_celsius offset -3m",
        "node_temperature_celsius offset 1h",
        "batch_last_success_seconds",
        "flappy",
        "nan_gauge",
        "no_such_metric",
        "DCGM_FI_DEV_GPU_UTIL",
    ] {
        add(s);
    }
    // Counters.
    for f in ["rate", "irate", "increase", "resets", "changes"] {
        for r in ["1m", "5m", "90s", "20m"] {
            add(&format!("{f}(http_requests_total[{r}])"));
        }
        add(&format!(
            "{f}(http_requests_total{{code=\"200\"}}[5m] offset 10m)"
        ));
        add(&format!("{f}(http_requests_total[10m:1m])"));
    }
    add("rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m]) / 1000");
    // Gauges over time.
    for f in [
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "present_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "delta",
        "idelta",
        "deriv",
        "changes",
    ] {
        add(&format!("{f}(node_temperature_celsius[5m])"));
        add(&format!("{f}(node_temperature_celsius[10m] offset 2m)"));
    }
    add("quantile_over_time(0.9, node_temperature_celsius[10m])");
    add("quantile_over_time(0, node_temperature_celsius[10m])");
    add("quantile_over_time(1.5, node_temperature_celsius[10m])");
    add("predict_linear(node_temperature_celsius[10m], 600)");
    add("predict_linear(DCGM_FI_DEV_FB_USED[15m], 3600) > 60000");
    add("holt_winters(node_temperature_celsius[10m], 0.5, 0.5)");
    add("holt_winters(node_temperature_celsius[10m], 0.1, 0.9)");
    add("avg_over_time(nan_gauge[5m])");
    add("max_over_time(nan_gauge[5m])");
    add("min_over_time(nan_gauge[2m])");
    add("count_over_time(flappy[5m])");
    add("last_over_time(batch_last_success_seconds[30m])");
    add("absent_over_time(batch_last_success_seconds[10m])");
    add("absent_over_time(no_such_metric{job=\"x\"}[10m])");
    add("max_over_time(rate(http_requests_total[1m])[10m:30s])");
    add("avg_over_time(node_temperature_celsius[5m:1m] offset 5m)");
    add("min_over_time(sum by (instance) (http_requests_total)[15m:])");
    // Aggregations.
    for a in [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ] {
        add(&format!("{a}(http_requests_total)"));
        add(&format!(
            "{a} by (instance) (rate(http_requests_total[5m]))"
        ));
        add(&format!(
            "{a} without (instance, sensor) (node_temperature_celsius)"
        ));
    }
    add("sum by (job) ({__name__=~\"http_requests_total|node_temperature_celsius\"})");
    add("sum by (__name__) ({__name__=~\"DCGM_FI_DEV_(GPU_UTIL|GPU_TEMP)\"})");
    add("quantile(0.5, node_temperature_celsius)");
    add("quantile by (instance) (0.9, rate(http_requests_total[5m]))");
    add("count_values(\"value\", DCGM_FI_DEV_MEM_CLOCK)");
    add("count_values without (gpu) (\"util\", round(DCGM_FI_DEV_GPU_UTIL, 10))");
    add("topk(3, rate(http_requests_total[5m]))");
    add("bottomk(2, node_temperature_celsius)");
    add("topk by (instance) (1, DCGM_FI_DEV_GPU_TEMP)");
    add("sum(nan_gauge)");
    add("max(nan_gauge) by (job)");
    add("avg(DCGM_FI_DEV_GPU_TEMP)");
    // Binary operators and vector matching.
    for op in ["+", "-", "*", "/", "%", "^", "atan2"] {
        add(&format!("node_temperature_celsius {op} 3"));
        add(&format!("2 {op} node_temperature_celsius"));
    }
    for op in ["==", "!=", ">", "<", ">=", "<="] {
        add(&format!("node_temperature_celsius {op} 40"));
        add(&format!("node_temperature_celsius {op} bool 40"));
        add(&format!("40 {op} node_temperature_celsius"));
        add(&format!(
            "rate(http_requests_total[5m]) {op} rate(http_requests_total[5m] offset 1m)"
        ));
    }
    add("1 + 1");
    add("2 ^ 3 ^ 2");
    add("-node_temperature_celsius");
    add("10 > bool 5");
    add("time() - 1");
    add("DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)");
    add("DCGM_FI_DEV_POWER_USAGE / on(UUID) DCGM_FI_DEV_GPU_UTIL");
    add("DCGM_FI_DEV_POWER_USAGE / ignoring(gpu) DCGM_FI_DEV_GPU_UTIL");
    add(
        "rate(http_requests_total[5m]) / on(instance) group_left sum by (instance) (rate(http_requests_total[5m]))",
    );
    add(
        "sum by (instance) (rate(http_requests_total[5m])) / on(instance) group_right rate(http_requests_total[5m])",
    );
    add(
        "request_duration_seconds_sum / ignoring(le) group_left(le) request_duration_seconds_bucket",
    );
    add("DCGM_FI_DEV_GPU_TEMP * on(instance) group_left(sensor) node_temperature_celsius");
    add("http_requests_total and http_requests_total{code=\"200\"}");
    add("http_requests_total and on(instance) node_temperature_celsius{sensor=\"a\"}");
    add("http_requests_total unless http_requests_total{method=\"GET\"}");
    add("http_requests_total unless ignoring(code) http_requests_total{code=\"500\"}");
    add("node_temperature_celsius or http_requests_total");
    add("flappy or vector(0)");
    add("batch_last_success_seconds or on() vector(-1)");
    add("sum(rate(http_requests_total{code=\"500\"}[5m])) / sum(rate(http_requests_total[5m]))");
    // Histograms.
    for q in ["0.5", "0.9", "0.99", "0", "1", "-1", "2"] {
        add(&format!(
            "histogram_quantile({q}, rate(request_duration_seconds_bucket[5m]))"
        ));
    }
    add("histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))");
    add(
        "histogram_quantile(0.9, sum by (le, instance) (increase(request_duration_seconds_bucket[10m])))",
    );
    add("histogram_quantile(0.5, request_duration_seconds_bucket)");
    add("rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])");
    // Labels, math, time.
    add("label_replace(node_temperature_celsius, \"host\", \"$1\", \"instance\", \"(.*):.*\")");
    add("label_replace(node_temperature_celsius, \"sensor\", \"\", \"sensor\", \"a\")");
    add(
        "label_replace(node_temperature_celsius, \"x\", \"${1}-$2\", \"instance\", \"(\\\\d+)\\\\.(\\\\d+).*\")",
    );
    add("label_replace(http_requests_total, \"instance\", \"all\", \"\", \"\")");
    add("label_join(DCGM_FI_DEV_GPU_UTIL, \"id\", \"/\", \"Hostname\", \"gpu\")");
    add("label_join(node_temperature_celsius, \"sensor\", \"-\")");
    for f in [
        "abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "sgn", "sin", "cos", "tan",
        "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "deg", "rad",
    ] {
        add(&format!("{f}(node_temperature_celsius)"));
    }
    add("acosh(node_temperature_celsius)");
    add("atanh(node_temperature_celsius / 100)");
    add("round(node_temperature_celsius)");
    add("round(node_temperature_celsius, 5)");
    add("round(node_temperature_celsius, 0.1)");
    add("clamp(node_temperature_celsius, -2, 40)");
    add("clamp(node_temperature_celsius, 40, -2)");
    add("clamp_min(node_temperature_celsius, 0)");
    add("clamp_max(node_temperature_celsius, 40)");
    for f in [
        "minute",
        "hour",
        "day_of_week",
        "day_of_month",
        "day_of_year",
        "days_in_month",
        "month",
        "year",
    ] {
        add(&format!("{f}()"));
        add(&format!("{f}(batch_last_success_seconds)"));
    }
    add("timestamp(node_temperature_celsius)");
    add("timestamp(batch_last_success_seconds)");
    add("timestamp(rate(http_requests_total[5m]))");
    add("time()");
    add("pi()");
    add("vector(1)");
    add("vector(time())");
    add("scalar(sum(node_temperature_celsius))");
    add("scalar(node_temperature_celsius)");
    add("node_temperature_celsius * scalar(count(node_temperature_celsius))");
    add("absent(no_such_metric{job=\"x\", instance=~\"a.*\"})");
    add("absent(node_temperature_celsius)");
    add("absent(batch_last_success_seconds{job=\"batch\"})");
    add("absent(sum(no_such_metric))");
    add("\"a string\"");
    add("42");
    // @ modifier.
    add("node_temperature_celsius @ end()");
    add("node_temperature_celsius @ start()");
    add("rate(http_requests_total[5m] @ end())");
    add("max_over_time(node_temperature_celsius[5m:1m] @ start())");
    // Queries that must fail, in both.
    add("rate(http_requests_total)");
    add("sum(");
    add("{__name__=~\".*\"}");
    add("node_temperature_celsius + ignoring(sensor) node_temperature_celsius");
    add("http_requests_total / on(instance) node_temperature_celsius");
    add("label_replace(node_temperature_celsius, \"1bad\", \"x\", \"instance\", \".*\")");
    add("holt_winters(node_temperature_celsius[10m], 1.5, 0.5)");
    add("{__name__=~\"http_requests_total|node_temperature_celsius\"} + 1");
    add("rate({__name__=~\"http_requests_total|request_duration_seconds_sum\"}[5m])");
    add("nonexistent_function(up)");
    add("http_requests_total[5m]");
    q
}

/// Queries whose order is part of the answer (instant queries only).
const ORDERED: [&str; 4] = [
    "sort(node_temperature_celsius)",
    "sort_desc(DCGM_FI_DEV_POWER_USAGE)",
    "sort(rate(http_requests_total[5m]))",
    "sort_desc(sum by (instance) (node_temperature_celsius))",
];

/// The dcgm-exporter dashboard's (Grafana 12239) panel queries, with its `$instance` and `$gpu`
/// variables as Grafana expands them.
const DCGM_PANELS: [&str; 9] = [
    "DCGM_FI_DEV_GPU_TEMP{instance=~\"$instance\", gpu=~\"$gpu\"}",
    "avg(DCGM_FI_DEV_GPU_TEMP{instance=~\"$instance\", gpu=~\"$gpu\"})",
    "DCGM_FI_DEV_POWER_USAGE{instance=~\"$instance\", gpu=~\"$gpu\"}",
    "sum(DCGM_FI_DEV_POWER_USAGE{instance=~\"$instance\", gpu=~\"$gpu\"})",
    "sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{instance=~\"$instance\", gpu=~\"$gpu\"}[1m]))",
    "DCGM_FI_DEV_SM_CLOCK{instance=~\"$instance\", gpu=~\"$gpu\"} * 1000000",
    "DCGM_FI_DEV_MEM_CLOCK{instance=~\"$instance\", gpu=~\"$gpu\"} * 1000000",
    "DCGM_FI_DEV_GPU_UTIL{instance=~\"$instance\", gpu=~\"$gpu\"}",
    "DCGM_FI_DEV_FB_USED{instance=~\"$instance\", gpu=~\"$gpu\"}",
];

#[test]
fn promql_answers_as_prometheus_does_on_the_same_remote_written_samples() {
    let prometheus = Prometheus::start_with(
        "global:\n  scrape_interval: 15s\n",
        &["--web.enable-remote-write-receiver"],
    )
    .expect("prometheus starts");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("data"), &[]).expect("collector starts");

    let now = chrono::Utc::now().timestamp_millis();
    let t0 = (now - 70 * MINUTE) / MINUTE * MINUTE;
    let end = t0 + 60 * MINUTE;
    let data = corpus_data(t0);
    let samples: usize = data.iter().map(|s| s.samples.len()).sum();
    // In time order, ten minutes at a time, as a remote-write queue sends them.
    let mut from = t0;
    while from <= end {
        let request = write_request(&data, from, from + 10 * MINUTE);
        for (who, url) in [
            ("prometheus", format!("{}/api/v1/write", prometheus.url)),
            ("vigil", format!("{}/api/v1/write", collector.http_url())),
        ] {
            let response = remote_write(&url, &request);
            let status = response.status();
            assert!(
                status.is_success(),
                "{who} refused a remote-write: {status} {}",
                response.text().unwrap_or_default()
            );
        }
        from += 10 * MINUTE;
    }
    println!(
        "remote-wrote {samples} samples in {} series to both",
        data.len()
    );

    let instants = [
        end,
        end - 10 * MINUTE + 7_000,
        t0 + 30 * MINUTE,
        end + 4 * MINUTE,
        end + 6 * MINUTE,
    ];
    let ranges = [
        (t0 + 5 * MINUTE, end + 10 * MINUTE, 60_000i64),
        (end - 20 * MINUTE, end, 15_000),
        (t0, end + 7 * MINUTE, 137_000),
    ];
    let seconds = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);

    let mut queries: Vec<(String, bool)> = corpus().into_iter().map(|q| (q, false)).collect();
    queries.extend(ORDERED.iter().map(|q| (q.to_string(), true)));
    // The dashboard's panels with `All` (every value, as Grafana joins them) and two values.
    let all_instances = "(node-a:9400|node-b:9400)";
    let all_gpus = "(0|1|2|3)";
    for panel in DCGM_PANELS {
        for (instance, gpu) in [
            (all_instances, all_gpus),
            ("(node-a:9400|node-b:9400)", "(1|3)"),
            ("node-b:9400", "(0|1)"),
        ] {
            queries.push((
                panel.replace("$instance", instance).replace("$gpu", gpu),
                false,
            ));
        }
    }

    let (mut compared, mut matched) = (0usize, 0usize);
    let mut failures: Vec<String> = Vec::new();
    let mut distinct_queries = 0;
    for (query, ordered) in &queries {
        distinct_queries += 1;
        let mut checks: Vec<(String, Vec<(&str, String)>)> = Vec::new();
        for t in instants {
            checks.push((
                "query".into(),
                vec![("query", query.clone()), ("time", seconds(t))],
            ));
        }
        if !ordered {
            for (start, stop, step) in ranges {
                checks.push((
                    "query_range".into(),
                    vec![
                        ("query", query.clone()),
                        ("start", seconds(start)),
                        ("end", seconds(stop)),
                        ("step", format!("{}", step / 1000)),
                    ],
                ));
            }
        }
        for (endpoint, params) in checks {
            let theirs = answer(
                &get(&format!("{}/api/v1/{endpoint}", prometheus.url), &params),
                *ordered,
            );
            let ours = answer(
                &get(
                    &format!("{}/api/v1/{endpoint}", collector.query_url()),
                    &params,
                ),
                *ordered,
            );
            compared += 1;
            let agree = if query.starts_with("topk") || query.starts_with("bottomk") {
                same_values_per_time(&theirs, &ours)
            } else {
                same(&theirs, &ours)
            };
            if agree {
                matched += 1;
            } else if failures.len() < 40 {
                let show = |a: &Answer| {
                    let text = format!("{a:?}");
                    text.chars().take(600).collect::<String>()
                };
                failures.push(format!(
                    "{endpoint} {params:?}\n  prometheus: {}\n  vigil:      {}",
                    show(&theirs),
                    show(&ours)
                ));
            }
        }
    }
    println!(
        "{matched} of {compared} answers matched Prometheus, over {distinct_queries} queries ({} instant times, {} ranges)",
        instants.len(),
        ranges.len()
    );
    for failure in &failures {
        println!("MISMATCH {failure}");
    }
    if let Ok(secs) = std::env::var("VIGIL_PROMQL_HOLD") {
        println!(
            "holding: prometheus {} vigil {}",
            prometheus.url,
            collector.query_url()
        );
        std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(600)));
    }
    assert!(
        distinct_queries >= 200,
        "the corpus has {distinct_queries} queries"
    );
    assert_eq!(
        matched, compared,
        "answers that differ from Prometheus (first 40 above)"
    );
}

/// Sends metrics with the OpenTelemetry Rust SDK over OTLP/HTTP: dotted names with units, a
/// counter, an up-down counter, a gauge and a histogram, and one name already in Prometheus form.
fn send_otel_metrics(http_base: &str) {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{http_base}/v1/metrics"))
        .build()
        .unwrap();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("checkout")
        .with_attributes([
            KeyValue::new("service.namespace", "shop"),
            KeyValue::new("service.instance.id", "pod-7"),
            KeyValue::new("k8s.cluster.name", "prod-eu"),
        ])
        .build();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource)
        .build();
    let meter = provider.meter("vigil-promql-test");
    let route = [KeyValue::new("http.route", "/cart")];
    meter
        .u64_counter("http.server.requests")
        .with_unit("{request}")
        .build()
        .add(3, &route);
    let duration = meter
        .f64_histogram("http.server.duration")
        .with_unit("ms")
        .with_boundaries(vec![10.0, 100.0, 1000.0])
        .build();
    for ms in [5.0, 50.0, 60.0, 70.0, 500.0] {
        duration.record(ms, &route);
    }
    meter
        .i64_up_down_counter("queue.depth")
        .build()
        .add(-2, &[]);
    let _gauge = meter
        .f64_observable_gauge("gpu.util")
        .with_unit("1")
        .with_callback(|o| o.observe(0.75, &[]))
        .build();
    meter.u64_counter("llm_calls").build().add(9, &[]);
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
}

#[test]
fn otlp_metrics_appear_under_their_prometheus_names() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("data"), &[]).expect("collector starts");
    let http = collector.http_url();
    std::thread::spawn(move || send_otel_metrics(&http))
        .join()
        .expect("the SDK exported");
    let api = |path: &str, params: &[(&str, String)]| -> Value {
        let answer = get(&format!("{}{path}", collector.query_url()), params);
        assert_eq!(answer["status"], "success", "{path} {params:?}: {answer}");
        answer["data"].clone()
    };
    let instant = |query: &str| -> Vec<Value> {
        api("/api/v1/query", &[("query", query.to_string())])["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let one = |query: &str| -> (Value, f64) {
        let result = instant(query);
        assert_eq!(result.len(), 1, "{query}: {result:?}");
        (result[0]["metric"].clone(), number(&result[0]["value"][1]))
    };

    let (labels, value) = one("http_server_requests_total");
    assert_eq!(value, 3.0);
    assert_eq!(labels["job"], "shop/checkout", "{labels}");
    assert_eq!(labels["instance"], "pod-7", "{labels}");
    assert_eq!(labels["http_route"], "/cart", "{labels}");
    assert_eq!(one("queue_depth").1, -2.0);
    assert_eq!(one("gpu_util_ratio").1, 0.75);
    // A name already valid in Prometheus is kept, suffixes and all.
    assert_eq!(one("llm_calls").1, 9.0);
    assert!(instant("llm_calls_total").is_empty());

    // The resource's other attributes are `target_info`'s labels (the SDK's own `telemetry.sdk.*`
    // among them), joined to a series by job and instance.
    let (labels, value) = one("target_info");
    assert_eq!(value, 1.0);
    assert_eq!(labels["job"], "shop/checkout", "{labels}");
    assert_eq!(labels["instance"], "pod-7", "{labels}");
    assert_eq!(labels["k8s_cluster_name"], "prod-eu", "{labels}");
    assert_eq!(labels["telemetry_sdk_language"], "rust", "{labels}");
    assert!(labels.get("service_name").is_none(), "{labels}");
    let (labels, value) = one(
        "http_server_requests_total * on (job, instance) group_left (k8s_cluster_name) target_info",
    );
    assert_eq!(value, 3.0);
    assert_eq!(labels["k8s_cluster_name"], "prod-eu", "{labels}");
    assert_eq!(labels["http_route"], "/cart", "{labels}");

    // The histogram as `_bucket{le}` (cumulative), `_sum` and `_count`.
    let buckets = instant("http_server_duration_milliseconds_bucket");
    let mut by_le: Vec<(String, f64)> = buckets
        .iter()
        .map(|b| {
            (
                b["metric"]["le"].as_str().unwrap().to_string(),
                number(&b["value"][1]),
            )
        })
        .collect();
    by_le.sort_by(|a, b| {
        let bound = |le: &str| le.parse::<f64>().unwrap_or(f64::INFINITY);
        bound(&a.0).total_cmp(&bound(&b.0))
    });
    assert_eq!(
        by_le,
        [
            ("10".to_string(), 1.0),
            ("100".to_string(), 4.0),
            ("1000".to_string(), 5.0),
            ("+Inf".to_string(), 5.0)
        ]
    );
    assert_eq!(one("http_server_duration_milliseconds_count").1, 5.0);
    assert_eq!(one("http_server_duration_milliseconds_sum").1, 685.0);
    // The median observation lies in (10, 100]: 3 of 5 → interpolated at 10 + 90 × 1.5/3.
    let (labels, median) = one("histogram_quantile(0.5, http_server_duration_milliseconds_bucket)");
    assert!((median - 55.0).abs() < 1e-9, "{median}");
    assert!(
        labels.get("le").is_none() && labels.get("__name__").is_none(),
        "{labels}"
    );

    // Metadata, series, labels and label values see the same names.
    let metadata = api("/api/v1/metadata", &[]);
    assert_eq!(
        metadata["http_server_duration_milliseconds"][0]["type"], "histogram",
        "{metadata}"
    );
    assert_eq!(
        metadata["http_server_requests_total"][0]["type"], "counter",
        "{metadata}"
    );
    assert_eq!(metadata["queue_depth"][0]["type"], "gauge", "{metadata}");
    let series = api(
        "/api/v1/series",
        &[(
            "match[]",
            "{job=\"shop/checkout\", __name__=~\"http_.*_count|queue_.*\"}".to_string(),
        )],
    );
    assert_eq!(series.as_array().unwrap().len(), 2, "{series}");
    let names = api("/api/v1/label/__name__/values", &[]);
    for name in [
        "http_server_requests_total",
        "http_server_duration_milliseconds_bucket",
        "gpu_util_ratio",
        "llm_calls",
    ] {
        assert!(
            names.as_array().unwrap().iter().any(|n| n == name),
            "{name} not in {names}"
        );
    }
    let labels = api(
        "/api/v1/labels",
        &[("match[]", "http_server_requests_total".to_string())],
    );
    assert_eq!(
        labels,
        serde_json::json!(["__name__", "http_route", "instance", "job"])
    );

    // Grafana's "Save & test" and its version probe.
    let (_, two) = {
        let answer = get(
            &format!("{}/api/v1/query", collector.query_url()),
            &[("query", "1+1".to_string())],
        );
        assert_eq!(answer["data"]["resultType"], "scalar", "{answer}");
        ((), number(&answer["data"]["result"][1]))
    };
    assert_eq!(two, 2.0);
    let build = api("/api/v1/status/buildinfo", &[]);
    assert!(
        build["version"].as_str().unwrap().split('.').count() == 3,
        "{build}"
    );
    assert!(build.get("features").is_none(), "{build}");
    // POST with a form body, as Grafana sends by default.
    let posted: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/query", collector.query_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("query=sum%28http_server_requests_total%29")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        number(&posted["data"]["result"][0]["value"][1]),
        3.0,
        "{posted}"
    );
    // Errors in Prometheus' shape.
    let bad = get(
        &format!("{}/api/v1/query", collector.query_url()),
        &[("query", "sum(".to_string())],
    );
    assert_eq!(bad["status"], "error");
    assert_eq!(bad["errorType"], "bad_data");
    assert!(
        bad["error"].as_str().unwrap().contains("parse error"),
        "{bad}"
    );
}

#[test]
fn malformed_remote_writes_get_clear_errors_and_keep_the_good_series() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("data"), &[]).expect("collector starts");
    let url = format!("{}/api/v1/write", collector.http_url());
    let client = reqwest::blocking::Client::new();
    let send = |content_type: &str, encoding: &str, body: Vec<u8>| {
        let response = client
            .post(&url)
            .header("Content-Type", content_type)
            .header("Content-Encoding", encoding)
            .body(body)
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let now = chrono::Utc::now().timestamp_millis();
    let good = Series {
        labels: labels(&[("__name__", "good_metric"), ("job", "w"), ("instance", "i")]),
        samples: vec![(now - 1000, 1.0), (now, 2.0)],
    };
    let nameless = Series {
        labels: labels(&[("job", "w")]),
        samples: vec![(now, 5.0)],
    };
    let future = Series {
        labels: labels(&[("__name__", "future_metric"), ("job", "w")]),
        samples: vec![(now + 10 * 24 * 3600 * 1000, 1.0)],
    };
    let request = write_request(&[good, nameless, future], i64::MIN, i64::MAX);
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap();
    let (status, text) = send("application/x-protobuf", "snappy", body.clone());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no __name__"), "{text}");
    assert!(text.contains("2 of 4 samples"), "{text}");
    // The good series was stored, once.
    let answer = get(
        &format!("{}/api/v1/query", collector.query_url()),
        &[("query", "count_over_time(good_metric[5m])".to_string())],
    );
    assert_eq!(
        number(&answer["data"]["result"][0]["value"][1]),
        2.0,
        "{answer}"
    );
    assert_eq!(
        answer["data"]["result"][0]["metric"]["job"], "w",
        "{answer}"
    );

    let (status, text) = send(
        "application/x-protobuf",
        "snappy",
        b"not snappy at all".to_vec(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("snappy"), "{text}");
    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
    let (status, text) = send("application/x-protobuf", "snappy", garbage);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("WriteRequest"), "{text}");
    let (status, text) = send("application/json", "snappy", body.clone());
    assert_eq!(status, 415, "{text}");
    let (status, text) = send("application/x-protobuf", "gzip", body);
    assert_eq!(status, 415, "{text}");
    // A body that would decompress past the request limit is refused before it is inflated.
    let huge = snap::raw::Encoder::new()
        .compress_vec(&vec![0u8; 40 << 20])
        .unwrap();
    let (status, text) = send("application/x-protobuf", "snappy", huge);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("max_request_bytes"), "{text}");
}

/// A query's URL parameters.
type QueryParams = Vec<(&'static str, String)>;

/// The median of `runs` timings of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = std::time::Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// vigil against Prometheus on the same data, in one run: remote-write ingest in samples/s, and
/// query times of `query_range` over 1,000 series for 24 h at a 15 s step and of the
/// dcgm-exporter dashboard's instant queries. `scripts/bench-promql.sh` runs it with a release
/// `vigil` (`VIGIL_BIN`); `BENCH_SERIES` and `BENCH_HOURS` scale it down.
#[test]
#[ignore = "a benchmark: run by scripts/bench-promql.sh"]
fn bench_promql_against_prometheus() {
    let series_count: usize = std::env::var("BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let hours: i64 = std::env::var("BENCH_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let prometheus = Prometheus::start_with(
        "global:\n  scrape_interval: 15s\n",
        &["--web.enable-remote-write-receiver"],
    )
    .expect("prometheus starts");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("data"), &[]).expect("collector starts");

    // dcgm-exporter's GPU series: per GPU a gauge (utilization) and a counter (energy).
    let now = chrono::Utc::now().timestamp_millis();
    let end = now / MINUTE * MINUTE - MINUTE;
    let start = end - hours * 60 * MINUTE;
    let points = ((end - start) / STEP_MS) as usize;
    let mut rng = Lcg(7);
    let gpus: Vec<Vec<(String, String)>> = (0..series_count)
        .map(|i| {
            labels(&[
                ("job", "dcgm"),
                ("instance", &format!("node-{:03}:9400", i / 8)),
                ("gpu", &(i % 8).to_string()),
                ("UUID", &format!("GPU-{i:08x}")),
                ("modelName", "NVIDIA H100 80GB HBM3"),
                ("Hostname", &format!("node-{:03}", i / 8)),
            ])
        })
        .collect();
    let mut energy = vec![0.0f64; series_count];
    // Four shards, as a remote-write queue has: each series goes to one shard and each shard
    // sends its series in time order, in requests of about 5,000 samples, encoded before the
    // clock starts.
    const SHARDS: usize = 4;
    let per_shard = series_count.div_ceil(SHARDS);
    let per_request_points = (5000 / (2 * per_shard)).clamp(1, 40);
    let mut shards: Vec<Vec<Vec<u8>>> = vec![Vec::new(); SHARDS];
    let mut samples_total = 0usize;
    for chunk_start in (0..points).step_by(per_request_points) {
        let chunk: Vec<usize> =
            (chunk_start..(chunk_start + per_request_points).min(points)).collect();
        for (shard, bodies) in shards.iter_mut().enumerate() {
            let mut timeseries = Vec::with_capacity(2 * per_shard);
            for (i, gpu) in gpus.iter().enumerate().filter(|(i, _)| i % SHARDS == shard) {
                for (name, counter) in [
                    ("DCGM_FI_DEV_GPU_UTIL", false),
                    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", true),
                ] {
                    let mut l = vec![Label {
                        name: "__name__".into(),
                        value: name.into(),
                    }];
                    l.extend(gpu.iter().map(|(k, v)| Label {
                        name: k.clone(),
                        value: v.clone(),
                    }));
                    let samples = chunk
                        .iter()
                        .map(|p| {
                            let value = if counter {
                                energy[i] += 6000.0 * (0.5 + rng.next());
                                energy[i].round()
                            } else {
                                (rng.next() * 100.0).round()
                            };
                            Sample {
                                value,
                                timestamp: start + *p as i64 * STEP_MS,
                            }
                        })
                        .collect::<Vec<_>>();
                    samples_total += samples.len();
                    timeseries.push(TimeSeries { labels: l, samples });
                }
            }
            if timeseries.is_empty() {
                continue;
            }
            let request = WriteRequest {
                timeseries,
                metadata: Vec::new(),
            };
            bodies.push(
                snap::raw::Encoder::new()
                    .compress_vec(&request.encode_to_vec())
                    .unwrap(),
            );
        }
    }
    println!(
        "{} series, {hours} h at 15 s: {samples_total} samples in {} requests",
        2 * series_count,
        shards.iter().map(Vec::len).sum::<usize>()
    );

    // Samples/s, and how many requests were refused for a while (pushback) and sent again.
    let ingest = |url: String| -> (f64, u64) {
        let started = std::time::Instant::now();
        let retried = std::sync::atomic::AtomicU64::new(0);
        // The shards move through time together, as a queue's shards do: Prometheus refuses
        // samples an hour older than the newest it has.
        let barrier = std::sync::Barrier::new(shards.len());
        std::thread::scope(|scope| {
            for bodies in &shards {
                let (url, barrier, retried) = (&url, &barrier, &retried);
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    for body in bodies {
                        barrier.wait();
                        // Retried on 429 and 5xx, as Prometheus retries.
                        loop {
                            let response = client
                                .post(url)
                                .header("Content-Type", "application/x-protobuf")
                                .header("Content-Encoding", "snappy")
                                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                                .body(body.clone())
                                .send()
                                .expect("remote-write sent");
                            let status = response.status();
                            if status.is_success() {
                                break;
                            }
                            assert!(
                                status.as_u16() == 429 || status.is_server_error(),
                                "{url}: {status} {}",
                                response.text().unwrap_or_default()
                            );
                            retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                });
            }
        });
        (
            samples_total as f64 / started.elapsed().as_secs_f64(),
            retried.into_inner(),
        )
    };
    let (prometheus_rate, prometheus_retried) = ingest(format!("{}/api/v1/write", prometheus.url));
    let (vigil_rate, vigil_retried) = ingest(format!("{}/api/v1/write", collector.http_url()));
    println!(
        "| remote-write ingest | {vigil_rate:.0} samples/s | {prometheus_rate:.0} samples/s |"
    );
    println!(
        "(requests refused for a while and sent again: vigil {vigil_retried}, Prometheus {prometheus_retried})"
    );

    let fetch = |base: &str, path: &str, params: &[(&str, String)]| -> usize {
        let response = reqwest::blocking::Client::new()
            .get(format!("{base}{path}"))
            .query(params)
            .timeout(Duration::from_secs(300))
            .send()
            .expect("query sent");
        assert!(
            response.status().is_success(),
            "{base}{path} {params:?}: {}",
            response.status()
        );
        response.bytes().expect("answer read").len()
    };
    let seconds = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    let range = |q: &str| {
        vec![
            ("query", q.to_string()),
            ("start", seconds(start)),
            ("end", seconds(end)),
            ("step", "15".to_string()),
        ]
    };
    let instant = |q: &str| vec![("query", q.to_string()), ("time", seconds(end))];
    let cases: Vec<(String, &str, QueryParams)> = vec![
        (
            "`sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m]))`, 24 h at 15 s".into(),
            "/api/v1/query_range",
            range("sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m]))"),
        ),
        (
            "`avg by (instance) (DCGM_FI_DEV_GPU_UTIL)`, 24 h at 15 s".into(),
            "/api/v1/query_range",
            range("avg by (instance) (DCGM_FI_DEV_GPU_UTIL)"),
        ),
        (
            "`rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m])` (every series), 24 h at 15 s".into(),
            "/api/v1/query_range",
            range("rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m])"),
        ),
        (
            "dcgm dashboard: `DCGM_FI_DEV_GPU_UTIL{instance=~\"node-00[0-3]:9400\"}`, instant"
                .into(),
            "/api/v1/query",
            instant("DCGM_FI_DEV_GPU_UTIL{instance=~\"node-00[0-3]:9400\", gpu=~\".*\"}"),
        ),
        (
            "dcgm dashboard: `avg(DCGM_FI_DEV_GPU_UTIL)`, instant".into(),
            "/api/v1/query",
            instant("avg(DCGM_FI_DEV_GPU_UTIL)"),
        ),
        (
            "dcgm dashboard: `sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[1m]))`, instant".into(),
            "/api/v1/query",
            instant("sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[1m]))"),
        ),
    ];
    println!(
        "| query | vigil (median of 3) | Prometheus (median of 3) | answer bytes (vigil / Prometheus) |"
    );
    for (title, path, params) in &cases {
        let mut ours_bytes = 0;
        let mut theirs_bytes = 0;
        let theirs = median_ms(3, || theirs_bytes = fetch(&prometheus.url, path, params));
        let ours = median_ms(3, || {
            ours_bytes = fetch(&collector.query_url(), path, params)
        });
        println!("| {title} | {ours:.0} ms | {theirs:.0} ms | {ours_bytes} / {theirs_bytes} |");
    }
    let peak = |pid: u32| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    println!(
        "vigil peak RSS {:.0} MiB, Prometheus {:.0} MiB",
        peak(collector.pid()),
        peak(prometheus.pid())
    );
    // BENCH_HOLD=<seconds> keeps both up afterwards, to try queries against the same data.
    if let Some(hold) = std::env::var("BENCH_HOLD")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        println!(
            "holding {hold} s: vigil at {}, Prometheus at {}, data from {start} to {end} ms",
            collector.query_url(),
            prometheus.url
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
}

/// `vigil serve` with its OTLP/HTTP listener (where remote-write arrives) on `http_port`.
fn collector_on(data_dir: &std::path::Path, http_port: u16) -> Collector {
    let mut command = std::process::Command::new(vigil_tests::vigil_bin());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--otlp-grpc-addr", "127.0.0.1:0"])
        .args(["--otlp-http-addr", &format!("127.0.0.1:{http_port}")])
        .args([
            "--query-addr",
            "127.0.0.1:0",
            "--flight-sql-addr",
            "127.0.0.1:0",
        ])
        .env_remove("VIGIL_CONFIG");
    Collector::spawn(command, &data_dir.with_extension("log")).expect("collector starts")
}

/// A real Prometheus scrapes the simulated exporter and remote-writes to vigil; vigil is
/// SIGKILLed mid-stream and restarted. Every sample Prometheus scraped reaches vigil: what vigil
/// acknowledged survived the kill, and Prometheus retried the rest.
#[test]
fn prometheus_remote_write_delivers_every_scraped_sample_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut exporter = vigil_tests::GpuExporter::start(
        &vigil_tests::SMALL_FLEET,
        &dir.path().join("exporter.log"),
    )
    .unwrap();
    let target = exporter.target();
    let http_port = vigil_tests::free_port().unwrap();
    let data = dir.path().join("data");
    let mut collector = collector_on(&data, http_port);
    let prometheus = Prometheus::start_with(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gpu\n    static_configs:\n      - targets: ['{target}']\nremote_write:\n  - url: http://127.0.0.1:{http_port}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n"
        ),
        &[],
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    collector.kill();
    std::thread::sleep(Duration::from_secs(3));
    collector = collector_on(&data, http_port);
    std::thread::sleep(Duration::from_secs(6));
    exporter.stop().unwrap();
    // Everything Prometheus scraped, per series: the samples of the last two minutes.
    let query = [
        ("query", "DCGM_FI_DEV_POWER_USAGE[2m]".to_string()),
        ("time", format!("{}", chrono::Utc::now().timestamp())),
    ];
    let samples = |base: &str| -> BTreeMap<String, Vec<(i64, f64)>> {
        let answer = get(&format!("{base}/api/v1/query"), &query);
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut metric = s["metric"].as_object().unwrap().clone();
                metric.remove("__name__");
                (
                    Value::Object(metric).to_string(),
                    s["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (millis(&p[0]), number(&p[1])))
                        .collect(),
                )
            })
            .collect()
    };
    let scraped = samples(&prometheus.url);
    assert_eq!(scraped.len(), 2, "{scraped:?}");
    let scraped_count: usize = scraped.values().map(Vec::len).sum();
    assert!(
        scraped_count >= 20,
        "Prometheus scraped only {scraped_count} samples"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = samples(&collector.query_url());
        let missing: Vec<(String, (i64, f64))> = scraped
            .iter()
            .flat_map(|(series, points)| {
                let have = stored.get(series).cloned().unwrap_or_default();
                points
                    .iter()
                    .filter(move |p| !have.contains(p))
                    .map(move |p| (series.clone(), *p))
            })
            .collect();
        if missing.is_empty() {
            println!(
                "all {scraped_count} samples Prometheus scraped reached vigil across a SIGKILL"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {scraped_count} scraped samples never reached vigil, e.g. {:?}; vigil has {:?}",
            missing.len(),
            &missing[..missing.len().min(3)],
            stored.keys().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_query_past_the_sample_budget_fails_in_prometheus_shape() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[query]\nmax_samples = 1000\n").unwrap();
    let collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .expect("collector starts");
    let now = chrono::Utc::now().timestamp_millis();
    let series: Vec<Series> = (0..20)
        .map(|i| Series {
            labels: labels(&[("__name__", "wide"), ("i", &i.to_string())]),
            samples: (0..10).map(|k| (now - k * STEP_MS, k as f64)).collect(),
        })
        .collect();
    let response = remote_write(
        &format!("{}/api/v1/write", collector.http_url()),
        &write_request(&series, i64::MIN, i64::MAX),
    );
    assert!(response.status().is_success());
    let url = format!("{}/api/v1/query_range", collector.query_url());
    let seconds = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    // 200 samples are read, but 20 series × 1,001 steps would hold 20,020 points.
    let answer = get(
        &url,
        &[
            ("query", "wide".to_string()),
            ("start", seconds(now - 1000 * 1000)),
            ("end", seconds(now)),
            ("step", "1".to_string()),
        ],
    );
    assert_eq!(answer["status"], "error", "{answer}");
    assert_eq!(answer["errorType"], "execution", "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("too many samples"),
        "{answer}"
    );
    // Within the budget the same query answers.
    let answer = get(
        &url,
        &[
            ("query", "sum(wide)".to_string()),
            ("start", seconds(now - 10_000)),
            ("end", seconds(now)),
            ("step", "1".to_string()),
        ],
    );
    assert_eq!(answer["status"], "success", "{answer}");
}
