//! Latency statistics: mean, population standard deviation and
//! percentiles interpolated linearly between order statistics, as numpy's
//! `mean`, `std` and `percentile` (default `method="linear"`) compute them —
//! which is what vLLM's benchmark reports.

use serde::Serialize;

/// The `q`-th percentile (`q` in `[0, 100]`) of `sorted`, which must be in
/// ascending order; `None` when it is empty.
///
/// numpy's default: the value at virtual index `(n - 1) · q / 100`,
/// interpolated linearly between its two neighbours.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * (q / 100.0).clamp(0.0, 1.0);
    let lo = (h.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let frac = h - lo as f64;
    Some(sorted[lo] + frac * (sorted[hi] - sorted[lo]))
}

/// Summary of one latency metric over a run, in milliseconds.
///
/// Every field is 0 when `count` is 0 (no request produced the metric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: usize,
    /// Arithmetic mean, ms.
    pub mean_ms: f64,
    /// Population standard deviation (numpy's `std`, `ddof = 0`), ms.
    pub std_ms: f64,
    /// 50th percentile, ms.
    pub median_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

impl LatencyStats {
    /// Statistics of `samples_ms` (milliseconds, any order).
    pub fn from_ms(samples_ms: &[f64]) -> Self {
        if samples_ms.is_empty() {
            return Self::default();
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let pct = |q| percentile(&sorted, q).unwrap_or(0.0);
        LatencyStats {
            count: sorted.len(),
            mean_ms: mean,
            std_ms: var.sqrt(),
            median_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
        }
    }
}

/// Time per output token after the first, ms: `(e2e − ttft) / (tokens − 1)`;
/// `None` for requests with fewer than two output tokens.
pub fn tpot_ms(e2e_ms: f64, ttft_ms: f64, output_tokens: u64) -> Option<f64> {
    (output_tokens > 1).then(|| (e2e_ms - ttft_ms) / (output_tokens - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // Values from numpy.percentile(x, q).
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile(&x, 50.0).unwrap(), 2.5));
        assert!(close(percentile(&x, 90.0).unwrap(), 3.7));
        assert!(close(percentile(&x, 99.0).unwrap(), 3.97));
        assert!(close(percentile(&x, 0.0).unwrap(), 1.0));
        assert!(close(percentile(&x, 100.0).unwrap(), 4.0));
        let y = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert!(close(percentile(&y, 40.0).unwrap(), 29.0));
        assert!(close(percentile(&y, 50.0).unwrap(), 35.0));
        let z: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!(close(percentile(&z, 99.0).unwrap(), 99.01));
        assert!(close(percentile(&z, 90.0).unwrap(), 90.1));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn stats_sort_their_input_and_use_population_std() {
        let s = LatencyStats::from_ms(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.count, 4);
        assert!(close(s.mean_ms, 2.5));
        // numpy.std([1, 2, 3, 4]) = sqrt(1.25)
        assert!(close(s.std_ms, 1.25f64.sqrt()));
        assert!(close(s.median_ms, 2.5));
        assert!(close(s.p90_ms, 3.7));
        assert!(close(s.p99_ms, 3.97));
    }

    #[test]
    fn no_samples_gives_zeros() {
        assert_eq!(LatencyStats::from_ms(&[]), LatencyStats::default());
    }

    #[test]
    fn tpot_excludes_the_first_token() {
        // 10 tokens: first at 100 ms, last at 190 ms → 10 ms per token.
        assert!(close(tpot_ms(190.0, 100.0, 10).unwrap(), 10.0));
        assert_eq!(tpot_ms(190.0, 100.0, 1), None);
        assert_eq!(tpot_ms(190.0, 100.0, 0), None);
    }
}
