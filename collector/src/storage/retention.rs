//! Retention: Parquet files older than the age limit go first (the per-minute rollups' limit is
//! longer), then the oldest hours until the total size fits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ParquetFile;

const HOUR_NS: i64 = 3_600_000_000_000;

/// How long and how much data is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete hours that ended more than this many hours ago; 0 keeps data forever.
    pub max_age_hours: u64,
    /// The per-minute rollups (`llm_minutes`, `gpu_minutes`) are kept at least this long (and
    /// as long as `max_age_hours`): a few thousand rows a day each, they are what ranges of
    /// weeks read, and the history the anomaly detector learns weekly seasons from (two weeks
    /// at least). 0 keeps them forever.
    pub rollup_max_age_hours: u64,
    /// Delete the oldest hours while all tables together exceed this many bytes; 0 is no limit.
    pub max_bytes: u64,
    /// How often retention runs.
    pub check_interval_secs: u64,
    /// A file retention removes leaves the table at once but stays on disk this long, so that
    /// queries that started before (and read it lazily) finish; keep it above `query.timeout_secs`.
    pub delete_grace_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_hours: 24 * 7,
            rollup_max_age_hours: 24 * 35,
            max_bytes: 0,
            check_interval_secs: 60,
            delete_grace_secs: 120,
        }
    }
}

/// The files to delete, per table (same order as `tables`, each with whether it is a rollup).
pub fn select_victims(
    tables: &[(bool, Vec<ParquetFile>)],
    now_ns: i64,
    config: &RetentionConfig,
) -> Vec<Vec<PathBuf>> {
    let mut victims: Vec<Vec<PathBuf>> = vec![Vec::new(); tables.len()];
    let mut kept: Vec<(i64, usize, &ParquetFile)> = Vec::new();
    let cutoff = |hours: u64| {
        if hours == 0 {
            i64::MIN
        } else {
            now_ns.saturating_sub((hours as i64).saturating_mul(HOUR_NS))
        }
    };
    let rollup_hours = if config.max_age_hours == 0 || config.rollup_max_age_hours == 0 {
        0
    } else {
        config.max_age_hours.max(config.rollup_max_age_hours)
    };
    for (index, (rollup, files)) in tables.iter().enumerate() {
        let cutoff = cutoff(if *rollup {
            rollup_hours
        } else {
            config.max_age_hours
        });
        for f in files {
            if f.hour_start_ns.saturating_add(HOUR_NS) <= cutoff {
                victims[index].push(f.path.clone());
            } else {
                kept.push((f.hour_start_ns, index, f));
            }
        }
    }
    if config.max_bytes > 0 {
        let mut total: u64 = kept.iter().map(|(_, _, f)| f.size).sum();
        kept.sort_by_key(|(hour, _, f)| (*hour, f.lsn));
        for (_, index, f) in kept {
            if total <= config.max_bytes {
                break;
            }
            total -= f.size;
            victims[index].push(f.path.clone());
        }
    }
    victims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, hour: i64, size: u64) -> ParquetFile {
        ParquetFile {
            path: PathBuf::from(name),
            size,
            hour_start_ns: hour * HOUR_NS,
            lsn: hour as u64,
            first_lsn: hour as u64,
            level: 0,
        }
    }

    #[test]
    fn age_then_size() {
        let now = 100 * HOUR_NS;
        let tables = vec![
            (
                false,
                vec![file("a", 10, 5), file("b", 98, 5), file("c", 99, 5)],
            ),
            (false, vec![file("d", 97, 5)]),
        ];
        let config = RetentionConfig {
            max_age_hours: 24,
            max_bytes: 9,
            check_interval_secs: 1,
            ..RetentionConfig::default()
        };
        let victims = select_victims(&tables, now, &config);
        assert_eq!(victims[0], vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(victims[1], vec![PathBuf::from("d")]);
    }

    #[test]
    fn zero_means_unlimited() {
        let tables = vec![
            (false, vec![file("a", 0, 1 << 40)]),
            (true, vec![file("b", 0, 1)]),
        ];
        let config = RetentionConfig {
            max_age_hours: 0,
            max_bytes: 0,
            check_interval_secs: 1,
            ..RetentionConfig::default()
        };
        let victims = select_victims(&tables, i64::MAX, &config);
        assert!(victims.iter().all(Vec::is_empty));
    }

    #[test]
    fn rollups_outlive_the_rows_they_sum() {
        let now = 1000 * HOUR_NS;
        let tables = vec![
            (false, vec![file("spans", 800, 5), file("recent", 990, 5)]),
            (true, vec![file("old", 100, 1), file("minutes", 800, 1)]),
        ];
        let config = RetentionConfig {
            max_age_hours: 24,
            rollup_max_age_hours: 24 * 30,
            ..RetentionConfig::default()
        };
        let victims = select_victims(&tables, now, &config);
        assert_eq!(victims[0], vec![PathBuf::from("spans")]);
        assert_eq!(victims[1], vec![PathBuf::from("old")]);
        // Never shorter than the rows' own limit.
        let longer = RetentionConfig {
            max_age_hours: 24 * 60,
            ..config.clone()
        };
        assert!(select_victims(&tables, now, &longer)[1].is_empty());
        let forever = RetentionConfig {
            rollup_max_age_hours: 0,
            ..config
        };
        assert!(select_victims(&tables, now, &forever)[1].is_empty());
    }
}
