//! `vigil query`: asks a running collector's SQL endpoint and prints the answer.

use std::io::Cursor;

use anyhow::{Context, bail};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;

use crate::cli::{OutputFormat, QueryArgs};

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/sql", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header(reqwest::header::ACCEPT, "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": args.sql }))
        .send()
        .await
        .with_context(|| format!("could not reach the collector at {url}; is `vigil serve` running?"))?;
    let status = response.status();
    let body = response.bytes().await.context("could not read the collector's answer")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("query refused ({status}): {message}");
    }
    let reader = StreamReader::try_new(Cursor::new(body), None).context("answer is not an Arrow IPC stream")?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().context("answer is a broken Arrow IPC stream")?;
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Table => {
            let table = arrow::util::pretty::pretty_format_batches(&batches)?;
            use std::io::Write;
            writeln!(out, "{table}")?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("{rows} row(s)");
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(schema))?;
            }
            for b in &batches {
                writer.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(out);
            for b in &batches {
                writer.write(b)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}
