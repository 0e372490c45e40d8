//! The names and labels OTLP metrics carry under PromQL, after the OpenTelemetry specification's
//! "Prometheus and OpenMetrics Compatibility": invalid characters become `_`, a unit becomes a
//! suffix, monotonic sums end in `_total`, histograms become `_bucket{le}`/`_sum`/`_count`, and
//! `job`/`instance` come from `service.namespace`/`service.name` and `service.instance.id`.
//!
//! One deliberate difference: a name that is already a valid Prometheus name (dcgm-exporter's
//! `DCGM_FI_DEV_SM_CLOCK`, vLLM's `vllm:num_requests_waiting`, anything that came by
//! remote-write) is kept exactly as sent. Whoever named it so was naming it for Prometheus, and
//! dashboards written for those exporters must find it unchanged.

/// The metric-name label.
pub const NAME_LABEL: &str = "__name__";
/// The histogram bucket bound label.
pub const BUCKET_LABEL: &str = "le";
/// The summary quantile label.
pub const QUANTILE_LABEL: &str = "quantile";

/// Whether `name` is a valid Prometheus metric name as it stands.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Replaces every run of characters Prometheus does not allow with one `_`; a leading digit gets
/// a `_` before it. `allow_colon` is false for label names.
fn sanitize(text: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    let mut last_was_replaced = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':') {
            out.push(c);
            last_was_replaced = false;
        } else if !last_was_replaced {
            out.push('_');
            last_was_replaced = true;
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The Prometheus label name for an attribute key.
pub fn label_name(key: &str) -> String {
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        return key.to_string();
    }
    let sanitized = sanitize(key, false);
    // The specification prefixes `key_` where the original starts with a digit.
    match sanitized.strip_prefix('_') {
        Some(rest) if key.starts_with(|c: char| c.is_ascii_digit()) => format!("key_{rest}"),
        _ => sanitized,
    }
}

/// The Prometheus word for a UCUM unit, where the specification gives one.
fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

/// The suffix a unit adds to a name: `ms` → `milliseconds`, `By/s` → `bytes_per_second`,
/// `1` → `ratio` (gauges only); annotations in braces add nothing.
fn unit_suffix(unit: &str, is_gauge: bool) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit.starts_with('{') {
        return None;
    }
    if unit == "1" {
        return is_gauge.then(|| "ratio".to_string());
    }
    let word = |part: &str| -> String {
        let part = part.split('{').next().unwrap_or("").trim();
        unit_word(part)
            .map(str::to_string)
            .unwrap_or_else(|| sanitize(part, false).trim_matches('_').to_string())
    };
    let (top, per) = match unit.split_once('/') {
        Some((top, per)) => (word(top), Some(word(per))),
        None => (word(unit), None),
    };
    let per_word = |per: String| match per.as_str() {
        "seconds" => "second".to_string(),
        "minutes" => "minute".to_string(),
        "hours" => "hour".to_string(),
        "days" => "day".to_string(),
        _ => per,
    };
    let suffix = match per {
        Some(per) if !per.is_empty() && !top.is_empty() => {
            format!("{top}_per_{}", per_word(per))
        }
        Some(per) if !per.is_empty() => format!("per_{}", per_word(per)),
        _ => top,
    };
    (!suffix.is_empty()).then_some(suffix)
}

/// The kind of stored metric, as far as naming is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// A sum; `monotonic` ones are counters.
    Sum {
        monotonic: bool,
    },
    Histogram,
    Summary,
    /// Exponential histograms have no classic Prometheus form; they are not shown.
    Other,
}

impl Kind {
    /// From the `metric_type` and `is_monotonic` columns.
    pub fn from_columns(metric_type: &str, is_monotonic: Option<bool>) -> Kind {
        match metric_type {
            "gauge" => Kind::Gauge,
            "sum" => Kind::Sum {
                monotonic: is_monotonic.unwrap_or(false),
            },
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            _ => Kind::Other,
        }
    }
}

