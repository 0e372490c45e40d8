//! The statistics the detectors use: two-sample tests of distributions and proportions, divergence
//! measures, robust location and scale, and multiple-testing control.

use statrs::distribution::{ChiSquared, ContinuousCDF, DiscreteCDF, Hypergeometric, Normal};

/// Median of a slice (sorted in place). `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Median and median absolute deviation scaled to a normal standard deviation (×1.4826).
pub fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let mut sorted = values.to_vec();
    let center = median(&mut sorted)?;
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    let mad = median(&mut deviations)?;
    Some((center, 1.4826 * mad))
}

/// Two-sample Kolmogorov–Smirnov: the statistic D and its asymptotic p-value.
pub fn ks_two_sample(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let effective = (n * m / (n + m)).sqrt();
    let lambda = (effective + 0.12 + 0.11 / effective) * d;
    Some((d, kolmogorov_q(lambda)))
}

/// The KS distance between `part` and the rest of `all`, both sorted, `part` a sub-multiset of
/// `all` (a chunk of a reference against the remainder of that reference), in one pass.
pub fn ks_against_rest(all: &[f64], part: &[f64]) -> Option<f64> {
    let (n_all, n_part) = (all.len(), part.len());
    if n_part == 0 || n_part >= n_all {
        return None;
    }
    let n_rest = (n_all - n_part) as f64;
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < n_all {
        let x = all[i];
        while i < n_all && all[i] <= x {
            i += 1;
        }
        while j < n_part && part[j] <= x {
            j += 1;
        }
        let f_part = j as f64 / n_part as f64;
        let f_rest = (i - j) as f64 / n_rest;
        d = d.max((f_part - f_rest).abs());
    }
    Some(d)
}

/// Quantiles of sorted `values`, each interpolated between the two nearest ranks (as
/// `numpy.quantile`'s default): `None` when empty.
pub fn quantiles(sorted: &[f64], probabilities: &[f64]) -> Option<Vec<f64>> {
    quantiles_of_rest(sorted, &[], probabilities)
}

/// Quantiles of `all` without `part` (both sorted, `part` a sub-multiset of `all`), interpolated
/// as [`quantiles`], in one pass: a chunk of a reference against the remainder of that reference.
pub fn quantiles_of_rest(all: &[f64], part: &[f64], probabilities: &[f64]) -> Option<Vec<f64>> {
    let n_rest = all.len().checked_sub(part.len())?;
    if n_rest == 0 {
        return None;
    }
    // The ranks each quantile interpolates between, then one walk over `all` that skips one
    // element per element of `part` and picks those ranks up.
    let positions: Vec<f64> = probabilities
        .iter()
        .map(|p| p.clamp(0.0, 1.0) * (n_rest - 1) as f64)
        .collect();
    let mut wanted: Vec<usize> = positions
        .iter()
        .flat_map(|h| [h.floor() as usize, h.ceil() as usize])
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut at_rank = Vec::with_capacity(wanted.len());
    let (mut j, mut rank) = (0usize, 0usize);
    for &x in all {
        if at_rank.len() == wanted.len() {
            break;
        }
        if j < part.len() && part[j] == x {
            j += 1;
            continue;
        }
        if wanted[at_rank.len()] == rank {
            at_rank.push(x);
        }
        rank += 1;
    }
    let value =
        |rank: usize| -> Option<f64> { at_rank.get(wanted.binary_search(&rank).ok()?).copied() };
    positions
        .iter()
        .map(|h| {
            let (low, high) = (value(h.floor() as usize)?, value(h.ceil() as usize)?);
            Some(low + (high - low) * h.fract())
        })
        .collect()
}

/// Q_KS(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²): the probability of a KS distance this large by chance.
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as u32 % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Bin edges at the reference's deciles (`bins` equal-mass bins), for PSI and Jensen–Shannon.
pub fn quantile_edges(reference: &[f64], bins: usize) -> Vec<f64> {
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..bins)
        .filter_map(|k| sorted.get(k * sorted.len() / bins).copied())
        .collect();
    edges.dedup();
    edges
}

/// Share of values in each bin defined by `edges` (len(edges) + 1 bins), smoothed so no bin is 0.
pub fn histogram_shares(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0.0; edges.len() + 1];
    for value in values {
        counts[edges.partition_point(|edge| edge <= value)] += 1.0;
    }
    shares(&counts)
}

/// Counts to shares, with half a count added to every cell so that logs stay finite.
pub fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum::<f64>() + 0.5 * counts.len() as f64;
    counts.iter().map(|c| (c + 0.5) / total).collect()
}

/// Population stability index: Σ (q − p) ln(q / p). Rule of thumb: < 0.1 stable, > 0.25 shifted.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(p, q)| (q - p) * (q / p).ln())
        .sum()
}

/// Jensen–Shannon divergence in bits (0: same, 1: disjoint).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .zip(b)
            .filter(|(x, _)| **x > 0.0)
            .map(|(x, y)| x * (x / y).log2())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a + b) / 2.0).collect();
    0.5 * kl(p, &m) + 0.5 * kl(q, &m)
}

