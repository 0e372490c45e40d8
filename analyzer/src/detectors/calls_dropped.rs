//! A fall in a scope's calls, judged with a test made for counts: a CUSUM of each step's Poisson
//! log-likelihood ratio between "calls fell to half of what was expected" and "as expected"
//! (Page's test). A step short of calls adds evidence, a step with its share takes it away; it
//! alerts when the evidence reaches `rate_drop_nats`.
//!
//! The expected calls of a step come from the level learned over the last half hour (on the
//! square-root scale, where the scorer's seasons are) plus the step's season when one is learned,
//! so that the evening's falling traffic is expected to fall. The streaming scorer saw a halving
//! of a model at 1.5 calls/s (night) only after minutes, when at all: a halved 10-second count
//! is within two of its standard deviations. Each step of it here is 2.3 nats of evidence.
//!
//! A scope is judged only once its seasons are known (two weeks of `llm_minutes`, whether they
//! found a cycle or not): before, its day's and week's own turns are not expected, and
//! `vigil eval anomaly` without seasons raised 4.8 false alarms a week, at the simulated
//! weekend's 40% fall and on evenings; it still learns its level meanwhile, and the streaming
//! scorer judges its request rate as before.
//!
//! Real traffic is burstier than Poisson: the evidence is divided by the dispersion learned over
//! the same half hour (the mean squared Pearson residual, at least 1), so that a bursty scope
//! needs a longer or deeper fall to alert.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::cusum::{Episode, judge};
use super::golden_signals::{insert_band, rfc3339};
use crate::alert::{Finding, Severity};

/// The fall the test is built to see soonest. Smaller falls are seen later; a fall to 72% of
/// the expected adds no evidence at all.
const DROPPED_TO: f64 = 0.5;
/// How long the level and dispersion remember: long enough that a fall does not become the new
/// normal before it is judged, short enough to follow a day's traffic without seasons.
const LEVEL_TIME: Duration = Duration::from_secs(30 * 60);
/// Steps learned before a scope's calls are judged.
const MIN_LEARNED_STEPS: f64 = 90.0;

/// One scope's calls, their learned level and the CUSUM.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallsDropped {
    /// Exponentially weighted: the square root of the calls per second, less the season; the
    /// dispersion; and the weight learned (steps).
    level: f64,
    dispersion: f64,
    learned: f64,
    /// The CUSUM statistic in nats, kept between 0 and twice the threshold.
    evidence: f64,
    /// Since when the evidence has been above zero, with the calls and the expected calls since.
    run: Option<(SystemTime, f64, f64)>,
    /// The last step judged and the calls expected in it.
    last: Option<(SystemTime, f64)>,
    /// The fall past the threshold, if any.
    episode: Option<Episode<DropStep>>,
}

/// A step of a fall: (at, evidence, calls and expected calls since the fall began).
type DropStep = (SystemTime, f64, f64, f64);

impl CallsDropped {
    /// The calls expected in a step of `step_secs` whose season (on the square-root scale of
    /// calls per second) is `season`, once enough steps are learned.
    fn expected(&self, step_secs: f64, season: f64) -> Option<f64> {
        if self.learned < MIN_LEARNED_STEPS {
            return None;
        }
        // E[sqrt(N)]² is about λ - 1/4 for Poisson N of mean λ.
        let root = (self.level + season).max(0.0);
        Some(root * root * step_secs + 0.25)
    }

