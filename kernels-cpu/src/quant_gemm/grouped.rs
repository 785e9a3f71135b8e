//! AWQ and GPTQ (4 and 8 bit, act-order included), repacked for dot products.
//!
//! Both formats define `W[n, k] = (q[k, n] − z[g(k), n]) · s[g(k), n]` with
//! a group `g(k)` per input row (`k / G`, or GPTQ's `g_idx`). At pack time:
//!
//! * K is reordered so each group's rows are contiguous (stable by k) and
//!   each group is padded to a multiple of 32 with zero weights: `K'` rows,
//!   and `perm [K']` (u32; `u32::MAX` = padding) says which input row each
//!   holds. Without act-order and with 32 | G the order is the identity and
//!   `x` is used as it is; otherwise `x` is gathered by `perm` per call. The
//!   order depends only on the weight, never on M, so results stay
//!   batch-invariant — and the product is the same sum, reordered.
//! * `q` becomes `[N, K'/32]` blocks: 16 bytes of nibbles (byte `j` holds
//!   element `j` low and `j + 16` high, as GGUF) or 32 bytes.
//! * Each (row, group) keeps `(s, −z·s)` as two f32, `[N, groups, 2]`, so a
//!   weight is `fma(q, s, −z·s)`: exact, since `(q − z)·s` fits in f32.
//! * `block_group [K'/32]` (u32) names the group of each block.
//!
//! Parts: `[q, scales, block_group, perm]` (`perm` only when not identity);
//! scalars: `[bits, groups, K'/32]`.
//!
//! # Layout `"cpu-grouped-strips16"`
//!
//! When the groups are K's natural blocks (no act-order, `g(k) = k / G`
//! with 32 | G and 32 | K), the weight is instead packed into the column
//! strips of the GGUF kernels ([`super::gguf`], types `G4` and `G8`), which
//! serve both precisions, int8 activations with `vpdpbusd`:
//!
//! * part 0: `[N/16, K/32]` records of 16 columns × 32 elements: 4-bit as
//!   GGUF Q4 (`[4][16][4]` bytes, low nibble element `4t + e`, high nibble
//!   `16 + 4t + e`), 8-bit as Q8_0 (`[32][16]`, stored `q − 128`);
//! * part 1: `[N/16, groups]` records of 48 bytes: the f16 scales `s` of
//!   the 16 columns, then `Z0 − z` as i8 (`Z0` = 0 for 4-bit, 128 for
//!   8-bit), so a weight is `(q − Z0)·s + (Z0 − z)·s`, exactly.
//!
//! scalars: `[bits, group size]`. The stored bytes are the checkpoint's
//! nibbles or bytes plus 48 per 16 columns and group (4.7 % over the
//! values for 4-bit weights in groups of 128, against the checkpoint's
//! 3.9 % of f16 scales and packed zero points).

use hal::{DType, HalError, PackedWeight, Precision, QuantSpec, QuantWeights, Result};
use half::f16;
use rayon::prelude::*;

use super::gguf::{self, Strips, G4, G8, META, STRIP, Z_OFFSET};
use super::{buffer, part, part_as, Activations};
use crate::simd::{self, Epilogue, Weights, STEP};
use crate::CpuBackend;

/// Physical layout name.
const LAYOUT: &str = "cpu-grouped";
/// Physical layout name of the strip packing.
const STRIPS_LAYOUT: &str = "cpu-grouped-strips16";
/// Marks a padding row in `perm`.
const PAD: u32 = u32::MAX;

/// A checkpoint's weight, read element by element.
struct Source<'a> {
    w: &'a QuantWeights,
}

