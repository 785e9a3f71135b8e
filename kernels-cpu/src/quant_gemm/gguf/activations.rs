//! The activations of one GGUF product, prepared once per call in a
//! per-thread scratch that is reused from call to call (no allocation once
//! it has grown to the largest call's size).
//!
//! * Exact: x as f32 rows `[M, K]` (borrowed when the input already is
//!   f32) and, for the 4-bit types, block sums `[M, K/32]` ([`block_sum`]).
//! * Int8: llama.cpp's Q8_0/Q8_1 activation quantisation, per row and block
//!   of 32: `amax = max |x|`, `d = amax / 127`, `id = 1/d` (0 when d = 0),
//!   `q = round(x · id)` half away from zero, clamped to ±127; kept are
//!   `q` (i8 `[M, K]`), `d_x = f32(f16(d))`, `Σq` (i32) and `d_x · Σq`
//!   (f32), each `[M, K/32]`. Every ISA quantises bitwise alike (the
//!   arithmetic is exact IEEE operations in the same order). Activations
//!   must be finite: a NaN or infinity gives its row unspecified values.

use std::cell::RefCell;

use hal::{DType, Precision};
use half::f16;
use rayon::prelude::*;

use super::{block_sum, BLOCK};
use crate::isa::Isa;
use crate::quant_gemm::Activations;
use crate::CpuBackend;

/// Exact-precision activations.
#[derive(Clone, Copy)]
pub(crate) struct ExactRows<'a> {
    /// `[M, k]` f32.
    pub x: &'a [f32],
    /// Row length K (a multiple of 32).
    pub k: usize,
    /// `[M, K/32]` block sums (empty when the weight type needs none).
    pub sums: &'a [f32],
}

/// Int8-quantised activations.
#[derive(Clone, Copy)]
pub(crate) struct Int8Rows<'a> {
    /// `[M, k]` quantised values.
    pub q: &'a [i8],
    /// Row length K (a multiple of 32).
    pub k: usize,
    /// `[M, K/32]` scales `f32(f16(amax / 127))`.
    pub d: &'a [f32],
    /// `[M, K/32]` sums of `q`.
    pub qsum: &'a [i32],
    /// `[M, K/32]` `d · Σq` in f32.
    pub sx: &'a [f32],
}

/// The prepared activations of one call.
pub(crate) enum Rows<'a> {
    Exact(ExactRows<'a>),
    Int8(Int8Rows<'a>),
}

/// Activations and bias, ready for the kernels.
pub(crate) struct Prepared<'a> {
    pub rows: Rows<'a>,
    /// The bias `[N]` as f32.
    pub bias: Option<&'a [f32]>,
}

