//! GGUF Q4_0, Q4_1 and Q8_0: repacked into column strips, multiplied in an
//! outer-product form, in both precision modes.
//!
//! # Layout `"cpu-gguf-strips16"`
//!
//! `W[N, K]` (K a multiple of 32) is cut into *strips* of [`STRIP`] = 16
//! output rows (columns of the product; the last strip is zero-padded) and
//! K into *blocks* of 32. Strip `s`, block `b` is one record of
//! [`strip_bytes`] bytes at `(s · K/32 + b) · strip_bytes`, holding the 16
//! checkpoint blocks of rows `16s..16s+16` at that k range, rearranged so
//! that one 64-byte vector serves 16 columns at once:
//!
//! | type | record | bytes |
//! |---|---|---|
//! | Q4_0 | `d: [f16; 16]`, `qs: [4][16][4] u8` | 288 |
//! | Q4_1 | `d: [f16; 16]`, `m: [f16; 16]`, `qs: [4][16][4] u8` | 320 |
//! | Q8_0 | `d: [f16; 16]`, `qs: [32][16] i8` | 544 |
//!
//! 4-bit: byte `(t, c, e)` is the checkpoint's `qs[4t + e]` of column `c`:
//! its low nibble is element `4t + e`, its high nibble element `16 + 4t + e`
//! (so the dword of column `c` in vector `t` holds four consecutive k of
//! each half, the operand shape of `vpdpbusd`). 8-bit: byte `(k, c)` is
//! element `k` of column `c` (k-major, one 16-byte row per k). The byte
//! count equals the checkpoint's: repacking moves bytes, it never widens.
//!
//! # Arithmetic (identical on every ISA, so every path gives the same bits)
//!
//! Per output `(i, n)`, blocks in increasing k, with `acc = 0`:
//!
//! * [`Precision::Exact`](hal::Precision::Exact): `a = 0`; for the 32
//!   elements of the block in the fixed [`k_order`], `a = fma(q_k, x_k, a)`
//!   (`q_k` the stored integer: 0..15, or −128..127 for Q8_0); then
//!   `acc = fma(d, a, acc)` and, for the 4-bit types,
//!   `acc = fma(m, Σx, acc)` with `m` the block minimum (Q4_1) or `−8d`
//!   (Q4_0) and `Σx` the block sum of x in the order of [`block_sum`].
//! * [`Precision::Int8Activations`](hal::Precision::Int8Activations): x is
//!   quantised per row and block as llama.cpp's Q8_0/Q8_1 do
//!   ([`activations`]); the integer sum `S = Σ q_x · q_w` (with `q_w − 8`
//!   for Q4_0) is exact; then `acc = fma(f32(S), d_x · d_w, acc)` and, for
//!   Q4_1, `acc = fma(m, d_x · Σq_x, acc)`.
//!
//! Then `out = acc + bias[n]`. Nothing in that sequence depends on M, on
//! which rows share a register tile, on the thread count or on the ISA:
//! results are batch-invariant by construction, and the scalar, AVX2 and
//! AVX-512 paths agree bitwise.

pub(crate) mod activations;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use hal::{DType, GgufType, HalError, PackedWeight, Precision, QuantSpec, Result};
use half::f16;
use rayon::prelude::*;

use super::{buffer, part, Activations};
use crate::isa::Isa;
use crate::memory::Access;
use crate::CpuBackend;

use activations::{ExactRows, Int8Rows, Rows};

/// Physical layout name.
const LAYOUT: &str = "cpu-gguf-strips16";
/// Output columns per strip.
pub(crate) const STRIP: usize = 16;
/// Elements of K per block.
pub(crate) const BLOCK: usize = 32;

