//! Model drift, per service and model: the distributions of input tokens, output tokens, latency
//! and time to first token, the error rate and the finish-reason mix in the current window against
//! a reference window (the trailing period, the same hours a day earlier, or a pinned period).
//! Univariate tests (two-sample Kolmogorov–Smirnov with PSI and Jensen–Shannon as effect sizes,
//! chi-square for finish reasons, two proportions for errors) plus a multivariate one: a Gaussian
//! mixture (linfa) fitted on half of the reference, and a KS test of the per-request
//! log-likelihoods of the other half against the current window's. Benjamini–Hochberg controls
//! the false discoveries across the tests of a scope.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::GaussianMixtureModel;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Detector, alert_labels, humantime_serde};
use crate::AnalyzerError;
use crate::alert::{Finding, Severity};
use crate::source::{QuerySource, floats, strings, ts};
use crate::state::Timing;
use crate::stats;

/// Where the reference window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceMode {
    /// The `reference_length` just before the current window.
    Trailing,
    /// The current window's hours one day earlier (time of day is not drift).
    SameHoursYesterday,
    /// A fixed period (`pinned_from` .. `pinned_to`), e.g. a known-good release.
    Pinned,
}

/// `[analyzer.drift]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How far behind now the current window ends. Spans are stored at their start time and
    /// arrive after they end (an LLM call takes seconds, exporters batch for seconds more), so
    /// the newest seconds are always thin.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// How often the tests run (each reads two windows of spans; more often than the window
    /// moves meaningfully only costs memory and CPU). Between runs the last verdicts stand.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    pub reference: ReferenceMode,
    #[serde(with = "humantime_serde")]
    pub reference_length: Duration,
    /// RFC 3339 bounds of a pinned reference.
    pub pinned_from: Option<String>,
    pub pinned_to: Option<String>,
    /// Requests needed in each window before any verdict.
    pub min_samples: usize,
    /// False discovery rate per scope and evaluation.
    pub alpha: f64,
    /// Smallest KS distance worth an alert (with a big sample, tiny shifts are "significant").
    pub min_ks_distance: f64,
    /// Smallest change of the error rate worth an alert (absolute).
    pub min_error_rate_change: f64,
    /// Smallest Jensen–Shannon divergence of the finish-reason mix worth an alert.
    pub min_finish_reason_js: f64,
    /// Rows read per window at most.
    pub max_rows: usize,
    /// Gaussian mixture components of the multivariate test (0 turns it off).
    pub mixture_components: usize,
    #[serde(with = "humantime_serde")]
    pub for_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            enabled: true,
            window: Duration::from_secs(600),
            settle: Duration::from_secs(30),
            evaluate_every: Duration::from_secs(60),
            reference: ReferenceMode::Trailing,
            reference_length: Duration::from_secs(3600),
            pinned_from: None,
            pinned_to: None,
            min_samples: 200,
            alpha: 0.001,
            min_ks_distance: 0.05,
            min_error_rate_change: 0.01,
            min_finish_reason_js: 0.005,
            max_rows: 50_000,
            mixture_components: 3,
            for_duration: Duration::ZERO,
            resolve_after: Duration::from_secs(300),
        }
    }
}

/// The rows of one window of one scope.
#[derive(Debug, Default, Clone)]
struct Sample {
    input_tokens: Vec<f64>,
    output_tokens: Vec<f64>,
    latency_ms: Vec<f64>,
    ttft_ms: Vec<f64>,
    errors: f64,
    finish: BTreeMap<String, f64>,
    count: usize,
    trace_ids: Vec<String>,
    /// (log input, log output, log latency) per request, for the multivariate test.
    joint: Vec<[f64; 3]>,
}

/// The drift detector.
pub struct DriftDetector {
    config: DriftConfig,
    last: Option<(SystemTime, Vec<Finding>)>,
}

impl DriftDetector {
    pub fn new(config: DriftConfig) -> Self {
        DriftDetector { config, last: None }
    }

    fn reference_window(&self, now: SystemTime) -> Result<(SystemTime, SystemTime), AnalyzerError> {
        let current_start = now - self.config.window;
        Ok(match self.config.reference {
            ReferenceMode::Trailing => {
                (current_start - self.config.reference_length, current_start)
            }
            ReferenceMode::SameHoursYesterday => {
                let day = Duration::from_secs(86_400);
                (current_start - day, now - day)
            }
            ReferenceMode::Pinned => {
                let parse = |what: &str,
                             value: &Option<String>|
                 -> Result<SystemTime, AnalyzerError> {
                    let text = value.as_deref().ok_or_else(|| {
                        AnalyzerError::Config(format!(
                            "analyzer.drift.reference = \"pinned\" needs {what}"
                        ))
                    })?;
                    chrono::DateTime::parse_from_rfc3339(text)
                        .map(SystemTime::from)
                        .map_err(|e| {
                            AnalyzerError::Config(format!("analyzer.drift.{what} {text:?}: {e}"))
                        })
                };
                (
                    parse("pinned_from", &self.config.pinned_from)?,
                    parse("pinned_to", &self.config.pinned_to)?,
                )
            }
        })
    }

