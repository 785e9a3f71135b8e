//! AVX2 tile kernels: 8 f32 lanes per output, fused multiply-add.
//!
//! Every `unsafe fn` here needs AVX2, FMA and F16C (what
//! [`crate::Isa::Avx2`] guarantees); [`Avx2::new`] checks them.

use std::arch::x86_64::*;

use super::{Dot, Weights, MR, NR, STEP};

/// A weight format's AVX2 block decoder.
pub(crate) trait Block256: Weights {
    /// The 32 weights of step `s` (k = 32s..32s+32, zero past K) of output
    /// row `n`, 8 lanes per vector in k order.
    ///
    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `n < rows()` and `s < steps()`.
    unsafe fn block(&self, n: usize, s: usize) -> [__m256; 4];
}

/// Whether this CPU runs the kernels of this module.
pub(crate) fn detected() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX2 tile kernels over a decoder (only built where they run).
pub(crate) struct Avx2<'w, W>(&'w W);

impl<'w, W: Block256> Avx2<'w, W> {
    /// `None` when the CPU lacks a required feature.
    pub(crate) fn new(w: &'w W) -> Option<Self> {
        detected().then_some(Avx2(w))
    }
}

impl<W: Block256> Dot for Avx2<'_, W> {
    fn steps(&self) -> usize {
        self.0.steps()
    }

    fn rows(&self) -> usize {
        self.0.rows()
    }

    fn tile4(&self, x: [&[f32]; MR], n: [usize; NR]) -> [[f32; NR]; MR] {
        let steps = self.0.steps();
        assert!(x.iter().all(|r| r.len() >= steps * STEP) && n.iter().all(|&j| j < self.0.rows()));
        // SAFETY: `new` checked the CPU; lengths and indices checked above.
        let (a, b) = unsafe {
            (
                tile4x2(self.0, x, [n[0], n[1]]),
                tile4x2(self.0, x, [n[2], n[3]]),
            )
        };
        std::array::from_fn(|i| [a[i][0], a[i][1], b[i][0], b[i][1]])
    }

    fn tile1(&self, x: &[f32], n: [usize; NR]) -> [f32; NR] {
        let steps = self.0.steps();
        assert!(x.len() >= steps * STEP && n.iter().all(|&j| j < self.0.rows()));
        // SAFETY: as in `tile4`.
        unsafe { tile1(self.0, x, n) }
    }
}

/// Sum of 8 lanes in the [`super::hsum8`] order.
///
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
    _mm_cvtss_f32(s1)
}

/// Four rows by two columns (16 registers hold the accumulators and one
/// step of decoded weights).
///
/// # Safety
/// AVX2, FMA, F16C; every `x[i]` holds `steps · 32` f32 and every
/// `n[j] < w.rows()`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // register tiles read best as index loops
unsafe fn tile4x2<W: Block256>(w: &W, x: [&[f32]; MR], n: [usize; 2]) -> [[f32; 2]; MR] {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for s in 0..w.steps() {
        // SAFETY: the caller's contract covers `n[j]` and `s`.
        let wv: [[__m256; 4]; 2] = unsafe { [w.block(n[0], s), w.block(n[1], s)] };
        for i in 0..MR {
            for c in 0..4 {
                // SAFETY: `x[i]` holds `steps · 32` f32.
                let xv = unsafe { _mm256_loadu_ps(x[i].as_ptr().add(s * STEP + 8 * c)) };
                for j in 0..2 {
                    acc[i][j] = _mm256_fmadd_ps(xv, wv[j][c], acc[i][j]);
                }
            }
        }
    }
    let mut r = [[0f32; 2]; MR];
    for i in 0..MR {
        for j in 0..2 {
            r[i][j] = hsum(acc[i][j]);
        }
    }
    r
}

/// # Safety
/// As [`tile4x2`], for one row and four columns.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile1<W: Block256>(w: &W, x: &[f32], n: [usize; NR]) -> [f32; NR] {
    let mut acc = [_mm256_setzero_ps(); NR];
    for s in 0..w.steps() {
        for j in 0..NR {
            // SAFETY: the caller's contract covers `x`, `n[j]` and `s`.
            unsafe {
                let wv = w.block(n[j], s);
                for (c, wc) in wv.iter().enumerate() {
                    let xv = _mm256_loadu_ps(x.as_ptr().add(s * STEP + 8 * c));
                    acc[j] = _mm256_fmadd_ps(xv, *wc, acc[j]);
                }
            }
        }
    }
    let mut r = [0f32; NR];
    for j in 0..NR {
        r[j] = hsum(acc[j]);
    }
    r
}

/// Four groups of 8 bytes of `v` (bytes 0..8, 8..16 of each 128-bit value)
/// widened to i32 lanes as f32, unsigned.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen_u8(a: __m128i, b: __m128i) -> [__m256; 4] {
    [
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(a)),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(a, a))),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)),
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(b, b))),
    ]
}

/// The 32 4-bit values of a 16-byte GGUF-style nibble block at `p` (byte
/// `j` holds element `j` in its low nibble and `j + 16` in its high one),
/// as f32 in 0..16.
///
/// # Safety
/// AVX2; `p` valid for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn nibbles(p: *const u8) -> [__m256; 4] {
    // SAFETY: `p` is valid for 16 bytes.
    let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let m = _mm_set1_epi8(0xF);
    widen_u8(
        _mm_and_si128(q, m),
        _mm_and_si128(_mm_srli_epi16::<4>(q), m),
    )
}

/// 32 unsigned bytes at `p` as f32.
///
/// # Safety
/// AVX2; `p` valid for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bytes_u8(p: *const u8) -> [__m256; 4] {
    // SAFETY: `p` is valid for 32 bytes.
    unsafe {
        widen_u8(
            _mm_loadu_si128(p as *const __m128i),
            _mm_loadu_si128(p.add(16) as *const __m128i),
        )
    }
}