/// Block types as const parameters of the kernels.
pub(crate) const Q4_0: u8 = 0;
pub(crate) const Q4_1: u8 = 1;
pub(crate) const Q8_0: u8 = 2;
/// AWQ / GPTQ 4-bit in strips (see [`grouped`](super::grouped)): Q4_1's
/// arithmetic with `(d, m)` per column and group from [`Strips::meta`].
pub(crate) const G4: u8 = 3;
/// GPTQ 8-bit in strips: Q8_0's arithmetic (stored `q − 128`) plus a
/// per-column `m` term as Q4_1's, `(d, m)` from [`Strips::meta`].
pub(crate) const G8: u8 = 4;

/// Bytes of one group record in [`Strips::meta`]: the scales `d` as
/// `[f16; 16]`, then the zero offsets `Z0 − z` as `[i8; 16]` (see
/// [`zero_bias`]; −16..0 for 4 bits, −128..127 for GPTQ's 8-bit zero points
/// 1..256), so that `m = (Z0 − z) · d`.
pub(crate) const META: usize = 48;
/// Offset of the zero offsets inside a group record.
pub(crate) const Z_OFFSET: usize = 32;

/// Bytes of one block of one column of type `T` (a checkpoint block for
/// the GGUF types; the quantised values alone for the grouped ones).
pub(crate) const fn block_bytes(t: u8) -> usize {
    match t {
        Q4_0 => 18,
        Q4_1 => 20,
        G4 => 16,
        G8 => 32,
        _ => 34,
    }
}

/// Whether type `t` stores one signed byte per element (Q8_0, G8).
pub(crate) const fn is8(t: u8) -> bool {
    t == Q8_0 || t == G8
}

/// Whether type `t` keeps its scales and zero points per group, outside
/// the records.
pub(crate) const fn grouped(t: u8) -> bool {
    t == G4 || t == G8
}

/// Whether type `t` adds an `m · Σx` term per block (Q4_1 and the grouped
/// types; Q4_0's `−8d` is folded into the integer sum in int8 mode).
pub(crate) const fn has_min(t: u8) -> bool {
    t == Q4_1 || grouped(t)
}

/// `Z0`, the value a grouped type's stored integers are offset by, so that
/// a weight is `(q − Z0) · d + m` with `m = (Z0 − z) · d`: 0 for G4, whose
/// nibbles are stored as they are; 128 for G8, stored as `q − 128`. `m` is
/// exact in f32 (at most 8 × 11 significant bits).
pub(crate) const fn zero_bias(t: u8) -> i32 {
    if t == G8 {
        128
    } else {
        0
    }
}

/// Bytes of one strip record (16 columns × one block) of type `T`.
pub(crate) const fn strip_bytes(t: u8) -> usize {
    STRIP * block_bytes(t)
}

/// Offset of the quantised values inside a record of type `T` (after the
/// `d` and, for Q4_1, `m` arrays).
pub(crate) const fn qs_offset(t: u8) -> usize {
    match t {
        Q4_1 => 64,
        G4 | G8 => 0,
        _ => 32,
    }
}

/// Offset of Q4_1's `m` array inside a record.
pub(crate) const M_OFFSET: usize = 32;

const fn type_id(ty: GgufType) -> u8 {
    match ty {
        GgufType::Q4_0 => Q4_0,
        GgufType::Q4_1 => Q4_1,
        GgufType::Q8_0 => Q8_0,
    }
}

/// The order in which the 4-bit kernels visit the 32 elements of a block:
/// `k_order()[p]` is the element of step `p`. Vector `t` (0..4) yields its
/// eight nibbles lowest bit first, `(e, h)` = (0,0), (0,1), (1,0), … —
/// elements `4t + e` (low nibble) and `16 + 4t + e` (high nibble). Q8_0
/// visits k = 0..32 in order.
pub(crate) const fn k_order() -> [usize; BLOCK] {
    let mut o = [0usize; BLOCK];
    let mut p = 0;
    while p < BLOCK {
        let (t, j) = (p / 8, p % 8);
        let (e, h) = (j / 2, j % 2);
        o[p] = 16 * h + 4 * t + e;
        p += 1;
    }
    o
}