    async fn load(
        &self,
        source: &dyn QuerySource,
        start: SystemTime,
        end: SystemTime,
    ) -> Result<BTreeMap<(String, String), Sample>, AnalyzerError> {
        let sql = format!(
            "SELECT service_name AS service, coalesce(response_model, request_model) AS model, \
             input_tokens, output_tokens, duration_ns / 1e6 AS latency_ms, ttft_ns / 1e6 AS ttft_ms, \
             status_code, array_to_string(finish_reasons, ',') AS finish, trace_id \
             FROM spans WHERE time > {} AND time <= {} \
             AND (response_model IS NOT NULL OR request_model IS NOT NULL) LIMIT {}",
            ts(start),
            ts(end),
            self.config.max_rows
        );
        let batches = source.sql(&sql).await?;
        let service = strings(&batches, "service")?;
        let model = strings(&batches, "model")?;
        let input = floats(&batches, "input_tokens")?;
        let output = floats(&batches, "output_tokens")?;
        let latency = floats(&batches, "latency_ms")?;
        let ttft = floats(&batches, "ttft_ms")?;
        let status = strings(&batches, "status_code")?;
        let finish = strings(&batches, "finish")?;
        let trace = strings(&batches, "trace_id")?;
        let mut samples: BTreeMap<(String, String), Sample> = BTreeMap::new();
        for i in 0..service.len() {
            let key = (
                service[i].clone().unwrap_or_default(),
                model[i].clone().unwrap_or_default(),
            );
            let sample = samples.entry(key).or_default();
            sample.count += 1;
            if let Some(v) = input[i] {
                sample.input_tokens.push(v);
            }
            if let Some(v) = output[i] {
                sample.output_tokens.push(v);
            }
            if let Some(v) = latency[i] {
                sample.latency_ms.push(v);
            }
            if let Some(v) = ttft[i] {
                sample.ttft_ms.push(v);
            }
            if status[i]
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("error"))
            {
                sample.errors += 1.0;
            }
            let reason = finish[i]
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "none".to_string());
            *sample.finish.entry(reason).or_default() += 1.0;
            if let (Some(a), Some(b), Some(c)) = (input[i], output[i], latency[i]) {
                sample.joint.push([a.ln_1p(), b.ln_1p(), c.max(1e-3).ln()]);
            }
            if sample.trace_ids.len() < 3
                && let Some(id) = &trace[i]
            {
                sample.trace_ids.push(id.clone());
            }
        }
        // A model used by several services is also judged as a whole (service "*"): a shift in
        // the model itself shows there first, with the most samples.
        let mut pooled: BTreeMap<(String, String), (Sample, usize)> = BTreeMap::new();
        for ((_, model), sample) in &samples {
            let entry = pooled.entry(("*".to_string(), model.clone())).or_default();
            entry.0.merge(sample);
            entry.1 += 1;
        }
        for (key, (sample, services)) in pooled {
            if services >= 2 {
                samples.insert(key, sample);
            }
        }
        Ok(samples)
    }
}

impl Sample {
    fn merge(&mut self, other: &Sample) {
        self.input_tokens.extend_from_slice(&other.input_tokens);
        self.output_tokens.extend_from_slice(&other.output_tokens);
        self.latency_ms.extend_from_slice(&other.latency_ms);
        self.ttft_ms.extend_from_slice(&other.ttft_ms);
        self.errors += other.errors;
        for (reason, count) in &other.finish {
            *self.finish.entry(reason.clone()).or_default() += count;
        }
        self.count += other.count;
        if self.trace_ids.len() < 3 {
            self.trace_ids.extend(
                other
                    .trace_ids
                    .iter()
                    .take(3 - self.trace_ids.len())
                    .cloned(),
            );
        }
        self.joint.extend_from_slice(&other.joint);
    }
}

/// One test's outcome.
struct TestResult {
    feature: &'static str,
    p: f64,
    /// The effect size is large enough to matter.
    material: bool,
    evidence: serde_json::Value,
}

