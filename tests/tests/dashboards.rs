//! The shipped Grafana dashboards (`dashboards/*.json`): every panel's and every variable's
//! query runs against a vigil loaded as a real deployment loads it (LLM spans and vLLM metrics
//! from tests/python/llm_app.py, GPUs from the simulated fleet with faults, load with an
//! injected drift from `vigil loadgen`, the analyzer raising alerts), in the form Grafana's
//! InfluxDB datasource in SQL mode sends it: template variables and macros expanded as Grafana
//! expands them, one Flight SQL `CommandStatementQuery` with a bearer token and the `database`
//! header. A panel whose query fails or returns nothing fails the test. The JSON itself is
//! checked against Grafana's published schema (tests/grafana/check.mjs).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use arrow_flight::sql::client::FlightSqlServiceClient;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use tonic::transport::Channel;
use vigil_tests::{Collector, GpuExporter, python, repo_root, vigil_bin};

const TOKEN: &str = "grafana-reader-token";

/// The time range and interval Grafana would send for "last 15 minutes" on a wide panel.
struct Range {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval_s: i64,
}

/// Grafana's frontend interpolation, then the InfluxDB SQL datasource's macros
/// (grafana pkg/tsdb/influxdb/fsql/macro.go and the plugin SDK's sqlutil defaults).
fn expand(sql: &str, range: &Range, vars: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = sql.to_string();
    for (name, values) in vars {
        let quoted: Vec<String> = values
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "\\'")))
            .collect();
        out = out.replace(&format!("${{{name}:singlequote}}"), &quoted.join(","));
        out = out.replace(&format!("${{{name}}}"), &values.join(","));
    }
    out = out
        .replace("$__interval_ms", &(range.interval_s * 1000).to_string())
        .replace("$__from", &range.from.timestamp_millis().to_string())
        .replace("$__to", &range.to.timestamp_millis().to_string());
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    out = expand_macro(&out, "$__timeFilter", |column| {
        format!(
            "{column} >= '{}' AND {column} <= '{}'",
            rfc(range.from),
            rfc(range.to)
        )
    });
    out = expand_macro(&out, "$__dateBin", |column| {
        format!(
            "date_bin(interval '{} second', {column}, timestamp '1970-01-01T00:00:00Z')",
            range.interval_s
        )
    });
    assert!(
        !out.contains('$'),
        "an unexpanded variable or macro is left in {out}"
    );
    out
}

fn expand_macro(sql: &str, name: &str, with: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(&format!("{name}(")) {
        out.push_str(&rest[..at]);
        let after = &rest[at + name.len() + 1..];
        let close = after
            .find(')')
            .expect("macro without its closing parenthesis");
        out.push_str(&with(after[..close].trim()));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

async fn grafana_client(c: &Collector) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", c.flight_sql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(TOKEN.to_string());
    client.set_header("database", "vigil");
    client
}

/// One `CommandStatementQuery` and its single endpoint, as the datasource runs it.
async fn run(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    if info.endpoint.len() != 1 {
        return Err(format!(
            "{} endpoints, Grafana reads one",
            info.endpoint.len()
        ));
    }
    let ticket = info.endpoint[0].ticket.clone().ok_or("no ticket")?;
    client
        .do_get(ticket)
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())
}

/// The first column's distinct non-null values, as Grafana lists a query variable's options.
fn options(batches: &[RecordBatch]) -> Vec<String> {
    let mut values = Vec::new();
    for batch in batches {
        let column = arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
        let column = column.as_string::<i32>();
        for i in 0..column.len() {
            if column.is_valid(i) && !values.contains(&column.value(i).to_string()) {
                values.push(column.value(i).to_string());
            }
        }
    }
    values
}