/// Reusable buffers of one calling thread.
#[derive(Default)]
pub(crate) struct Scratch {
    xf: Vec<f32>,
    sums: Vec<f32>,
    q: Vec<i8>,
    d: Vec<f32>,
    qsum: Vec<i32>,
    sx: Vec<f32>,
    bias: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Run `f` with this thread's scratch (a fresh one if it is in use, which
/// only a re-entrant call could cause).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|c| match c.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// The first `len` elements of `v`, grown (never shrunk) as needed.
fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// Elements (M · K) above which preparation is split over the pool.
const PARALLEL: usize = 1 << 16;

impl Scratch {
    /// Prepare `x` for `precision` (block sums only if `sums`), and the
    /// bias `[n]` (`dtype`, bytes) as f32.
    pub(crate) fn prepare<'a>(
        &'a mut self,
        dev: &CpuBackend,
        x: &Activations<'a>,
        precision: Precision,
        sums: bool,
        bias: Option<(DType, &[u8])>,
        n: usize,
    ) -> Prepared<'a> {
        let isa = dev.isa();
        let Scratch {
            xf,
            sums: sum_buf,
            q,
            d,
            qsum,
            sx,
            bias: bias_buf,
        } = self;
        let bias: Option<&'a [f32]> = bias.map(|(dt, bytes)| {
            let b = grow(bias_buf, n);
            crate::convert::to_f32(isa, dt, bytes, b);
            &*b
        });
        let (m, k) = (x.m, x.k);
        let blocks = k / BLOCK;
        let xs: &'a [f32] = match bytemuck::try_cast_slice::<u8, f32>(x.bytes) {
            Ok(s) if x.dtype == DType::F32 && s.len() >= m * k => &s[..m * k],
            _ => {
                let dst = grow(xf, m * k);
                let es = x.dtype.bytes_for(1);
                for (i, row) in dst.chunks_exact_mut(k.max(1)).enumerate() {
                    crate::convert::to_f32(
                        isa,
                        x.dtype,
                        &x.bytes[i * k * es..(i + 1) * k * es],
                        row,
                    );
                }
                &*dst
            }
        };
        let par = m * k >= PARALLEL && m > 1;
        let rows = match precision {
            Precision::Exact => {
                let s: &'a [f32] = if sums && blocks > 0 {
                    let s = grow(sum_buf, m * blocks);
                    let fill = |(xb, sb): (&[f32], &mut f32)| {
                        if let Ok(b) = <&[f32; BLOCK]>::try_from(xb) {
                            *sb = block_sum(b);
                        }
                    };
                    if par {
                        dev.pool().install(|| {
                            xs.par_chunks_exact(BLOCK)
                                .zip(s.par_iter_mut())
                                .with_min_len(1024)
                                .for_each(fill)
                        });
                    } else {
                        xs.chunks_exact(BLOCK).zip(s.iter_mut()).for_each(fill);
                    }
                    &*s
                } else {
                    &[]
                };
                Rows::Exact(ExactRows { x: xs, k, sums: s })
            }
            Precision::Int8Activations => {
                let (q, d, qsum, sx) = (
                    grow(q, m * k),
                    grow(d, m * blocks),
                    grow(qsum, m * blocks),
                    grow(sx, m * blocks),
                );
                if blocks > 0 {
                    // Rows per task: whole rows, about 16 K elements each.
                    let rows_per = (PARALLEL / 4 / k).max(1);
                    if par {
                        let (rk, rb) = (rows_per * k, rows_per * blocks);
                        dev.pool().install(|| {
                            xs.par_chunks(rk)
                                .zip(q.par_chunks_mut(rk))
                                .zip(d.par_chunks_mut(rb))
                                .zip(qsum.par_chunks_mut(rb))
                                .zip(sx.par_chunks_mut(rb))
                                .for_each(|((((xr, qr), dr), sr), sxr)| {
                                    quantize(isa, xr, qr, dr, sr, sxr)
                                })
                        });
                    } else {
                        quantize(isa, xs, q, d, qsum, sx);
                    }
                }
                Rows::Int8(Int8Rows { q, k, d, qsum, sx })
            }
        };
        Prepared { rows, bias }
    }
}

/// `(1/d, f32(f16(d)))` for a block whose largest magnitude is `amax`, with
/// `d = amax / 127` (and `1/d = 0` when `d = 0`).
#[inline(always)]
pub(crate) fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (id, f16::from_f32(d).to_f32())
}

/// `round(v)` half away from zero, clamped to ±127.
#[inline(always)]
pub(crate) fn round_q(v: f32) -> i8 {
    v.round().clamp(-127.0, 127.0) as i8
}

/// Quantise whole rows: `x` `[r, K]`, `q` `[r, K]`, `d`, `qsum`, `sx`
/// `[r, K/32]`.
pub(crate) fn quantize(
    isa: Isa,
    x: &[f32],
    q: &mut [i8],
    d: &mut [f32],
    qsum: &mut [i32],
    sx: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && super::avx512::detected() {
            return super::avx512::quantize(x, q, d, qsum, sx);
        }
        if isa >= Isa::Avx2 && super::avx2::detected() {
            return super::avx2::quantize(x, q, d, qsum, sx);
        }
    }
    let _ = isa;
    super::scalar::quantize(x, q, d, qsum, sx)
}
