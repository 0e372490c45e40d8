//! The query engine and its doors: one DataFusion `SessionContext` over every table, and the
//! HTTP SQL endpoint that serves it read-only.

pub mod catalog;
pub mod sql_http;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use vigil_schemas::Table;

use crate::storage::Store;
use catalog::VigilTable;

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad SQL, an unknown table or column, or a statement that is not a read.
    #[error("{0}")]
    Invalid(String),
    /// The query was valid but failed while running.
    #[error("query failed: {0}")]
    Execution(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.strip_backtrace()),
            _ => QueryError::Execution(e.strip_backtrace()),
        }
    }
}

/// The one query engine every door (HTTP SQL, Flight SQL, PromQL, the analyzer) goes through.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
}

impl QueryEngine {
    /// An engine whose `spans`, `metrics`, `logs` and `alerts` read from `store`.
    pub fn new(store: Arc<Store>) -> Result<QueryEngine, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("vigil", "public");
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        for table in Table::ALL {
            ctx.register_table(
                table.name(),
                Arc::new(VigilTable::new(table, store.clone())),
            )?;
        }
        Ok(QueryEngine { ctx })
    }

    /// The DataFusion context, for in-process readers such as the analyzer.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only SQL statement: DDL, DML, COPY and `SET` are refused.
    pub async fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| match e {
                DataFusionError::Plan(msg) if msg.contains("not supported") => {
                    QueryError::Invalid(format!(
                        "{msg}; vigil's SQL endpoint is read-only (SELECT, EXPLAIN, SHOW, DESCRIBE)"
                    ))
                }
                other => other.into(),
            })?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok((schema, batches))
    }
}
