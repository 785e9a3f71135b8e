//! AVX-512 tile kernels: 16 f32 lanes per output, fused multiply-add.
//!
//! Every `unsafe fn` here needs AVX-512 F/BW/VL plus AVX2, FMA and F16C
//! (what [`crate::Isa::Avx512`] guarantees); [`Avx512::new`] checks them.

use std::arch::x86_64::*;

use super::{Dot, Weights, MR, NR, STEP};

/// A weight format's AVX-512 block decoder.
pub(crate) trait Block512: Weights {
    /// The 32 weights of step `s` (k = 32s..32s+32, zero past K) of output
    /// row `n`: lanes 0..16 in the first vector, 16..32 in the second.
    ///
    /// # Safety
    /// The CPU supports AVX-512 F/BW/VL, AVX2, FMA and F16C; `n < rows()`
    /// and `s < steps()`.
    unsafe fn block(&self, n: usize, s: usize) -> [__m512; 2];
}

/// Whether this CPU runs the kernels of this module.
pub(crate) fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX-512 tile kernels over a decoder (only built where they run).
pub(crate) struct Avx512<'w, W>(&'w W);

impl<'w, W: Block512> Avx512<'w, W> {
    /// `None` when the CPU lacks a required feature.
    pub(crate) fn new(w: &'w W) -> Option<Self> {
        detected().then_some(Avx512(w))
    }
}

impl<W: Block512> Dot for Avx512<'_, W> {
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
        unsafe { tile4(self.0, x, n) }
    }

    fn tile1(&self, x: &[f32], n: [usize; NR]) -> [f32; NR] {
        let steps = self.0.steps();
        assert!(x.len() >= steps * STEP && n.iter().all(|&j| j < self.0.rows()));
        // SAFETY: as in `tile4`.
        unsafe { tile1(self.0, x, n) }
    }
}

/// Sum of 16 lanes in the fixed tree: halves, then [`super::hsum8`] order.
///
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn hsum(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let s8 = _mm256_add_ps(lo, hi);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
    _mm_cvtss_f32(s1)
}

/// # Safety
/// AVX-512 (see the module); every `x[i]` holds `steps · 32` f32 and every
/// `n[j] < w.rows()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile4<W: Block512>(w: &W, x: [&[f32]; MR], n: [usize; NR]) -> [[f32; NR]; MR] {
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    for s in 0..w.steps() {
        // SAFETY: the caller's contract covers `n[j]` and `s`.
        let wv: [[__m512; 2]; NR] = unsafe {
            [
                w.block(n[0], s),
                w.block(n[1], s),
                w.block(n[2], s),
                w.block(n[3], s),
            ]
        };
        for i in 0..MR {
            // SAFETY: `x[i]` holds `steps · 32` f32.
            let (xl, xh) = unsafe {
                let p = x[i].as_ptr().add(s * STEP);
                (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            };
            for j in 0..NR {
                acc[i][j] = _mm512_fmadd_ps(xl, wv[j][0], acc[i][j]);
                acc[i][j] = _mm512_fmadd_ps(xh, wv[j][1], acc[i][j]);
            }
        }
    }
    let mut r = [[0f32; NR]; MR];
    for i in 0..MR {
        for j in 0..NR {
            r[i][j] = hsum(acc[i][j]);
        }
    }
    r
}

/// # Safety
/// As [`tile4`], for one row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile1<W: Block512>(w: &W, x: &[f32], n: [usize; NR]) -> [f32; NR] {
    let mut acc = [_mm512_setzero_ps(); NR];
    for s in 0..w.steps() {
        // SAFETY: the caller's contract covers `x`, `n[j]` and `s`.
        unsafe {
            let p = x.as_ptr().add(s * STEP);
            let (xl, xh) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            for j in 0..NR {
                let wv = w.block(n[j], s);
                acc[j] = _mm512_fmadd_ps(xl, wv[0], acc[j]);
                acc[j] = _mm512_fmadd_ps(xh, wv[1], acc[j]);
            }
        }
    }
    let mut r = [0f32; NR];
    for j in 0..NR {
        r[j] = hsum(acc[j]);
    }
    r
}

/// The 32 4-bit values of a 16-byte GGUF-style nibble block at `p` (byte
/// `j` holds element `j` in its low nibble and `j + 16` in its high one),
/// as f32 in 0..16.
///
/// # Safety
/// AVX-512 (see the module); `p` valid for 16 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn nibbles(p: *const u8) -> [__m512; 2] {
    // SAFETY: `p` is valid for 16 bytes.
    let q = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(p as *const __m128i) });
    let lo = _mm512_and_si512(q, _mm512_set1_epi32(0xF));
    let hi = _mm512_srli_epi32::<4>(q);
    [_mm512_cvtepi32_ps(lo), _mm512_cvtepi32_ps(hi)]
}

/// 32 unsigned bytes at `p` as f32.
///
/// # Safety
/// AVX-512 (see the module); `p` valid for 32 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn bytes_u8(p: *const u8) -> [__m512; 2] {
    // SAFETY: `p` is valid for 32 bytes.
    unsafe {
        let a = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
        let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i));
        [_mm512_cvtepi32_ps(a), _mm512_cvtepi32_ps(b)]
    }
}

/// Mask of the first `len` of 16 lanes (`len` ≤ 16).
#[inline(always)]
pub(crate) fn lanes(len: usize) -> u16 {
    ((1u32 << len.min(16)) - 1) as u16
}
