//! The tables vigil stores, their Arrow schemas and the names of their columns.
//!
//! Every crate refers to a column through the constants here, never through a literal.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, MapBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The signal tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per span.
    Spans,
    /// One row per metric data point.
    Metrics,
    /// One row per log record.
    Logs,
    /// One row per alert state change.
    Alerts,
    /// LLM calls per minute, service, model and host, derived from `spans` as they are stored
    /// (see [`crate::rollup`]); never received, never in the WAL.
    LlmMinutes,
    /// GPU series of `metrics` per minute, derived as they are stored (see [`crate::gpu_rollup`]).
    GpuMinutes,
}

impl Table {
    /// All tables, in a stable order.
    pub const ALL: [Table; 6] = [
        Table::Spans,
        Table::Metrics,
        Table::Logs,
        Table::Alerts,
        Table::LlmMinutes,
        Table::GpuMinutes,
    ];

    /// The SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Metrics => "metrics",
            Table::Logs => "logs",
            Table::Alerts => "alerts",
            Table::LlmMinutes => "llm_minutes",
            Table::GpuMinutes => "gpu_minutes",
        }
    }

    /// A one-byte tag, stable on disk (the WAL stores it).
    pub fn tag(self) -> u8 {
        match self {
            Table::Spans => 1,
            Table::Metrics => 2,
            Table::Logs => 3,
            Table::Alerts => 4,
            Table::LlmMinutes => 5,
            Table::GpuMinutes => 6,
        }
    }

    /// Whether the table's rows are computed by vigil from another table's, not received.
    pub fn is_derived(self) -> bool {
        matches!(self, Table::LlmMinutes | Table::GpuMinutes)
    }

    /// The table derived from this one's rows as they are stored, if any.
    pub fn derived(self) -> Option<Table> {
        match self {
            Table::Spans => Some(Table::LlmMinutes),
            Table::Metrics => Some(Table::GpuMinutes),
            _ => None,
        }
    }

    /// This derived table's rows for a batch of its source table (`None`: no rows).
    pub fn derive(
        self,
        source: &arrow::record_batch::RecordBatch,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, arrow::error::ArrowError> {
        match self {
            Table::LlmMinutes => crate::rollup::llm_minutes(source),
            Table::GpuMinutes => crate::gpu_rollup::gpu_minutes(source),
            _ => Ok(None),
        }
    }

    /// This derived table's rows merged to one per key, as a flush writes them.
    pub fn merge_derived(
        self,
        batches: &[arrow::record_batch::RecordBatch],
    ) -> Result<Vec<arrow::record_batch::RecordBatch>, arrow::error::ArrowError> {
        let merged = match self {
            Table::LlmMinutes => crate::rollup::merge(batches)?,
            Table::GpuMinutes => crate::gpu_rollup::merge(batches)?,
            _ => return Ok(batches.to_vec()),
        };
        Ok(merged.into_iter().collect())
    }

    /// The table for a tag written by [`Table::tag`].
    pub fn from_tag(tag: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.tag() == tag)
    }

    /// The table for a SQL name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => SPANS_SCHEMA.clone(),
            Table::Metrics => METRICS_SCHEMA.clone(),
            Table::Logs => LOGS_SCHEMA.clone(),
            Table::Alerts => ALERTS_SCHEMA.clone(),
            Table::LlmMinutes => crate::rollup::LLM_MINUTES_SCHEMA.clone(),
            Table::GpuMinutes => crate::gpu_rollup::GPU_MINUTES_SCHEMA.clone(),
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Column names shared by several tables.
pub mod col {
    pub const TIME: &str = "time";
    pub const SERVICE_NAME: &str = "service_name";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    pub const ATTRIBUTES: &str = "attributes";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const FLAGS: &str = "flags";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
}

