//! Row conversions between activation dtypes and f32.
//!
//! Every function converts one contiguous row of little-endian elements and
//! rounds exactly like the `half` crate (round to nearest, ties to even; NaN
//! stays NaN, ±Inf stays ±Inf; f16 subnormals are produced and consumed, never
//! flushed). The SIMD paths (AVX-512, AVX2 + F16C) give bitwise the same
//! results as the scalar path, so callers may mix ISAs freely.
//!
//! Lengths: a function converts `dst.len()` elements; `src` must hold at
//! least that many (extra source elements are ignored). If it holds fewer,
//! only the elements present are converted and the rest of `dst` is left
//! untouched (callers validate shapes first, so this never happens in a
//! correct program).

// Shared primitives: not every one has a caller in every build.
#![allow(dead_code)]

use hal::DType;
use half::{bf16, f16};

use crate::isa::Isa;

/// `dst[i] = src[i]` as f32, for `dst.len()` elements of `dtype` stored
/// little-endian in `src` (`dtype.bytes_for(dst.len())` bytes).
///
/// F32, F16 and BF16 take the SIMD paths; every other dtype is decoded
/// element by element with [`DType::read_f64`] (FP8 exactly, integers
/// exactly up to f32 precision).
pub(crate) fn to_f32(isa: Isa, dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => {
            let n = dst.len().min(src.len() / 4);
            bytemuck::cast_slice_mut::<f32, u8>(&mut dst[..n]).copy_from_slice(&src[..4 * n]);
        }
        DType::F16 => f16_bytes_to_f32(isa, src, dst),
        DType::BF16 => bf16_bytes_to_f32(isa, src, dst),
        DType::F8E4M3 => {
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = hal::fp8::e4m3_to_f32(b);
            }
        }
        DType::F8E5M2 => {
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = hal::fp8::e5m2_to_f32(b);
            }
        }
        _ => {
            let n = dst.len().min((src.len() * 8) / dtype.size_bits());
            for (i, d) in dst[..n].iter_mut().enumerate() {
                *d = dtype.read_f64(src, i) as f32;
            }
        }
    }
}

/// `dst[i] = src[i]` rounded to `dtype`, for `src.len()` elements written
/// little-endian into `dst` (`dtype.bytes_for(src.len())` bytes).
///
/// F32, F16 and BF16 take the SIMD paths; every other dtype is encoded
/// element by element with [`DType::write_f64`] (FP8 round-to-nearest-even
/// and saturating, integers saturating).
pub(crate) fn from_f32(isa: Isa, dtype: DType, src: &[f32], dst: &mut [u8]) {
    match dtype {
        DType::F32 => {
            let n = src.len().min(dst.len() / 4);
            dst[..4 * n].copy_from_slice(bytemuck::cast_slice::<f32, u8>(&src[..n]));
        }
        DType::F16 => f32_to_f16_bytes(isa, src, dst),
        DType::BF16 => f32_to_bf16_bytes(isa, src, dst),
        _ => {
            let n = src.len().min((dst.len() * 8) / dtype.size_bits());
            for (i, &s) in src[..n].iter().enumerate() {
                dtype.write_f64(dst, i, s as f64);
            }
        }
    }
}

/// f16 → f32 for a typed row: `dst[i] = src[i]`, `dst.len()` elements.
pub(crate) fn f16_to_f32(isa: Isa, src: &[f16], dst: &mut [f32]) {
    f16_bytes_to_f32(isa, bytemuck::cast_slice(src), dst)
}

/// bf16 → f32 for a typed row: `dst[i] = src[i]`, `dst.len()` elements.
pub(crate) fn bf16_to_f32(isa: Isa, src: &[bf16], dst: &mut [f32]) {
    bf16_bytes_to_f32(isa, bytemuck::cast_slice(src), dst)
}

/// f32 → f16 (round to nearest even) for a typed row, `src.len()` elements.
pub(crate) fn f32_to_f16(isa: Isa, src: &[f32], dst: &mut [f16]) {
    f32_to_f16_bytes(isa, src, bytemuck::cast_slice_mut(dst))
}

