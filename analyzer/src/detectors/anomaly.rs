//! A streaming anomaly score for one series, in [0, 1], from two views of each new value:
//!
//! - **deviation**: its distance from the trailing window's mean in standard deviations, and the
//!   distance of the mean of the last `recent` values (at half weight: it sees a sustained shift
//!   that single values hide in their noise). Only a new high of that distance (over the last
//!   `suppress_span` values) scores fully: a level shift is news when it starts, not for the
//!   hundreds of samples the window takes to absorb it.
//! - **novelty**: the value's bin (the range seen during warm-up cut into `bins`, open-ended
//!   beyond it), and the context of the last `context` bins. A context never seen before is
//!   novel. What counts is the share of novel contexts among the last `novelty_span` values
//!   *above the series' own base rate* of novel contexts: a noisy series makes new contexts all
//!   the time, a regular one rarely, and only the second is surprised by one. This catches what a
//!   z-score cannot: a pattern the series has not made before at values it has.
//!
//! Chosen and tuned on the Numenta Anomaly Benchmark (scripts/nab.sh; EVALUATION.md), with one
//! configuration for every file. Cost: O(`suppress_span`) per value; state is the two windows and
//! a table of seen contexts (about 43 KiB at the defaults, see [`StreamingAnomaly::state_bytes`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How the score looks at a series (the defaults are what EVALUATION.md measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyParams {
    /// Values before any score: the range of the bins is learned from them, and the deviation
    /// needs a mean and a spread to measure from.
    pub warmup: usize,
    /// Trailing values the mean and standard deviation are taken over.
    pub window: usize,
    /// A deviation scores fully only when it is the largest over this many values.
    pub suppress_span: usize,
    /// Bins across the warm-up range.
    pub bins: u32,
    /// Successive bins that make one context.
    pub context: usize,
    /// Values the share of novel contexts is taken over.
    pub novelty_span: usize,
    /// Values whose mean is the second, slower, deviation.
    pub recent: usize,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        AnomalyParams {
            warmup: 750,
            window: 1000,
            suppress_span: 200,
            bins: 30,
            context: 2,
            novelty_span: 20,
            recent: 6,
        }
    }
}

/// The score of one value and what it was measured against.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scored {
    /// In [0, 1]; 0 during warm-up and for values that are not finite.
    pub score: f64,
    /// Distance from the trailing mean in standard deviations.
    pub z: f64,
    /// The trailing mean and standard deviation the value was measured against.
    pub mean: f64,
    pub std_dev: f64,
    /// The value made a context never seen before.
    pub novel: bool,
}

/// Seen contexts: an open-addressing set of their hashes. When three quarters full it starts
/// over, so that state stays bounded on a series that never repeats itself.
#[derive(Debug, Clone)]
struct ContextSet {
    slots: Vec<u64>,
    len: usize,
}

const CONTEXT_SLOTS: usize = 4096;

impl ContextSet {
    fn new() -> Self {
        ContextSet {
            slots: vec![0; CONTEXT_SLOTS],
            len: 0,
        }
    }

    /// Three quarters full: the next insert starts over.
    fn is_full(&self) -> bool {
        self.len * 4 >= CONTEXT_SLOTS * 3
    }

    /// Whether `hash` (never 0) is there.
    fn contains(&self, hash: u64) -> bool {
        let mask = CONTEXT_SLOTS - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                0 => return false,
                seen if seen == hash => return true,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Inserts `hash` (never 0); true when it was not there.
    fn insert(&mut self, hash: u64) -> bool {
        if self.is_full() {
            self.slots.fill(0);
            self.len = 0;
        }
        let mask = CONTEXT_SLOTS - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                0 => {
                    self.slots[slot] = hash;
                    self.len += 1;
                    return true;
                }
                seen if seen == hash => return false,
                _ => slot = (slot + 1) & mask,
            }
        }
    }
}

/// The streaming scorer of one series.
#[derive(Debug, Clone)]
pub struct StreamingAnomaly {
    params: AnomalyParams,
    seen: u64,
    window: VecDeque<f64>,
    sum: f64,
    sum_squares: f64,
    recent_z: VecDeque<f64>,
    low: f64,
    high: f64,
    last_bins: VecDeque<i64>,
    contexts: ContextSet,
    recent_novel: VecDeque<bool>,
    novel_count: usize,
    /// The long-run share of values that made a new context (warm-up included).
    novel_base_rate: f64,
}

