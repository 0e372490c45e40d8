//! What the counting tests ([`super::golden_signals`]' error ratio, [`super::calls_dropped`])
//! share: an episode of a CUSUM past its threshold, opened when the evidence reaches it, kept
//! open while at least half of it is left, closed `resolve_after` after that.

use std::time::{Duration, SystemTime};

/// An episode: when it began, when it was last active, and its worst step (`W`, with the
/// evidence it had).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Episode<W> {
    pub(crate) began: SystemTime,
    pub(crate) last_active: SystemTime,
    pub(crate) worst: W,
    worst_evidence: f64,
}

/// Moves `episode` by the step at `at` whose CUSUM stands at `evidence` (above zero since
/// `since`), against the threshold `nats`; `step` is what the episode keeps of it if it is the
/// worst yet.
pub(crate) fn judge<W>(
    episode: &mut Option<Episode<W>>,
    (at, since): (SystemTime, SystemTime),
    (evidence, nats): (f64, f64),
    resolve_after: Duration,
    step: W,
) {
    match episode {
        None if evidence >= nats => {
            *episode = Some(Episode {
                began: since,
                last_active: at,
                worst: step,
                worst_evidence: evidence,
            })
        }
        None => {}
        Some(open) => {
            // Half the evidence left keeps it open: the counts are still off.
            if evidence >= nats / 2.0 {
                open.last_active = at;
                if evidence > open.worst_evidence {
                    open.worst = step;
                    open.worst_evidence = evidence;
                }
            } else if at.duration_since(open.last_active).unwrap_or_default() >= resolve_after {
                *episode = None;
            }
        }
    }
}