/// f32 → bf16 (round to nearest even) for a typed row, `src.len()` elements.
pub(crate) fn f32_to_bf16(isa: Isa, src: &[f32], dst: &mut [bf16]) {
    f32_to_bf16_bytes(isa, src, bytemuck::cast_slice_mut(dst))
}

/// f16 bytes (little-endian) → f32, `dst.len()` elements.
pub(crate) fn f16_bytes_to_f32(isa: Isa, src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let (src, dst) = (&src[..2 * n], &mut dst[..n]);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` is only constructed when the CPU reports
        // AVX-512 F/BW/VL, AVX2, FMA and F16C; lengths match (2n bytes, n floats).
        Isa::Avx512 => unsafe { x86::f16_to_f32_avx512(src.as_ptr(), dst.as_mut_ptr(), n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` implies AVX2, FMA and F16C; lengths match.
        Isa::Avx2 => unsafe { x86::f16_to_f32_avx2(src.as_ptr(), dst.as_mut_ptr(), n) },
        _ => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
    }
}

/// bf16 bytes (little-endian) → f32, `dst.len()` elements (exact).
pub(crate) fn bf16_bytes_to_f32(isa: Isa, src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let (src, dst) = (&src[..2 * n], &mut dst[..n]);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `f16_bytes_to_f32`.
        Isa::Avx512 => unsafe { x86::bf16_to_f32_avx512(src.as_ptr(), dst.as_mut_ptr(), n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `f16_bytes_to_f32`.
        Isa::Avx2 => unsafe { x86::bf16_to_f32_avx2(src.as_ptr(), dst.as_mut_ptr(), n) },
        _ => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([s[0], s[1]]) as u32) << 16);
            }
        }
    }
}

/// f32 → f16 bytes (little-endian, round to nearest even), `src.len()` elements.
pub(crate) fn f32_to_f16_bytes(isa: Isa, src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let (src, dst) = (&src[..n], &mut dst[..2 * n]);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `f16_bytes_to_f32`.
        Isa::Avx512 => unsafe { x86::f32_to_f16_avx512(src.as_ptr(), dst.as_mut_ptr(), n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `f16_bytes_to_f32`.
        Isa::Avx2 => unsafe { x86::f32_to_f16_avx2(src.as_ptr(), dst.as_mut_ptr(), n) },
        _ => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16::from_f32(s).to_le_bytes());
            }
        }
    }
}

