//! When each request is sent: all at once, or as a Poisson process.
//!
//! A Poisson process of rate `r` requests/s has exponentially distributed
//! gaps with mean `1 / r` seconds (vLLM's `--request-rate R` with the default
//! burstiness of 1). The gaps come from a seeded generator, so two runs with
//! the same seed send requests on the same schedule.

use std::time::Duration;

/// A small seeded generator (the HAL's SplitMix64): deterministic across
/// platforms, good enough for arrival times and word choices.
#[derive(Clone, Debug)]
pub struct SplitMix64(hal::conformance::Rng);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(hal::conformance::Rng::new(seed))
    }

    /// A generator for one of several independent streams drawn from one
    /// seed (`stream` 0, 1, 2, … give unrelated sequences).
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut g = Self::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        // Decorrelate nearby seeds before the first draw.
        g.next_u64();
        g
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        self.0.unit()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// Exponentially distributed with the given `rate` (mean `1 / rate`).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -(1.0 - self.next_f64()).ln() / rate
    }
}

/// Send times of `n` requests, as offsets from the start of the benchmark.
///
/// `rate` is in requests/s: `None` sends every request at offset zero;
/// `Some(r)` (`r` finite and > 0) sends the first at zero and spaces the
/// rest by exponential gaps of mean `1 / r` s, drawn from `seed`. The result
/// is non-decreasing.
pub fn arrival_offsets(n: usize, rate: Option<f64>, seed: u64) -> Vec<Duration> {
    let Some(rate) = rate else {
        return vec![Duration::ZERO; n];
    };
    let mut rng = SplitMix64::stream(seed, ARRIVAL_STREAM);
    let mut t = 0.0f64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            t += rng.exponential(rate);
        }
        out.push(Duration::from_secs_f64(t));
    }
    out
}

/// The generator stream that arrival gaps are drawn from.
const ARRIVAL_STREAM: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_at_once_without_a_rate() {
        let t = arrival_offsets(5, None, 0);
        assert_eq!(t, vec![Duration::ZERO; 5]);
    }

    #[test]
    fn poisson_gaps_have_mean_one_over_rate() {
        let rate = 50.0;
        let n = 20_001;
        let t = arrival_offsets(n, Some(rate), 7);
        assert_eq!(t[0], Duration::ZERO);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        let gaps: Vec<f64> = t.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 1.0 / rate).abs() < 0.03 / rate, "mean gap {mean} s");
        // Exponential: the standard deviation equals the mean.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (var.sqrt() - mean).abs() < 0.05 * mean,
            "std {}",
            var.sqrt()
        );
    }

    #[test]
    fn same_seed_same_schedule() {
        let a = arrival_offsets(100, Some(10.0), 3);
        let b = arrival_offsets(100, Some(10.0), 3);
        let c = arrival_offsets(100, Some(10.0), 4);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_draws_stay_in_range() {
        let mut g = SplitMix64::new(0);
        for _ in 0..10_000 {
            let u = g.next_f64();
            assert!((0.0..1.0).contains(&u));
            assert!(g.below(7) < 7);
        }
    }
}