/// Whether the answer has something to draw: a row with a non-null value outside `time`, and
/// for a time series a `time` column of `Timestamp(Nanosecond)`.
fn check_answer(batches: &[RecordBatch], time_series: bool) -> Result<usize, String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Err("no rows".into());
    }
    let schema = batches[0].schema();
    if time_series {
        match schema
            .field_with_name("time")
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::Timestamp(TimeUnit::Nanosecond, _)) => {}
            other => return Err(format!("time series without a nanosecond time: {other:?}")),
        }
    }
    let has_value = batches.iter().any(|batch| {
        batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .any(|(field, column)| field.name() != "time" && column.len() > column.null_count())
    });
    if !has_value {
        return Err(format!("{rows} rows, every value null"));
    }
    Ok(rows)
}

fn write_config(path: &Path) {
    std::fs::write(
        path,
        format!(
            r#"[auth]
query_tokens = ["{TOKEN}"]

[analyzer]
interval = "1s"

[analyzer.gpu]
window = "6s"
baseline_window = "30s"
resolve_after = "6s"

[analyzer.drift]
window = "10s"
evaluate_every = "1s"
reference_length = "25s"
min_samples = 100
for_duration = "2s"
resolve_after = "10m"
"#
        ),
    )
    .unwrap();
}