/// The sum of one block of 32 activations, in the fixed order every path
/// uses: eight lanes `l` summing `x[l], x[l+8], x[l+16], x[l+24]` in turn,
/// then the lanes by [`crate::simd::hsum8`].
#[inline(always)]
pub(crate) fn block_sum(x: &[f32; BLOCK]) -> f32 {
    let mut l = [0f32; 8];
    for c in 0..4 {
        for (j, lj) in l.iter_mut().enumerate() {
            *lj += x[8 * c + j];
        }
    }
    crate::simd::hsum8(l)
}

/// A packed weight's strips, checked to be whole.
#[derive(Clone, Copy)]
pub(crate) struct Strips<'a> {
    /// `strips · blocks` records.
    pub data: &'a [u8],
    /// Blocks along K (K / 32).
    pub blocks: usize,
    /// `ceil(N / 16)`.
    pub strips: usize,
    /// Grouped types: `[strips, groups]` records of [`META`] bytes (empty
    /// for the GGUF types, whose scales live in the records).
    pub meta: &'a [u8],
    /// Grouped types: groups along K.
    pub groups: usize,
    /// Grouped types: blocks per group (G / 32); 1 for the GGUF types.
    pub per_group: usize,
    /// `log2(per_group)` when `per_group` is a power of two (G = 32, 64,
    /// 128, …), so the kernels find a block's group with a shift instead of
    /// a division; `u32::MAX` otherwise.
    pub group_shift: u32,
}

impl<'a> Strips<'a> {
    /// `None` when `data` is shorter than the shape needs.
    pub(crate) fn new(t: u8, data: &'a [u8], n: usize, k: usize) -> Option<Self> {
        let (blocks, strips) = (k / BLOCK, n.div_ceil(STRIP));
        (!grouped(t) && data.len() >= strips * blocks * strip_bytes(t)).then_some(Strips {
            data,
            blocks,
            strips,
            meta: &[],
            groups: 0,
            per_group: 1,
            group_shift: 0,
        })
    }

    /// Strips of a grouped type (`G4`, `G8`) with groups of `group` elements
    /// (a multiple of 32); `None` when `data` or `meta` is too short.
    pub(crate) fn grouped(
        t: u8,
        data: &'a [u8],
        meta: &'a [u8],
        n: usize,
        k: usize,
        group: usize,
    ) -> Option<Self> {
        if !grouped(t) || group == 0 || !group.is_multiple_of(BLOCK) {
            return None;
        }
        let (blocks, strips, groups) = (k / BLOCK, n.div_ceil(STRIP), k.div_ceil(group));
        (data.len() >= strips * blocks * strip_bytes(t) && meta.len() >= strips * groups * META)
            .then_some(Strips {
                data,
                blocks,
                strips,
                meta,
                groups,
                per_group: group / BLOCK,
                group_shift: if (group / BLOCK).is_power_of_two() {
                    (group / BLOCK).trailing_zeros()
                } else {
                    u32::MAX
                },
            })
    }

    /// The record of strip `s`, block `b` (`s < strips`, `b < blocks`).
    #[inline(always)]
    pub(crate) fn record(&self, t: u8, s: usize, b: usize) -> &'a [u8] {
        let sb = strip_bytes(t);
        &self.data[(s * self.blocks + b) * sb..][..sb]
    }

    /// Where the scales `d` (`[f16; 16]`) of strip `s`, block `b` start: the
    /// record itself for the GGUF types, its group's [`META`] record for the
    /// grouped ones (zero offsets at [`Z_OFFSET`] from there).
    ///
    /// # Safety
    /// `s < strips`, `b < blocks`, and `self` was built by [`Strips::new`]
    /// or [`Strips::grouped`] for type `t`.
    #[inline(always)]
    pub(crate) unsafe fn scales_ptr(&self, t: u8, s: usize, b: usize) -> *const u8 {
        // SAFETY: in bounds by the constructors' length checks.
        unsafe {
            if grouped(t) {
                let g = if self.group_shift != u32::MAX {
                    b >> self.group_shift
                } else {
                    b / self.per_group
                };
                self.meta.as_ptr().add((s * self.groups + g) * META)
            } else {
                self.data
                    .as_ptr()
                    .add((s * self.blocks + b) * strip_bytes(t))
            }
        }
    }
}