    /// One step of `calls` (over `step_secs`, with `season` as above): judged against what was
    /// expected before it, then learned. `nats` is the threshold (the evidence is kept below
    /// twice it, judged or not, so that what a long unjudged time gathered is not carried into
    /// the first judged steps), `judging` the `resolve_after` when the step may alert, None
    /// while replaying history or before the seasons are known.
    pub(crate) fn update(
        &mut self,
        at: SystemTime,
        (calls, step_secs): (f64, f64),
        season: f64,
        nats: f64,
        judging: Option<Duration>,
    ) {
        let expected = self.expected(step_secs, season);
        if let Some(expected) = expected {
            let llr = calls * DROPPED_TO.ln() + expected * (1.0 - DROPPED_TO);
            self.evidence = (self.evidence + llr / self.dispersion.max(1.0)).clamp(0.0, 2.0 * nats);
            self.run = if self.evidence > 0.0 {
                let (since, c, e) = self.run.unwrap_or((at, 0.0, 0.0));
                Some((since, c + calls, e + expected))
            } else {
                None
            };
            self.last = Some((at, expected));
            if let Some(resolve_after) = judging {
                self.judge(at, nats, resolve_after);
            }
        }
        let keep = (-step_secs / LEVEL_TIME.as_secs_f64()).exp();
        let root = (calls / step_secs).max(0.0).sqrt() - season;
        if self.learned == 0.0 {
            self.level = root;
        }
        self.level = self.level * keep + root * (1.0 - keep);
        if let Some(expected) = expected {
            let pearson = (calls - expected).powi(2) / expected.max(0.25);
            self.dispersion = self.dispersion * keep + pearson * (1.0 - keep);
        } else {
            self.dispersion = 1.0;
        }
        self.learned = self.learned * keep + 1.0;
    }

    fn judge(&mut self, at: SystemTime, nats: f64, resolve_after: Duration) {
        let (since, calls, expected) = self.run.unwrap_or((at, 0.0, 0.0));
        let step = (at, self.evidence, calls, expected);
        judge(
            &mut self.episode,
            (at, since),
            (self.evidence, nats),
            resolve_after,
            step,
        );
    }

    /// This scope's finding (None before it is first judged).
    pub(crate) fn finding(
        &self,
        labels: BTreeMap<String, String>,
        subject: String,
        nats: f64,
        step_secs: f64,
        mut evidence: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Finding> {
        let (at, expected_now) = self.last?;
        let (shown_at, shown_evidence, calls, expected) = match self.episode {
            Some(episode) => episode.worst,
            None => {
                let (_, calls, expected) = self.run.unwrap_or((at, 0.0, expected_now));
                (at, self.evidence, calls, expected)
            }
        };
        let since = self
            .episode
            .map(|e| e.began)
            .or(self.run.map(|r| r.0))
            .unwrap_or(shown_at);
        let seconds = (shown_at
            .duration_since(since)
            .unwrap_or_default()
            .as_secs_f64()
            + step_secs)
            .max(step_secs);
        let (rate, expected_rate) = (calls / seconds, expected / seconds);
        // The band a count over that many seconds keeps to (three Poisson standard deviations,
        // widened by the dispersion).
        let spread = (expected * self.dispersion.max(1.0)).sqrt();
        let (low, high) = (
            (expected - 3.0 * spread).max(0.0) / seconds,
            (expected + 3.0 * spread) / seconds,
        );
        let sigmas = if spread > 0.0 {
            (calls - expected) / spread
        } else {
            0.0
        };
        insert_band(
            &mut evidence,
            (shown_at, rate),
            (expected_rate, (low, high)),
            sigmas,
        );
        evidence.insert("calls".into(), json!(calls));
        evidence.insert("expected_calls".into(), json!(expected));
        evidence.insert("evidence_nats".into(), json!(shown_evidence));
        evidence.insert("dispersion".into(), json!(self.dispersion.max(1.0)));
        if let Some(episode) = self.episode {
            evidence.insert("began".into(), json!(rfc3339(episode.began)));
        }
        Some(Finding {
            labels,
            severity: Severity::Critical,
            subject: subject.clone(),
            score: shown_evidence,
            threshold: nats,
            active: self.episode.is_some(),
            clear: self.episode.is_none(),
            message: format!(
                "{subject}: {rate:.3} calls/s ({calls:.0} calls since {}) against the expected {expected_rate:.3} (band {low:.3} to {high:.3}, {sigmas:.1} standard deviations): {shown_evidence:.1} nats of evidence that calls fell, threshold {nats}",
                rfc3339(since),
            ),
            evidence,
        })
    }

    pub(crate) fn began(&self) -> Option<SystemTime> {
        self.episode.map(|e| e.began)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Poisson};

    const T0: u64 = 1_800_000_000;
    const JUDGING: Option<Duration> = Some(Duration::from_secs(300));

    fn at(step: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + step * 10)
    }

