//! `vigil gpu-exporter --simulate` end to end: OTLP into a running collector (read back by SQL),
//! and the same run's `/metrics` page checked by promtool and scraped by a real Prometheus whose
//! PromQL answers agree with vigil's SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::{Collector, GpuExporter, Prometheus, promtool_check_metrics, run_vigil};

const DCGM_LABELS: [&str; 7] = [
    "gpu",
    "UUID",
    "pci_bus_id",
    "device",
    "modelName",
    "Hostname",
    "DCGM_FI_DRIVER_VERSION",
];

/// Lint findings promtool reports for dcgm-exporter's own names and labels, which a drop-in
/// replacement has to keep.
fn inherent_to_dcgm_naming(problem: &str) -> bool {
    let metric = problem.split_whitespace().next().unwrap_or("");
    problem.contains("label names should be written in 'snake_case' not 'camelCase'")
        || (metric.starts_with("DCGM_")
            && problem.contains("counter metrics should have \"_total\" suffix"))
        || (metric == "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"
            && problem.contains("should not include type 'counter'"))
}

fn promtool_check(page: &str) {
    let (code, report) = promtool_check_metrics(page);
    // promtool exits 1 when the page does not parse, 3 when it parses but has lint findings.
    match code {
        Some(0) => {}
        Some(3) => {
            let unexpected: Vec<&str> = report
                .lines()
                .filter(|line| !inherent_to_dcgm_naming(line))
                .collect();
            assert!(
                unexpected.is_empty(),
                "promtool found problems beyond dcgm-exporter's naming:\n{}",
                unexpected.join("\n")
            );
        }
        other => panic!("promtool check metrics failed ({other:?}):\n{report}"),
    }
}

fn labels_of(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The dcgm-exporter dashboard's (Grafana 12239) panels, `$instance` and `$gpu` as Grafana
/// expands them.
const DCGM_DASHBOARD: [&str; 9] = [
    "DCGM_FI_DEV_GPU_TEMP{instance=~\"$instance\", gpu=~\"$gpu\"}",
    "avg(DCGM_FI_DEV_GPU_TEMP{instance=~\"$instance\", gpu=~\"$gpu\"})",
    "DCGM_FI_DEV_POWER_USAGE{instance=~\"$instance\", gpu=~\"$gpu\"}",
    "sum(DCGM_FI_DEV_POWER_USAGE{instance=~\"$instance\", gpu=~\"$gpu\"})",
    "sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{instance=~\"$instance\", gpu=~\"$gpu\"}[1m]))",
    "DCGM_FI_DEV_SM_CLOCK{instance=~\"$instance\", gpu=~\"$gpu\"} * 1000000",
    "DCGM_FI_DEV_MEM_CLOCK{instance=~\"$instance\", gpu=~\"$gpu\"} * 1000000",
    "DCGM_FI_DEV_GPU_UTIL{instance=~\"$instance\", gpu=~\"$gpu\"}",
    "DCGM_FI_DEV_FB_USED{instance=~\"$instance\", gpu=~\"$gpu\"}",
];

fn prometheus_api(base: &str, path: &str, params: &[(&str, String)]) -> Value {
    let answer: Value = reqwest::blocking::Client::new()
        .get(format!("{base}{path}"))
        .query(params)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        answer["status"], "success",
        "{base}{path} {params:?}: {answer}"
    );
    answer["data"].clone()
}

/// The label sets of a query's result, job and instance included.
fn series_of(data: &Value) -> BTreeSet<String> {
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"].to_string())
        .collect()
}