/// Where a kernel's results go: 16 columns of one row at a time.
pub(crate) trait Sink: Sync {
    /// Row `row`, columns `col0 .. col0 + v.len()` (those below N) of the
    /// output.
    fn put(&self, row: usize, col0: usize, v: &[f32]);
}

/// Repack a checkpoint's `[N, K]` blocks into strips.
pub(super) fn pack(
    dev: &CpuBackend,
    ty: GgufType,
    n: usize,
    k: usize,
    data: &[u8],
) -> Result<PackedWeight> {
    if !k.is_multiple_of(BLOCK) || data.len() < n * ty.row_bytes(k) {
        return Err(HalError::invalid(
            "cpu",
            "pack",
            format!(
                "{}: [{n}, {k}] needs K a multiple of 32 and {} bytes, got {}",
                ty.name(),
                n * ty.row_bytes(k),
                data.len()
            ),
        ));
    }
    let t = type_id(ty);
    let (blocks, strips, sb, bb) = (
        k / BLOCK,
        n.div_ceil(STRIP),
        strip_bytes(t),
        ty.block_bytes(),
    );
    let mut out = vec![0u8; strips * blocks * sb];
    let repack_strip = |(s, dst): (usize, &mut [u8])| {
        for (b, rec) in dst.chunks_exact_mut(sb).enumerate() {
            for c in 0..STRIP.min(n - s * STRIP) {
                let row = s * STRIP + c;
                let src = &data[(row * blocks + b) * bb..][..bb];
                rec[2 * c..2 * c + 2].copy_from_slice(&src[0..2]);
                match t {
                    Q4_0 | Q4_1 => {
                        let q = if t == Q4_1 {
                            rec[M_OFFSET + 2 * c..M_OFFSET + 2 * c + 2].copy_from_slice(&src[2..4]);
                            &src[4..20]
                        } else {
                            &src[2..18]
                        };
                        let qs = qs_offset(t);
                        for tt in 0..4 {
                            for e in 0..4 {
                                rec[qs + 64 * tt + 4 * c + e] = q[4 * tt + e];
                            }
                        }
                    }
                    _ => {
                        for (kk, &v) in src[2..34].iter().enumerate() {
                            rec[qs_offset(t) + STRIP * kk + c] = v;
                        }
                    }
                }
            }
        }
    };
    let per_strip = (blocks * sb).max(1);
    if out.len() >= 1 << 20 {
        dev.pool().install(|| {
            out.par_chunks_mut(per_strip)
                .enumerate()
                .for_each(repack_strip)
        });
    } else {
        out.chunks_mut(per_strip).enumerate().for_each(repack_strip);
    }
    Ok(PackedWeight {
        spec: QuantSpec::Gguf(ty),
        n,
        k,
        layout: LAYOUT,
        parts: vec![buffer(dev, &out)?],
        scalars: Vec::new(),
    })
}

/// The strips of a packed weight, checked.
fn strips<'w>(acc: &Access<'_>, ty: GgufType, w: &'w PackedWeight) -> Result<Strips<'w>> {
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
    if !w.k.is_multiple_of(BLOCK) {
        return Err(HalError::invalid(
            "cpu",
            "quant_gemm",
            format!("{}: K = {} is not a multiple of 32", ty.name(), w.k),
        ));
    }
    let t = type_id(ty);
    let len = w.n.div_ceil(STRIP) * (w.k / BLOCK) * strip_bytes(t);
    let data = part(acc, w, 0, len)?;
    Strips::new(t, data, w.n, w.k).ok_or_else(|| {
        HalError::invalid(
            "cpu",
            "quant_gemm",
            format!("packed {} weight is short", ty.name()),
        )
    })
}