/// The base Prometheus name of a stored metric (before `_bucket`/`_sum`/`_count`).
pub fn base_name(metric_name: &str, unit: Option<&str>, kind: Kind) -> String {
    if is_valid_metric_name(metric_name) {
        return metric_name.to_string();
    }
    let mut name = sanitize(metric_name, true);
    if let Some(suffix) = unit.and_then(|u| unit_suffix(u, kind == Kind::Gauge))
        && !name.ends_with(&format!("_{suffix}"))
    {
        name.push('_');
        name.push_str(&suffix);
    }
    if kind == (Kind::Sum { monotonic: true }) && !name.ends_with("_total") {
        name.push_str("_total");
    }
    name
}

/// Every Prometheus name a stored metric is shown under, with what each one carries.
pub fn prometheus_names(metric_name: &str, unit: Option<&str>, kind: Kind) -> Vec<(String, Part)> {
    let base = base_name(metric_name, unit, kind);
    match kind {
        Kind::Gauge | Kind::Sum { .. } => vec![(base, Part::Value)],
        Kind::Histogram => vec![
            (format!("{base}_bucket"), Part::Bucket),
            (format!("{base}_sum"), Part::Sum),
            (format!("{base}_count"), Part::Count),
        ],
        Kind::Summary => vec![
            (base.clone(), Part::Quantile),
            (format!("{base}_sum"), Part::Sum),
            (format!("{base}_count"), Part::Count),
        ],
        Kind::Other => Vec::new(),
    }
}

/// Which part of a stored row a Prometheus series reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `value` (gauges and sums).
    Value,
    /// Cumulative bucket counts, one series per bound (`le`).
    Bucket,
    /// `sum`.
    Sum,
    /// `count`.
    Count,
    /// Summary quantiles, one series per `quantile`.
    Quantile,
}

/// The `job` label: `service.namespace/service.name`, or `service.name` alone.
pub fn job(service_namespace: Option<&str>, service_name: Option<&str>) -> Option<String> {
    match (service_namespace, service_name) {
        (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
        (_, Some(name)) if !name.is_empty() => Some(name.to_string()),
        _ => None,
    }
}

/// How Prometheus prints a float label value such as `le` or `quantile`.
pub fn float_label(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if value.is_nan() {
        "NaN".to_string()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_specification() {
        let sum = Kind::Sum { monotonic: true };
        assert_eq!(
            base_name("http.server.request.duration", Some("s"), Kind::Histogram),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            base_name("gen_ai.client.token.usage", Some("{token}"), sum),
            "gen_ai_client_token_usage_total"
        );
        assert_eq!(
            base_name("system.network.io", Some("By"), sum),
            "system_network_io_bytes_total"
        );
        assert_eq!(
            base_name("queue.fill", Some("1"), Kind::Gauge),
            "queue_fill_ratio"
        );
        assert_eq!(
            base_name("net.rate", Some("By/s"), Kind::Gauge),
            "net_rate_bytes_per_second"
        );
        assert_eq!(base_name("1st.metric", None, Kind::Gauge), "_1st_metric");
        assert_eq!(base_name("a..b", None, Kind::Gauge), "a_b");
        // Already Prometheus names: kept as sent, whatever their unit.
        assert_eq!(
            base_name("DCGM_FI_DEV_SM_CLOCK", Some("MHz"), Kind::Gauge),
            "DCGM_FI_DEV_SM_CLOCK"
        );
        assert_eq!(
            base_name("vllm:num_requests_waiting", None, Kind::Gauge),
            "vllm:num_requests_waiting"
        );
        assert_eq!(
            base_name("DCGM_FI_DEV_XID_ERRORS", Some("1"), sum),
            "DCGM_FI_DEV_XID_ERRORS"
        );
    }

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(label_name("UUID"), "UUID");
        assert_eq!(label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(label_name("2xx"), "key_2xx");
        assert_eq!(label_name("a-b c"), "a_b_c");
    }

    #[test]
    fn float_labels_print_as_prometheus_does() {
        assert_eq!(float_label(0.5), "0.5");
        assert_eq!(float_label(10.0), "10");
        assert_eq!(float_label(f64::INFINITY), "+Inf");
        assert_eq!(float_label(1e-3), "0.001");
    }
}
