//! Portable tile kernels: 8 f32 lanes per output, multiply then add.

use super::{hsum8, Dot, Weights, MR, NR, STEP};

/// A weight format's portable block decoder.
pub(crate) trait BlockScalar: Weights {
    /// The 32 weights of step `s` (k = 32s..32s+32, zero past K) of output
    /// row `n`, as f32. `n < rows()`, `s < steps()`.
    fn block(&self, n: usize, s: usize, out: &mut [f32; STEP]);
}

/// Lane `l` of `acc` accumulates `x[j] · w[j]` for `j ≡ l (mod 8)`, in
/// increasing `j`.
#[inline(always)]
fn fold(acc: &mut [f32; 8], x: &[f32], w: &[f32; STEP]) {
    for c in 0..STEP / 8 {
        for l in 0..8 {
            acc[l] += x[8 * c + l] * w[8 * c + l];
        }
    }
}

/// The portable tile kernels over a decoder.
pub(crate) struct Scalar<'w, W>(pub &'w W);

impl<W: BlockScalar> Dot for Scalar<'_, W> {
    fn steps(&self) -> usize {
        self.0.steps()
    }

    fn rows(&self) -> usize {
        self.0.rows()
    }

    fn tile4(&self, x: [&[f32]; MR], n: [usize; NR]) -> [[f32; NR]; MR] {
        let mut acc = [[[0f32; 8]; NR]; MR];
        let mut w = [[0f32; STEP]; NR];
        for s in 0..self.0.steps() {
            for (wj, &nj) in w.iter_mut().zip(&n) {
                self.0.block(nj, s, wj);
            }
            for (ai, xi) in acc.iter_mut().zip(&x) {
                let xs = &xi[s * STEP..(s + 1) * STEP];
                for (aij, wj) in ai.iter_mut().zip(&w) {
                    fold(aij, xs, wj);
                }
            }
        }
        acc.map(|ai| ai.map(hsum8))
    }

    fn tile1(&self, x: &[f32], n: [usize; NR]) -> [f32; NR] {
        let mut acc = [[0f32; 8]; NR];
        let mut w = [0f32; STEP];
        for s in 0..self.0.steps() {
            let xs = &x[s * STEP..(s + 1) * STEP];
            for (aj, &nj) in acc.iter_mut().zip(&n) {
                self.0.block(nj, s, &mut w);
                fold(aj, xs, &w);
            }
        }
        acc.map(hsum8)
    }
}