/// Loads vigil as a deployment would be, and waits for a GPU alert and a drift alert.
async fn loaded_collector(dir: &Path) -> Loaded {
    let config = dir.join("vigil.toml");
    write_config(&config);
    let collector =
        Collector::start(&dir.join("data"), &["--config", config.to_str().unwrap()]).unwrap();
    // The app first: its history, then live requests while the faults start, so that the GPU
    // alerts find the models served from their hosts.
    let mut app = Command::new(python())
        .arg(repo_root().join("tests/python/llm_app.py"))
        .args(["--endpoint", &collector.http_url(), "--calls", "600"])
        .args(["--minutes", "10", "--live-seconds", "240"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("llm_app.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(app.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(
        first.contains("\"history\""),
        "llm_app.py did not send its history: {first:?}\n{}",
        std::fs::read_to_string(dir.join("llm_app.log")).unwrap_or_default()
    );
    let exporter = GpuExporter::start(
        &[
            "--simulate",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--interval",
            "1s",
            "--otlp-endpoint",
            &collector.grpc_url(),
            "--fault",
            "thermal:0/1:0s:10m",
            "--fault",
            "ecc-storm:1/2:0s:10m",
            "--fault",
            "pcie-downtrain:1/3:0s",
            "--fault",
            "straggler:0/0:0s",
        ],
        &dir.join("exporter.log"),
    )
    .unwrap();
    let mut loadgen = Command::new(vigil_bin())
        .args(["loadgen", "--quiet", "--rate", "300", "--duration", "90"])
        .args(["--endpoint", &collector.grpc_url()])
        .args(["--drift-after", "25s", "--drift-output-tokens", "1.6"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut client = grafana_client(&collector).await;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let sql = "SELECT count(DISTINCT CASE WHEN detector = 'model_drift' THEN fingerprint END) AS drift, \
                   count(DISTINCT CASE WHEN detector LIKE 'gpu%' THEN fingerprint END) AS gpu \
                   FROM alerts WHERE state = 'firing'";
        let counts = match run(&mut client, sql).await {
            Ok(batches) if batches.iter().any(|b| b.num_rows() > 0) => {
                let batch = batches.iter().find(|b| b.num_rows() > 0).unwrap();
                let count = |name: &str| {
                    batch
                        .column_by_name(name)
                        .unwrap()
                        .as_primitive::<arrow::datatypes::Int64Type>()
                        .value(0)
                };
                (count("drift"), count("gpu"))
            }
            _ => (0, 0),
        };
        if counts.0 > 0 && counts.1 > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drift and GPU alerts within 150 s (drift, gpu firing: {counts:?})\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = loadgen.kill();
    let _ = loadgen.wait();
    Loaded {
        collector,
        _exporter: exporter,
        _app: KillOnDrop(app),
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Loaded {
    collector: Collector,
    _exporter: GpuExporter,
    _app: KillOnDrop,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_panel_returns_data_from_a_loaded_vigil() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = loaded_collector(dir.path()).await;
    let collector = &loaded.collector;
    let mut client = grafana_client(collector).await;
    let now = Utc::now();
    let range = Range {
        from: now - chrono::Duration::minutes(15),
        to: now + chrono::Duration::seconds(5),
        interval_s: 15,
    };

    let boards = repo_root().join("dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&boards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "five dashboards ship: {files:?}");

    let mut failures = Vec::new();
    let mut queries = 0;
    for file in &files {
        let board: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // Variables in order, each query seeing the ones before it (All selected).
        let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut some: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for variable in board["templating"]["list"].as_array().unwrap() {
            let var = variable["name"].as_str().unwrap().to_string();
            let sql = expand(variable["query"].as_str().unwrap(), &range, &all);
            queries += 1;
            let values = match run(&mut client, &sql).await {
                Ok(batches) => options(&batches),
                Err(e) => {
                    failures.push(format!("{name} variable {var}: {e}\n  {sql}"));
                    continue;
                }
            };
            if values.is_empty() {
                failures.push(format!("{name} variable {var}: no values\n  {sql}"));
                continue;
            }
            println!("{name}: ${var} = {values:?}");
            let multi = variable["multi"].as_bool().unwrap_or(false);
            // Grafana's default for a single-value variable is its first option; "two selected"
            // takes the first two of a multi-value one.
            let picked: Vec<String> = values
                .iter()
                .take(if multi { 2 } else { 1 })
                .cloned()
                .collect();
            all.insert(var.clone(), if multi { values } else { picked.clone() });
            some.insert(var, picked);
        }
        for panel in board["panels"].as_array().unwrap() {
            let Some(targets) = panel["targets"].as_array() else {
                continue;
            };
            let title = panel["title"].as_str().unwrap();
            assert!(
                panel["description"].as_str().is_some_and(|d| d.len() > 20),
                "{name}: panel {title:?} says nothing in its description"
            );
            for target in targets {
                let time_series = target["format"] == "time_series";
                for (selection, vars) in [("all", &all), ("two", &some)] {
                    let sql = expand(target["rawSql"].as_str().unwrap(), &range, vars);
                    queries += 1;
                    let outcome = match run(&mut client, &sql).await {
                        Ok(batches) => check_answer(&batches, time_series),
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(rows) => println!("{name}: {title} ({selection}): {rows} rows"),
                        Err(e) => {
                            failures.push(format!("{name}: {title} ({selection}): {e}\n  {sql}"))
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {queries} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{queries} dashboard queries returned data");

    // GPU alerts name the models served from their host while the fault held (chat-api runs
    // on sim-node-00, where the thermal fault is), in their evidence as in their webhook's
    // annotations.
    let sql = "SELECT message FROM alerts WHERE labels['Hostname'] = 'sim-node-00' \
               AND detector LIKE 'gpu%' AND state = 'firing'";
    let messages = options(&run(&mut client, sql).await.unwrap());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("\"served_models\":[{") && m.contains("chat-api")),
        "no GPU alert on sim-node-00 names the models served there: {messages:#?}"
    );

    // Without the token, the datasource's queries are refused.
    let channel = Channel::from_shared(format!("http://{}", collector.flight_sql))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut anonymous = FlightSqlServiceClient::new(channel);
    assert!(run(&mut anonymous, "SELECT 1").await.is_err());
}

#[test]
fn dashboards_are_generated_and_match_grafanas_schema() {
    let root = repo_root();
    let generated = Command::new("python3")
        .arg(root.join("dashboards/generate.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let grafana = root.join("tests/grafana");
    assert!(
        grafana.join("node_modules/@grafana/schema").exists(),
        "Grafana's schema is not installed: run scripts/test.sh (npm ci in tests/grafana)"
    );
    let check = Command::new("node")
        .arg(grafana.join("check.mjs"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The provisioned datasources are the ones the panels name.
    let datasources = std::fs::read_to_string(root.join("dashboards/datasources.yaml")).unwrap();
    for uid in ["uid: vigil-sql", "uid: vigil-traces"] {
        assert!(datasources.contains(uid), "datasources.yaml lacks {uid}");
    }
}