/// Columns of `spans`.
pub mod span_col {
    pub const END_TIME: &str = "end_time";
    pub const DURATION_NS: &str = "duration_ns";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
    pub const GEN_AI_SYSTEM: &str = "gen_ai_system";
    pub const GEN_AI_OPERATION: &str = "gen_ai_operation";
    pub const REQUEST_MODEL: &str = "request_model";
    pub const RESPONSE_MODEL: &str = "response_model";
    pub const INPUT_TOKENS: &str = "input_tokens";
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    pub const TOTAL_TOKENS: &str = "total_tokens";
    pub const CACHE_READ_TOKENS: &str = "cache_read_tokens";
    pub const CACHE_CREATION_TOKENS: &str = "cache_creation_tokens";
    pub const REASONING_TOKENS: &str = "reasoning_tokens";
    pub const TTFT_NS: &str = "ttft_ns";
    pub const FINISH_REASONS: &str = "finish_reasons";
    pub const REQUEST_TEMPERATURE: &str = "request_temperature";
    pub const REQUEST_MAX_TOKENS: &str = "request_max_tokens";
    pub const ERROR_TYPE: &str = "error_type";
    pub const COST_USD: &str = "cost_usd";
    pub const INPUT_MESSAGES: &str = "input_messages";
    pub const OUTPUT_MESSAGES: &str = "output_messages";
}

/// Columns of `metrics`.
pub mod metric_col {
    pub const START_TIME: &str = "start_time";
    pub const METRIC_NAME: &str = "metric_name";
    pub const METRIC_TYPE: &str = "metric_type";
    pub const UNIT: &str = "unit";
    pub const DESCRIPTION: &str = "description";
    pub const TEMPORALITY: &str = "temporality";
    pub const IS_MONOTONIC: &str = "is_monotonic";
    pub const VALUE: &str = "value";
    pub const COUNT: &str = "count";
    pub const SUM: &str = "sum";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    pub const BUCKET_BOUNDS: &str = "bucket_bounds";
    pub const BUCKET_COUNTS: &str = "bucket_counts";
    pub const EXP_SCALE: &str = "exp_scale";
    pub const EXP_ZERO_COUNT: &str = "exp_zero_count";
    pub const EXP_ZERO_THRESHOLD: &str = "exp_zero_threshold";
    pub const EXP_POSITIVE_OFFSET: &str = "exp_positive_offset";
    pub const EXP_POSITIVE_COUNTS: &str = "exp_positive_counts";
    pub const EXP_NEGATIVE_OFFSET: &str = "exp_negative_offset";
    pub const EXP_NEGATIVE_COUNTS: &str = "exp_negative_counts";
    pub const QUANTILES: &str = "quantiles";
    pub const QUANTILE_VALUES: &str = "quantile_values";
    pub const EXEMPLARS: &str = "exemplars";
    /// The row's series as stored (metric name, attributes, resource attributes), hashed to
    /// 128 bits (XXH3): the low 64 bits here, so that rows of one series share the id. Null in
    /// rows stored before it was added.
    pub const SERIES_ID: &str = "series_id";
    /// The high 64 bits of the same hash: two series that share a `series_id` differ here.
    pub const SERIES_CHECK: &str = "series_check";
}

/// Columns of `logs`.
pub mod log_col {
    pub const OBSERVED_TIME: &str = "observed_time";
    pub const SEVERITY_NUMBER: &str = "severity_number";
    pub const SEVERITY_TEXT: &str = "severity_text";
    pub const BODY: &str = "body";
    pub const EVENT_NAME: &str = "event_name";
}

/// Columns of `alerts`.
pub mod alert_col {
    pub const DETECTOR: &str = "detector";
    pub const SEVERITY: &str = "severity";
    pub const SUBJECT: &str = "subject";
    pub const SCORE: &str = "score";
    pub const THRESHOLD: &str = "threshold";
    pub const MESSAGE: &str = "message";
    pub const STATE: &str = "state";
    pub const FINGERPRINT: &str = "fingerprint";
    pub const LABELS: &str = "labels";
}

