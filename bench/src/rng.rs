//! Deterministic inputs: every case draws from a fixed seed, so runs on
//! different machines time the same data.

/// Deterministic random numbers from a seed: the conformance suite's
/// generator, with the f32 helpers benches want.
#[derive(Clone, Debug)]
pub struct Rng(hal::conformance::Rng);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(hal::conformance::Rng::new(seed))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[-1, 1)`.
    pub fn signed_unit(&mut self) -> f32 {
        // 24 random mantissa bits: exact in f32.
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.signed_unit() + 1.0) * 0.5
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` values uniform in `[-1, 1)`.
    pub fn signed_units(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.signed_unit()).collect()
    }

    /// `n` values uniform in `0..2^bits` (`bits` ≤ 8).
    pub fn small_ints(&mut self, n: usize, bits: u8) -> Vec<u8> {
        let mask = ((1u16 << bits) - 1) as u8;
        let per_word = 64 / bits as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut w = self.next_u64();
            for _ in 0..per_word.min(n - out.len()) {
                out.push(w as u8 & mask);
                w >>= bits;
            }
        }
        out
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// Shuffle in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a = Rng::new(7).signed_units(1000);
        assert_eq!(a, Rng::new(7).signed_units(1000));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let q = Rng::new(1).small_ints(1001, 4);
        assert_eq!(q.len(), 1001);
        assert!(q.iter().all(|&v| v < 16));
        let mut p = Rng::new(3).permutation(50);
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }
}
