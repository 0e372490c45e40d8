//! nccl-tests results as active probes: bus bandwidth and time per operation and message size,
//! from the text table the tests print or the JSON file they write with `-J`.

use serde::Deserialize;

/// One row of an nccl-tests run (out-of-place numbers; in-place where out-of-place is absent).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// `AllReduce`, `AllGather`, … (from `experiment_name`, the "Collective test starting" line or
    /// the binary name).
    pub op: String,
    pub size_bytes: u64,
    pub time_us: f64,
    pub algbw_gbs: f64,
    pub busbw_gbs: f64,
}

/// Parse either format; JSON is recognised by its leading `{`.
pub fn parse(text: &str) -> Result<Vec<ProbeResult>, String> {
    if text.trim_start().starts_with('{') {
        parse_json(text)
    } else {
        parse_text(text)
    }
}

/// `all_reduce_perf` → `AllReduce`.
fn op_from_binary(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.strip_suffix("_perf").unwrap_or(base);
    match base {
        "alltoall" => "AllToAll".to_string(),
        "sendrecv" => "SendRecv".to_string(),
        other => other
            .split('_')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect(),
    }
}

/// The text table: `size count type redop root time algbw busbw #wrong time algbw busbw #wrong`.
pub fn parse_text(text: &str) -> Result<Vec<ProbeResult>, String> {
    let mut op = "unknown".to_string();
    let mut results = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("# Collective test starting:") {
            op = op_from_binary(rest.trim());
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = trimmed.split_whitespace().collect();
        // Rows start with two integers (size, count); anything else is a log line mixed in.
        let (Some(size), Some(_count)) = (
            cols.first().and_then(|c| c.parse::<u64>().ok()),
            cols.get(1).and_then(|c| c.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if cols.len() < 8 {
            return Err(format!(
                "nccl-tests output line {}: too few columns: {trimmed:?}",
                number + 1
            ));
        }
        let number_at = |index: usize| -> Result<f64, String> {
            cols[index].parse::<f64>().map_err(|_| {
                format!(
                    "nccl-tests output line {}: column {} is not a number: {:?}",
                    number + 1,
                    index + 1,
                    cols[index]
                )
            })
        };
        results.push(ProbeResult {
            op: op.clone(),
            size_bytes: size,
            time_us: number_at(5)?,
            algbw_gbs: number_at(6)?,
            busbw_gbs: number_at(7)?,
        });
    }
    if results.is_empty() {
        return Err("nccl-tests output has no result rows".to_string());
    }
    Ok(results)
}

#[derive(Deserialize)]
struct JsonRun {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    results: Vec<JsonRow>,
}

#[derive(Deserialize)]
struct JsonRow {
    size: u64,
    #[serde(default)]
    experiment_name: Option<String>,
    #[serde(default)]
    out_of_place: Option<JsonTiming>,
    #[serde(default)]
    in_place: Option<JsonTiming>,
}

#[derive(Deserialize)]
struct JsonTiming {
    #[serde(alias = "cpu_time")]
    time: JsonNumber,
    alg_bw: JsonNumber,
    bus_bw: JsonNumber,
}

/// nccl-tests writes NaN as the string "nan".
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonNumber {
    Number(f64),
    Text(String),
}

impl JsonNumber {
    fn value(&self) -> f64 {
        match self {
            JsonNumber::Number(n) => *n,
            JsonNumber::Text(text) => text.parse().unwrap_or(f64::NAN),
        }
    }
}

/// The `-J` file (format version 2).
pub fn parse_json(text: &str) -> Result<Vec<ProbeResult>, String> {
    let run: JsonRun = serde_json::from_str(text).map_err(|e| format!("nccl-tests JSON: {e}"))?;
    let binary_op = run.args.first().map(|binary| op_from_binary(binary));
    let mut results = Vec::new();
    for row in run.results {
        let Some(timing) = row.out_of_place.or(row.in_place) else {
            continue;
        };
        let op = row
            .experiment_name
            .filter(|name| !name.is_empty())
            .or_else(|| binary_op.clone())
            .unwrap_or_else(|| "unknown".to_string());
        results.push(ProbeResult {
            op,
            size_bytes: row.size,
            time_us: timing.time.value(),
            algbw_gbs: timing.alg_bw.value(),
            busbw_gbs: timing.bus_bw.value(),
        });
    }
    if results.is_empty() {
        return Err("nccl-tests JSON has no results".to_string());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# nccl-tests version 2.17.1 nccl-headers=22703 nccl-library=22703
# Collective test starting: all_reduce_perf
# nThread 1 nGpus 1 minBytes 8 maxBytes 8589934592 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0
#
# Using devices
#  Rank  0 Group  0 Pid   6899 on ztan-mig-235z device  0 [0000:04:00] NVIDIA H100 80GB HBM3
#  Rank  1 Group  0 Pid   6900 on ztan-mig-235z device  1 [0000:05:00] NVIDIA H100 80GB HBM3
#
#                                                              out-of-place                       in-place
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
           8             2     float     sum      -1    36.77    0.00    0.00      0    36.47    0.00    0.00      0
     1048576        262144     float     sum      -1    55.02   19.06   35.73      0    54.10   19.38   36.34      0
  8589934592    2147483648     float     sum      -1    44012  195.17  365.94      0    43990  195.27  366.13      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 134.0
#
";

    #[test]
    fn parses_the_text_table() {
        let rows = parse(TEXT).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[1],
            ProbeResult {
                op: "AllReduce".into(),
                size_bytes: 1048576,
                time_us: 55.02,
                algbw_gbs: 19.06,
                busbw_gbs: 35.73,
            }
        );
        assert_eq!(rows[2].time_us, 44012.0);
    }

    #[test]
    fn parses_the_json_file() {
        let json = r#"{"version":2,"start_time":"2025-06-01 10:00:00","args":["./build/all_gather_perf","-b","8","-e","1G"],"env":[],"nccl_version":22703,"config":{"nthreads":1,"ngpus":8,"devices":[]},"results":[{"size":1024,"count":32,"type":"float","redop":"none","root":"    -1","out_of_place":{"time":12.5,"alg_bw":0.08,"bus_bw":0.07,"nwrong":0.000000},"in_place":{"time":12.1,"alg_bw":0.08,"bus_bw":0.07,"nwrong":0.000000},"actual_iterations":20,"experiment_name":""},{"size":1073741824,"count":33554432,"type":"float","redop":"none","root":"    -1","out_of_place":{"time":5120.0,"alg_bw":209.7,"bus_bw":"nan","nwrong":null},"in_place":null,"actual_iterations":20,"experiment_name":"AllGather"}],"out_of_bounds":{"count":0,"okay":"true"},"average_bus_bandwidth":{"bandwidth":90.0,"okay":"unchecked"},"errors":[],"end_time":"2025-06-01 10:01:00"}"#;
        let rows = parse(json).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].op, "AllGather");
        assert_eq!(rows[0].size_bytes, 1024);
        assert_eq!(rows[1].time_us, 5120.0);
        assert!(rows[1].busbw_gbs.is_nan());
    }

    #[test]
    fn bad_input_names_the_line() {
        let error = parse("  1024  256  float  sum  -1  12.0  abc  0.1  0\n").unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("\"abc\""),
            "{error}"
        );
        assert!(parse("# only comments\n").is_err());
        assert!(
            parse("{not json")
                .unwrap_err()
                .starts_with("nccl-tests JSON")
        );
    }
}