impl Source<'_> {
    /// `(bits, n, k, number of groups, group of each input row)`.
    fn shape(&self) -> (u8, usize, usize, usize, Vec<usize>) {
        match self.w {
            QuantWeights::Awq {
                group_size, n, k, ..
            } => (
                4,
                *n,
                *k,
                k / group_size,
                (0..*k).map(|i| i / group_size).collect(),
            ),
            QuantWeights::Gptq {
                bits,
                group_size,
                n,
                k,
                g_idx,
                ..
            } => {
                let groups = hal::quant::gptq::num_groups(*k, *group_size);
                let g = match g_idx {
                    Some(g) => g.iter().map(|&v| v as usize).collect(),
                    None => (0..*k).map(|i| i / group_size).collect(),
                };
                (*bits, *n, *k, groups, g)
            }
            _ => unreachable!("grouped::pack is called for AWQ and GPTQ only"),
        }
    }

    /// `q[k, n]`.
    #[inline]
    fn q(&self, k: usize, n: usize) -> u8 {
        match self.w {
            QuantWeights::Awq { n: nn, qweight, .. } => {
                let word = qweight[k * (nn / 8) + n / 8] as u32;
                ((word >> (4 * hal::quant::awq::INVERSE_ORDER[n % 8])) & 0xF) as u8
            }
            QuantWeights::Gptq {
                bits,
                n: nn,
                qweight,
                ..
            } => {
                let p = 32 / *bits as usize;
                let word = qweight[(k / p) * nn + n] as u32;
                ((word >> (*bits as usize * (k % p))) & ((1u32 << bits) - 1)) as u8
            }
            _ => 0,
        }
    }

    /// `(z, s)` of group `g`, row `n` (true zero point, not GPTQ's stored one).
    fn zero_scale(&self, g: usize, n: usize) -> (u32, f32) {
        match self.w {
            QuantWeights::Awq {
                n: nn,
                qzeros,
                scales,
                ..
            } => {
                let word = qzeros[g * (nn / 8) + n / 8] as u32;
                (
                    (word >> (4 * hal::quant::awq::INVERSE_ORDER[n % 8])) & 0xF,
                    scales[g * nn + n].to_f32(),
                )
            }
            QuantWeights::Gptq {
                bits,
                n: nn,
                qzeros,
                scales,
                ..
            } => {
                let p = 32 / *bits as usize;
                let word = qzeros[g * (nn / p) + n / p] as u32;
                (
                    ((word >> (*bits as usize * (n % p))) & ((1u32 << bits) - 1)) + 1,
                    scales[g * nn + n].to_f32(),
                )
            }
            _ => (0, 0.0),
        }
    }
}

/// The group size of an AWQ or GPTQ spec.
fn group_size(w: &QuantWeights) -> usize {
    match w.spec() {
        QuantSpec::Awq { group_size } | QuantSpec::Gptq { group_size, .. } => group_size,
        _ => 0,
    }
}

pub(super) fn pack(dev: &CpuBackend, w: &QuantWeights) -> Result<PackedWeight> {
    let src = Source { w };
    let (bits, n, k, groups, g_of) = src.shape();
    let g = group_size(w);
    if (bits == 4 || bits == 8)
        && g > 0
        && g.is_multiple_of(STEP)
        && k.is_multiple_of(STEP)
        && g_of.iter().enumerate().all(|(i, &gi)| gi == i / g)
    {
        return pack_strips(dev, w, &src, bits, n, k, g, groups);
    }
    // Rows of each group in increasing k, each group padded to 32.
    let mut members = vec![Vec::new(); groups];
    for (i, &g) in g_of.iter().enumerate() {
        members[g].push(i as u32);
    }
    let mut perm = Vec::with_capacity(k + 32 * groups);
    let mut block_group = Vec::new();
    for (g, rows) in members.iter().enumerate() {
        perm.extend_from_slice(rows);
        perm.resize(perm.len().next_multiple_of(STEP), PAD);
        block_group.resize(perm.len() / STEP, g as u32);
    }
    let kp = perm.len();
    let steps = kp / STEP;
    let identity = kp == k.next_multiple_of(STEP)
        && perm
            .iter()
            .enumerate()
            .all(|(i, &p)| if i < k { p as usize == i } else { p == PAD });
    let bb = if bits == 4 { 16 } else { 32 };
    let mut q = vec![0u8; n * steps * bb];
    let mut sc = vec![0f32; n * groups * 2];
    dev.pool().install(|| {
        q.par_chunks_mut(steps * bb)
            .zip(sc.par_chunks_mut(groups * 2))
            .enumerate()
            .for_each(|(row, (qr, scr))| {
                let mut zs = Vec::with_capacity(groups);
                for g in 0..groups {
                    let (z, s) = src.zero_scale(g, row);
                    zs.push(z);
                    scr[2 * g] = s;
                    // (q − z)·s = q·s + (−z·s); z·s is exact in f32 (≤ 9 × 11 bits).
                    scr[2 * g + 1] = -(z as f32 * s);
                }
                for (blk, (qb, &g)) in qr.chunks_exact_mut(bb).zip(&block_group).enumerate() {
                    let pad = zs[g as usize].min((1 << bits) - 1) as u8;
                    let val = |j: usize| match perm[blk * STEP + j] {
                        PAD => pad,
                        kk => src.q(kk as usize, row),
                    };
                    if bits == 4 {
                        for (j, b) in qb.iter_mut().enumerate() {
                            *b = val(j) | (val(j + 16) << 4);
                        }
                    } else {
                        for (j, b) in qb.iter_mut().enumerate() {
                            *b = val(j);
                        }
                    }
                }
            })
    });
    let mut parts = vec![
        buffer(dev, &q)?,
        buffer(dev, bytemuck::cast_slice(&sc))?,
        buffer(dev, bytemuck::cast_slice(&block_group))?,
    ];
    if !identity {
        parts.push(buffer(dev, bytemuck::cast_slice(&perm))?);
    }
    Ok(PackedWeight {
        spec: w.spec(),
        n,
        k,
        layout: LAYOUT,
        parts,
        scalars: vec![bits as f32, groups as f32, steps as f32],
    })
}

