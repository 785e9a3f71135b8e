//! The x86-64 levels: AVX2 + FMA + F16C (8 lanes) and AVX-512 (16 lanes),
//! with exact loads of f16, bf16 and E4M3 elements and a Cephes-style `exp`.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{E4m3, Load, Simd, E4M3_BIAS_BITS, E4M3_SUBNORMAL};

// Cephes-style expf: e^x = 2^n · e^r, |r| ≤ ln2/2, degree-6 polynomial.
const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_54;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 0.5;

/// AVX2 + FMA + F16C: 8 lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 8 readable f32.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees AVX2 and 8 writable f32.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max_lane(v: __m256) -> f32 {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn sum(v: __m256) -> f32 {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            // Lanes k + (k + 4), then k + (k + 2), then 0 + 1.
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn sum_each(v: &[__m256], out: &mut [f32]) {
        if v.len() != 8 || out.len() < 8 {
            for (o, &x) in out.iter_mut().zip(v) {
                // SAFETY: the caller guarantees AVX2.
                *o = unsafe { Self::sum(x) };
            }
            return;
        }
        // SAFETY: the caller guarantees AVX2; `out` holds 8 floats.
        // The same pairings as `sum`, eight vectors at a time.
        unsafe {
            // 128-bit lane m of x[p]: vector 2p + m, lanes k + (k + 4).
            let x0 = pair_halves_256(v[0], v[1]);
            let x1 = pair_halves_256(v[2], v[3]);
            let x2 = pair_halves_256(v[4], v[5]);
            let x3 = pair_halves_256(v[6], v[7]);
            // Lane m of f: [4q + m: (0+2), (1+3); 4q + 2 + m: (0+2), (1+3)].
            let f0 = pair_within_256(x0, x1);
            let f1 = pair_within_256(x2, x3);
            let r = _mm256_add_ps(
                _mm256_shuffle_ps::<0b10_00_10_00>(f0, f1),
                _mm256_shuffle_ps::<0b11_01_11_01>(f0, f1),
            );
            // r[4m + e] = sum(v[m + 2e]): back to vector order.
            let idx = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_permutevar8x32_ps(r, idx));
        }
    }
    #[inline(always)]
    unsafe fn exp(x: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe {
            // min/max return their second operand when either is NaN:
            // putting `x` second keeps a NaN.
            let xc = _mm256_max_ps(
                _mm256_set1_ps(EXP_LO),
                _mm256_min_ps(_mm256_set1_ps(EXP_HI), x),
            );
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)),
            );
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut y = _mm256_set1_ps(P0);
            for c in [P1, P2, P3, P4, P5] {
                y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
            }
            let r2 = _mm256_mul_ps(r, r);
            let y = _mm256_add_ps(_mm256_fmadd_ps(y, r2, r), _mm256_set1_ps(1.0));
            // 2^n in two halves so n = 128 does not overflow the exponent.
            let ni = _mm256_cvtps_epi32(n);
            let half = _mm256_srai_epi32::<1>(ni);
            let p1 = _mm256_slli_epi32::<23>(_mm256_add_epi32(half, _mm256_set1_epi32(127)));
            let p2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_sub_epi32(ni, half),
                _mm256_set1_epi32(127),
            ));
            let y = _mm256_mul_ps(
                _mm256_mul_ps(y, _mm256_castsi256_ps(p1)),
                _mm256_castsi256_ps(p2),
            );
            let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO));
            let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI));
            let y = _mm256_andnot_ps(under, y);
            _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), over)
        }
    }
}

/// `[x.lo128 + x.hi128, y.lo128 + y.hi128]`.
///
/// # Safety
/// AVX.
#[inline(always)]
unsafe fn pair_halves_256(x: __m256, y: __m256) -> __m256 {
    // SAFETY: the caller guarantees AVX.
    unsafe {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(x, y),
            _mm256_permute2f128_ps::<0x31>(x, y),
        )
    }
}

/// Per 128-bit lane: `[x0 + x2, x1 + x3, y0 + y2, y1 + y3]`.
///
/// # Safety
/// AVX.
#[inline(always)]
unsafe fn pair_within_256(x: __m256, y: __m256) -> __m256 {
    // SAFETY: the caller guarantees AVX.
    unsafe {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0b01_00_01_00>(x, y),
            _mm256_shuffle_ps::<0b11_10_11_10>(x, y),
        )
    }
}

impl Load<Avx2> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 8 readable elements.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Load<Avx2> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees F16C and 8 readable elements.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

impl Load<Avx2> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 8 readable elements.
        unsafe {
            let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
        }
    }
}

impl Load<Avx2> for E4m3 {
    #[inline(always)]
    unsafe fn load(p: *const E4m3) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and 8 readable bytes.
        unsafe {
            let x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
            let mag = _mm256_and_si256(x, _mm256_set1_epi32(0x7F));
            let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(x, _mm256_set1_epi32(0x80)));
            // Normal codes: re-bias the exponent with an integer add
            // (no f32 denormal ever enters the FPU); subnormal codes
            // (exponent 0): m · 2^-9.
            let normal = _mm256_add_epi32(
                _mm256_slli_epi32::<20>(mag),
                _mm256_set1_epi32(E4M3_BIAS_BITS),
            );
            let sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(E4M3_SUBNORMAL));
            let is_sub = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
            let v = _mm256_blendv_ps(_mm256_castsi256_ps(normal), sub, is_sub);
            let v = _mm256_or_ps(v, _mm256_castsi256_ps(sign));
            let nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F)));
            _mm256_blendv_ps(v, _mm256_set1_ps(f32::NAN), nan)
        }
    }
}