/// Grafana's dcgm-exporter dashboard over vigil (OTLP from the exporter) and over Prometheus
/// (scraping the exporter's page): its variables list the same values and its panels show the
/// same series, with `All` and with two values selected.
fn same_dashboard_series_in_vigil_and_prometheus(collector: &Collector, prometheus: &Prometheus) {
    let now = chrono::Utc::now().timestamp();
    let window = [("start", (now - 300).to_string()), ("end", now.to_string())];
    let mut variables: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for variable in ["instance", "gpu"] {
        // `label_values(DCGM_FI_DEV_GPU_TEMP, instance)`, as Grafana asks for it.
        let mut params = window.to_vec();
        params.push(("match[]", "DCGM_FI_DEV_GPU_TEMP".to_string()));
        let path = format!("/api/v1/label/{variable}/values");
        let theirs = prometheus_api(&prometheus.url, &path, &params);
        let ours = prometheus_api(&collector.query_url(), &path, &params);
        assert_eq!(
            ours, theirs,
            "label_values(DCGM_FI_DEV_GPU_TEMP, {variable})"
        );
        variables.insert(
            variable,
            theirs
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
        );
    }
    assert_eq!(variables["gpu"].len(), 2, "{variables:?}");
    let all = |values: &[String]| format!("({})", values.join("|"));
    let choices = [
        (all(&variables["instance"]), all(&variables["gpu"])),
        (
            variables["instance"][0].clone(),
            format!("({}|{})", variables["gpu"][0], variables["gpu"][1]),
        ),
        (all(&variables["instance"]), variables["gpu"][1].clone()),
    ];
    for panel in DCGM_DASHBOARD {
        for (instance, gpu) in &choices {
            let query = panel.replace("$instance", instance).replace("$gpu", gpu);
            // Grafana aligns a range query's start and end to its step (Prometheus has scraped
            // for a few seconds only: a longer step could end before its first sample).
            let step = 1;
            let params = [
                ("query", query.clone()),
                ("start", ((now - 60) / step * step).to_string()),
                ("end", (now / step * step).to_string()),
                ("step", step.to_string()),
            ];
            let theirs = series_of(&prometheus_api(
                &prometheus.url,
                "/api/v1/query_range",
                &params,
            ));
            let ours = series_of(&prometheus_api(
                &collector.query_url(),
                "/api/v1/query_range",
                &params,
            ));
            assert!(!theirs.is_empty(), "{query}: Prometheus has no series");
            assert_eq!(
                ours, theirs,
                "{query}: vigil's series differ from Prometheus'"
            );
            let instant = [("query", query.clone()), ("time", now.to_string())];
            let theirs = series_of(&prometheus_api(&prometheus.url, "/api/v1/query", &instant));
            let ours = series_of(&prometheus_api(
                &collector.query_url(),
                "/api/v1/query",
                &instant,
            ));
            assert_eq!(
                ours, theirs,
                "{query} (instant): vigil's series differ from Prometheus'"
            );
        }
    }
}