/// Pack into [`STRIPS_LAYOUT`] (see the module docs): `groups = ⌈K/G⌉`.
#[allow(clippy::too_many_arguments)]
fn pack_strips(
    dev: &CpuBackend,
    w: &QuantWeights,
    src: &Source<'_>,
    bits: u8,
    n: usize,
    k: usize,
    g: usize,
    groups: usize,
) -> Result<PackedWeight> {
    let t = if bits == 4 { G4 } else { G8 };
    let (blocks, strips, sb) = (k / STEP, n.div_ceil(STRIP), gguf::strip_bytes(t));
    let z0 = gguf::zero_bias(t);
    let mut data = vec![0u8; strips * blocks * sb];
    let mut meta = vec![0u8; strips * groups * META];
    let fill = |(s, (dst, mt)): (usize, (&mut [u8], &mut [u8]))| {
        let cols = STRIP.min(n - s * STRIP);
        for (gi, rec) in mt.chunks_exact_mut(META).enumerate() {
            for c in 0..cols {
                let (z, sc) = src.zero_scale(gi, s * STRIP + c);
                rec[2 * c..2 * c + 2].copy_from_slice(&f16::from_f32(sc).to_le_bytes());
                rec[Z_OFFSET + c] = (z0 - z as i32) as i8 as u8;
            }
        }
        for (b, rec) in dst.chunks_exact_mut(sb).enumerate() {
            for c in 0..cols {
                let row = s * STRIP + c;
                let q = |j: usize| src.q(b * STEP + j, row);
                if bits == 4 {
                    for tt in 0..4 {
                        for e in 0..4 {
                            rec[64 * tt + 4 * c + e] = q(4 * tt + e) | (q(16 + 4 * tt + e) << 4);
                        }
                    }
                } else {
                    for kk in 0..STEP {
                        rec[STRIP * kk + c] = q(kk) ^ 0x80;
                    }
                }
            }
        }
    };
    let (per_strip, per_meta) = ((blocks * sb).max(1), (groups * META).max(1));
    dev.pool().install(|| {
        data.par_chunks_mut(per_strip)
            .zip(meta.par_chunks_mut(per_meta))
            .enumerate()
            .for_each(fill)
    });
    Ok(PackedWeight {
        spec: w.spec(),
        n,
        k,
        layout: STRIPS_LAYOUT,
        parts: vec![buffer(dev, &data)?, buffer(dev, &meta)?],
        scalars: vec![bits as f32, g as f32],
    })
}

/// `out = x · dequant(w)ᵀ + bias` for a weight packed by [`pack`], in
/// `precision`. Strip-packed weights run the GGUF strip kernels in either
/// precision; the row layout (act-order, ragged groups) runs the f32
/// kernels, on the int8-quantised activations `q · d` with
/// [`Precision::Int8Activations`].
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    dev: &CpuBackend,
    w: &PackedWeight,
    x: &Activations<'_>,
    bias: Option<(DType, &[u8])>,
    precision: Precision,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    if w.layout == STRIPS_LAYOUT {
        return run_strips(dev, w, x, bias, precision, out_dtype, out);
    }
    let bias = bias.map(|(dt, b)| simd::vec_f32(dev.isa(), dt, b, w.n));
    let epi = Epilogue {
        post: None,
        bias: bias.as_deref(),
    };
    run_rows(dev, w, x, precision, epi, out_dtype, out)
}

