//! GGUF Q4_0, Q4_1 and Q8_0, kept in the checkpoint's block layout.
//!
//! Row `n` of `W[N, K]` is `K / 32` consecutive blocks, so a row is one
//! contiguous byte range (a matvec streams it; an embedding lookup reads it).
//! A block of 32 decodes to f32 as `q · d − 8d` (Q4_0), `q · d + m` (Q4_1)
//! or `q · d` (Q8_0), with one rounding at most (Q4_1's add).

use hal::{DType, GgufType, HalError, PackedWeight, QuantSpec, Result};
use half::f16;

use super::{buffer, part, Activations};
use crate::memory::Access;
use crate::simd::{self, Epilogue, Weights, STEP};
use crate::CpuBackend;

/// Physical layout name.
const LAYOUT: &str = "gguf-blocks";

pub(super) fn pack(
    dev: &CpuBackend,
    ty: GgufType,
    n: usize,
    k: usize,
    data: &[u8],
) -> Result<PackedWeight> {
    Ok(PackedWeight {
        spec: QuantSpec::Gguf(ty),
        n,
        k,
        layout: LAYOUT,
        parts: vec![buffer(dev, data)?],
        scalars: Vec::new(),
    })
}

/// The block bytes of a packed weight, checked.
fn blocks<'w>(acc: &Access<'_>, ty: GgufType, w: &'w PackedWeight) -> Result<&'w [u8]> {
    if w.layout != LAYOUT {
        return Err(HalError::invalid(
            "cpu",
            "quant_gemm",
            format!(
                "packed {} weight is in layout {:?}, not this backend's {LAYOUT:?}",
                ty.name(),
                w.layout
            ),
        ));
    }
    if !w.k.is_multiple_of(STEP) {
        return Err(HalError::invalid(
            "cpu",
            "quant_gemm",
            format!("{}: K = {} is not a multiple of 32", ty.name(), w.k),
        ));
    }
    part(acc, w, 0, w.n * ty.row_bytes(w.k))
}

pub(super) fn run(
    dev: &CpuBackend,
    ty: GgufType,
    w: &PackedWeight,
    x: &Activations<'_>,
    epi: Epilogue<'_>,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    let acc = dev.access();
    let data = blocks(&acc, ty, w)?;
    let isa = dev.isa();
    let (xf, stride) = simd::rows_f32(isa, x.dtype, x.bytes, x.m, x.k);
    simd::with_out_f32(isa, out_dtype, out, x.m * w.n, |o| {
        let pool = dev.pool();
        match ty {
            GgufType::Q4_0 => simd::run_isa(
                isa,
                pool,
                Gguf::<Q4_0>::new(data, w.n, w.k),
                &xf,
                stride,
                epi,
                o,
            ),
            GgufType::Q4_1 => simd::run_isa(
                isa,
                pool,
                Gguf::<Q4_1>::new(data, w.n, w.k),
                &xf,
                stride,
                epi,
                o,
            ),
            GgufType::Q8_0 => simd::run_isa(
                isa,
                pool,
                Gguf::<Q8_0>::new(data, w.n, w.k),
                &xf,
                stride,
                epi,
                o,
            ),
        }
    });
    Ok(())
}

#[allow(dead_code)] // reached through `super::dequantize_row`
pub(super) fn dequantize_row(
    acc: &Access<'_>,
    ty: GgufType,
    w: &PackedWeight,
    row: usize,
    out: &mut [f32],
) -> Result<()> {
    let data = blocks(acc, ty, w)?;
    if row >= w.n || out.len() != w.k {
        return Err(HalError::invalid(
            "cpu",
            "embedding",
            format!("row {row} of [{}, {}] into {} values", w.n, w.k, out.len()),
        ));
    }
    let row_bytes = &data[row * ty.row_bytes(w.k)..(row + 1) * ty.row_bytes(w.k)];
    for (blk, o) in row_bytes
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(STEP))
    {
        let o: &mut [f32; STEP] = o
            .try_into()
            .map_err(|_| HalError::invalid("cpu", "embedding", "short row"))?;
        match ty {
            GgufType::Q4_0 => decode::<Q4_0>(blk, o),
            GgufType::Q4_1 => decode::<Q4_1>(blk, o),
            GgufType::Q8_0 => decode::<Q8_0>(blk, o),
        }
    }
    Ok(())
}

/// Block types as const parameters.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

