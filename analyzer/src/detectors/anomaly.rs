//! A streaming anomaly score for any single series, for metrics no specific model covers: an
//! exponentially weighted mean and variance, and the z-score of each new value against them
//! before it is folded in. Cheap, one pass, no history kept.

/// EWMA mean/variance tracker.
#[derive(Debug, Clone)]
pub struct StreamingAnomaly {
    /// Weight of a new value (0.01–0.1: a memory of roughly 1/alpha values).
    alpha: f64,
    /// Values seen before scores are given.
    warmup: u64,
    mean: f64,
    variance: f64,
    count: u64,
    /// Floor of the standard deviation, relative to |mean|, so a flat series does not make every
    /// wiggle infinite.
    relative_floor: f64,
}

impl StreamingAnomaly {
    pub fn new(alpha: f64, warmup: u64) -> Self {
        StreamingAnomaly {
            alpha,
            warmup,
            mean: 0.0,
            variance: 0.0,
            count: 0,
            relative_floor: 0.001,
        }
    }

    /// The anomaly score of `value` (|z| against what came before; 0 during warm-up), then learn it.
    pub fn score(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        self.count += 1;
        if self.count == 1 {
            self.mean = value;
            return 0.0;
        }
        let deviation = value - self.mean;
        let sd = self
            .variance
            .sqrt()
            .max(self.mean.abs() * self.relative_floor)
            .max(1e-12);
        let z = deviation.abs() / sd;
        // Learn slowly from outliers so that one spike does not become the new normal.
        let weight = if self.count > self.warmup && z > 6.0 {
            self.alpha / 10.0
        } else {
            self.alpha
        };
        let weight = if self.count <= self.warmup {
            1.0 / self.count as f64
        } else {
            weight
        };
        self.mean += weight * deviation;
        self.variance = (1.0 - weight) * (self.variance + weight * deviation * deviation);
        if self.count <= self.warmup { 0.0 } else { z }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn quiet_on_noise_loud_on_a_spike_and_a_level_shift() {
        let mut rng = StdRng::seed_from_u64(5);
        let noise = Normal::new(100.0, 2.0).unwrap();
        let mut detector = StreamingAnomaly::new(0.05, 50);
        let mut max_quiet: f64 = 0.0;
        for _ in 0..1000 {
            max_quiet = max_quiet.max(detector.score(noise.sample(&mut rng)));
        }
        assert!(max_quiet < 5.0, "noise scored {max_quiet}");
        assert!(detector.score(130.0) > 10.0, "spike");
        // A level shift of ten standard deviations stands out until the mean has moved to it.
        let shifted: Vec<f64> = (0..3)
            .map(|_| detector.score(noise.sample(&mut rng) - 20.0))
            .collect();
        assert!(shifted.iter().all(|z| *z > 5.0), "{shifted:?}");
        assert_eq!(StreamingAnomaly::new(0.05, 10).score(f64::NAN), 0.0);
    }
}
