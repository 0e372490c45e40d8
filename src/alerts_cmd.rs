//! `vigil alerts`: the alerts firing now and the recent state changes, from the `alerts` table.

use std::fmt::Write;

use anyhow::Context;
use serde_json::Value;

use crate::cli::AlertsArgs;

async fn sql(client: &reqwest::Client, url: &str, sql: &str) -> anyhow::Result<Vec<Value>> {
    let response = client
        .post(format!("{}/api/v1/sql", url.trim_end_matches('/')))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .with_context(|| format!("cannot reach the collector at {url}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("the collector answered with something that is not JSON")?;
    if !status.is_success() {
        anyhow::bail!(
            "query failed ({status}): {}",
            body.get("error").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(body
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

fn text(row: &Value, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn write_rows(out: &mut String, rows: &[Value]) {
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for row in rows {
        let score = row
            .get("score")
            .and_then(Value::as_f64)
            .map(|s| format!("{s:.3}"))
            .unwrap_or_default();
        let threshold = row
            .get("threshold")
            .and_then(Value::as_f64)
            .map(|s| format!("{s:.3}"))
            .unwrap_or_default();
        let message = text(row, "message");
        let message = message.split(" | evidence:").next().unwrap_or("");
        let _ = writeln!(
            out,
            "  {}  {:<8} {:<9} {:<20} score {score} (threshold {threshold})  {message}",
            text(row, "time"),
            text(row, "state"),
            text(row, "severity"),
            text(row, "alertname"),
        );
    }
}

/// The analyzer's health from the collector's status document: a detector that fails every
/// round raises no alert, so "no alerts" must say when it cannot be trusted.
async fn write_analyzer_health(
    out: &mut String,
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<()> {
    let response = client
        .get(format!("{}/api/v1/status", url.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("cannot reach the collector at {url}"))?;
    let status: Value = response
        .error_for_status()
        .context("the collector has no status endpoint")?
        .json()
        .await
        .context("the collector's status is not JSON")?;
    let Some(analyzer) = status.get("analyzer") else {
        let _ = writeln!(
            out,
            "Analyzer: not running in this collector ([analyzer] enabled = false)"
        );
        return Ok(());
    };
    let detectors = analyzer
        .get("detectors")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let failing: Vec<_> = detectors
        .iter()
        .filter(|(_, h)| h.get("consecutive_failures").and_then(Value::as_u64) > Some(0))
        .collect();
    if failing.is_empty() {
        let _ = writeln!(out, "Analyzer: ok ({} detectors running)", detectors.len());
        return Ok(());
    }
    let _ = writeln!(
        out,
        "Analyzer: DEGRADED: {} of {} detectors are failing; their alerts cannot fire",
        failing.len(),
        detectors.len()
    );
    for (name, health) in failing {
        let _ = writeln!(
            out,
            "  {name}: failed the last {} rounds ({} of {} in all); last at {}: {}",
            health["consecutive_failures"],
            health["failures"],
            health["runs"],
            text(health, "last_error_at"),
            text(health, "last_error").lines().next().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn run(args: AlertsArgs) -> anyhow::Result<()> {
    let client = crate::cli::query_client(args.token.as_deref(), args.ca_cert.as_deref())?;
    let mut out = String::new();
    write_analyzer_health(&mut out, &client, &args.url).await?;
    let _ = writeln!(out);
    let columns = "time, state, severity, detector, labels['alertname'] AS alertname, subject, score, threshold, message, fingerprint";
    let firing = sql(
        &client,
        &args.url,
        &format!(
            "SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY fingerprint ORDER BY time DESC) AS n FROM alerts) \
             WHERE n = 1 AND state = 'firing' ORDER BY time DESC"
        ),
    )
    .await?;
    let _ = writeln!(out, "Firing: {}", firing.len());
    write_rows(&mut out, &firing);
    let recent = sql(
        &client,
        &args.url,
        &format!(
            "SELECT {columns} FROM alerts ORDER BY time DESC LIMIT {}",
            args.limit
        ),
    )
    .await?;
    let _ = writeln!(
        out,
        "\nRecent changes (newest first, at most {}):",
        args.limit
    );
    write_rows(&mut out, &recent);
    if !firing.is_empty() {
        let _ = writeln!(
            out,
            "\nEvidence of an alert: vigil query \"SELECT message FROM alerts WHERE fingerprint = '<fingerprint>'\""
        );
    }
    // Every request is done: now the output, ending quietly if its reader has gone.
    drop(client);
    crate::cli::end_quietly_when_output_closes();
    print!("{out}");
    Ok(())
}