/// Pearson's chi-square test of homogeneity for two rows of category counts: (statistic, p).
pub fn chi_square_homogeneity(reference: &[f64], current: &[f64]) -> Option<(f64, f64)> {
    let total_r: f64 = reference.iter().sum();
    let total_c: f64 = current.iter().sum();
    if total_r == 0.0 || total_c == 0.0 {
        return None;
    }
    let total = total_r + total_c;
    let mut statistic = 0.0;
    let mut cells = 0;
    for (r, c) in reference.iter().zip(current) {
        let column = r + c;
        if column == 0.0 {
            continue;
        }
        cells += 1;
        for (observed, row_total) in [(r, total_r), (c, total_c)] {
            let expected = row_total * column / total;
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    if cells < 2 {
        return None;
    }
    let dof = f64::from(cells - 1);
    let p = ChiSquared::new(dof).map(|d| d.sf(statistic)).ok()?;
    Some((statistic, p))
}

/// Fisher's exact test of two proportions, `successes_a` of `n_a` against `successes_b` of `n_b`:
/// (difference of rates b − a, two-sided p, by doubling the smaller tail). Exact because errors are
/// rare: a window of a few hundred requests at 2% holds a handful, where the normal approximation
/// of the z-test calls ordinary Poisson clumps significant.
pub fn fisher_exact(successes_a: u64, n_a: u64, successes_b: u64, n_b: u64) -> Option<(f64, f64)> {
    if n_a == 0 || n_b == 0 || successes_a > n_a || successes_b > n_b {
        return None;
    }
    let successes = successes_a + successes_b;
    // Given the total successes, b's count is hypergeometric under the null.
    let null = Hypergeometric::new(n_a + n_b, successes, n_b).ok()?;
    let at_most = null.cdf(successes_b);
    let at_least = if successes_b == 0 {
        1.0
    } else {
        null.sf(successes_b - 1)
    };
    let difference = successes_b as f64 / n_b as f64 - successes_a as f64 / n_a as f64;
    Some((difference, (2.0 * at_most.min(at_least)).min(1.0)))
}

/// Mann–Whitney U (Wilcoxon rank-sum) with midranks for ties: (z of b against a, two-sided p).
/// The sharpest common test of a location shift (KS looks at any difference of shape, and pays
/// for it in power), and rank-based, so a few huge values do not drive it.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|v| (*v, false))
        .chain(b.iter().map(|v| (*v, true)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = all.len() as f64;
    let (n_a, n_b) = (a.len() as f64, b.len() as f64);
    let mut rank_sum_b = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < all.len() {
        let mut end = start + 1;
        while end < all.len() && all[end].0 == all[start].0 {
            end += 1;
        }
        let ties = (end - start) as f64;
        let midrank = (start + end + 1) as f64 / 2.0;
        rank_sum_b += midrank * all[start..end].iter().filter(|(_, in_b)| *in_b).count() as f64;
        tie_term += ties * ties * ties - ties;
        start = end;
    }
    let u = rank_sum_b - n_b * (n_b + 1.0) / 2.0;
    let variance = n_a * n_b / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    let z = (u - n_a * n_b / 2.0) / variance.sqrt();
    let normal = Normal::new(0.0, 1.0).ok()?;
    Some((z, (2.0 * normal.sf(z.abs())).min(1.0)))
}

/// Benjamini–Hochberg adjusted p-values (same order as given).
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p_values[*a].total_cmp(&p_values[*b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, index) in order.iter().enumerate().rev() {
        let value = (p_values[*index] * m as f64 / (rank + 1) as f64).min(1.0);
        running = running.min(value);
        adjusted[*index] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, LogNormal};

    fn sample(n: usize, median: f64, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let dist = LogNormal::new(median.ln(), 0.5).unwrap();
        (0..n).map(|_| dist.sample(&mut rng)).collect()
    }

    #[test]
    fn ks_separates_a_ten_percent_shift_and_not_noise() {
        let reference = sample(3000, 500.0, 1);
        let same = sample(3000, 500.0, 2);
        let shifted = sample(3000, 550.0, 3);
        let (d_same, p_same) = ks_two_sample(&reference, &same).unwrap();
        let (d_shift, p_shift) = ks_two_sample(&reference, &shifted).unwrap();
        assert!(p_same > 0.01, "D={d_same} p={p_same}");
        assert!(p_shift < 1e-6, "D={d_shift} p={p_shift}");
    }

    #[test]
    fn psi_and_js_grow_with_the_shift() {
        let reference = sample(5000, 500.0, 1);
        let edges = quantile_edges(&reference, 10);
        let p = histogram_shares(&reference, &edges);
        let q_small = histogram_shares(&sample(5000, 510.0, 2), &edges);
        let q_big = histogram_shares(&sample(5000, 650.0, 3), &edges);
        assert!(psi(&p, &q_small) < 0.05);
        assert!(psi(&p, &q_big) > 0.2);
        assert!(jensen_shannon(&p, &q_big) > jensen_shannon(&p, &q_small));
        assert!(jensen_shannon(&p, &p).abs() < 1e-12);
    }

    #[test]
    fn chi_square_proportions_and_bh() {
        let (_, p) = chi_square_homogeneity(&[900.0, 80.0, 20.0], &[700.0, 250.0, 50.0]).unwrap();
        assert!(p < 1e-10);
        let (_, p) = chi_square_homogeneity(&[900.0, 80.0, 20.0], &[905.0, 77.0, 18.0]).unwrap();
        assert!(p > 0.5);
        let (difference, p) = fisher_exact(20, 1000, 60, 1000).unwrap();
        assert!((difference - 0.04).abs() < 1e-12 && p < 1e-4);
        assert_eq!(
            benjamini_hochberg(&[0.01, 0.04, 0.03]),
            vec![0.03, 0.04, 0.04]
        );
        let (center, scale) = median_mad(&[10.0, 10.0, 10.0, 11.0, 9.0, 100.0]).unwrap();
        assert_eq!(center, 10.0);
        assert!((scale - 1.4826 * 0.5).abs() < 1e-9);
    }

    #[test]
    fn fisher_exact_matches_the_hypergeometric_tails() {
        // 8 of 10 against 1 of 6: P(X ≤ 1) = (C(7,6) + 9·C(7,5)) / C(16,6) = 196/8008, doubled.
        let (_, p) = fisher_exact(8, 10, 1, 6).unwrap();
        assert!((p - 2.0 * 196.0 / 8008.0).abs() < 1e-9, "{p}");
        let (_, p) = fisher_exact(5, 250, 5, 250).unwrap();
        assert_eq!(p, 1.0);
        // A handful of errors more than usual is a Poisson clump, not a finding.
        let (_, p) = fisher_exact(30, 1500, 10, 250).unwrap();
        assert!(p > 0.01, "{p}");
        assert!(fisher_exact(1, 0, 1, 10).is_none());
        assert!(fisher_exact(11, 10, 1, 10).is_none());
    }

    #[test]
    fn mann_whitney_on_a_known_case_with_ties_and_under_the_null() {
        // Ranks of b are 4, 5, 6: U = 9, mean 4.5, variance 9/12·7.
        let (z, p) = mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert!((z - 4.5 / 5.25f64.sqrt()).abs() < 1e-9, "{z}");
        assert!((p - 0.0495).abs() < 1e-3, "{p}");
        assert!(mann_whitney(&[2.0, 2.0], &[2.0, 2.0]).is_none());
        // Integer token counts (many ties) under the null: about 5% of p-values below 0.05.
        let mut below = 0;
        for seed in 0..300 {
            let a: Vec<f64> = sample(400, 50.0, seed).iter().map(|v| v.round()).collect();
            let b: Vec<f64> = sample(300, 50.0, seed + 10_000)
                .iter()
                .map(|v| v.round())
                .collect();
            if mann_whitney(&a, &b).unwrap().1 < 0.05 {
                below += 1;
            }
        }
        assert!((6..=27).contains(&below), "{below} of 300 below 0.05");
        // A 10% shift at these sizes is plain.
        let (z, p) = mann_whitney(&sample(3000, 500.0, 1), &sample(1000, 550.0, 2)).unwrap();
        assert!(z > 4.0 && p < 1e-5, "{z} {p}");
    }

    #[test]
    fn a_part_against_the_rest_matches_the_direct_computation() {
        let all_unsorted = [5.0, 1.0, 3.0, 3.0, 9.0, 7.0, 2.0, 8.0, 3.0, 6.0];
        let part_unsorted = [3.0, 9.0, 1.0];
        let rest_unsorted = [5.0, 3.0, 7.0, 2.0, 8.0, 3.0, 6.0];
        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        let (all, part) = (sorted(&all_unsorted), sorted(&part_unsorted));
        let (direct, _) = ks_two_sample(&part_unsorted, &rest_unsorted).unwrap();
        assert!((ks_against_rest(&all, &part).unwrap() - direct).abs() < 1e-12);
        assert_eq!(
            quantiles_of_rest(&all, &part, &[0.5]),
            Some(vec![median(&mut rest_unsorted.to_vec()).unwrap()])
        );
        // Rest sorted: 2 3 3 5 6 7 8; numpy.quantile gives 2.6, 3, 7.4 at 0.1, 0.25, 0.9.
        let rest = quantiles_of_rest(&all, &part, &[0.1, 0.25, 0.9, 0.0, 1.0]).unwrap();
        for (got, want) in rest.iter().zip([2.6, 3.0, 7.4, 2.0, 8.0]) {
            assert!((got - want).abs() < 1e-12, "{rest:?}");
        }
        assert_eq!(
            quantiles(&sorted(&rest_unsorted), &[0.1, 0.9]).map(|q| q[1]),
            Some(rest[2])
        );
        // Even-sized rest.
        let part = sorted(&[3.0, 9.0, 1.0, 8.0]);
        assert_eq!(quantiles_of_rest(&all, &part, &[0.5]), Some(vec![4.0]));
        assert_eq!(quantiles_of_rest(&all, &all, &[0.5]), None);
        assert_eq!(quantiles(&[], &[0.5]), None);
        assert_eq!(ks_against_rest(&all, &all), None);
    }
}
