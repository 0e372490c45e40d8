//! `vigil query`: asks a running collector's SQL endpoint and prints the answer.

use std::io::Cursor;

use anyhow::{Context, bail};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;

use crate::cli::{OutputFormat, QueryArgs};

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/sql", args.url.trim_end_matches('/'));
    let client = crate::cli::query_client(args.token.as_deref(), args.ca_cert.as_deref())?;
    if let Some(runs) = args.bench {
        return bench(client, &url, &args.sql, runs.max(1)).await;
    }
    let (schema, batches) = fetch(&client, &url, &args.sql).await?;
    drop(client);
    crate::cli::end_quietly_when_output_closes();
    print(args.format, schema, &batches)
}

/// Runs the query `runs` times after a warm-up and prints client-side latency percentiles.
async fn bench(client: reqwest::Client, url: &str, sql: &str, runs: usize) -> anyhow::Result<()> {
    let (_, warm) = fetch(&client, url, sql).await?;
    let rows: usize = warm.iter().map(|b| b.num_rows()).sum();
    let mut millis = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = std::time::Instant::now();
        fetch(&client, url, sql).await?;
        millis.push(started.elapsed().as_secs_f64() * 1e3);
    }
    millis.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| millis[((millis.len() - 1) as f64 * p).round() as usize];
    drop(client);
    crate::cli::end_quietly_when_output_closes();
    println!(
        "{{\"runs\":{runs},\"rows\":{rows},\"min_ms\":{:.1},\"p50_ms\":{:.1},\"p95_ms\":{:.1},\"max_ms\":{:.1}}}",
        millis[0],
        pct(0.5),
        pct(0.95),
        millis[millis.len() - 1]
    );
    Ok(())
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    sql: &str,
) -> anyhow::Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    let response = client
        .post(url)
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.apache.arrow.stream",
        )
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .with_context(|| {
            format!("could not reach the collector at {url}; is `vigil serve` running?")
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .context("could not read the collector's answer")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("query refused ({status}): {message}");
    }
    let reader = StreamReader::try_new(Cursor::new(body), None)
        .context("answer is not an Arrow IPC stream")?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .context("answer is a broken Arrow IPC stream")?;
    Ok((schema, batches))
}

fn print(
    format: OutputFormat,
    schema: arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            // With the schema, an empty result still shows its column names.
            let table = arrow::util::pretty::pretty_format_batches_with_schema(schema, batches)?;
            use std::io::Write;
            writeln!(out, "{table}")?;
            out.flush()?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("{rows} {}", if rows == 1 { "row" } else { "rows" });
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
            for b in batches {
                writer.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