impl StreamingAnomaly {
    pub fn new(params: AnomalyParams) -> Self {
        let params = AnomalyParams {
            window: params.window.max(2),
            suppress_span: params.suppress_span.max(1),
            bins: params.bins.max(1),
            context: params.context.max(1),
            novelty_span: params.novelty_span.max(1),
            recent: params.recent.max(1),
            ..params
        };
        StreamingAnomaly {
            params,
            seen: 0,
            window: VecDeque::with_capacity(params.window),
            sum: 0.0,
            sum_squares: 0.0,
            recent_z: VecDeque::with_capacity(params.suppress_span),
            low: f64::INFINITY,
            high: f64::NEG_INFINITY,
            last_bins: VecDeque::with_capacity(params.context),
            contexts: ContextSet::new(),
            recent_novel: VecDeque::with_capacity(params.novelty_span),
            novel_count: 0,
            novel_base_rate: 1.0,
        }
    }

    /// Values scored so far (warm-up included).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Bytes this scorer holds, its buffers at their full length.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.params.window * 8
            + self.params.suppress_span * 8
            + self.params.context * 8
            + self.params.novelty_span
            + CONTEXT_SLOTS * 8
    }

    /// Scores `value` against what came before, then learns it.
    pub fn score(&mut self, value: f64) -> Scored {
        let scored = self.peek(value);
        if !value.is_finite() {
            return scored;
        }
        self.seen += 1;
        let warming = self.seen <= self.params.warmup as u64;
        self.novelty(value, warming);
        if self.recent_z.len() == self.params.suppress_span {
            self.recent_z.pop_front();
        }
        // Distances from a half-learned window are loose: they neither score nor suppress.
        if !warming {
            self.recent_z.push_back(scored.z);
        }
        self.learn(value);
        scored
    }

    /// The score `value` would get from [`Self::score`], without learning it: what an early
    /// look at a step not yet complete needs, at no copy of the state.
    pub fn peek(&self, value: f64) -> Scored {
        if !value.is_finite() {
            return Scored::default();
        }
        let warming = self.seen < self.params.warmup as u64;
        let (z, mean, std_dev) = self.deviation(value);
        if warming {
            return Scored {
                score: 0.0,
                z,
                mean,
                std_dev,
                novel: false,
            };
        }
        let suppressed = self.recent_z.iter().any(|&earlier| earlier >= z);
        let (novel, novel_count) = self.would_be_novel(value);
        let mut deviation_score = 1.0 - (-z * z / 32.0).exp();
        if suppressed {
            deviation_score *= 0.5;
        }
        let novel_share = novel_count as f64 / self.params.novelty_span as f64;
        let novelty_score = (novel_share - self.novel_base_rate).max(0.0);
        // Either view can tell alone; both at once tell more.
        let score = 1.0 - (1.0 - deviation_score) * (1.0 - novelty_score);
        Scored {
            score: score.clamp(0.0, 1.0),
            z,
            mean,
            std_dev,
            novel,
        }
    }

    /// (distance, mean, standard deviation) of `value` against the trailing window: the larger
    /// of the value's |z| and half the |z| of the mean of the last `recent` values.
    fn deviation(&self, value: f64) -> (f64, f64, f64) {
        let n = self.window.len();
        if n < 20 {
            return (0.0, value, 0.0);
        }
        let mean = self.sum / n as f64;
        let variance = (self.sum_squares / n as f64 - mean * mean).max(0.0);
        // A flat series would make every wiggle infinite: floor the spread at a thousandth of
        // the series' scale.
        let scale = mean.abs().max(self.high - self.low).max(1e-9);
        let std_dev = variance.sqrt().max(scale * 1e-3);
        let single = (value - mean).abs() / std_dev;
        // The mean of the last `recent` values, against the window before them (left out, so
        // that a shift does not widen the spread it is measured with).
        let recent = self.params.recent.min(n + 1);
        let (mut recent_sum, mut recent_squares) = (value, 0.0);
        for &earlier in self.window.iter().rev().take(recent - 1) {
            recent_sum += earlier;
            recent_squares += earlier * earlier;
        }
        let older = n - (recent - 1);
        let sustained = if older >= 20 {
            let older_mean = (self.sum - (recent_sum - value)) / older as f64;
            let older_variance = ((self.sum_squares - recent_squares) / older as f64
                - older_mean * older_mean)
                .max(0.0);
            let older_std_dev = older_variance.sqrt().max(scale * 1e-3);
            (recent_sum / recent as f64 - older_mean).abs()
                / (older_std_dev / (recent as f64).sqrt())
        } else {
            0.0
        };
        (single.max(0.5 * sustained), mean, std_dev)
    }

    /// The bin of `value` in the range learned during warm-up.
    fn bin(&self, value: f64) -> i64 {
        let span = if self.high > self.low {
            self.high - self.low
        } else {
            self.high.abs().max(1.0)
        };
        ((value - self.low) / span * self.params.bins as f64)
            .floor()
            .clamp(-1e12, 1e12) as i64
    }

    /// The context the last bins and `bin` would make (None until there are bins enough):
    /// FNV-1a over them, the low bit set to keep 0 free for empty slots.
    fn context_after(&self, bin: i64) -> Option<u64> {
        let context = self.params.context;
        let kept = self.last_bins.len().min(context - 1);
        if kept + 1 < context {
            return None;
        }
        let earlier = self.last_bins.iter().skip(self.last_bins.len() - kept);
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in earlier.copied().chain(std::iter::once(bin)) {
            hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Some(hash | 1)
    }

    /// Whether `value` (after warm-up) would make a context not seen before, and the count of
    /// novel values in the novelty window with it: [`Self::novelty`] without recording it.
    fn would_be_novel(&self, value: f64) -> (bool, usize) {
        let Some(hash) = self.context_after(self.bin(value)) else {
            return (false, self.novel_count);
        };
        let novel = self.contexts.is_full() || !self.contexts.contains(hash);
        let leaving = self.recent_novel.len() == self.params.novelty_span
            && self.recent_novel.front() == Some(&true);
        (novel, self.novel_count - leaving as usize + novel as usize)
    }

    /// Whether `value` makes a context not seen before (recorded in the novelty window and the
    /// base rate).
    fn novelty(&mut self, value: f64, warming: bool) -> bool {
        if warming {
            self.low = self.low.min(value);
            self.high = self.high.max(value);
        }
        let bin = self.bin(value);
        let hash = self.context_after(bin);
        if self.last_bins.len() == self.params.context {
            self.last_bins.pop_front();
        }
        self.last_bins.push_back(bin);
        let Some(hash) = hash else {
            return false;
        };
        let novel = self.contexts.insert(hash);
        // The base rate: a plain mean at first, then a memory of about a window.
        let weight = (1.0 / self.seen as f64).max(1.0 / self.params.window as f64);
        self.novel_base_rate += weight * (novel as u8 as f64 - self.novel_base_rate);
        if self.recent_novel.len() == self.params.novelty_span
            && self.recent_novel.pop_front() == Some(true)
        {
            self.novel_count -= 1;
        }
        self.recent_novel.push_back(novel);
        self.novel_count += novel as usize;
        novel
    }

    fn learn(&mut self, value: f64) {
        if self.window.len() == self.params.window
            && let Some(old) = self.window.pop_front()
        {
            self.sum -= old;
            self.sum_squares -= old * old;
        }
        self.window.push_back(value);
        self.sum += value;
        self.sum_squares += value * value;
        // Running sums drift by rounding: recompute them once a window.
        if self.seen.is_multiple_of(self.params.window as u64) {
            self.sum = self.window.iter().sum();
            self.sum_squares = self.window.iter().map(|v| v * v).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Normal};

    fn params() -> AnomalyParams {
        AnomalyParams {
            warmup: 200,
            ..AnomalyParams::default()
        }
    }

    /// The threshold NAB's optimizer chose for the standard profile (scripts/nab.sh).
    const NAB_THRESHOLD: f64 = 0.81;

    fn noisy(detector: &mut StreamingAnomaly, rng: &mut StdRng, n: usize) -> f64 {
        let noise = Normal::new(100.0, 2.0).unwrap();
        (0..n)
            .map(|_| detector.score(noise.sample(rng)).score)
            .fold(0.0, f64::max)
    }

    #[test]
    fn quiet_on_noise_loud_on_a_spike() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut detector = StreamingAnomaly::new(params());
        noisy(&mut detector, &mut rng, 1000);
        let quiet = noisy(&mut detector, &mut rng, 2000);
        assert!(quiet < NAB_THRESHOLD, "noise scored {quiet}");
        let spike = detector.score(130.0);
        assert!(spike.score > NAB_THRESHOLD, "spike {spike:?}");
        assert!(
            spike.z > 10.0 && (spike.mean - 100.0).abs() < 1.0,
            "{spike:?}"
        );
        assert_eq!(detector.score(f64::NAN), Scored::default());
    }

    #[test]
    fn a_level_shift_is_loud_from_its_first_value() {
        let mut rng = StdRng::seed_from_u64(6);
        let mut detector = StreamingAnomaly::new(params());
        noisy(&mut detector, &mut rng, 3000);
        let noise = Normal::new(80.0, 2.0).unwrap();
        let first = detector.score(noise.sample(&mut rng));
        assert!(first.score > NAB_THRESHOLD, "{first:?}");
        // A shift of half a standard deviation is the series' own weather.
        let mut small = StreamingAnomaly::new(params());
        noisy(&mut small, &mut rng, 3000);
        let noise = Normal::new(101.0, 2.0).unwrap();
        let weather = (0..100)
            .map(|_| small.score(noise.sample(&mut rng)).score)
            .fold(0.0, f64::max);
        assert!(weather < NAB_THRESHOLD, "{weather}");
    }

    #[test]
    fn a_new_pattern_at_familiar_values_is_novel() {
        // A square wave between 0 and 10, then a ramp between the same values: no value is
        // out of range or far from the mean, the sequence is new.
        let mut detector = StreamingAnomaly::new(params());
        let mut last = Scored::default();
        for i in 0..2000 {
            last = detector.score(if (i / 50) % 2 == 0 { 0.0 } else { 10.0 });
        }
        assert!(last.score < 0.1, "{last:?}");
        let mut best = Scored::default();
        for i in 0..12 {
            let scored = detector.score([2.5, 5.0, 7.5, 5.0][i % 4]);
            assert!(scored.z < 2.0, "{scored:?}");
            if scored.score > best.score {
                best = scored;
            }
        }
        assert!(best.score >= 0.2 && best.novel, "{best:?}");
    }

    #[test]
    fn state_stays_bounded_on_a_series_that_never_repeats() {
        let mut detector = StreamingAnomaly::new(params());
        for i in 0..100_000 {
            detector.score(i as f64 * 1.5);
        }
        assert!(detector.contexts.len < CONTEXT_SLOTS);
        assert!(detector.window.len() <= 1000);
        assert!(
            detector.state_bytes() < 64 * 1024,
            "{}",
            detector.state_bytes()
        );
    }

    /// `peek` (which takes the scorer by shared reference, so learns nothing) scores as `score`
    /// does, bit for bit, at every value of a series that warms up, shifts, repeats itself,
    /// makes new contexts until the set of them starts over, and has values that are not finite.
    #[test]
    fn a_peek_scores_as_score_does() {
        let mut rng = StdRng::seed_from_u64(9);
        let noise = Normal::new(100.0, 2.0).unwrap();
        let mut detector = StreamingAnomaly::new(params());
        for i in 0..30_000u32 {
            let value = match i % 7_000 {
                _ if i % 977 == 0 => f64::NAN,
                0..=2_999 => noise.sample(&mut rng),
                3_000..=3_099 => 130.0 + noise.sample(&mut rng),
                3_100..=4_999 => (i % 40) as f64 * 10.0,
                // Never the same twice: new contexts until the set starts over.
                _ => i as f64 * 37.0,
            };
            let peeked = detector.peek(value);
            let scored = detector.score(value);
            assert_eq!(
                (peeked.score.to_bits(), peeked.z.to_bits(), peeked.novel),
                (scored.score.to_bits(), scored.z.to_bits(), scored.novel),
                "value {i}: {value}"
            );
        }
    }

    #[test]
    fn nothing_scores_during_warm_up() {
        let mut detector = StreamingAnomaly::new(params());
        for i in 0..200 {
            let scored = detector.score(if i == 150 { 1e9 } else { 1.0 });
            assert_eq!(scored.score, 0.0);
        }
        assert_eq!(detector.seen(), 200);
    }
}
