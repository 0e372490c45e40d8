//! The daily and weekly seasonality of a series, learned from its history in five-minute buckets
//! with MSTL (augurs' multiple seasonal-trend decomposition), so that a rate is judged against
//! what this time of day (and day of the week) usually brings, not against the whole day's range:
//! at noon's peak, half of noon's traffic is still inside the range the day goes through, and
//! only the season says it is missing.
//!
//! Both periods are learned together, once the history holds two weeks, and each is kept when it
//! explains enough of the series (MSTL's seasonal strength at least [`MIN_STRENGTH`]): traffic
//! without a cycle gets no season and is judged as before. Not the daily one alone from two days:
//! a series judged against its day but not its week is surer of itself than it should be, and
//! the first weekend's drop in traffic raised alarms (`vigil eval anomaly`: 1.5 false alarms a
//! week with a week of history, 0 with two; EVALUATION.md).
//! What is kept is each component's last period, indexed by the bucket's place in the day or
//! week: 288 values for a day, 2,016 for a week.

use augurs_core::Fit;
use augurs_mstl::MSTLModel;

/// Width of one bucket of the history.
pub const BUCKET_SECS: u64 = 300;
/// Buckets in a day and in a week.
pub const DAY_BUCKETS: usize = (86_400 / BUCKET_SECS) as usize;
pub const WEEK_BUCKETS: usize = 7 * DAY_BUCKETS;
/// The history seasons are learned from at least: two weeks.
pub const MIN_HISTORY_BUCKETS: usize = 2 * WEEK_BUCKETS;
/// The share of the series' variance (seasonal and remainder) a component must explain to be
/// kept: below it, the "season" is mostly the noise of the history it was fitted on. A period
/// seen only twice takes up about half of that noise by itself (a weekly component fitted to
/// two weeks of noise around a daily cycle scored 0.51).
pub const MIN_STRENGTH: f64 = 0.7;

/// The seasonal components kept for one series; empty when it has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seasons {
    /// Per kept period, its component over one period, at `[bucket number % period]`.
    components: Vec<Vec<f32>>,
}

impl Seasons {
    /// Fits the seasons of `values`, one per bucket, consecutive, the first being bucket number
    /// `first_bucket` (seconds since the epoch / [`BUCKET_SECS`]). Not finite values and a
    /// history shorter than two weeks give no season.
    pub fn fit(first_bucket: u64, values: &[f64]) -> Seasons {
        let periods = vec![DAY_BUCKETS, WEEK_BUCKETS];
        if values.len() < MIN_HISTORY_BUCKETS || values.iter().any(|v| !v.is_finite()) {
            return Seasons::default();
        }
        let fitted = match MSTLModel::naive(periods.clone()).fit(values) {
            Ok(fitted) => fitted,
            Err(e) => {
                tracing::debug!("no seasons: MSTL failed: {e}");
                return Seasons::default();
            }
        };
        let decomposition = fitted.fit();
        let strengths = decomposition.seasonal_strength();
        let mut components = Vec::new();
        for ((period, component), strength) in
            periods.iter().zip(decomposition.seasonal()).zip(strengths)
        {
            // NaN (a flat series) is no season either.
            if strength.is_nan() || strength < MIN_STRENGTH {
                continue;
            }
            let mut by_place = vec![0f32; *period];
            let last = &component[component.len() - period..];
            let first_of_last = first_bucket + (component.len() - period) as u64;
            for (offset, value) in last.iter().enumerate() {
                by_place[((first_of_last + offset as u64) % *period as u64) as usize] = *value;
            }
            components.push(by_place);
        }
        Seasons { components }
    }

    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// The periods kept, in buckets.
    pub fn periods(&self) -> Vec<usize> {
        self.components.iter().map(Vec::len).collect()
    }

    /// The seasonal part of the series at `secs` since the epoch: the sum of the components,
    /// linear between bucket centres (a step of ten seconds sees no five-minute staircase).
    pub fn at(&self, secs: f64) -> f64 {
        if self.components.is_empty() {
            return 0.0;
        }
        let place = secs / BUCKET_SECS as f64 - 0.5;
        let before = place.floor();
        let toward_next = place - before;
        let before = before as i64;
        self.components
            .iter()
            .map(|component| {
                let period = component.len() as i64;
                let value = |bucket: i64| component[bucket.rem_euclid(period) as usize] as f64;
                value(before) * (1.0 - toward_next) + value(before + 1) * toward_next
            })
            .sum()
    }