/// The output of one call: `[M, N]` elements of `dtype`, written 16 columns
/// at a time by tasks that own disjoint (row, strip) rectangles.
struct Out<'a> {
    ptr: *mut u8,
    len: usize,
    n: usize,
    dtype: DType,
    isa: Isa,
    bias: Option<&'a [f32]>,
}

// SAFETY: tasks write disjoint elements (see `Out::put`); the pointer is
// valid for the whole call, which outlives every task.
unsafe impl Send for Out<'_> {}
// SAFETY: as above.
unsafe impl Sync for Out<'_> {}

impl Sink for Out<'_> {
    fn put(&self, row: usize, c0: usize, v: &[f32]) {
        if c0 >= self.n {
            return;
        }
        let cols = v.len().min(STRIP).min(self.n - c0);
        let mut r = [0f32; STRIP];
        r[..cols].copy_from_slice(&v[..cols]);
        if let Some(b) = self.bias {
            for (rc, bc) in r[..cols].iter_mut().zip(&b[c0..c0 + cols]) {
                *rc += bc;
            }
        }
        let es = self.dtype.bytes_for(1);
        let off = (row * self.n + c0) * es;
        assert!(off + cols * es <= self.len, "output index out of range");
        // SAFETY: the range is inside the output (checked above); each
        // (row, strip) is computed by exactly one task and one tile (the
        // tasks partition rows × strips), so no two writers overlap and no
        // reader exists while the call runs.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), cols * es) };
        if self.dtype == DType::F32 {
            dst.copy_from_slice(bytemuck::cast_slice(&r[..cols]));
        } else {
            crate::convert::from_f32(self.isa, self.dtype, &r[..cols], dst);
        }
    }
}

/// `out[M, N] = x · dequant(w)ᵀ + bias` for a GGUF weight, in `precision`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    dev: &CpuBackend,
    ty: GgufType,
    w: &PackedWeight,
    x: &Activations<'_>,
    bias: Option<(DType, &[u8])>,
    precision: Precision,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    let acc = dev.access();
    let st = strips(&acc, ty, w)?;
    run_strips(
        dev,
        type_id(ty),
        &st,
        w.n,
        x,
        bias,
        precision,
        out_dtype,
        out,
    )
}

/// `out[M, N] = x · dequant(w)ᵀ + bias` for checked strips `st` of type `t`
/// (`n` columns), in `precision`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_strips(
    dev: &CpuBackend,
    t: u8,
    st: &Strips<'_>,
    n: usize,
    x: &Activations<'_>,
    bias: Option<(DType, &[u8])>,
    precision: Precision,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    let m = x.m;
    if x.k != st.blocks * BLOCK || st.strips != n.div_ceil(STRIP) {
        return Err(HalError::invalid(
            "cpu",
            "quant_gemm",
            format!(
                "activations of K = {} for a packed weight of {} blocks, {} strips",
                x.k, st.blocks, st.strips
            ),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if out.len() < out_dtype.bytes_for(m * n) {
        return Err(HalError::invalid(
            "cpu",
            "quant_gemm",
            "output is smaller than [M, N]",
        ));
    }
    let isa = dev.isa();
    activations::with_scratch(|scratch| {
        let p = scratch.prepare(dev, x, precision, t != Q8_0, bias, n);
        let sink = Out {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            n,
            dtype: out_dtype,
            isa,
            bias: p.bias,
        };
        let weight_bytes = st.strips * st.blocks * strip_bytes(t) + st.meta.len();
        match p.rows {
            Rows::Exact(rows) => {
                let kernel = exact_kernel(isa, t);
                drive(dev, m, st, weight_bytes, |r, s| {
                    kernel(st, &rows, r, s, &sink)
                });
            }
            Rows::Int8(rows) => {
                let kernel = int8_kernel(isa, t);
                drive(dev, m, st, weight_bytes, |r, s| {
                    kernel(st, &rows, r, s, &sink)
                });
            }
        }
    });
    Ok(())
}

/// A kernel computing rows × strips of the exact product into a sink.
pub(crate) type ExactKernel =
    for<'a, 'b, 'c> fn(&Strips<'a>, &ExactRows<'b>, Range<usize>, Range<usize>, &'c dyn Sink);
/// A kernel computing rows × strips of the int8-activation product.
pub(crate) type Int8Kernel =
    for<'a, 'b, 'c> fn(&Strips<'a>, &Int8Rows<'b>, Range<usize>, Range<usize>, &'c dyn Sink);

