//! The labels of series already read, by series id: a query whose series were all seen before
//! reads only their samples, one statement instead of three (the dashboards' instant queries,
//! refreshed every few seconds over the same series).
//!
//! A series id and its check are a 128-bit hash of the metric name and both attribute maps as
//! stored, and the labels are worked out from exactly those, so an entry never goes stale: it is
//! only ever dropped for room.

use std::sync::{Arc, Mutex};

use super::select::FnvMap;

/// What one series id stands for: its stored metric name and its labels other than `__name__`,
/// `le` and `quantile`, as read from its rows with this `check`.
#[derive(Clone)]
pub(super) struct KnownSeries {
    pub(super) check: u64,
    pub(super) metric_name: Arc<str>,
    pub(super) base: Arc<[(String, String)]>,
}

impl KnownSeries {
    /// Roughly what the entry holds on the heap, for the cache's bound.
    fn bytes(&self) -> usize {
        const ENTRY: usize = 96;
        ENTRY
            + self.metric_name.len()
            + self
                .base
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * std::mem::size_of::<String>())
                .sum::<usize>()
    }
}

/// Two generations, each up to half the bound: lookups promote what the older one holds, and
/// when the newer one is full the older one is dropped, so what queries keep asking for stays
/// and the rest ages out, without a per-entry recency list.
pub struct SeriesLabels {
    limit_bytes: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: FnvMap<u64, KnownSeries>,
    current_bytes: usize,
    previous: FnvMap<u64, KnownSeries>,
}

/// The bound of the collector's cache: ~100,000 series of ten labels.
pub const SERIES_LABELS_BYTES: usize = 64 << 20;

impl Default for SeriesLabels {
    fn default() -> Self {
        SeriesLabels::with_limit(SERIES_LABELS_BYTES)
    }
}

impl SeriesLabels {
    pub fn with_limit(limit_bytes: usize) -> SeriesLabels {
        SeriesLabels {
            limit_bytes,
            generations: Mutex::new(Generations::default()),
        }
    }

    /// The series known under `id` with `check`; `None` when unknown, or known with another
    /// check (another series sharing the id).
    pub(super) fn get(&self, id: u64, check: u64) -> Option<KnownSeries> {
        let mut generations = self.lock();
        if let Some(known) = generations.current.get(&id) {
            return (known.check == check).then(|| known.clone());
        }
        let known = generations.previous.remove(&id)?;
        let found = (known.check == check).then(|| known.clone());
        generations.insert(id, known, self.limit_bytes / 2);
        found
    }

    pub(super) fn insert(&self, id: u64, known: KnownSeries) {
        self.lock().insert(id, known, self.limit_bytes / 2);
    }

    /// How many series are known, and roughly their bytes (the newer generation's only).
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let generations = self.lock();
        (
            generations.current.len() + generations.previous.len(),
            generations.current_bytes,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // What the lock guards is a cache: a panic elsewhere leaves it usable.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Generations {
    fn insert(&mut self, id: u64, known: KnownSeries, generation_bytes: usize) {
        let bytes = known.bytes();
        if self.current_bytes + bytes > generation_bytes {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += bytes;
        if let Some(replaced) = self.current.insert(id, known) {
            self.current_bytes -= replaced.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(check: u64, gpu: usize) -> KnownSeries {
        KnownSeries {
            check,
            metric_name: "DCGM_FI_DEV_GPU_UTIL".into(),
            base: vec![("gpu".to_string(), gpu.to_string())].into(),
        }
    }

    #[test]
    fn a_series_is_known_by_its_id_and_check_and_the_cache_keeps_within_its_bound() {
        let cache = SeriesLabels::with_limit(64 << 10);
        cache.insert(1, series(10, 1));
        let known = cache.get(1, 10).expect("known");
        assert_eq!(known.base[0].1, "1");
        assert!(
            cache.get(1, 11).is_none(),
            "another series under the same id"
        );
        assert!(cache.get(2, 10).is_none());

        // Far more series than fit: the bound holds, and one asked for all along stays.
        for id in 2..10_000 {
            cache.insert(id, series(id, id as usize));
            assert!(cache.get(1, 10).is_some(), "series 1 dropped at {id}");
        }
        let (count, bytes) = cache.size();
        assert!(bytes <= 32 << 10, "{bytes} bytes in the newer generation");
        assert!(count < 1_000, "{count} series kept");
        assert!(cache.get(9_999, 9_999).is_some());
        assert!(cache.get(2, 2).is_none(), "the oldest aged out");
    }
}