#[test]
fn simulated_fleet_reaches_sql_and_prometheus_with_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&dir.path().join("data"), &[]).unwrap();
    let ground_truth = dir.path().join("truth.csv");
    let mut exporter = GpuExporter::start(
        &[
            "--simulate",
            "--nodes",
            "2",
            "--gpus-per-node",
            "2",
            "--interval",
            "1s",
            "--otlp-endpoint",
            &collector.grpc_url(),
            "--fault",
            "pcie-downtrain:sim-node-01/0:0s",
            "--ground-truth",
            ground_truth.to_str().unwrap(),
        ],
        &dir.path().join("exporter.log"),
    )
    .unwrap();
    let target = exporter.target();
    // Scraped as a Prometheus user would, with `instance` set to the exporter's host name and
    // port: the `instance` vigil's OTLP path gives the same series.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string());
    let port = target.rsplit(':').next().unwrap().to_string();
    let prometheus = Prometheus::start_with(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vigil-gpu-exporter\n    static_configs:\n      - targets: ['{target}']\n    relabel_configs:\n      - target_label: instance\n        replacement: '{hostname}:{port}'\n"
        ),
        &[],
    )
    .unwrap();

    // Let Prometheus scrape a handful of rounds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = prometheus
            .query("count_over_time(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[5m])")
            .unwrap();
        let fewest = counts
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .fold(f64::MAX, f64::min);
        if counts.len() == 4 && fewest >= 5.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape 5 rounds of 4 GPUs in 60 s: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    same_dashboard_series_in_vigil_and_prometheus(&collector, &prometheus);
    let page = reqwest::blocking::get(&exporter.metrics_url)
        .unwrap()
        .text()
        .unwrap();
    promtool_check(&page);
    exporter.stop().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sql = |query: &str| runtime.block_on(collector.sql(query)).unwrap();

    // Every dcgm-exporter default field arrives with dcgm's labels and a plausible value.
    let rows = sql(
        "SELECT metric_name, min(value) AS lo, max(value) AS hi, count(DISTINCT attributes['UUID']) AS gpus \
         FROM metrics WHERE metric_name LIKE 'DCGM_%' GROUP BY metric_name",
    );
    let by_name: BTreeMap<String, (f64, f64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["metric_name"].as_str().unwrap().to_string(),
                (
                    r["lo"].as_f64().unwrap(),
                    r["hi"].as_f64().unwrap(),
                    r["gpus"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let plausible: [(&str, f64, f64); 16] = [
        ("DCGM_FI_DEV_SM_CLOCK", 300.0, 1980.0),
        ("DCGM_FI_DEV_MEM_CLOCK", 2619.0, 2619.0),
        ("DCGM_FI_DEV_GPU_TEMP", 20.0, 95.0),
        ("DCGM_FI_DEV_MEMORY_TEMP", 20.0, 105.0),
        ("DCGM_FI_DEV_POWER_USAGE", 50.0, 700.0),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 1e6, 1e12),
        ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 0.0, 1e6),
        ("DCGM_FI_DEV_GPU_UTIL", 0.0, 100.0),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", 0.0, 100.0),
        ("DCGM_FI_DEV_ENC_UTIL", 0.0, 100.0),
        ("DCGM_FI_DEV_DEC_UTIL", 0.0, 100.0),
        ("DCGM_FI_DEV_XID_ERRORS", 0.0, 0.0),
        ("DCGM_FI_DEV_FB_FREE", 0.0, 81559.0),
        ("DCGM_FI_DEV_FB_USED", 1.0, 81559.0),
        ("DCGM_FI_DEV_FB_RESERVED", 1.0, 81559.0),
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.0, 1.0),
    ];
    for (name, lo, hi) in plausible {
        let (min, max, gpus) = by_name
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("{name} missing from SQL; have {by_name:?}"));
        assert_eq!(gpus, 4, "{name} should come from 4 GPUs");
        assert!(
            min >= lo && max <= hi,
            "{name} in [{min}, {max}], expected within [{lo}, {hi}]"
        );
    }
    for name in [
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "DCGM_FI_DEV_PCIE_LINK_GEN",
    ] {
        assert!(by_name.contains_key(name), "{name} missing from SQL");
    }
    let labelled =
        sql("SELECT attributes FROM metrics WHERE metric_name = 'DCGM_FI_DEV_GPU_TEMP' LIMIT 1");
    let attributes = labelled[0]["attributes"].as_object().unwrap();
    for label in DCGM_LABELS {
        assert!(
            attributes.contains_key(label),
            "label {label} missing: {attributes:?}"
        );
    }
    assert_eq!(attributes["modelName"], "NVIDIA H100 80GB HBM3");
    // The downtrained link shows in SQL as it would on real hardware.
    let link = sql(
        "SELECT max(value) AS v FROM metrics WHERE metric_name = 'DCGM_FI_DEV_PCIE_LINK_WIDTH' \
         AND attributes['Hostname'] = 'sim-node-01' AND attributes['gpu'] = '0'",
    );
    assert_eq!(link[0]["v"].as_f64(), Some(8.0));
    let truth = std::fs::read_to_string(&ground_truth).unwrap();
    assert!(
        truth.starts_with("fault,host,gpu,uuid,start,end\npcie-downtrain,sim-node-01,0,GPU-"),
        "{truth}"
    );

    // Prometheus and SQL agree: the same series with the same labels, and every value Prometheus
    // scraped is one that vigil stored for that series (the page and OTLP share each round).
    for metric in [
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_PCIE_LINK_GEN",
    ] {
        let scraped = prometheus.query(&format!("{metric}[5m]")).unwrap();
        assert_eq!(scraped.len(), 4, "{metric}: {scraped:?}");
        let rows = sql(&format!(
            "SELECT attributes, value FROM metrics WHERE metric_name = '{metric}'"
        ));
        let mut stored: BTreeMap<BTreeMap<String, String>, BTreeSet<u64>> = BTreeMap::new();
        for row in &rows {
            stored
                .entry(labels_of(&row["attributes"]))
                .or_default()
                .insert(row["value"].as_f64().unwrap().to_bits());
        }
        assert_eq!(stored.len(), 4, "{metric}: SQL series {:?}", stored.keys());
        for series in &scraped {
            let labels = labels_of(&series["metric"]);
            let values = stored
                .get(&labels)
                .unwrap_or_else(|| panic!("{metric}: Prometheus series {labels:?} not in SQL"));
            let samples = series["values"].as_array().unwrap();
            assert!(samples.len() >= 5);
            for sample in samples {
                let value: f64 = sample[1].as_str().unwrap().parse().unwrap();
                assert!(
                    values.contains(&value.to_bits()),
                    "{metric} {labels:?}: Prometheus scraped {value}, SQL has no such value"
                );
            }
        }
        // An aggregate over the same series: the largest value either side has seen agrees to the
        // last round (SQL also holds the round exported at shutdown, after the last scrape).
        let promql_max = prometheus
            .query(&format!("max(max_over_time({metric}[5m]))"))
            .unwrap();
        let promql_max: f64 = promql_max[0]["value"][1].as_str().unwrap().parse().unwrap();
        let sql_max = stored
            .values()
            .flatten()
            .map(|bits| f64::from_bits(*bits))
            .fold(f64::MIN, f64::max);
        assert!(
            sql_max >= promql_max,
            "{metric}: SQL max {sql_max} < PromQL max {promql_max}"
        );
    }

    // vigil query prints the same thing a user would type.
    let (status, stdout, _) = run_vigil(&[
        "query",
        "--url",
        &collector.query_url(),
        "SELECT count(DISTINCT attributes['UUID']) AS gpus FROM metrics WHERE metric_name = 'DCGM_FI_DEV_SM_CLOCK'",
    ])
    .unwrap();
    assert!(status.success() && stdout.contains("| 4 "), "{stdout}");
}