/// AVX-512 F/BW/VL (+ AVX2, FMA, F16C): 16 lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable f32.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable f32.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max_lane(v: __m512) -> f32 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_reduce_max_ps(v) }
    }
    #[inline(always)]
    unsafe fn sum_each(v: &[__m512], out: &mut [f32]) {
        if v.len() != 16 || out.len() < 16 {
            for (o, &x) in out.iter_mut().zip(v) {
                // SAFETY: the caller guarantees AVX-512F.
                *o = unsafe { Self::sum(x) };
            }
            return;
        }
        // SAFETY: the caller guarantees AVX-512F; `out` holds 16 floats.
        // The same pairings as `sum` — k + (k + 8), + (k + 4), + (k + 2),
        // + (k + 1) — sixteen vectors at a time.
        unsafe {
            let mut x = [_mm512_setzero_ps(); 8];
            for (p, x) in x.iter_mut().enumerate() {
                *x = pair_halves_512(v[2 * p], v[2 * p + 1]);
            }
            // 128-bit lane m of z[q]: vector 4q + m, lanes k + 4 paired.
            let mut z = [_mm512_setzero_ps(); 4];
            for (q, z) in z.iter_mut().enumerate() {
                *z = pair_quarters_512(x[2 * q], x[2 * q + 1]);
            }
            let f0 = pair_within_512(z[0], z[1]);
            let f1 = pair_within_512(z[2], z[3]);
            let r = _mm512_add_ps(
                _mm512_shuffle_ps::<0b10_00_10_00>(f0, f1),
                _mm512_shuffle_ps::<0b11_01_11_01>(f0, f1),
            );
            // r[4m + e] = sum(v[m + 4e]): back to vector order.
            let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            _mm512_storeu_ps(out.as_mut_ptr(), _mm512_permutexvar_ps(idx, r));
        }
    }
    #[inline(always)]
    unsafe fn sum(v: __m512) -> f32 {
        // SAFETY: the caller guarantees AVX-512F (and AVX for the halves).
        unsafe {
            let lo = _mm512_castps512_ps256(v);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let s = _mm256_add_ps(lo, hi);
            let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe {
            let xc = _mm512_max_ps(
                _mm512_set1_ps(EXP_LO),
                _mm512_min_ps(_mm512_set1_ps(EXP_HI), x),
            );
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
            );
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
            let mut y = _mm512_set1_ps(P0);
            for c in [P1, P2, P3, P4, P5] {
                y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
            }
            let r2 = _mm512_mul_ps(r, r);
            let y = _mm512_add_ps(_mm512_fmadd_ps(y, r2, r), _mm512_set1_ps(1.0));
            let y = _mm512_scalef_ps(y, n);
            let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO));
            let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_HI));
            let y = _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
            _mm512_mask_mov_ps(y, over, _mm512_set1_ps(f32::INFINITY))
        }
    }
}

/// `[x.lo256 + x.hi256, y.lo256 + y.hi256]`.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn pair_halves_512(x: __m512, y: __m512) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
        )
    }
}

/// 128-bit lanes `[x0 + x1, x2 + x3, y0 + y1, y2 + y3]`.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn pair_quarters_512(x: __m512, y: __m512) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    }
}

/// Per 128-bit lane: `[x0 + x2, x1 + x3, y0 + y2, y1 + y3]`.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn pair_within_512(x: __m512, y: __m512) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(x, y),
            _mm512_shuffle_ps::<0b11_10_11_10>(x, y),
        )
    }
}

impl Load<Avx512> for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable elements.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        // SAFETY: masked lanes are not accessed; `n` elements are readable.
        unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p) }
    }
}

impl Load<Avx512> for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable elements.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f16, n: usize) -> __m512 {
        // SAFETY: masked lanes are not accessed (AVX-512BW/VL); `n` readable.
        unsafe {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                ((1u32 << n) - 1) as u16,
                p as *const i16,
            ))
        }
    }
}

impl Load<Avx512> for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable elements.
        unsafe {
            let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
        }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const bf16, n: usize) -> __m512 {
        // SAFETY: masked lanes are not accessed (AVX-512BW/VL); `n` readable.
        unsafe {
            let h = _mm256_maskz_loadu_epi16(((1u32 << n) - 1) as u16, p as *const i16);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

/// 16 E4M3 codes (in the low bytes of 32-bit lanes) → f32, exactly, as
/// the AVX2 path (no f32 denormal is ever an operand).
///
/// # Safety
/// AVX-512F/BW.
#[inline(always)]
unsafe fn e4m3_lanes(x: __m512i) -> __m512 {
    // SAFETY: the caller guarantees AVX-512F/BW.
    unsafe {
        let mag = _mm512_and_si512(x, _mm512_set1_epi32(0x7F));
        let sign = _mm512_slli_epi32::<24>(_mm512_and_si512(x, _mm512_set1_epi32(0x80)));
        let normal = _mm512_add_epi32(
            _mm512_slli_epi32::<20>(mag),
            _mm512_set1_epi32(E4M3_BIAS_BITS),
        );
        let sub = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(E4M3_SUBNORMAL));
        let is_sub = _mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8));
        let v = _mm512_mask_mov_ps(_mm512_castsi512_ps(normal), is_sub, sub);
        let v = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign));
        let nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
        _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(f32::NAN))
    }
}

impl Load<Avx512> for E4m3 {
    #[inline(always)]
    unsafe fn load(p: *const E4m3) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable bytes.
        unsafe { e4m3_lanes(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i))) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const E4m3, n: usize) -> __m512 {
        // SAFETY: masked lanes are not accessed (AVX-512BW/VL); `n` readable.
        unsafe {
            let b = _mm_maskz_loadu_epi8(((1u32 << n) - 1) as u16, p as *const i8);
            e4m3_lanes(_mm512_cvtepu8_epi32(b))
        }
    }
}
