//! FP8 E4M3 W8A8: e4m3 weights `[N, K]` with per-tensor or per-channel
//! scales; activations fake-quantised to E4M3 in f32 exactly as
//! [`hal::quant::fp8_w8a8`] defines (`x̂ = e4m3(x / s_x) · s_x`, with a
//! static, dynamic per-tensor or dynamic per-token `s_x`), then
//! `out = (x̂ · e4m3(w)ᵀ) · w_scale + bias`.
//!
//! Weights stay one byte each. In registers a byte `s.eeee.mmm` becomes
//! the f16 `s.0eeee.mmm0000000`, which is the E4M3 value times 2⁻⁸ (normal
//! and subnormal alike, all exact); the 2⁸ is folded into the stored
//! per-column scale. NaN bytes (`0x7F`, `0xFF`) are only checked for when
//! `pack` saw one.
//!
//! Parts: `[weight e4m3 [N, K], scale f32 [N] (× 256)]`; scalars:
//! `[input_scale (0 if none), 1 if the weight holds a NaN]`.

use hal::quant::fp8_w8a8;
use hal::{ActivationScale, DType, HalError, PackedWeight, QuantWeights, Result};

use super::{buffer, part, part_as, Activations};
use crate::simd::{self, Epilogue, Weights, STEP};
use crate::CpuBackend;

/// Physical layout name.
const LAYOUT: &str = "cpu-fp8";

pub(super) fn pack(dev: &CpuBackend, w: &QuantWeights) -> Result<PackedWeight> {
    let QuantWeights::Fp8 {
        n,
        k,
        weight,
        weight_scale,
        input_scale,
        ..
    } = w
    else {
        return Err(HalError::invalid(
            "cpu",
            "pack",
            "fp8::pack needs an FP8 weight",
        ));
    };
    let scale: Vec<f32> = (0..*n)
        .map(|i| {
            256.0
                * if weight_scale.len() == 1 {
                    weight_scale[0]
                } else {
                    weight_scale[i]
                }
        })
        .collect();
    let has_nan = weight.iter().any(|&b| b & 0x7F == 0x7F);
    Ok(PackedWeight {
        spec: w.spec(),
        n: *n,
        k: *k,
        layout: LAYOUT,
        parts: vec![
            buffer(dev, weight)?,
            buffer(dev, bytemuck::cast_slice(&scale))?,
        ],
        scalars: vec![input_scale.unwrap_or(0.0), if has_nan { 1.0 } else { 0.0 }],
    })
}

/// `r` rounded to the nearest E4M3 value (ties to even), saturating to
/// ±448, NaN kept: `e4m3_to_f32(f32_to_e4m3(r))` without the table walk.
#[inline]
pub(crate) fn round_e4m3(r: f32) -> f32 {
    if r.is_nan() {
        return f32::NAN;
    }
    let a = r.abs();
    let q = if a >= 448.0 {
        448.0
    } else if a < 1.0 / 64.0 {
        // Subnormal range: multiples of 2⁻⁹ (the scaling is exact).
        (a * 512.0).round_ties_even() / 512.0
    } else {
        // Keep 3 mantissa bits, round to nearest even; a carry bumps the exponent.
        let b = a.to_bits();
        f32::from_bits((b + 0x7FFFF + ((b >> 20) & 1)) & !0xFFFFF)
    };
    q.copysign(r)
}

pub(super) fn run(
    dev: &CpuBackend,
    activation: ActivationScale,
    w: &PackedWeight,
    x: &Activations<'_>,
    epi: Epilogue<'_>,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    if w.layout != LAYOUT || w.scalars.len() != 2 {
        return Err(HalError::invalid(
            "cpu",
            "quant_gemm",
            format!(
                "packed {:?} weight is not in this backend's {LAYOUT} layout",
                w.spec
            ),
        ));
    }
    let acc = dev.access();
    let wb = part(&acc, w, 0, w.n * w.k)?;
    let scale = part_as::<f32>(&acc, w, 1, w.n)?;
    let isa = dev.isa();
    let (mut xf, stride) = simd::rows_f32(isa, x.dtype, x.bytes, x.m, x.k);
    // Per-row activation scales, as the format defines them (f32).
    let k = x.k;
    let amax = |row: &[f32]| row[..k].iter().fold(0f32, |a, v| a.max(v.abs()));
    let scales: Vec<f32> = match activation {
        ActivationScale::Static => vec![w.scalars[0]; x.m],
        ActivationScale::DynamicPerTensor => {
            let a = xf
                .chunks_exact(stride.max(1))
                .take(x.m)
                .map(amax)
                .fold(0f32, f32::max);
            vec![fp8_w8a8::dynamic_scale(a); x.m]
        }
        ActivationScale::DynamicPerToken => xf
            .chunks_exact(stride.max(1))
            .take(x.m)
            .map(|r| fp8_w8a8::dynamic_scale(amax(r)))
            .collect(),
    };
    if x.k > 0 {
        for (row, &s) in xf.to_mut().chunks_exact_mut(stride).zip(&scales) {
            for v in &mut row[..k] {
                *v = round_e4m3(*v / s) * s;
            }
        }
    }
    let epi = Epilogue {
        post: Some(scale),
        ..epi
    };
    let nan = w.scalars[1] != 0.0;
    simd::with_out_f32(isa, out_dtype, out, x.m * w.n, |o| {
        let f = Fp8 {
            w: wb,
            n: w.n,
            k: w.k,
        };
        if nan {
            simd::run_isa(isa, dev.pool(), Nan::<true>(f), &xf, stride, epi, o)
        } else {
            simd::run_isa(isa, dev.pool(), Nan::<false>(f), &xf, stride, epi, o)
        }
    });
    Ok(())
}

