//! The DataFusion side of storage: each table is a [`TableProvider`] whose scan unions the
//! in-memory buffers and the Parquet files, skipping hour partitions outside the query's time range.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use vigil_schemas::{Table, col};

use crate::storage::Store;

/// One of vigil's tables as DataFusion sees it.
#[derive(Clone)]
pub struct VigilTable {
    table: Table,
    store: Arc<Store>,
}

impl std::fmt::Debug for VigilTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VigilTable")
            .field("table", &self.table)
            .finish()
    }
}

impl VigilTable {
    /// The provider for `table`, reading from `store`.
    pub fn new(table: Table, store: Arc<Store>) -> VigilTable {
        VigilTable { table, store }
    }
}

/// A literal as nanoseconds since the epoch, if it is a time.
fn literal_ns(value: &ScalarValue) -> Option<i64> {
    let ns_type = DataType::Timestamp(TimeUnit::Nanosecond, None);
    match value.cast_to(&ns_type).ok()? {
        ScalarValue::TimestampNanosecond(Some(ns), _) => Some(ns),
        _ => None,
    }
}

/// Narrows `[lo, hi]` by one conjunct of the WHERE clause, if it bounds `time`.
fn narrow(expr: &Expr, lo: &mut i64, hi: &mut i64) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            narrow(left, lo, hi);
            narrow(right, lo, hi);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, literal, op) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => (c, v, *op),
                (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                    Some(op) => (c, v, op),
                    None => return,
                },
                _ => return,
            };
            if column.name != col::TIME {
                return;
            }
            let Some(ns) = literal_ns(literal) else {
                return;
            };
            match op {
                Operator::Gt | Operator::GtEq => *lo = (*lo).max(ns),
                Operator::Lt | Operator::LtEq => *hi = (*hi).min(ns),
                Operator::Eq => {
                    *lo = (*lo).max(ns);
                    *hi = (*hi).min(ns);
                }
                _ => {}
            }
        }
        Expr::Between(between) if !between.negated => {
            if let (Expr::Column(c), Expr::Literal(a, _), Expr::Literal(b, _)) = (
                between.expr.as_ref(),
                between.low.as_ref(),
                between.high.as_ref(),
            ) && c.name == col::TIME
                && let (Some(a), Some(b)) = (literal_ns(a), literal_ns(b))
            {
                *lo = (*lo).max(a);
                *hi = (*hi).min(b);
            }
        }
        _ => {}
    }
}

/// The `time` range the filters allow, as `[lo, hi]` nanoseconds.
pub fn time_range(filters: &[Expr]) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    for f in filters {
        narrow(f, &mut lo, &mut hi);
    }
    (lo, hi)
}

#[async_trait]
impl TableProvider for VigilTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Pruning is by hour and row group only, so DataFusion still applies every filter.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let snapshot = self.store.snapshot(self.table);
        let (lo, hi) = time_range(filters);
        let target_partitions = state.config_options().execution.target_partitions.max(1);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let files: Vec<_> = snapshot
            .files
            .iter()
            .filter(|f| f.overlaps(lo, hi))
            .collect();
        if !files.is_empty() {
            let mut groups: Vec<Vec<PartitionedFile>> =
                vec![Vec::new(); target_partitions.min(files.len())];
            let group_count = groups.len();
            for (i, f) in files.iter().enumerate() {
                groups[i % group_count].push(f.partitioned()?);
            }
            // The session's Parquet options, and footers and page indexes
            // kept in the runtime's metadata cache: files never change once written, and
            // reading ~300 footers again cost every query ~100 ms.
            let mut options = TableParquetOptions {
                global: state.config_options().execution.parquet.clone(),
                ..TableParquetOptions::default()
            };
            // Only `spans` and `logs` files have bloom filters (on `trace_id`); looking for
            // them in the others' column chunks cost a scan ~0.1 ms a file for nothing.
            options.global.bloom_filter_on_read &= matches!(self.table, Table::Spans | Table::Logs);
            let runtime = state.runtime_env();
            let store = runtime.object_store(ObjectStoreUrl::local_filesystem())?;
            let readers = CachedParquetFileReaderFactory::new(
                store,
                runtime.cache_manager.get_file_metadata_cache(),
            );
            let source = Arc::new(
                ParquetSource::new(schema.clone())
                    .with_table_parquet_options(options)
                    .with_parquet_file_reader_factory(Arc::new(readers)),
            );
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(DataSourceExec::from_data_source(config));
        }

        if !snapshot.batches.is_empty() || plans.is_empty() {
            let mut partitions =
                vec![Vec::new(); target_partitions.min(snapshot.batches.len()).max(1)];
            let count = partitions.len();
            for (i, batch) in snapshot.batches.into_iter().enumerate() {
                partitions[i % count].push(batch);
            }
            let memory =
                MemorySourceConfig::try_new(&partitions, schema.clone(), projection.cloned())?
                    .with_limit(limit);
            plans.push(DataSourceExec::from_data_source(memory));
        }

        if plans.len() == 1 {
            Ok(plans.remove(0))
        } else {
            UnionExec::try_new(plans)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col as column, lit};

    #[test]
    fn time_bounds_come_from_comparisons_and_between() {
        let ts = |ns: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(ns),
                Some("UTC".into()),
            ))
        };
        let filters = vec![
            column("time")
                .gt_eq(ts(100))
                .and(column("time").lt(ts(200))),
            column("name").eq(lit("x")),
        ];
        assert_eq!(time_range(&filters), (100, 200));
        let filters = vec![column("time").between(ts(5), ts(7))];
        assert_eq!(time_range(&filters), (5, 7));
        assert_eq!(time_range(&[]), (i64::MIN, i64::MAX));
    }
}
