//! The Flight SQL door, through real clients: the ADBC Flight SQL driver and pyarrow's Flight
//! client (Python, from PyPI), and arrow-flight's Rust client sending the requests Grafana's two
//! Flight SQL datasources send. Each answer is checked against `/api/v1/sql`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use serde_json::Value;
use tonic::transport::Channel;
use vigil_tests::{Collector, one, python, repo_root, vigil_bin};

/// Loads `spans` of run `run` through loadgen and waits until they are acknowledged.
fn load(c: &Collector, run: &str, spans: u64) {
    let output = Command::new(vigil_bin())
        .args([
            "loadgen",
            "--quiet",
            "--endpoint",
            &c.grpc_url(),
            "--run-id",
            run,
        ])
        .args([
            "--rate",
            "0",
            "--spans",
            &spans.to_string(),
            "--duration",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn client(c: &Collector) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", c.flight_sql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

/// Runs `sql` as Grafana's datasources do (one `CommandStatementQuery`, its single endpoint's
/// ticket), returning the batches and how many endpoints the answer had.
async fn grafana_query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<(usize, Vec<RecordBatch>), tonic::Status> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let endpoints = info.endpoint.len();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?
        .try_collect()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    Ok((endpoints, batches))
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

#[test]
fn adbc_and_pyarrow_get_the_rows_sql_over_http_gets() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    load(&c, "fsql", 5_000);
    let output = Command::new(python())
        .arg(repo_root().join("tests/python/flight_sql_clients.py"))
        .args(["--uri", &c.flight_sql_url(), "--run-id", "fsql"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Python clients failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let by_service: BTreeMap<String, u64> = runtime
        .block_on(c.sql(
            "SELECT service_name, count(*) AS n FROM spans WHERE resource_attributes['loadgen.run'] = 'fsql' GROUP BY 1",
        ))
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["service_name"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    let adbc = &seen["adbc"];
    let adbc_by_service: BTreeMap<String, u64> =
        serde_json::from_value(adbc["spans_by_service"].clone()).unwrap();
    assert_eq!(adbc_by_service, by_service);
    let total: u64 = by_service.values().sum();
    assert!(total >= 5_000, "{total}");
    assert_eq!(adbc["with_parameter"], total);
    let chat_over_100 = runtime
        .block_on(c.sql(
            "SELECT count(*) AS n FROM spans WHERE service_name = 'chat-api' AND input_tokens > 100",
        ))
        .unwrap();
    assert_eq!(adbc["two_parameters"], *one(&chat_over_100, "n"));
    assert_eq!(adbc["time_type"], "timestamp[ns, tz=UTC]");
    // `evaluations` is the analyzer's, which `vigil serve` runs by default.
    let tables = serde_json::json!([
        "vigil.public.alerts",
        "vigil.public.evaluations",
        "vigil.public.gpu_minutes",
        "vigil.public.llm_minutes",
        "vigil.public.logs",
        "vigil.public.metrics",
        "vigil.public.spans"
    ]);
    assert_eq!(adbc["tables"], tables);
    assert_eq!(
        adbc["table_types"],
        serde_json::json!(["BASE TABLE", "VIEW"])
    );
    assert!(
        adbc["spans_columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "input_tokens")
    );
    assert_eq!(adbc["vendor_name"], "vigil");

    let plain = &seen["flight"];
    assert_eq!(plain["endpoints"], 1);
    assert_eq!(plain["count"], total);
    assert_eq!(plain["catalogs"], serde_json::json!(["vigil"]));
    assert_eq!(plain["tables"], tables);
    assert_eq!(plain["spans_schema_has_time"], true);
    assert_eq!(plain["read_only"], true);
    for (list, at_least) in [
        ("keywords", 300),
        ("numeric_functions", 20),
        ("string_functions", 20),
        ("datetime_functions", 10),
    ] {
        assert!(
            plain[list].as_u64().unwrap() >= at_least,
            "{list}: {}",
            plain[list]
        );
    }
}

/// The requests Grafana's FlightSQL plugin and its InfluxDB datasource (SQL mode) send: the
/// `select 1` health check, `GetSqlInfo` and `GetTables` with schemas for the query builder,
/// information_schema browsing with a `database` header, and SQL after macro expansion, all
/// answered with exactly one endpoint and a `Timestamp(Nanosecond)` time column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_datasource_requests_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), &[]).unwrap();
    tokio::task::block_in_place(|| load(&c, "grafana", 3_000));
    let mut client = client(&c).await;
    client.set_header("database", "vigil");

    let (endpoints, batches) = grafana_query(&mut client, "select 1").await.unwrap();
    assert_eq!((endpoints, rows(&batches)), (1, 1));

    let info = client.get_sql_info(vec![]).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let sql_info: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let codes = sql_info[0]
        .column(0)
        .as_primitive::<arrow::datatypes::UInt32Type>();
    for code in [
        SqlInfo::FlightSqlServerName,
        SqlInfo::SqlKeywords,
        SqlInfo::SqlNumericFunctions,
        SqlInfo::SqlStringFunctions,
        SqlInfo::SqlDatetimeFunctions,
        SqlInfo::SqlSystemFunctions,
        SqlInfo::SqlIdentifierQuoteChar,
    ] {
        assert!(
            codes.values().contains(&(code as u32)),
            "GetSqlInfo lacks {code:?}"
        );
    }

    let info = client
        .get_tables(CommandGetTables {
            table_types: vec!["BASE TABLE".into()],
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let tables: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names = tables[0]
        .column_by_name("table_name")
        .unwrap()
        .as_string::<i32>();
    // spans, metrics, logs, alerts, llm_minutes, gpu_minutes, and the analyzer's evaluations.
    assert_eq!(names.len(), 7);
    let schemas = tables[0].column_by_name("table_schema").unwrap();
    let schemas = schemas.as_binary::<i32>();
    for i in 0..names.len() {
        let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schemas.value(i)).unwrap();
        assert!(
            schema.field_with_name("time").is_ok(),
            "{}: {schema:?}",
            names.value(i)
        );
        // Grafana cannot read dictionaries: none are announced.
        assert!(
            schema
                .fields()
                .iter()
                .all(|f| !matches!(f.data_type(), DataType::Dictionary(..))),
            "{schema:?}"
        );
    }

    // The InfluxDB datasource browses with information_schema.
    let (_, batches) = grafana_query(
        &mut client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), 7);
    let (_, batches) = grafana_query(
        &mut client,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'spans'",
    )
    .await
    .unwrap();
    assert!(rows(&batches) > 30);

    // A panel's SQL after macro expansion: $__timeFilter(time) and $__dateBin(time).
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let to = (now + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let panel = format!(
        "SELECT date_bin(interval '60 second', time, timestamp '1970-01-01T00:00:00Z') AS time, \
         service_name, count(*) AS requests FROM spans \
         WHERE time >= '{from}' AND time <= '{to}' GROUP BY 1, 2 ORDER BY 1"
    );
    let (endpoints, batches) = grafana_query(&mut client, &panel).await.unwrap();
    assert_eq!(endpoints, 1);
    let total: i64 = batches
        .iter()
        .map(|b| {
            b.column_by_name("requests")
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    let stored = c.sql("SELECT count(*) AS n FROM spans").await.unwrap();
    assert_eq!(total, one(&stored, "n").as_i64().unwrap());
    let time = batches[0].schema().field_with_name("time").unwrap().clone();
    assert!(
        matches!(
            time.data_type(),
            DataType::Timestamp(TimeUnit::Nanosecond, _)
        ),
        "{time:?}"
    );
    let service = batches[0].column_by_name("service_name").unwrap();
    assert_eq!(service.data_type(), &DataType::Utf8);

    // Read-only, and errors say what was wrong.
    let error = grafana_query(&mut client, "DROP TABLE spans")
        .await
        .unwrap_err();
    assert!(error.message().contains("read-only"), "{error}");
    let error = grafana_query(&mut client, "SELECT nope FROM spans")
        .await
        .unwrap_err();
    assert!(error.message().contains("nope"), "{error}");

    // A large result streams in many batches rather than arriving whole.
    let (_, batches) = grafana_query(
        &mut client,
        "SELECT value, repeat('x', 100) AS pad FROM generate_series(1, 300000)",
    )
    .await
    .unwrap();
    assert_eq!(rows(&batches), 300_000);
    assert!(batches.len() > 10, "{} batches", batches.len());

    // A prepared statement with a parameter, from the Rust client as well.
    let mut prepared = client
        .prepare(
            "SELECT count(*) AS n FROM spans WHERE service_name = $1".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    let parameter = RecordBatch::try_from_iter([(
        "$1",
        std::sync::Arc::new(arrow::array::StringArray::from(vec!["chat-api"])) as _,
    )])
    .unwrap();
    prepared.set_parameters(parameter).unwrap();
    let info = prepared.execute().await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let expected = c
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'chat-api'")
        .await
        .unwrap();
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        one(&expected, "n").as_i64().unwrap()
    );
    prepared.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