/// The exact-precision kernel of `isa` for block type `t`.
pub(crate) fn exact_kernel(isa: Isa, t: u8) -> ExactKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && avx512::detected() {
            return match t {
                Q4_0 => avx512::exact::<Q4_0>,
                Q4_1 => avx512::exact::<Q4_1>,
                G4 => avx512::exact::<G4>,
                G8 => avx512::exact::<G8>,
                _ => avx512::exact::<Q8_0>,
            };
        }
        if isa >= Isa::Avx2 && avx2::detected() {
            return match t {
                Q4_0 => avx2::exact::<Q4_0>,
                Q4_1 => avx2::exact::<Q4_1>,
                G4 => avx2::exact::<G4>,
                G8 => avx2::exact::<G8>,
                _ => avx2::exact::<Q8_0>,
            };
        }
    }
    let _ = isa;
    match t {
        Q4_0 => scalar::exact::<Q4_0>,
        Q4_1 => scalar::exact::<Q4_1>,
        G4 => scalar::exact::<G4>,
        G8 => scalar::exact::<G8>,
        _ => scalar::exact::<Q8_0>,
    }
}

/// The int8-activation kernel of `isa` for block type `t`: AVX-512 needs
/// VNNI and VBMI as well (else the AVX2 kernel runs, which uses AVX-VNNI
/// where present); every kernel gives the same bits.
pub(crate) fn int8_kernel(isa: Isa, t: u8) -> Int8Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && avx512::detected_vnni() {
            return match t {
                Q4_0 => avx512::int8::<Q4_0>,
                Q4_1 => avx512::int8::<Q4_1>,
                G4 => avx512::int8::<G4>,
                G8 => avx512::int8::<G8>,
                _ => avx512::int8::<Q8_0>,
            };
        }
        if isa >= Isa::Avx2 && avx2::detected() {
            let vnni = avx2::detected_vnni();
            return match (t, vnni) {
                (Q4_0, true) => avx2::int8::<Q4_0, true>,
                (Q4_1, true) => avx2::int8::<Q4_1, true>,
                (G4, true) => avx2::int8::<G4, true>,
                (G8, true) => avx2::int8::<G8, true>,
                (_, true) => avx2::int8::<Q8_0, true>,
                (Q4_0, false) => avx2::int8::<Q4_0, false>,
                (Q4_1, false) => avx2::int8::<Q4_1, false>,
                (G4, false) => avx2::int8::<G4, false>,
                (G8, false) => avx2::int8::<G8, false>,
                (_, false) => avx2::int8::<Q8_0, false>,
            };
        }
    }
    let _ = isa;
    match t {
        Q4_0 => scalar::int8::<Q4_0>,
        Q4_1 => scalar::int8::<Q4_1>,
        G4 => scalar::int8::<G4>,
        G8 => scalar::int8::<G8>,
        _ => scalar::int8::<Q8_0>,
    }
}

