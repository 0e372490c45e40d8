//! How detectors read: SQL through a DataFusion `SessionContext` (in `vigil serve`), or anything
//! else that answers SQL with Arrow batches (a Flight SQL client, when the analyzer runs apart).

use std::time::SystemTime;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use async_trait::async_trait;
use datafusion::prelude::SessionContext;

use crate::AnalyzerError;

/// Answers SQL with Arrow record batches.
#[async_trait]
pub trait QuerySource: Send + Sync {
    async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, AnalyzerError>;
}

#[async_trait]
impl QuerySource for SessionContext {
    async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, AnalyzerError> {
        let frame = SessionContext::sql(self, sql)
            .await
            .map_err(|e| AnalyzerError::Query {
                sql: sql.to_string(),
                message: e.to_string(),
            })?;
        frame.collect().await.map_err(|e| AnalyzerError::Query {
            sql: sql.to_string(),
            message: e.to_string(),
        })
    }
}

/// A SQL timestamp literal for `time` comparisons.
pub fn ts(time: SystemTime) -> String {
    let nanos = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("arrow_cast({nanos}, 'Timestamp(Nanosecond, Some(\"UTC\"))')")
}

/// A SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Column `name` of every batch as optional strings (dictionary and numeric columns are cast).
pub fn strings(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<String>>, AnalyzerError> {
    let mut out = Vec::new();
    for batch in batches {
        let column = column(batch, name)?;
        let column = cast(column, &DataType::Utf8)
            .map_err(|e| AnalyzerError::Shape(format!("column {name}: {e}")))?;
        let column = column.as_string::<i32>();
        out.extend(
            (0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_string())),
        );
    }
    Ok(out)
}

/// Column `name` of every batch as optional f64s.
pub fn floats(batches: &[RecordBatch], name: &str) -> Result<Vec<Option<f64>>, AnalyzerError> {
    let mut out = Vec::new();
    for batch in batches {
        let column = column(batch, name)?;
        let column = cast(column, &DataType::Float64)
            .map_err(|e| AnalyzerError::Shape(format!("column {name}: {e}")))?;
        let column = column.as_primitive::<Float64Type>();
        out.extend((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i))));
    }
    Ok(out)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, AnalyzerError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| AnalyzerError::Shape(format!("query result has no column {name}")))
}
