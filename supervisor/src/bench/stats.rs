//! The statistics every bench reports with: medians, nearest-rank percentiles, a spread
//! (median, p90, min, max) and the distribution function that the latency plots draw.
//! Machines are noisy, so no report rests on a single sample.

use serde::Serialize;

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile `p` (0..=1) of `sorted`; NaN (null in JSON) when empty.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median, p90 (nearest rank), min and max of a series; null in JSON where there were no
/// samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Spread {
    pub median: f64,
    pub p90: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Median, p90 (nearest rank), min and max.
pub(super) fn spread(v: &[f64]) -> Spread {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    Spread {
        median: median(sorted.clone()),
        p90: percentile(&sorted, 0.9),
        min: sorted.first().copied(),
        max: sorted.last().copied(),
    }
}

/// The latency at every half percentile of `samples` (any order): (latency, percent) points
/// of the distribution function, 201 at most. Non-finite samples are left out.
pub fn quantiles(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Vec::new();
    }
    (0..=200)
        .map(|step| {
            let p = f64::from(step) / 200.0;
            (percentile(&sorted, p), f64::from(step) / 2.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_reports_nearest_rank_p90() {
        // Read back from its JSON, as scripts and `mate bench all` see it.
        let spread = |v: &[f64]| serde_json::to_value(spread(v)).expect("serializes");
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = spread(&v);
        assert_eq!(s["median"], 10.5);
        assert_eq!(s["p90"], 18.0);
        assert_eq!(s["min"], 1.0);
        assert_eq!(s["max"], 20.0);
        assert_eq!(spread(&[7.0])["p90"], 7.0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn quantiles_run_from_the_smallest_to_the_largest_sample() {
        let samples: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let q = quantiles(&samples);
        assert_eq!(q.len(), 201);
        assert_eq!(q[0], (1.0, 0.0));
        assert_eq!(q[100], (500.0, 50.0));
        assert_eq!(q[198], (990.0, 99.0));
        assert_eq!(q[200], (1000.0, 100.0));
        assert!(q.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(quantiles(&[f64::NAN]).is_empty());
    }
}
