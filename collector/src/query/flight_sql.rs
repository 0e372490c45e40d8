//! Arrow Flight SQL: the door for ADBC, pyarrow, notebooks, Grafana's FlightSQL and InfluxDB
//! (SQL mode) datasources, and the terminal dashboard. Every statement goes through the one
//! [`QueryEngine`] (its read-only rule, turns, time limit and function bounds), and results stream
//! batch by batch: a full scan costs one batch of memory, not the result.
//!
//! Dictionary-encoded columns (service, model, status, …) are sent as plain strings: Grafana's
//! Flight SQL clients cannot read dictionaries, and the cast costs little next to encoding
//! (BENCHMARKS.md).

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlNullOrdering,
    SqlSupportedCaseSensitivity, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::{QueryEngine, QueryError};
use crate::auth::Auth;
use tonic::service::interceptor::InterceptedService;

/// Prepared statements kept at most; past it, the oldest is closed (a client that never closes
/// its statements must not grow the collector).
const MAX_PREPARED: usize = 1024;

/// Checks a request's query token before it reaches the service.
#[derive(Clone)]
pub struct QueryToken(Auth);

impl tonic::service::Interceptor for QueryToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.0
            .query(authorization)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        Ok(request)
    }
}

/// The Flight SQL service over `engine`, behind the query tokens of `auth`. Clients send
/// `Authorization: Bearer <token>`; those that begin with a handshake send `Basic` with the token
/// as the password and get it back as their bearer token.
pub fn service(
    engine: QueryEngine,
    auth: Auth,
) -> InterceptedService<FlightServiceServer<VigilFlightSql>, QueryToken> {
    InterceptedService::new(
        FlightServiceServer::new(VigilFlightSql {
            engine,
            prepared: Arc::new(Mutex::new(PreparedStatements::default())),
        }),
        QueryToken(auth),
    )
}

#[derive(Clone)]
pub struct VigilFlightSql {
    engine: QueryEngine,
    prepared: Arc<Mutex<PreparedStatements>>,
}

/// A prepared statement: its SQL and the parameters last bound to it.
#[derive(Debug, Clone)]
struct Statement {
    sql: String,
    parameters: Vec<ScalarValue>,
}

#[derive(Default)]
struct PreparedStatements {
    by_handle: HashMap<u64, Statement>,
    order: std::collections::VecDeque<u64>,
}

impl PreparedStatements {
    fn insert(&mut self, statement: Statement) -> u64 {
        let handle = rand::random::<u64>();
        self.by_handle.insert(handle, statement);
        self.order.push_back(handle);
        while self.by_handle.len() > MAX_PREPARED {
            if let Some(oldest) = self.order.pop_front() {
                self.by_handle.remove(&oldest);
            }
        }
        handle
    }
}

fn handle_bytes(handle: u64) -> bytes::Bytes {
    bytes::Bytes::from(handle.to_string())
}

fn parse_handle(bytes: &[u8]) -> Result<u64, Status> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Status::invalid_argument("not a prepared statement handle of this server"))
}

impl VigilFlightSql {
    fn statement(&self, handle: &[u8]) -> Result<Statement, Status> {
        let handle = parse_handle(handle)?;
        self.prepared
            .lock()
            .expect("prepared statements")
            .by_handle
            .get(&handle)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(
                    "no such prepared statement (closed, or evicted after 1,024 newer ones)",
                )
            })
    }

    /// Runs `sql` and streams its result as Flight data, dictionaries decoded.
    async fn stream(
        &self,
        sql: &str,
        parameters: Vec<ScalarValue>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let result = self.engine.stream(sql, parameters).await.map_err(status)?;
        let schema = plain_schema(&result.schema);
        let target = schema.clone();
        let batches = result
            .batches
            .map(move |batch| {
                batch
                    .map_err(|e| FlightError::Tonic(Box::new(status(e))))
                    .and_then(|b| plain_batch(&b, &target).map_err(FlightError::Arrow))
            })
            .boxed();
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(data)))
    }

    /// A FlightInfo with one endpoint whose ticket is `ticket`, for a result of `schema`.
    fn info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Every table of the engine: (catalog, schema, table, provider).
    async fn tables(&self) -> Vec<(String, String, String, Arc<dyn TableProvider>)> {
        let ctx = self.engine.context();
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    if let Ok(Some(table)) = schema.table(&table_name).await {
                        out.push((catalog_name.clone(), schema_name.clone(), table_name, table));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        out
    }
}

