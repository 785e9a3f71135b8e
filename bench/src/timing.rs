//! The harness's own timing, independent of criterion: best of N samples.
//!
//! A sample is `calls` back-to-back calls of a case's runner (each call is
//! the op plus `synchronize`), with `calls` chosen so that one sample lasts
//! at least [`Budget::min_sample`]; the reported time is the fastest
//! sample's time divided by `calls`. Best-of-N is the figure least disturbed
//! by other load on the machine; the median is kept alongside.

use std::time::{Duration, Instant};

use crate::case::Runner;

/// How long to time one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Stop taking samples after this long (once `min_samples` are taken).
    pub max_time: Duration,
    /// Never take more samples than this.
    pub max_samples: usize,
    /// Always take at least this many samples.
    pub min_samples: usize,
    /// Shortest sample: fast ops are called repeatedly within one sample so
    /// the clock's resolution does not matter.
    pub min_sample: Duration,
}

impl Budget {
    /// Quick mode: 0.25 s, 2–30 samples of at least 50 µs.
    pub fn quick() -> Budget {
        Budget {
            max_time: Duration::from_millis(250),
            max_samples: 30,
            min_samples: 2,
            min_sample: Duration::from_micros(50),
        }
    }

    /// Full mode: 1 s, 3–100 samples of at least 100 µs.
    pub fn full() -> Budget {
        Budget {
            max_time: Duration::from_secs(1),
            max_samples: 100,
            min_samples: 3,
            min_sample: Duration::from_micros(100),
        }
    }

    /// One sample of one call: for exercising cases in tests.
    pub fn once() -> Budget {
        Budget {
            max_time: Duration::ZERO,
            max_samples: 1,
            min_samples: 1,
            min_sample: Duration::ZERO,
        }
    }
}

/// The timing of one case.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Fastest sample, per call.
    pub best: Duration,
    /// Median sample, per call.
    pub median: Duration,
    /// Samples taken.
    pub samples: usize,
    /// Calls per sample.
    pub calls: usize,
}

impl Timing {
    /// Best time per call in seconds.
    pub fn best_secs(&self) -> f64 {
        self.best.as_secs_f64()
    }
}

/// Time `runner` within `budget`; the first error ends the timing.
pub fn best_of(runner: &mut Runner<'_>, budget: &Budget) -> hal::Result<Timing> {
    let start = Instant::now();
    let t = Instant::now();
    runner.run()?;
    let first = t.elapsed();
    let calls = if first >= budget.min_sample {
        1
    } else {
        let per = first.as_nanos().max(1);
        (budget.min_sample.as_nanos().div_ceil(per) as usize).clamp(1, 100_000)
    };
    let mut per_call = Vec::new();
    if calls == 1 {
        per_call.push(first);
    }
    while per_call.len() < budget.max_samples.max(1)
        && (per_call.len() < budget.min_samples || start.elapsed() < budget.max_time)
    {
        let t = Instant::now();
        for _ in 0..calls {
            runner.run()?;
        }
        per_call.push(t.elapsed() / calls as u32);
    }
    per_call.sort_unstable();
    Ok(Timing {
        best: per_call[0],
        median: per_call[per_call.len() / 2],
        samples: per_call.len(),
        calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_within_budget() {
        let mut n = 0u64;
        let mut r = Runner::new(|| {
            n += 1;
            std::hint::black_box(n);
            Ok(())
        });
        let t = best_of(&mut r, &Budget::quick()).unwrap();
        assert!(t.samples >= 2 && t.samples <= 30);
        assert!(t.calls > 1, "a trivial closure is batched: {t:?}");
        assert!(t.best <= t.median);
        let once = best_of(&mut r, &Budget::once()).unwrap();
        assert_eq!((once.samples, once.calls), (1, 1));
    }
}