#[test]
fn without_a_gpu_the_exporter_says_so_and_how_to_simulate() {
    let (status, _, stderr) =
        run_vigil(&["gpu-exporter", "--listen", "127.0.0.1:0", "--no-otlp"]).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("NVML could not be loaded"), "{stderr}");
    assert!(stderr.contains("vigil gpu-exporter --simulate"), "{stderr}");
}

#[test]
fn bad_fault_specs_are_refused_with_the_reason() {
    for (spec, expected) in [
        ("meltdown:0/1:1s", "unknown fault kind"),
        ("thermal:0:1s", "needs a GPU"),
        ("thermal:9/0:1s", "the fleet has 2 nodes"),
        ("thermal:0/1:later", "start \"later\""),
    ] {
        let (status, _, stderr) = run_vigil(&[
            "gpu-exporter",
            "--simulate",
            "--listen",
            "127.0.0.1:0",
            "--no-otlp",
            "--fault",
            spec,
        ])
        .unwrap();
        assert!(!status.success(), "{spec} accepted");
        assert!(stderr.contains(expected), "{spec}: {stderr}");
    }
}

/// `[[scrape]]`: vigil scrapes the exporter's page as Prometheus would. SQL and PromQL see the
/// values the page showed, with `up`; when the target dies, `up` turns 0 and its series are
/// stale at once (staleness markers), as in Prometheus.
#[test]
fn vigil_scrapes_the_exporter_page_and_marks_a_dead_target_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut exporter = GpuExporter::start(
        &[
            "--simulate",
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--interval",
            "2s",
        ],
        &dir.path().join("exporter.log"),
    )
    .unwrap();
    let target = exporter.target();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[scrape]]\njob_name = \"dcgm\"\ntargets = [\"{target}\"]\ninterval = \"500ms\"\nlabels = {{ cluster = \"test\" }}\n"
        ),
    )
    .unwrap();
    let collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let promql = |query: &str| -> Vec<Value> {
        let answer: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/query", collector.query_url()))
            .query(&[("query", query)])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let value = |sample: &Value| -> f64 { sample["value"][1].as_str().unwrap().parse().unwrap() };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = promql("up");
        if up.len() == 1 && value(&up[0]) == 1.0 && promql("DCGM_FI_DEV_GPU_TEMP").len() == 2 {
            assert_eq!(up[0]["metric"]["job"], "dcgm", "{up:?}");
            assert_eq!(up[0]["metric"]["instance"], target.as_str(), "{up:?}");
            assert_eq!(up[0]["metric"]["cluster"], "test", "{up:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vigil did not scrape the page: up = {up:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(value(&promql("scrape_samples_scraped")[0]) > 50.0);

    // What the page shows is what SQL and PromQL store: every value of one page, for each GPU.
    let page = reqwest::blocking::get(&exporter.metrics_url)
        .unwrap()
        .text()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for line in page
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_POWER_USAGE{"))
    {
        let gpu = line
            .split("gpu=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let shown: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let stored = runtime
            .block_on(collector.sql(&format!(
                "SELECT value FROM metrics WHERE metric_name = 'DCGM_FI_DEV_POWER_USAGE' AND attributes['gpu'] = '{gpu}'"
            )))
            .unwrap();
        assert!(
            stored.iter().any(|r| r["value"].as_f64() == Some(shown)),
            "gpu {gpu}: the page showed {shown}, SQL has {stored:?}"
        );
        let matrix: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/query", collector.query_url()))
            .query(&[(
                "query",
                format!("DCGM_FI_DEV_POWER_USAGE{{gpu=\"{gpu}\"}}[1m]"),
            )])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let values: Vec<f64> = matrix["data"]["result"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            values.contains(&shown),
            "gpu {gpu}: the page showed {shown}, PromQL has {values:?}"
        );
    }

    // The target dies: `up` is 0 and its series are gone at once, not after the 5 m lookback.
    exporter.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = promql("up");
        let temps = promql("DCGM_FI_DEV_GPU_TEMP");
        if up.len() == 1 && value(&up[0]) == 0.0 && temps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the target died: up = {up:?}, DCGM_FI_DEV_GPU_TEMP = {temps:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The samples scraped before are all still there.
    assert_eq!(
        promql("count(last_over_time(DCGM_FI_DEV_GPU_TEMP[5m]))").len(),
        1
    );
}

/// A cluster that already runs a dcgm-exporter gets vigil's GPU detectors by scraping its page:
/// a downtrained PCIe link on the page fires the same alert it fires over OTLP.
#[test]
fn gpu_detectors_fire_on_a_scraped_dcgm_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut exporter = GpuExporter::start(
        &[
            &vigil_tests::SMALL_FLEET[..],
            &["--fault", "pcie-downtrain:0/1:1s"],
        ]
        .concat(),
        &dir.path().join("exporter.log"),
    )
    .unwrap();
    let target = exporter.target();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[analyzer]\ninterval = \"1s\"\n\n[analyzer.gpu]\nwindow = \"4s\"\n\n[analyzer.drift]\nenabled = false\n\n\
             [[scrape]]\njob_name = \"dcgm\"\ntargets = [\"{target}\"]\ninterval = \"500ms\"\n"
        ),
    )
    .unwrap();
    let collector = Collector::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let firing = runtime
            .block_on(collector.sql(
                "SELECT subject FROM alerts WHERE labels['alertname'] = 'GpuPcieLinkDowntrained' AND state = 'firing'",
            ))
            .unwrap();
        if !firing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no GpuPcieLinkDowntrained from the scraped page within 45 s; log:\n{}",
            collector.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    exporter.stop().unwrap();
}