fn numeric_test(
    feature: &'static str,
    reference: &[f64],
    current: &[f64],
    config: &DriftConfig,
) -> Option<TestResult> {
    if reference.len() < config.min_samples || current.len() < config.min_samples {
        return None;
    }
    let (d, p) = stats::ks_two_sample(reference, current)?;
    let edges = stats::quantile_edges(reference, 10);
    let p_bins = stats::histogram_shares(reference, &edges);
    let q_bins = stats::histogram_shares(current, &edges);
    let psi = stats::psi(&p_bins, &q_bins);
    let js = stats::jensen_shannon(&p_bins, &q_bins);
    let median_ref = stats::median(&mut reference.to_vec()).unwrap_or(0.0);
    let median_cur = stats::median(&mut current.to_vec()).unwrap_or(0.0);
    Some(TestResult {
        feature,
        p,
        material: d >= config.min_ks_distance,
        evidence: json!({
            "ks_distance": d, "p": p, "psi": psi, "jensen_shannon": js,
            "reference_median": median_ref, "current_median": median_cur,
            "reference_n": reference.len(), "current_n": current.len(),
        }),
    })
}

/// Per-request log-density under a Gaussian mixture, from its public weights, means and precisions.
fn log_densities(model: &GaussianMixtureModel<f64>, rows: &Array2<f64>) -> Vec<f64> {
    let weights = model.weights();
    let means = model.means();
    let precisions = model.precisions();
    let dims = rows.ncols();
    let components: Vec<(f64, f64)> = (0..weights.len())
        .map(|k| {
            let precision = precisions.index_axis(ndarray::Axis(0), k).to_owned();
            (weights[k].ln(), determinant(&precision).max(1e-300).ln())
        })
        .collect();
    let log_two_pi = (2.0 * std::f64::consts::PI).ln();
    rows.outer_iter()
        .map(|x| {
            let terms: Vec<f64> = components
                .iter()
                .enumerate()
                .map(|(k, (log_weight, log_det_precision))| {
                    let diff = &x - &means.row(k);
                    let precision = precisions.index_axis(ndarray::Axis(0), k);
                    let mahalanobis = diff.dot(&precision.dot(&diff));
                    log_weight + 0.5 * (log_det_precision - dims as f64 * log_two_pi - mahalanobis)
                })
                .collect();
            let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
        })
        .collect()
}

/// Determinant by Gaussian elimination with partial pivoting (the matrices are 3×3).
fn determinant(matrix: &Array2<f64>) -> f64 {
    let mut m = matrix.clone();
    let n = m.nrows();
    let mut det = 1.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|a, b| m[[*a, col]].abs().total_cmp(&m[[*b, col]].abs()))
            .unwrap_or(col);
        if m[[pivot, col]].abs() < 1e-300 {
            return 0.0;
        }
        if pivot != col {
            for j in 0..n {
                m.swap([pivot, j], [col, j]);
            }
            det = -det;
        }
        det *= m[[col, col]];
        for row in col + 1..n {
            let factor = m[[row, col]] / m[[col, col]];
            for j in col..n {
                m[[row, j]] -= factor * m[[col, j]];
            }
        }
    }
    det
}

fn multivariate_test(
    reference: &[[f64; 3]],
    current: &[[f64; 3]],
    config: &DriftConfig,
) -> Option<TestResult> {
    if config.mixture_components == 0
        || reference.len() < 2 * config.min_samples
        || current.len() < config.min_samples
    {
        return None;
    }
    // Standardize on the reference so that the mixture sees comparable scales.
    let mut mean = [0.0; 3];
    let mut sd = [0.0; 3];
    for d in 0..3 {
        mean[d] = reference.iter().map(|r| r[d]).sum::<f64>() / reference.len() as f64;
        sd[d] = (reference
            .iter()
            .map(|r| (r[d] - mean[d]).powi(2))
            .sum::<f64>()
            / reference.len() as f64)
            .sqrt()
            .max(1e-9);
    }
    let to_array = |rows: &[[f64; 3]]| {
        Array2::from_shape_fn((rows.len(), 3), |(r, d)| (rows[r][d] - mean[d]) / sd[d])
    };
    // Fit on the even rows, hold out the odd ones: in-sample likelihoods would flatter the reference.
    let fit_rows: Vec<[f64; 3]> = reference.iter().step_by(2).copied().collect();
    let held_out: Vec<[f64; 3]> = reference.iter().skip(1).step_by(2).copied().collect();
    let dataset = DatasetBase::from(to_array(&fit_rows));
    let model = GaussianMixtureModel::params(config.mixture_components)
        .n_runs(2)
        .tolerance(1e-3)
        .reg_covariance(1e-3)
        .fit(&dataset)
        .ok()?;
    let ll_reference = log_densities(&model, &to_array(&held_out));
    let ll_current = log_densities(&model, &to_array(current));
    let (d, p) = stats::ks_two_sample(&ll_reference, &ll_current)?;
    let mean_ref = ll_reference.iter().sum::<f64>() / ll_reference.len() as f64;
    let mean_cur = ll_current.iter().sum::<f64>() / ll_current.len() as f64;
    Some(TestResult {
        feature: "joint_input_output_latency",
        p,
        material: d >= config.min_ks_distance,
        evidence: json!({
            "method": "gaussian mixture (linfa) log-likelihood, KS of held-out reference vs current",
            "components": config.mixture_components, "ks_distance": d, "p": p,
            "reference_mean_loglik": mean_ref, "current_mean_loglik": mean_cur,
        }),
    })
}