    /// Steps of 10 s at `per_second` calls (Poisson, or `burst`-fold overdispersed: the count of
    /// a step is a Poisson count of `burst` calls each), from step `from`; the first step (if
    /// any) at which the fall alerts.
    fn run(
        drop: &mut CallsDropped,
        rng: &mut StdRng,
        from: u64,
        steps: u64,
        per_second: f64,
        burst: f64,
    ) -> Option<u64> {
        let mut alerted = None;
        for step in from..from + steps {
            let groups = Poisson::new(per_second * 10.0 / burst).unwrap().sample(rng);
            drop.update(at(step), (groups * burst, 10.0), 0.0, 12.0, JUDGING);
            if alerted.is_none() && drop.began().is_some() {
                alerted = Some(step);
            }
        }
        alerted
    }

    #[test]
    fn a_halving_at_night_is_caught_in_a_minute_or_two_and_says_so() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut drop = CallsDropped::default();
        // Two hours at 1.5 calls/s: nothing.
        assert_eq!(run(&mut drop, &mut rng, 0, 720, 1.5, 1.0), None);
        let caught = run(&mut drop, &mut rng, 720, 60, 0.75, 1.0).expect("caught");
        assert!(caught - 720 <= 12, "{} steps", caught - 720);
        let finding = drop
            .finding(
                BTreeMap::new(),
                "calls".into(),
                12.0,
                10.0,
                Default::default(),
            )
            .unwrap();
        assert!(finding.active);
        let expected = finding.evidence["expected"].as_f64().unwrap();
        assert!((expected - 1.5).abs() < 0.3, "{}", finding.message);
        let rate = finding.evidence["value"].as_f64().unwrap();
        assert!(rate < 1.0, "{}", finding.message);
        // Back to normal: the alert resolves.
        run(&mut drop, &mut rng, 780, 120, 1.5, 1.0);
        assert!(drop.began().is_none());
    }

    #[test]
    fn a_week_of_steady_or_bursty_calls_raises_nothing() {
        for (per_second, burst) in [(0.2, 1.0), (3.0, 1.0), (30.0, 1.0), (3.0, 4.0)] {
            let mut rng = StdRng::seed_from_u64(2);
            let mut drop = CallsDropped::default();
            let week = 7 * 8640;
            let alerted = run(&mut drop, &mut rng, 0, week, per_second, burst);
            assert_eq!(alerted, None, "{per_second}/s in bursts of {burst}");
        }
    }

    #[test]
    fn the_season_is_what_is_expected() {
        // A season of +1 on the square-root scale: 4 calls/s expected where the level says 1.
        let mut drop = CallsDropped::default();
        for step in 0..200 {
            drop.update(at(step), (10.0, 10.0), 0.0, 12.0, None);
        }
        let expected = drop.expected(10.0, 1.0).unwrap();
        assert!((expected - 40.25).abs() < 0.5, "{expected}");
        // A step with the level's 10 calls where the season expects 40 is evidence of a fall.
        drop.update(at(200), (10.0, 10.0), 1.0, 12.0, JUDGING);
        assert!(drop.evidence > 10.0, "{}", drop.evidence);

        // Unjudged, a long fall gathers no more than twice the threshold.
        for step in 201..2000 {
            drop.update(at(step), (0.0, 10.0), 1.0, 12.0, None);
        }
        assert!(drop.evidence <= 24.0, "{}", drop.evidence);
    }
}