const fn block_bytes(t: u8) -> usize {
    match t {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    }
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// One block of type `T` as 32 f32.
#[inline(always)]
fn decode<const T: u8>(blk: &[u8], out: &mut [f32; STEP]) {
    let d = f16_at(blk, 0);
    match T {
        Q4_0 | Q4_1 => {
            let (c, qs) = if T == Q4_0 {
                (-8.0 * d, &blk[2..18])
            } else {
                (f16_at(blk, 2), &blk[4..20])
            };
            for (j, &b) in qs.iter().enumerate() {
                out[j] = (b & 0xF) as f32 * d + c;
                out[j + 16] = (b >> 4) as f32 * d + c;
            }
        }
        _ => {
            for (o, &b) in out.iter_mut().zip(&blk[2..34]) {
                *o = b as i8 as f32 * d;
            }
        }
    }
}

/// GGUF blocks of type `T`, `[N, K/32]`.
struct Gguf<'a, const T: u8> {
    data: &'a [u8],
    n: usize,
    steps: usize,
}

impl<'a, const T: u8> Gguf<'a, T> {
    fn new(data: &'a [u8], n: usize, k: usize) -> Self {
        assert!(data.len() >= n * (k / STEP) * block_bytes(T));
        Gguf {
            data,
            n,
            steps: k / STEP,
        }
    }

    /// Pointer to block `s` of row `n` (in bounds for `n < N`, `s < K/32`).
    #[inline(always)]
    fn at(&self, n: usize, s: usize) -> *const u8 {
        // SAFETY: the offset is inside `data` for in-range `n`, `s` (checked in `new`).
        unsafe {
            self.data
                .as_ptr()
                .add((n * self.steps + s) * block_bytes(T))
        }
    }
}

impl<const T: u8> Weights for Gguf<'_, T> {
    fn rows(&self) -> usize {
        self.n
    }
    fn steps(&self) -> usize {
        self.steps
    }
}

impl<const T: u8> simd::scalar::BlockScalar for Gguf<'_, T> {
    fn block(&self, n: usize, s: usize, out: &mut [f32; STEP]) {
        let off = (n * self.steps + s) * block_bytes(T);
        decode::<T>(&self.data[off..off + block_bytes(T)], out);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Gguf, Q4_0, Q4_1};
    use crate::simd::avx2::{self, Block256};
    use crate::simd::avx512::{self, Block512};

    impl<const T: u8> Block512 for Gguf<'_, T> {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m512; 2] {
            let p = self.at(n, s);
            // SAFETY: the block at `p` is whole (caller's contract on `n`, `s`).
            unsafe {
                let d = avx512::bcast_f16(p);
                match T {
                    Q4_0 | Q4_1 => {
                        let (c, q) = if T == Q4_0 {
                            (
                                _mm512_mul_ps(d, _mm512_set1_ps(-8.0)),
                                avx512::nibbles(p.add(2)),
                            )
                        } else {
                            (avx512::bcast_f16(p.add(2)), avx512::nibbles(p.add(4)))
                        };
                        [_mm512_fmadd_ps(q[0], d, c), _mm512_fmadd_ps(q[1], d, c)]
                    }
                    _ => {
                        let q = avx512::bytes_i8(p.add(2));
                        [_mm512_mul_ps(q[0], d), _mm512_mul_ps(q[1], d)]
                    }
                }
            }
        }
    }

    impl<const T: u8> Block256 for Gguf<'_, T> {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m256; 4] {
            let p = self.at(n, s);
            // SAFETY: the block at `p` is whole (caller's contract on `n`, `s`).
            unsafe {
                let d = avx2::bcast_f16(p);
                match T {
                    Q4_0 | Q4_1 => {
                        let (c, q) = if T == Q4_0 {
                            (
                                _mm256_mul_ps(d, _mm256_set1_ps(-8.0)),
                                avx2::nibbles(p.add(2)),
                            )
                        } else {
                            (avx2::bcast_f16(p.add(2)), avx2::nibbles(p.add(4)))
                        };
                        [
                            _mm256_fmadd_ps(q[0], d, c),
                            _mm256_fmadd_ps(q[1], d, c),
                            _mm256_fmadd_ps(q[2], d, c),
                            _mm256_fmadd_ps(q[3], d, c),
                        ]
                    }
                    _ => {
                        let q = avx2::bytes_i8(p.add(2));
                        [
                            _mm256_mul_ps(q[0], d),
                            _mm256_mul_ps(q[1], d),
                            _mm256_mul_ps(q[2], d),
                            _mm256_mul_ps(q[3], d),
                        ]
                    }
                }
            }
        }
    }
}