#[async_trait]
impl Detector for DriftDetector {
    fn name(&self) -> &'static str {
        "model_drift"
    }

    fn timing(&self) -> Timing {
        Timing {
            for_duration: self.config.for_duration,
            resolve_after: self.config.resolve_after,
        }
    }

    async fn evaluate(
        &mut self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        if let Some((at, findings)) = &self.last
            && now.duration_since(*at).unwrap_or_default() < self.config.evaluate_every
        {
            return Ok(findings.clone());
        }
        let findings = self.judge(source, now).await?;
        self.last = Some((now, findings.clone()));
        Ok(findings)
    }
}

impl DriftDetector {
    async fn judge(
        &self,
        source: &dyn QuerySource,
        now: SystemTime,
    ) -> Result<Vec<Finding>, AnalyzerError> {
        let now = now - self.config.settle;
        let (reference_start, reference_end) = self.reference_window(now)?;
        // Without a reference there is nothing to compare: count before reading rows, so that a
        // young or flooded collector pays for a count, not for materializing a window.
        let counted = source
            .sql(&format!(
                "SELECT count(*) AS n FROM spans WHERE time > {} AND time <= {} \
                 AND (response_model IS NOT NULL OR request_model IS NOT NULL)",
                ts(reference_start),
                ts(reference_end)
            ))
            .await?;
        let reference_rows = floats(&counted, "n")?
            .first()
            .copied()
            .flatten()
            .unwrap_or(0.0);
        if reference_rows < self.config.min_samples as f64 {
            return Ok(Vec::new());
        }
        let current = self.load(source, now - self.config.window, now).await?;
        if current.is_empty() {
            return Ok(Vec::new());
        }
        let reference = self.load(source, reference_start, reference_end).await?;
        let mut findings = Vec::new();
        for ((service, model), cur) in &current {
            let Some(reference) = reference.get(&(service.clone(), model.clone())) else {
                continue;
            };
            if reference.count < self.config.min_samples || cur.count < self.config.min_samples {
                continue;
            }
            let config = &self.config;
            let mut tests: Vec<TestResult> = [
                numeric_test(
                    "input_tokens",
                    &reference.input_tokens,
                    &cur.input_tokens,
                    config,
                ),
                numeric_test(
                    "output_tokens",
                    &reference.output_tokens,
                    &cur.output_tokens,
                    config,
                ),
                numeric_test("latency_ms", &reference.latency_ms, &cur.latency_ms, config),
                numeric_test("ttft_ms", &reference.ttft_ms, &cur.ttft_ms, config),
                multivariate_test(&reference.joint, &cur.joint, config),
            ]
            .into_iter()
            .flatten()
            .collect();
            let (n_ref, n_cur) = (reference.count as f64, cur.count as f64);
            if let Some((z, p)) = stats::two_proportions(reference.errors, n_ref, cur.errors, n_cur)
            {
                let change = cur.errors / n_cur - reference.errors / n_ref;
                tests.push(TestResult {
                    feature: "error_rate",
                    p,
                    material: change.abs() >= config.min_error_rate_change,
                    evidence: json!({"reference_rate": reference.errors / n_ref, "current_rate": cur.errors / n_cur, "z": z, "p": p}),
                });
            }
            let categories: Vec<&String> = reference
                .finish
                .keys()
                .chain(cur.finish.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let ref_counts: Vec<f64> = categories
                .iter()
                .map(|c| reference.finish.get(*c).copied().unwrap_or(0.0))
                .collect();
            let cur_counts: Vec<f64> = categories
                .iter()
                .map(|c| cur.finish.get(*c).copied().unwrap_or(0.0))
                .collect();
            if let Some((chi2, p)) = stats::chi_square_homogeneity(&ref_counts, &cur_counts) {
                let js =
                    stats::jensen_shannon(&stats::shares(&ref_counts), &stats::shares(&cur_counts));
                tests.push(TestResult {
                    feature: "finish_reasons",
                    p,
                    material: js >= config.min_finish_reason_js,
                    evidence: json!({"chi_square": chi2, "p": p, "jensen_shannon": js, "categories": categories}),
                });
            }
            if tests.is_empty() {
                continue;
            }
            let adjusted =
                stats::benjamini_hochberg(&tests.iter().map(|t| t.p).collect::<Vec<_>>());
            let moved: Vec<usize> = (0..tests.len())
                .filter(|i| adjusted[*i] < config.alpha && tests[*i].material)
                .collect();
            let min_p = adjusted.iter().copied().fold(1.0f64, f64::min).max(1e-300);
            let score = -min_p.log10();
            let threshold = -config.alpha.log10();
            let mut evidence = serde_json::Map::new();
            for (test, p_adjusted) in tests.iter().zip(&adjusted) {
                let mut entry = test.evidence.clone();
                entry["p_adjusted"] = json!(p_adjusted);
                evidence.insert(test.feature.to_string(), entry);
            }
            evidence.insert("model".into(), json!(model));
            evidence.insert("service".into(), json!(service));
            evidence.insert(
                "window".into(),
                json!(humantime::format_duration(config.window).to_string()),
            );
            evidence.insert("reference".into(), json!({"mode": config.reference, "from": crate::alert::format_time(reference_start), "to": crate::alert::format_time(reference_end)}));
            evidence.insert("example_trace_ids".into(), json!(cur.trace_ids));
            let moved_names: Vec<&str> = moved.iter().map(|i| tests[*i].feature).collect();
            evidence.insert("moved".into(), json!(moved_names));
            let clear = !(0..tests.len())
                .any(|i| adjusted[i] < (config.alpha * 100.0).min(0.5) && tests[i].material);
            let subject = if service == "*" {
                format!("model {model} (all services)")
            } else {
                format!("model {model} in service {service}")
            };
            findings.push(Finding {
                labels: alert_labels(
                    "ModelDrift",
                    self.name(),
                    &[("service", service), ("model", model)],
                ),
                severity: Severity::Warning,
                subject: subject.clone(),
                score,
                threshold,
                active: !moved.is_empty(),
                clear,
                message: if moved.is_empty() {
                    format!("{subject}: no drift")
                } else {
                    format!(
                        "{subject}: {} shifted against the reference (adjusted p {:.1e})",
                        moved_names.join(", "),
                        min_p
                    )
                },
                evidence,
            });
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, LogNormal};

    fn joint(n: usize, output_median: f64, seed: u64) -> Vec<[f64; 3]> {
        let mut rng = StdRng::seed_from_u64(seed);
        let input = LogNormal::new(6.0, 0.6).unwrap();
        let output = LogNormal::new(output_median.ln(), 0.5).unwrap();
        let jitter = LogNormal::new(0.0, 0.15).unwrap();
        (0..n)
            .map(|_| {
                let i: f64 = input.sample(&mut rng);
                let o: f64 = output.sample(&mut rng);
                let latency = (200.0 + 20.0 * o) * jitter.sample(&mut rng);
                [i.ln_1p(), o.ln_1p(), latency.ln()]
            })
            .collect()
    }

    #[test]
    fn the_mixture_test_sees_a_joint_shift_and_not_noise() {
        let config = DriftConfig::default();
        let reference = joint(4000, 200.0, 1);
        let same = multivariate_test(&reference, &joint(2000, 200.0, 2), &config).unwrap();
        assert!(same.p > 1e-3, "p {}", same.p);
        // The log-likelihood test is an omnibus test: less sharp than KS on the one feature that
        // moved, but it sees shifts in how features go together that no marginal shows.
        let shifted = multivariate_test(&reference, &joint(2000, 340.0, 3), &config).unwrap();
        assert!(shifted.p < 1e-6 && shifted.material, "p {}", shifted.p);
    }

    #[test]
    fn determinant_of_small_matrices() {
        let m = ndarray::array![[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 4.0]];
        assert!((determinant(&m) - 24.0).abs() < 1e-9);
        let swap = ndarray::array![[0.0, 1.0], [1.0, 0.0]];
        assert!((determinant(&swap) + 1.0).abs() < 1e-9);
    }
}