/// A single-batch answer (catalog listings, SQL info) as Flight data.
fn one_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, FlightError>,
) -> Response<<VigilFlightSql as FlightService>::DoGetStream> {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Response::new(Box::pin(data))
}

/// A query error as the gRPC status a client can act on.
fn status(error: QueryError) -> Status {
    match error {
        QueryError::Invalid(m) => Status::invalid_argument(m),
        QueryError::TooLarge(m) => Status::resource_exhausted(m),
        QueryError::Busy(m) => Status::unavailable(m),
        QueryError::Execution(m) => Status::internal(m),
    }
}

/// The schema with dictionary columns as their value type.
fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Dictionary(_, value) => {
                    Arc::new(f.as_ref().clone().with_data_type(value.as_ref().clone()))
                }
                _ => f.clone(),
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

fn plain_batch(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// A schema as the IPC message Flight SQL carries in prepared-statement answers.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
    Ok(message.0)
}

/// What `GetSqlInfo` answers: the server, its read-only SQL, and every keyword and function the
/// engine knows (Grafana's query editor completes from these lists).
fn sql_info(engine: &QueryEngine) -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let state = engine.context().state();
        let (mut numeric, mut string, mut datetime, mut system) = (
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
        );
        for (name, function) in state.scalar_functions() {
            let section = function.documentation().map(|d| d.doc_section.label);
            let list = match section {
                Some("Math Functions") => &mut numeric,
                Some(
                    "String Functions" | "Binary String Functions" | "Regular Expression Functions",
                ) => &mut string,
                Some("Time and Date Functions") => &mut datetime,
                _ => &mut system,
            };
            list.insert(name.to_string());
        }
        system.extend(state.aggregate_functions().keys().cloned());
        system.extend(state.window_functions().keys().cloned());
        let keywords: Vec<String> = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
            .iter()
            .map(|k| k.to_string())
            .collect();
        let list = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "vigil");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::FlightSqlServerBulkIngestion, false);
        info.append(
            SqlInfo::FlightSqlServerStatementTimeout,
            engine.limits().timeout_secs as i32,
        );
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
        );
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(
            SqlInfo::SqlQuotedIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        info.append(SqlInfo::SqlAllTablesAreSelectable, true);
        info.append(
            SqlInfo::SqlNullOrdering,
            SqlNullOrdering::SqlNullsSortedHigh as i32,
        );
        info.append(SqlInfo::SqlKeywords, keywords);
        info.append(SqlInfo::SqlNumericFunctions, list(numeric));
        info.append(SqlInfo::SqlStringFunctions, list(string));
        info.append(SqlInfo::SqlSystemFunctions, list(system));
        info.append(SqlInfo::SqlDatetimeFunctions, list(datetime));
        info.append(SqlInfo::SqlSearchStringEscape, "\\");
        info.append(SqlInfo::SqlExtraNameCharacters, "");
        info.append(SqlInfo::SqlSupportsColumnAliasing, true);
        info.append(SqlInfo::SqlNullPlusNullIsNull, true);
        info.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        info.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
        info.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
        info.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
        info.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
        info.append(SqlInfo::SqlSupportsNonNullableColumns, true);
        info.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
        info.append(SqlInfo::SqlSchemaTerm, "schema");
        info.append(SqlInfo::SqlProcedureTerm, "procedure");
        info.append(SqlInfo::SqlCatalogTerm, "catalog");
        info.append(SqlInfo::SqlCatalogAtStart, true);
        info.append(SqlInfo::SqlSelectForUpdateSupported, false);
        info.append(SqlInfo::SqlStoredProceduresSupported, false);
        info.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
        info.append(SqlInfo::SqlTransactionsSupported, false);
        info.append(SqlInfo::SqlBatchUpdatesSupported, false);
        info.append(SqlInfo::SqlSavepointsSupported, false);
        info.append(SqlInfo::SqlNamedParametersSupported, false);
        info.append(SqlInfo::SqlLocatorsUpdateCopy, false);
        info.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
        info.append(SqlInfo::SqlMaxStatementLength, 0i64);
        info.append(SqlInfo::SqlMaxStatements, 0i64);
        info.build().expect("the SQL info is well-formed")
    })
}