    /// Bytes held.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .components
                .iter()
                .map(|c| std::mem::size_of::<Vec<f32>>() + c.len() * 4)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A level of 10 with a daily swing of ±`daily` (peak at 15:00) and a weekend dip of
    /// `weekend`, plus uniform noise of ±1, from bucket `first` on.
    fn history(first: u64, buckets: usize, daily: f64, weekend: f64, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..buckets as u64)
            .map(|i| season_of(first + i, daily, weekend) + 10.0 + rng.gen_range(-1.0..1.0))
            .collect()
    }

    fn season_of(bucket: u64, daily: f64, weekend: f64) -> f64 {
        let secs = bucket * BUCKET_SECS + BUCKET_SECS / 2;
        let hour = (secs % 86_400) as f64 / 3600.0;
        // 1970-01-01 was a Thursday: days 2 and 3 of each week from it are the weekend.
        let weekday = (secs / 86_400) % 7;
        daily * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin()
            - if weekday == 2 || weekday == 3 {
                weekend
            } else {
                0.0
            }
    }

    #[test]
    fn a_daily_cycle_is_learned_from_two_weeks_and_placed_by_the_clock() {
        // Starting at 07:35 of some day, two weeks and a day of history.
        let first = 1_767_571_200 / BUCKET_SECS + 91;
        let seasons = Seasons::fit(first, &history(first, 15 * DAY_BUCKETS, 5.0, 0.0, 1));
        // No weekly cycle in it: that component is noise, and left out.
        assert_eq!(seasons.periods(), [DAY_BUCKETS]);
        // A week later, at any minute, the season is the cycle within the noise.
        let later = (first + 7 * DAY_BUCKETS as u64) * BUCKET_SECS;
        for minute in (0..1440).step_by(7) {
            let secs = later + minute * 60;
            let expected = season_of(secs / BUCKET_SECS, 5.0, 0.0);
            let got = seasons.at(secs as f64);
            assert!(
                (got - expected).abs() < 0.8,
                "minute {minute}: {got} against {expected}"
            );
        }
        assert!(
            seasons.state_bytes() < 2 * 1024,
            "{}",
            seasons.state_bytes()
        );
    }

    #[test]
    fn no_cycle_or_too_little_history_gives_no_season() {
        let first = 1_767_571_200 / BUCKET_SECS;
        assert!(Seasons::fit(first, &history(first, 15 * DAY_BUCKETS, 0.0, 0.0, 2)).is_empty());
        assert!(Seasons::fit(first, &history(first, 13 * DAY_BUCKETS, 5.0, 0.0, 3)).is_empty());
        assert!(Seasons::fit(first, &vec![0.0; 15 * DAY_BUCKETS]).is_empty());
        let mut broken = history(first, 15 * DAY_BUCKETS, 5.0, 0.0, 4);
        broken[7] = f64::NAN;
        assert!(Seasons::fit(first, &broken).is_empty());
        assert_eq!(Seasons::default().at(12345.0), 0.0);
    }

    #[test]
    fn a_weekend_dip_is_learned_with_two_weeks() {
        let first = 1_767_571_200 / BUCKET_SECS;
        let seasons = Seasons::fit(first, &history(first, 3 * WEEK_BUCKETS, 5.0, 4.0, 5));
        assert_eq!(seasons.periods(), [DAY_BUCKETS, WEEK_BUCKETS]);
        // Saturday noon against Tuesday noon: the dip, on top of the same daily cycle.
        let week = (first + 3 * WEEK_BUCKETS as u64) * BUCKET_SECS;
        let (saturday, tuesday) = (week + 5 * 86_400 + 43_200, week + 86_400 + 43_200);
        let dip = seasons.at(tuesday as f64) - seasons.at(saturday as f64);
        assert!((dip - 4.0).abs() < 1.0, "{dip}");
    }
}