/// E4M3 bytes `[N, K]`, read in place.
struct Fp8<'a> {
    w: &'a [u8],
    n: usize,
    k: usize,
}

impl Fp8<'_> {
    /// First byte of step `s` of row `n`, and how many of its 32 elements exist.
    #[inline(always)]
    fn at(&self, n: usize, s: usize) -> (*const u8, usize) {
        (
            self.w[n * self.k + s * STEP..].as_ptr(),
            (self.k - s * STEP).min(STEP),
        )
    }
}

/// [`Fp8`] decoded with (`true`) or without NaN handling.
struct Nan<'a, const N: bool>(Fp8<'a>);

impl<const N: bool> Weights for Nan<'_, N> {
    fn rows(&self) -> usize {
        self.0.n
    }
    fn steps(&self) -> usize {
        self.0.k.div_ceil(STEP)
    }
}

/// E4M3 byte → its value × 2⁻⁸, exactly (NaN stays NaN).
fn e4m3_scaled(b: u8) -> f32 {
    hal::fp8::e4m3_to_f32(b) / 256.0
}

impl<const N: bool> simd::scalar::BlockScalar for Nan<'_, N> {
    fn block(&self, n: usize, s: usize, out: &mut [f32; STEP]) {
        static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
        let t = TABLE.get_or_init(|| std::array::from_fn(|b| e4m3_scaled(b as u8)));
        let (_, len) = self.0.at(n, s);
        let off = n * self.0.k + s * STEP;
        for (o, &b) in out.iter_mut().zip(&self.0.w[off..off + len]) {
            *o = t[b as usize];
        }
        out[len..].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Nan;
    use crate::simd::avx2::Block256;
    use crate::simd::avx512::{self, Block512};
    use crate::simd::STEP;

    /// 16 e4m3 bytes → f32 × 2⁻⁸ through f16 bit patterns.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn widen512<const N: bool>(b: __m128i) -> __m512 {
        // Sign-extend, then shift: bits 7..13 get eeee.mmm and bits 14, 15 the sign;
        // clearing bit 14 leaves the f16 s.0eeee.mmm0000000.
        let h = _mm256_and_si256(
            _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(b)),
            _mm256_set1_epi16(0xBF80u16 as i16),
        );
        let h = if N {
            let body = _mm256_set1_epi16(0x3F80);
            let nan = _mm256_cmpeq_epi16_mask(_mm256_and_si256(h, body), body);
            _mm256_mask_mov_epi16(h, nan, _mm256_set1_epi16(0x7E00))
        } else {
            h
        };
        _mm512_cvtph_ps(h)
    }

    /// 8 e4m3 bytes (low half of `b`) → f32 × 2⁻⁸.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn widen256<const N: bool>(b: __m128i) -> __m256 {
        let h = _mm_and_si128(
            _mm_slli_epi16::<7>(_mm_cvtepi8_epi16(b)),
            _mm_set1_epi16(0xBF80u16 as i16),
        );
        let h = if N {
            let body = _mm_set1_epi16(0x3F80);
            let nan = _mm_cmpeq_epi16(_mm_and_si128(h, body), body);
            _mm_blendv_epi8(h, _mm_set1_epi16(0x7E00), nan)
        } else {
            h
        };
        _mm256_cvtph_ps(h)
    }

    impl<const N: bool> Block512 for Nan<'_, N> {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m512; 2] {
            let (p, len) = self.0.at(n, s);
            let (m0, m1) = (avx512::lanes(len), avx512::lanes(len.saturating_sub(16)));
            // SAFETY: masked loads touch only the `len` bytes that exist.
            unsafe {
                let lo = _mm_maskz_loadu_epi8(m0, p as *const i8);
                let hi = _mm_maskz_loadu_epi8(m1, p.add(16) as *const i8);
                [widen512::<N>(lo), widen512::<N>(hi)]
            }
        }
    }

    impl<const N: bool> Block256 for Nan<'_, N> {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m256; 4] {
            let (p, len) = self.0.at(n, s);
            let mut buf = [0u8; STEP];
            let p = if len < STEP {
                // SAFETY: `len` bytes from `p` exist.
                buf[..len].copy_from_slice(unsafe { std::slice::from_raw_parts(p, len) });
                buf.as_ptr()
            } else {
                p
            };
            // SAFETY: 32 bytes from `p` are readable.
            unsafe {
                let a = _mm_loadu_si128(p as *const __m128i);
                let b = _mm_loadu_si128(p.add(16) as *const __m128i);
                [
                    widen256::<N>(a),
                    widen256::<N>(_mm_unpackhi_epi64(a, a)),
                    widen256::<N>(b),
                    widen256::<N>(_mm_unpackhi_epi64(b, b)),
                ]
            }
        }
    }
}