/// f32 → bf16 bytes (little-endian, round to nearest even), `src.len()` elements.
pub(crate) fn f32_to_bf16_bytes(isa: Isa, src: &[f32], dst: &mut [u8]) {
    let n = src.len().min(dst.len() / 2);
    let (src, dst) = (&src[..n], &mut dst[..2 * n]);
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `f16_bytes_to_f32`.
        Isa::Avx512 => unsafe { x86::f32_to_bf16_avx512(src.as_ptr(), dst.as_mut_ptr(), n) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `f16_bytes_to_f32`.
        Isa::Avx2 => unsafe { x86::f32_to_bf16_avx2(src.as_ptr(), dst.as_mut_ptr(), n) },
        _ => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&bf16::from_f32(s).to_le_bytes());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! The x86-64 paths. Each function handles a whole row, tails included.

    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and F16C; `src` must be valid for
    /// `2n` bytes of reads and `dst` for `n` f32 writes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn f16_to_f32_avx512(src: *const u8, dst: *mut f32, n: usize) {
        let mut i = 0;
        // SAFETY: every access stays below `n` elements (masked in the tail).
        unsafe {
            while i + 16 <= n {
                let h = _mm256_loadu_si256(src.add(2 * i) as *const __m256i);
                _mm512_storeu_ps(dst.add(i), _mm512_cvtph_ps(h));
                i += 16;
            }
            if i < n {
                let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
                let h = _mm256_maskz_loadu_epi16(mask, src.add(2 * i) as *const i16);
                _mm512_mask_storeu_ps(dst.add(i), mask, _mm512_cvtph_ps(h));
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and F16C; `src` valid for `2n` bytes of
    /// reads, `dst` for `n` f32 writes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f16_to_f32_avx2(src: *const u8, dst: *mut f32, n: usize) {
        let mut i = 0;
        // SAFETY: every access stays below `n` elements.
        unsafe {
            while i + 8 <= n {
                let h = _mm_loadu_si128(src.add(2 * i) as *const __m128i);
                _mm256_storeu_ps(dst.add(i), _mm256_cvtph_ps(h));
                i += 8;
            }
            while i < n {
                let h = u16::from_le_bytes([*src.add(2 * i), *src.add(2 * i + 1)]);
                *dst.add(i) = half::f16::from_bits(h).to_f32();
                i += 1;
            }
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn bf16_to_f32_avx512(src: *const u8, dst: *mut f32, n: usize) {
        let mut i = 0;
        // SAFETY: every access stays below `n` elements (masked in the tail).
        unsafe {
            while i + 16 <= n {
                let h = _mm256_loadu_si256(src.add(2 * i) as *const __m256i);
                let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                _mm512_storeu_ps(dst.add(i), _mm512_castsi512_ps(w));
                i += 16;
            }
            if i < n {
                let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
                let h = _mm256_maskz_loadu_epi16(mask, src.add(2 * i) as *const i16);
                let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                _mm512_mask_storeu_ps(dst.add(i), mask, _mm512_castsi512_ps(w));
            }
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx2`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn bf16_to_f32_avx2(src: *const u8, dst: *mut f32, n: usize) {
        let mut i = 0;
        // SAFETY: every access stays below `n` elements.
        unsafe {
            while i + 8 <= n {
                let h = _mm_loadu_si128(src.add(2 * i) as *const __m128i);
                let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                _mm256_storeu_ps(dst.add(i), _mm256_castsi256_ps(w));
                i += 8;
            }
            while i < n {
                let h = u16::from_le_bytes([*src.add(2 * i), *src.add(2 * i + 1)]);
                *dst.add(i) = f32::from_bits((h as u32) << 16);
                i += 1;
            }
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx512`], with `src` valid for `n` f32 reads and `dst`
    /// for `2n` bytes of writes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn f32_to_f16_avx512(src: *const f32, dst: *mut u8, n: usize) {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;
        let mut i = 0;
        // SAFETY: every access stays below `n` elements (masked in the tail).
        unsafe {
            while i + 16 <= n {
                let h = _mm512_cvtps_ph::<RNE>(_mm512_loadu_ps(src.add(i)));
                _mm256_storeu_si256(dst.add(2 * i) as *mut __m256i, h);
                i += 16;
            }
            if i < n {
                let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
                let h = _mm512_cvtps_ph::<RNE>(_mm512_maskz_loadu_ps(mask, src.add(i)));
                _mm256_mask_storeu_epi16(dst.add(2 * i) as *mut i16, mask, h);
            }
        }
    }

    /// # Safety
    /// As [`f16_to_f32_avx2`], with `src` valid for `n` f32 reads and `dst`
    /// for `2n` bytes of writes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f32_to_f16_avx2(src: *const f32, dst: *mut u8, n: usize) {
        const RNE: i32 = _MM_FROUND_TO_NEAREST_INT;
        let mut i = 0;
        // SAFETY: every access stays below `n` elements.
        unsafe {
            while i + 8 <= n {
                let h = _mm256_cvtps_ph::<RNE>(_mm256_loadu_ps(src.add(i)));
                _mm_storeu_si128(dst.add(2 * i) as *mut __m128i, h);
                i += 8;
            }
            while i < n {
                let b = half::f16::from_f32(*src.add(i)).to_le_bytes();
                *dst.add(2 * i) = b[0];
                *dst.add(2 * i + 1) = b[1];
                i += 1;
            }
        }
    }

    /// Round 16 f32 to bf16 bit patterns (nearest even; NaN → quiet NaN), in
    /// the low half of each 32-bit lane.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn bf16_round_avx512(v: __m512) -> __m256i {
        let b = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(
            _mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)),
            lsb,
        ));
        let abs = _mm512_and_si512(b, _mm512_set1_epi32(0x7FFF_FFFF));
        let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7F80_0000));
        let q = _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x0040));
        _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q))
    }

    /// # Safety
    /// As [`f32_to_f16_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(crate) unsafe fn f32_to_bf16_avx512(src: *const f32, dst: *mut u8, n: usize) {
        let mut i = 0;
        // SAFETY: every access stays below `n` elements (masked in the tail).
        unsafe {
            while i + 16 <= n {
                let h = bf16_round_avx512(_mm512_loadu_ps(src.add(i)));
                _mm256_storeu_si256(dst.add(2 * i) as *mut __m256i, h);
                i += 16;
            }
            if i < n {
                let mask: u16 = (1u32 << (n - i)).wrapping_sub(1) as u16;
                let h = bf16_round_avx512(_mm512_maskz_loadu_ps(mask, src.add(i)));
                _mm256_mask_storeu_epi16(dst.add(2 * i) as *mut i16, mask, h);
            }
        }
    }

    /// Round 8 f32 to bf16 bit patterns (nearest even; NaN → quiet NaN),
    /// packed into 8 × u16.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn bf16_round_avx2(v: __m256) -> __m128i {
        let b = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
        let r = _mm256_srli_epi32::<16>(_mm256_add_epi32(
            _mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)),
            lsb,
        ));
        let abs = _mm256_and_si256(b, _mm256_set1_epi32(0x7FFF_FFFF));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F80_0000));
        let q = _mm256_or_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(0x0040));
        let x = _mm256_blendv_epi8(r, q, nan);
        // Values are 0..=0xFFFF, so the signed→unsigned saturating pack is exact;
        // it works per 128-bit lane, so gather qwords 0 and 2.
        let p = _mm256_packus_epi32(x, x);
        _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(p))
    }

    /// # Safety
    /// As [`f32_to_f16_avx2`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn f32_to_bf16_avx2(src: *const f32, dst: *mut u8, n: usize) {
        let mut i = 0;
        // SAFETY: every access stays below `n` elements.
        unsafe {
            while i + 8 <= n {
                let h = bf16_round_avx2(_mm256_loadu_ps(src.add(i)));
                _mm_storeu_si128(dst.add(2 * i) as *mut __m128i, h);
                i += 8;
            }
            while i < n {
                let b = half::bf16::from_f32(*src.add(i)).to_le_bytes();
                *dst.add(2 * i) = b[0];
                *dst.add(2 * i + 1) = b[1];
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interesting f32 bit patterns: every exponent, ties, subnormals, NaN, Inf.
    fn samples() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            65504.0,
            65520.0,
            1e-8,
            6e-8,
            3e-5,
        ];
        let mut s: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s));
            // exact tie cases for bf16 and f16
            v.push(f32::from_bits((s & 0xFFFF_0000) | 0x8000));
            v.push(f32::from_bits((s & 0xFFFF_E000) | 0x1000));
            v.push((s as f32 / u32::MAX as f32 - 0.5) * 100.0);
        }
        v.push(f32::from_bits(0x7F80_0001)); // signalling NaN
        v
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn every_isa_matches_half() {
        let xs = samples();
        for isa in Isa::available() {
            for n in [0, 1, 7, 8, 15, 16, 17, 33, xs.len()] {
                let x = &xs[..n];
                let mut h = vec![f16::ZERO; n];
                f32_to_f16(isa, x, &mut h);
                let mut b = vec![bf16::ZERO; n];
                f32_to_bf16(isa, x, &mut b);
                for i in 0..n {
                    let (eh, eb) = (f16::from_f32(x[i]), bf16::from_f32(x[i]));
                    assert!(
                        h[i] == eh || (h[i].is_nan() && eh.is_nan()),
                        "{isa} f16 {:#x}",
                        x[i].to_bits()
                    );
                    assert!(
                        b[i].to_bits() == eb.to_bits() || (b[i].is_nan() && eb.is_nan()),
                        "{isa} bf16 {:#x}",
                        x[i].to_bits()
                    );
                }
                let mut back = vec![0f32; n];
                f16_to_f32(isa, &h, &mut back);
                for i in 0..n {
                    assert!(same(back[i], h[i].to_f32()), "{isa} f16→f32");
                }
                bf16_to_f32(isa, &b, &mut back);
                for i in 0..n {
                    assert!(same(back[i], b[i].to_f32()), "{isa} bf16→f32");
                }
                let mut bytes = vec![0u8; 4 * n];
                from_f32(isa, DType::F32, x, &mut bytes);
                to_f32(isa, DType::F32, &bytes, &mut back);
                for i in 0..n {
                    assert!(same(back[i], x[i]));
                }
            }
        }
    }
}
