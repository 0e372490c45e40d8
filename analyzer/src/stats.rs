//! The statistics the detectors use: two-sample tests of distributions and proportions, divergence
//! measures, robust location and scale, and multiple-testing control.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

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
    let p = ChiSquared::new(dof).map(|d| 1.0 - d.cdf(statistic)).ok()?;
    Some((statistic, p))
}

/// Two-proportion z-test (pooled): (z, two-sided p).
pub fn two_proportions(
    successes_a: f64,
    n_a: f64,
    successes_b: f64,
    n_b: f64,
) -> Option<(f64, f64)> {
    if n_a == 0.0 || n_b == 0.0 {
        return None;
    }
    let pooled = (successes_a + successes_b) / (n_a + n_b);
    let se = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (successes_b / n_b - successes_a / n_a) / se;
    let normal = Normal::new(0.0, 1.0).ok()?;
    Some((z, 2.0 * (1.0 - normal.cdf(z.abs()))))
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
        let (z, p) = two_proportions(20.0, 1000.0, 60.0, 1000.0).unwrap();
        assert!(z > 4.0 && p < 1e-4);
        assert_eq!(
            benjamini_hochberg(&[0.01, 0.04, 0.03]),
            vec![0.03, 0.04, 0.04]
        );
        let (center, scale) = median_mad(&[10.0, 10.0, 10.0, 11.0, 9.0, 100.0]).unwrap();
        assert_eq!(center, 10.0);
        assert!((scale - 1.4826 * 0.5).abs() < 1e-9);
    }
}
