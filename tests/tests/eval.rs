//! `vigil eval drift-trace`: the drift detector over a real production trace (the vendored Azure
//! LLM inference trace), replayed back to back, and a clear error for a malformed trace.

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
        "2",
        "--shift",
        "1.5",
        "--mixture-components",
        "0",
    ])
    .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("output tokens x1.5: caught after"),
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
