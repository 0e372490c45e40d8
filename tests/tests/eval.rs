//! `vigil eval drift-trace`: the drift detector over a real production trace (the vendored Azure
//! LLM inference trace), replayed back to back; `vigil eval csv`: the anomaly scorer over a NAB
//! series; and clear errors for malformed input to both.

use vigil_tests::{repo_root, run_vigil};

fn trace(name: &str) -> String {
    repo_root()
        .join(format!(
            "analyzer/tests/data/azure-llm-2023/AzureLLMInferenceTrace_{name}.csv"
        ))
        .display()
        .to_string()
}

#[test]
fn a_real_trace_replayed_raises_no_drift_and_a_shift_on_top_of_it_does() {
    let code = trace("code");
    let (status, stdout, stderr) = run_vigil(&[
        "eval",
        "drift-trace",
        &code,
        "--hours",
        "1",
        "--mixture-components",
        "0",
        // An hour of memory rather than the default day: the path is the same, and a debug
        // build replays a day in minutes.
        "--weather-memory",
        "1h",
    ])
    .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("8819 requests") && stdout.contains("false alarms: 0 in 1.0 judged hours"),
        "{stdout}{stderr}"
    );

    let (status, stdout, stderr) = run_vigil(&[
        "eval",
        "drift-trace",
        &code,
        "--hours",
        "0",
        "--shift",
        "1.25",
        "--changes",
        "4",
        "--mixture-components",
        "0",
        "--weather-memory",
        "1h",
    ])
    .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("output tokens x1.25: caught 4 of 4 changes within 1 h"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_malformed_trace_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.csv");
    std::fs::write(
        &path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:50.99,lots,109\n",
    )
    .unwrap();
    let (status, _, stderr) = run_vigil(&["eval", "drift-trace", path.to_str().unwrap()]).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("trace.csv:3: input tokens \"lots\""),
        "{stderr}"
    );
}

/// `vigil eval csv` on data it was not written for: NAB's machine-temperature series (an
/// industrial machine's sensor, a real failure, anomaly windows labelled by NAB). Every row is
/// scored in [0, 1], in NAB's format; every score past the live threshold (0.81) falls inside one of
/// NAB's labelled windows, and at least one window holds one.
#[test]
fn a_nab_series_is_scored_in_nab_format_and_alerts_only_inside_its_labelled_windows() {
    let name = "realKnownCause/machine_temperature_system_failure.csv";
    let path = repo_root().join("scripts/nab/data").join(name);
    let (status, stdout, stderr) = run_vigil(&["eval", "csv", path.to_str().unwrap()]).unwrap();
    assert!(status.success(), "{stderr}");
    let windows: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("scripts/nab/labels/combined_windows.json"))
            .unwrap(),
    )
    .unwrap();
    let windows: Vec<(String, String)> = windows[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let bound = |i: usize| w[i].as_str().unwrap()[..19].to_string();
            (bound(0), bound(1))
        })
        .collect();
    assert_eq!(windows.len(), 4);
    let input_rows = std::fs::read_to_string(&path).unwrap().lines().count() - 1;
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    let mut rows = 0;
    let mut windows_hit = std::collections::BTreeSet::new();
    for line in lines {
        rows += 1;
        let fields: Vec<&str> = line.split(',').collect();
        let score: f64 = fields[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line}");
        if score >= 0.81 {
            let window = windows
                .iter()
                .position(|(from, to)| from.as_str() <= fields[0] && fields[0] <= to.as_str())
                .unwrap_or_else(|| panic!("an alert outside NAB's windows: {line}"));
            windows_hit.insert(window);
        }
    }
    assert_eq!(rows, input_rows);
    assert!(!windows_hit.is_empty(), "no labelled window alerted");
}

#[test]
fn a_malformed_series_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("series.csv");
    std::fs::write(
        &path,
        "timestamp,value\n2024-01-01 00:00:00,1.5\n2024-01-01 00:05:00,high\n",
    )
    .unwrap();
    let (status, _, stderr) = run_vigil(&["eval", "csv", path.to_str().unwrap()]).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("series.csv:3: \"high\" is not a number"),
        "{stderr}"
    );
}