/// A strip-packed weight (see the module docs) on the GGUF strip kernels.
fn run_strips(
    dev: &CpuBackend,
    w: &PackedWeight,
    x: &Activations<'_>,
    bias: Option<(DType, &[u8])>,
    precision: Precision,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    let bad = |why: &str| {
        HalError::invalid(
            "cpu",
            "quant_gemm",
            format!(
                "packed {:?} weight in layout {STRIPS_LAYOUT}: {why}",
                w.spec
            ),
        )
    };
    let (bits, g) = match w.scalars[..] {
        [b, g] if (b == 4.0 || b == 8.0) && g >= 32.0 => (b as usize, g as usize),
        _ => return Err(bad("bad scalars")),
    };
    let t = if bits == 4 { G4 } else { G8 };
    if !w.k.is_multiple_of(STEP) || !g.is_multiple_of(STEP) {
        return Err(bad("K and the group size must be multiples of 32"));
    }
    let acc = dev.access();
    let (blocks, strips, groups) = (w.k / STEP, w.n.div_ceil(STRIP), w.k.div_ceil(g));
    let data = part(&acc, w, 0, strips * blocks * gguf::strip_bytes(t))?;
    let meta = part(&acc, w, 1, strips * groups * META)?;
    let st = Strips::grouped(t, data, meta, w.n, w.k, g).ok_or_else(|| bad("short parts"))?;
    gguf::run_strips(dev, t, &st, w.n, x, bias, precision, out_dtype, out)
}

/// A row-layout weight on the f32 kernels.
fn run_rows(
    dev: &CpuBackend,
    w: &PackedWeight,
    x: &Activations<'_>,
    precision: Precision,
    epi: Epilogue<'_>,
    out_dtype: DType,
    out: &mut [u8],
) -> Result<()> {
    let bad = || {
        HalError::invalid(
            "cpu",
            "quant_gemm",
            format!(
                "packed {:?} weight is not in this backend's {LAYOUT} layout",
                w.spec
            ),
        )
    };
    if w.layout != LAYOUT || w.scalars.len() != 3 {
        return Err(bad());
    }
    let (bits, groups, steps) = (
        w.scalars[0] as usize,
        w.scalars[1] as usize,
        w.scalars[2] as usize,
    );
    if (bits != 4 && bits != 8) || steps * STEP < w.k {
        return Err(bad());
    }
    let acc = dev.access();
    let bb = if bits == 4 { 16 } else { 32 };
    let q = part(&acc, w, 0, w.n * steps * bb)?;
    let sc = part_as::<f32>(&acc, w, 1, w.n * groups * 2)?;
    let block_group = part_as::<u32>(&acc, w, 2, steps)?;
    if block_group.iter().any(|&g| g as usize >= groups) {
        return Err(bad());
    }
    let isa = dev.isa();
    let (mut xf, stride) = simd::rows_f32(isa, x.dtype, x.bytes, x.m, x.k);
    if precision == Precision::Int8Activations && stride > 0 {
        // Quantise each row in blocks of 32 of the original order (the zero
        // padding past K changes no block's scale) and use `q · d`.
        let blocks = stride / STEP;
        let mut q = vec![0i8; stride];
        let (mut d, mut qs, mut sx) = (vec![0f32; blocks], vec![0i32; blocks], vec![0f32; blocks]);
        for row in xf.to_mut().chunks_exact_mut(stride) {
            gguf::activations::quantize(isa, row, &mut q, &mut d, &mut qs, &mut sx);
            for ((xb, qb), &db) in row.chunks_exact_mut(STEP).zip(q.chunks_exact(STEP)).zip(&d) {
                for (v, &qv) in xb.iter_mut().zip(qb) {
                    *v = qv as f32 * db;
                }
            }
        }
    }
    // Act-order / ragged groups: gather x into the packed order.
    let gathered;
    let (xs, xstride): (&[f32], usize) = if w.parts.len() > 3 {
        let perm = part_as::<u32>(&acc, w, 3, steps * STEP)?;
        if perm.iter().any(|&p| p != PAD && p as usize >= w.k) {
            return Err(bad());
        }
        let kp = steps * STEP;
        let mut g = vec![0f32; x.m * kp];
        for (dst, src) in g.chunks_exact_mut(kp).zip(xf.chunks_exact(stride)) {
            for (d, &p) in dst.iter_mut().zip(perm) {
                *d = if p == PAD { 0.0 } else { src[p as usize] };
            }
        }
        gathered = g;
        (&gathered, kp)
    } else {
        if steps * STEP != stride {
            return Err(bad());
        }
        (&xf, stride)
    };
    let wts = Grouped {
        q,
        sc,
        block_group,
        n: w.n,
        steps,
        groups,
        bb,
    };
    simd::with_out_f32(isa, out_dtype, out, x.m * w.n, |o| {
        if bits == 4 {
            simd::run_isa(isa, dev.pool(), Bits::<4>(wts), xs, xstride, epi, o)
        } else {
            simd::run_isa(isa, dev.pool(), Bits::<8>(wts), xs, xstride, epi, o)
        }
    });
    Ok(())
}

