//! Real traces of LLM requests (timestamp, input and output tokens, as the Azure LLM inference
//! traces) replayed as a `spans` table, so that the drift detector is judged on traffic nobody
//! here generated (`vigil eval drift-trace`, and the detector's own tests).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arrow::array::RecordBatch;

use crate::AnalyzerError;

/// One request of a trace: when (ns, relative to the first), input and output tokens.
pub type TraceRow = (i64, i64, i64);

/// Reads `timestamp,input_tokens,output_tokens` rows (a header line first; timestamps RFC 3339
/// or `YYYY-MM-DD HH:MM:SS[.fraction]` in UTC, as the Azure LLM inference traces write them).
pub fn read_trace(path: &Path) -> Result<Vec<TraceRow>, AnalyzerError> {
    let text = std::fs::read_to_string(path)?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| {
            AnalyzerError::Config(format!("{}:{}: {what}", path.display(), number + 1))
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [at, input, output] = fields[..] else {
            return Err(bad("expected timestamp,input_tokens,output_tokens".into()));
        };
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| t.to_utc())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f")
                    .map(|t| t.and_utc())
            })
            .map_err(|_| bad(format!("timestamp {at:?}")))?;
        let parse =
            |v: &str, what: &str| v.parse::<i64>().map_err(|_| bad(format!("{what} {v:?}")));
        rows.push((
            at.timestamp_nanos_opt()
                .ok_or_else(|| bad("timestamp out of range".into()))?,
            parse(input, "input tokens")?,
            parse(output, "output tokens")?,
        ));
    }
    rows.sort_by_key(|r| r.0);
    let first = rows
        .first()
        .ok_or_else(|| AnalyzerError::Config(format!("{}: no rows", path.display())))?
        .0;
    for row in &mut rows {
        row.0 -= first;
    }
    Ok(rows)
}

/// The trace as spans of one service and model, repeated back to back from `start` until
/// `end`; output tokens × `shift` from `shift_from` on. The traces carry no latency: it follows
/// the output tokens, as generation time does.
pub fn trace_spans(
    rows: &[TraceRow],
    start: SystemTime,
    end: SystemTime,
    shift: f64,
    shift_from: SystemTime,
) -> Result<RecordBatch, AnalyzerError> {
    use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
    let ns = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64
    };
    let period = rows.last().map(|r| r.0).unwrap_or(0) + 1_000_000_000;
    let (start, end, shift_from) = (ns(start), ns(end), ns(shift_from));
    let (mut time, mut inputs, mut outputs, mut durations, mut traces) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut finish = ListBuilder::new(StringBuilder::new());
    let mut round = 0i64;
    'replay: loop {
        for (i, (offset, input, output)) in rows.iter().enumerate() {
            let at = start + round * period + offset;
            if at > end {
                break 'replay;
            }
            let output = if at >= shift_from {
                (*output as f64 * shift).round() as i64
            } else {
                *output
            };
            time.push(at);
            inputs.push(*input);
            outputs.push(output);
            durations.push((250 + 25 * output) * 1_000_000);
            traces.push(format!("{:016x}{:016x}", round, i));
            finish.values().append_value("stop");
            finish.append(true);
        }
        round += 1;
    }
    let n = time.len();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "time",
            Arc::new(arrow::array::TimestampNanosecondArray::from(time).with_timezone("UTC")),
        ),
        (
            "service_name",
            Arc::new(StringArray::from(vec!["replay"; n])),
        ),
        (
            "request_model",
            Arc::new(StringArray::from(vec!["trace"; n])),
        ),
        (
            "response_model",
            Arc::new(StringArray::from(vec!["trace"; n])),
        ),
        ("input_tokens", Arc::new(Int64Array::from(inputs))),
        ("output_tokens", Arc::new(Int64Array::from(outputs))),
        ("duration_ns", Arc::new(Int64Array::from(durations))),
        ("ttft_ns", Arc::new(Int64Array::from(vec![None::<i64>; n]))),
        ("status_code", Arc::new(StringArray::from(vec!["UNSET"; n]))),
        ("finish_reasons", Arc::new(finish.finish())),
        ("trace_id", Arc::new(StringArray::from(traces))),
    ];
    RecordBatch::try_from_iter(columns).map_err(|e| AnalyzerError::Shape(e.to_string()))
}