/// `Timestamp(Nanosecond, "UTC")`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Dictionary<Int32, Utf8>`: the type of low-cardinality text columns (service, model, status, …).
/// Dictionary-encoded in memory and on disk, so that filters and group-bys compare small keys.
pub fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `Map<Utf8, Utf8>`, exactly as [`new_string_map_builder`] builds it.
pub fn string_map_type() -> DataType {
    static TYPE: LazyLock<DataType> =
        LazyLock::new(|| new_string_map_builder(0).finish().data_type().clone());
    TYPE.clone()
}

/// The builder of every `Map<Utf8, Utf8>` column, for `rows` rows. Builders start small and
/// grow, so that a small request does not hold kilobytes of empty capacity in the buffers.
pub fn new_string_map_builder(rows: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::with_capacity(
        None,
        StringBuilder::with_capacity(rows * 4, 0),
        StringBuilder::with_capacity(rows * 4, 0),
        rows,
    )
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn f(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

static SPANS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use span_col::*;
    let s = DataType::Utf8;
    let i = DataType::Int64;
    Arc::new(Schema::new(vec![
        f(col::TIME, timestamp_type(), false),
        f(END_TIME, timestamp_type(), false),
        f(DURATION_NS, i.clone(), false),
        f(col::TRACE_ID, s.clone(), false),
        f(col::SPAN_ID, s.clone(), false),
        f(PARENT_SPAN_ID, s.clone(), true),
        f(TRACE_STATE, s.clone(), true),
        f(NAME, dict_type(), false),
        f(KIND, dict_type(), false),
        f(STATUS_CODE, dict_type(), false),
        f(STATUS_MESSAGE, s.clone(), true),
        f(col::SERVICE_NAME, dict_type(), false),
        f(col::SCOPE_NAME, dict_type(), true),
        f(col::SCOPE_VERSION, dict_type(), true),
        f(col::RESOURCE_ATTRIBUTES, string_map_type(), false),
        f(col::ATTRIBUTES, string_map_type(), false),
        f(EVENTS, s.clone(), true),
        f(LINKS, s.clone(), true),
        f(col::FLAGS, DataType::UInt32, false),
        f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        f(DROPPED_EVENTS_COUNT, DataType::UInt32, false),
        f(DROPPED_LINKS_COUNT, DataType::UInt32, false),
        f(GEN_AI_SYSTEM, dict_type(), true),
        f(GEN_AI_OPERATION, dict_type(), true),
        f(REQUEST_MODEL, dict_type(), true),
        f(RESPONSE_MODEL, dict_type(), true),
        f(INPUT_TOKENS, i.clone(), true),
        f(OUTPUT_TOKENS, i.clone(), true),
        f(TOTAL_TOKENS, i.clone(), true),
        f(CACHE_READ_TOKENS, i.clone(), true),
        f(CACHE_CREATION_TOKENS, i.clone(), true),
        f(REASONING_TOKENS, i.clone(), true),
        f(TTFT_NS, i.clone(), true),
        f(FINISH_REASONS, list_of(DataType::Utf8), true),
        f(REQUEST_TEMPERATURE, DataType::Float64, true),
        f(REQUEST_MAX_TOKENS, i, true),
        f(ERROR_TYPE, dict_type(), true),
        f(COST_USD, DataType::Float64, true),
        f(INPUT_MESSAGES, s.clone(), true),
        f(OUTPUT_MESSAGES, s, true),
    ]))
});