/// Rows per task when M is large (a multiple of every kernel's row tile).
const ROW_BLOCK: usize = 64;
/// Below this many weight bytes × row blocks, a call is cut into only as
/// many tasks as threads (a matvec this small costs about as much as a
/// thread wake-up).
const SMALL_CALL: usize = 1 << 20;

/// Split `m` rows × the weight's strips into tasks and run `f(rows, strips)`
/// on each. The calling thread takes tasks itself, beside `threads − 1` pool
/// workers, from one shared counter: a matvec pays for no hand-off beyond
/// waking the workers, and the caller never sleeps while work is left. The
/// split never changes a result: every output is computed whole by one
/// kernel call.
fn drive(
    dev: &CpuBackend,
    m: usize,
    st: &Strips<'_>,
    weight_bytes: usize,
    f: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let threads = dev.threads().max(1);
    let (mb, sb) = split(m, st.strips, threads, weight_bytes);
    let (m_blocks, s_blocks) = (m.div_ceil(mb), st.strips.div_ceil(sb));
    let tasks = m_blocks * s_blocks;
    let next = AtomicUsize::new(0);
    let work = || loop {
        let t = next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            break;
        }
        let (bm, bs) = (t / s_blocks, t % s_blocks);
        f(
            bm * mb..((bm + 1) * mb).min(m),
            bs * sb..((bs + 1) * sb).min(st.strips),
        );
    };
    let workers = threads.min(tasks) - 1;
    if workers == 0 {
        work();
    } else {
        dev.pool().in_place_scope(|s| {
            for _ in 0..workers {
                s.spawn(|_| work());
            }
            work();
        });
    }
}

/// `(rows, strips)` per task for `m` rows and `strips` strips on `threads`:
/// one task per thread for a small call, four per thread otherwise (so a
/// thread slowed by the rest of the machine does not hold the others up).
pub(crate) fn split(
    m: usize,
    strips: usize,
    threads: usize,
    weight_bytes: usize,
) -> (usize, usize) {
    let mb = m.clamp(1, ROW_BLOCK);
    let m_blocks = m.div_ceil(mb);
    let want = if weight_bytes.saturating_mul(m_blocks) < SMALL_CALL {
        threads
    } else {
        4 * threads
    };
    let s_blocks = want.div_ceil(m_blocks).clamp(1, strips.max(1));
    (mb, strips.div_ceil(s_blocks).max(1))
}

/// Row `row` of a packed GGUF weight, dequantised into `out` (`w.k` f32).
pub(super) fn dequantize_row(
    acc: &Access<'_>,
    ty: GgufType,
    w: &PackedWeight,
    row: usize,
    out: &mut [f32],
) -> Result<()> {
    let st = strips(acc, ty, w)?;
    if row >= w.n || out.len() != w.k {
        return Err(HalError::invalid(
            "cpu",
            "embedding",
            format!("row {row} of [{}, {}] into {} values", w.n, w.k, out.len()),
        ));
    }
    let t = type_id(ty);
    let (s, c) = (row / STRIP, row % STRIP);
    let f16_at = |r: &[u8], off: usize| f16::from_le_bytes([r[off], r[off + 1]]).to_f32();
    for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let rec = st.record(t, s, b);
        let d = f16_at(rec, 2 * c);
        let qs = &rec[qs_offset(t)..];
        match t {
            Q4_0 | Q4_1 => {
                let add = if t == Q4_1 {
                    f16_at(rec, M_OFFSET + 2 * c)
                } else {
                    -8.0 * d
                };
                for tt in 0..4 {
                    for e in 0..4 {
                        let byte = qs[64 * tt + 4 * c + e];
                        o[4 * tt + e] = (byte & 0xF) as f32 * d + add;
                        o[16 + 4 * tt + e] = (byte >> 4) as f32 * d + add;
                    }
                }
            }
            _ => {
                for (kk, ok) in o.iter_mut().enumerate() {
                    *ok = qs[STRIP * kk + c] as i8 as f32 * d;
                }
            }
        }
    }
    Ok(())
}