/// A packed grouped weight (see the module docs).
struct Grouped<'a> {
    q: &'a [u8],
    sc: &'a [f32],
    block_group: &'a [u32],
    n: usize,
    steps: usize,
    groups: usize,
    /// Bytes per block: 16 (4-bit) or 32 (8-bit).
    bb: usize,
}

impl Grouped<'_> {
    /// Block `s` of row `n` and its `(scale, offset)` pair.
    #[inline(always)]
    fn at(&self, n: usize, s: usize) -> (*const u8, *const f32) {
        let g = self.block_group[s] as usize;
        // SAFETY: in bounds for n < N, s < steps (lengths checked in `run`).
        unsafe {
            (
                self.q.as_ptr().add((n * self.steps + s) * self.bb),
                self.sc.as_ptr().add((n * self.groups + g) * 2),
            )
        }
    }
}

/// [`Grouped`] with `B` bits per weight.
struct Bits<'a, const B: u8>(Grouped<'a>);

impl<const B: u8> Weights for Bits<'_, B> {
    fn rows(&self) -> usize {
        self.0.n
    }
    fn steps(&self) -> usize {
        self.0.steps
    }
}

impl<const B: u8> simd::scalar::BlockScalar for Bits<'_, B> {
    fn block(&self, n: usize, s: usize, out: &mut [f32; STEP]) {
        let w = &self.0;
        let g = w.block_group[s] as usize;
        let (sv, cv) = (
            w.sc[(n * w.groups + g) * 2],
            w.sc[(n * w.groups + g) * 2 + 1],
        );
        let off = (n * w.steps + s) * w.bb;
        let qb = &w.q[off..off + w.bb];
        if B == 4 {
            for (j, &b) in qb.iter().enumerate() {
                out[j] = (b & 0xF) as f32 * sv + cv;
                out[j + 16] = (b >> 4) as f32 * sv + cv;
            }
        } else {
            for (o, &b) in out.iter_mut().zip(qb) {
                *o = b as f32 * sv + cv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Bits;
    use crate::simd::avx2::{self, Block256};
    use crate::simd::avx512::{self, Block512};

    impl<const B: u8> Block512 for Bits<'_, B> {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m512; 2] {
            let (p, sc) = self.0.at(n, s);
            // SAFETY: block and scale pair are in bounds (caller's contract).
            unsafe {
                let (sv, cv) = (_mm512_set1_ps(*sc), _mm512_set1_ps(*sc.add(1)));
                let q = if B == 4 {
                    avx512::nibbles(p)
                } else {
                    avx512::bytes_u8(p)
                };
                [_mm512_fmadd_ps(q[0], sv, cv), _mm512_fmadd_ps(q[1], sv, cv)]
            }
        }
    }

    impl<const B: u8> Block256 for Bits<'_, B> {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m256; 4] {
            let (p, sc) = self.0.at(n, s);
            // SAFETY: block and scale pair are in bounds (caller's contract).
            unsafe {
                let (sv, cv) = (_mm256_set1_ps(*sc), _mm256_set1_ps(*sc.add(1)));
                let q = if B == 4 {
                    avx2::nibbles(p)
                } else {
                    avx2::bytes_u8(p)
                };
                [
                    _mm256_fmadd_ps(q[0], sv, cv),
                    _mm256_fmadd_ps(q[1], sv, cv),
                    _mm256_fmadd_ps(q[2], sv, cv),
                    _mm256_fmadd_ps(q[3], sv, cv),
                ]
            }
        }
    }
}