type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl FlightSqlService for VigilFlightSql {
    type FlightService = VigilFlightSql;

    /// The token was checked on the way in; the handshake hands it back as the bearer token
    /// the client sends from then on (clients such as JDBC always begin with one, also without
    /// credentials).
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|header| crate::auth::token_of(header).ok());
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().unwrap_or_default().into(),
        };
        let mut response: Response<HandshakeStream> =
            Response::new(Box::pin(futures::stream::once(async { Ok(answer) })));
        if let Some(token) = token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let prepared = self.engine.prepare(&query.query).await.map_err(status)?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        Self::info(
            &plain_schema(&prepared.result),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = String::from_utf8(ticket.statement_handle.to_vec()).map_err(|_| {
            Status::invalid_argument("the ticket is not a statement of this server")
        })?;
        self.stream(&sql, Vec::new()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let prepared = self.engine.prepare(&query.query).await.map_err(status)?;
        let handle = self
            .prepared
            .lock()
            .expect("prepared statements")
            .insert(Statement {
                sql: query.query,
                parameters: Vec::new(),
            });
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle_bytes(handle),
            dataset_schema: schema_bytes(&plain_schema(&prepared.result))?,
            parameter_schema: schema_bytes(&prepared.parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = parse_handle(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "{rows} rows of parameters: a query takes one row (run it once per row)"
            )));
        }
        let parameters = match batches.iter().find(|b| b.num_rows() == 1) {
            Some(batch) => batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(format!("a parameter: {e}")))?,
            None => Vec::new(),
        };
        let mut prepared = self.prepared.lock().expect("prepared statements");
        let statement = prepared.by_handle.get_mut(&handle).ok_or_else(|| {
            Status::not_found(
                "no such prepared statement (closed, or evicted after 1,024 newer ones)",
            )
        })?;
        statement.parameters = parameters;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle_bytes(handle)),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = self.statement(&query.prepared_statement_handle)?;
        let prepared = self.engine.prepare(&statement.sql).await.map_err(status)?;
        Self::info(
            &plain_schema(&prepared.result),
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let statement = self.statement(&query.prepared_statement_handle)?;
        self.stream(&statement.sql, statement.parameters).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let handle = parse_handle(&query.prepared_statement_handle)?;
        self.prepared
            .lock()
            .expect("prepared statements")
            .by_handle
            .remove(&handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for name in self.engine.context().catalog_names() {
            builder.append(name);
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        let ctx = self.engine.context();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for (catalog, schema, table, provider) in self.tables().await {
            builder
                .append(
                    catalog,
                    schema,
                    table,
                    table_type(provider.table_type()),
                    &plain_schema(&provider.schema()),
                )
                .map_err(|e| Status::internal(format!("cannot list the tables: {e}")))?;
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for kind in [TableType::Base, TableType::View] {
            builder.append(table_type(kind));
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info(&self.engine)).schema();
        Self::info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(sql_info(&self.engine));
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "vigil's Flight SQL does not answer {} (it is read-only, without keys or Substrait)",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The table types information_schema uses, so that a client filtering on them finds ours.
fn table_type(kind: TableType) -> &'static str {
    match kind {
        TableType::Base => "BASE TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}