static METRICS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use metric_col::*;
    let s = DataType::Utf8;
    let d = DataType::Float64;
    let u = DataType::UInt64;
    Arc::new(Schema::new(vec![
        f(col::TIME, timestamp_type(), false),
        f(START_TIME, timestamp_type(), true),
        f(METRIC_NAME, dict_type(), false),
        f(METRIC_TYPE, dict_type(), false),
        f(UNIT, dict_type(), true),
        f(DESCRIPTION, dict_type(), true),
        f(col::SERVICE_NAME, dict_type(), false),
        f(col::SCOPE_NAME, dict_type(), true),
        f(col::SCOPE_VERSION, dict_type(), true),
        f(col::RESOURCE_ATTRIBUTES, string_map_type(), false),
        f(col::ATTRIBUTES, string_map_type(), false),
        f(TEMPORALITY, dict_type(), true),
        f(IS_MONOTONIC, DataType::Boolean, true),
        f(VALUE, d.clone(), true),
        f(COUNT, u.clone(), true),
        f(SUM, d.clone(), true),
        f(MIN, d.clone(), true),
        f(MAX, d.clone(), true),
        f(BUCKET_BOUNDS, list_of(d.clone()), true),
        f(BUCKET_COUNTS, list_of(u.clone()), true),
        f(EXP_SCALE, DataType::Int32, true),
        f(EXP_ZERO_COUNT, u.clone(), true),
        f(EXP_ZERO_THRESHOLD, d.clone(), true),
        f(EXP_POSITIVE_OFFSET, DataType::Int32, true),
        f(EXP_POSITIVE_COUNTS, list_of(u.clone()), true),
        f(EXP_NEGATIVE_OFFSET, DataType::Int32, true),
        f(EXP_NEGATIVE_COUNTS, list_of(u), true),
        f(QUANTILES, list_of(d.clone()), true),
        f(QUANTILE_VALUES, list_of(d), true),
        f(EXEMPLARS, s, true),
        f(col::FLAGS, DataType::UInt32, false),
        f(SERIES_ID, DataType::UInt64, true),
        f(SERIES_CHECK, DataType::UInt64, true),
    ]))
});

static LOGS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use log_col::*;
    let s = DataType::Utf8;
    Arc::new(Schema::new(vec![
        f(col::TIME, timestamp_type(), false),
        f(OBSERVED_TIME, timestamp_type(), true),
        f(SEVERITY_NUMBER, DataType::Int32, false),
        f(SEVERITY_TEXT, dict_type(), true),
        f(BODY, s.clone(), true),
        f(EVENT_NAME, dict_type(), true),
        f(col::TRACE_ID, s.clone(), true),
        f(col::SPAN_ID, s.clone(), true),
        f(col::FLAGS, DataType::UInt32, false),
        f(col::SERVICE_NAME, dict_type(), false),
        f(col::SCOPE_NAME, dict_type(), true),
        f(col::SCOPE_VERSION, dict_type(), true),
        f(col::RESOURCE_ATTRIBUTES, string_map_type(), false),
        f(col::ATTRIBUTES, string_map_type(), false),
        f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ]))
});

static ALERTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use alert_col::*;
    let s = DataType::Utf8;
    Arc::new(Schema::new(vec![
        f(col::TIME, timestamp_type(), false),
        f(DETECTOR, dict_type(), false),
        f(SEVERITY, dict_type(), false),
        f(SUBJECT, s.clone(), false),
        f(SCORE, DataType::Float64, true),
        f(THRESHOLD, DataType::Float64, true),
        f(MESSAGE, s.clone(), false),
        f(STATE, dict_type(), false),
        f(FINGERPRINT, s, false),
        f(LABELS, string_map_type(), false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_are_unique() {
        for table in Table::ALL {
            assert_eq!(Table::from_tag(table.tag()), Some(table));
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
        assert_eq!(Table::from_tag(0), None);
    }

    #[test]
    fn every_table_has_a_non_null_utc_time_column_first() {
        for table in Table::ALL {
            let schema = table.schema();
            let time = schema.field(0);
            assert_eq!(time.name(), col::TIME);
            assert_eq!(time.data_type(), &timestamp_type());
            assert!(!time.is_nullable());
        }
    }
}
