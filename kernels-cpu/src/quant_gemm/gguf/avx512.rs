//! AVX-512 GGUF kernels: one 512-bit vector holds one output of each of a
//! strip's 16 columns; register tiles of `MR` rows × `NS` strips (8 × 2
//! for batches, 1 × 4 for a matvec).
//!
//! * Exact: the stored integers become f32 with one `vpermps` on a table
//!   of 0..15 (4-bit; after a shift by 4 per nibble) or a sign extension
//!   (Q8_0), each reused by the tile's `MR` rows, whose activations come in
//!   as embedded broadcasts.
//! * Int8: `vpdpbusd` of the weights (unsigned: nibbles as they are, Q8_0
//!   shifted by +128) with four broadcast activation bytes; the offsets are
//!   taken back by starting the block's accumulator at `−8·Σq` or
//!   `−128·Σq`, so the integer sum is exact.
//!
//! Every `unsafe fn` here needs AVX-512 F/BW/VL, AVX2, FMA and F16C (and
//! VNNI + VBMI for the int8 ones); the safe entry points check the CPU and
//! every index their pointers reach.

use std::arch::x86_64::*;
use std::ops::Range;

use super::activations::{scales, ExactRows, Int8Rows};
use super::{
    has_min, is8, k_order, qs_offset, strip_bytes, Sink, Strips, BLOCK, G4, G8, M_OFFSET, Q4_0,
    Q4_1, Q8_0, STRIP, Z_OFFSET,
};

/// Whether this CPU runs the exact kernels and the quantiser.
pub(super) fn detected() -> bool {
    crate::simd::avx512::detected()
}

/// Whether this CPU runs the int8 kernels.
pub(super) fn detected_vnni() -> bool {
    detected() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vbmi")
}

/// Check that `rows` × `strips` is inside the weight and the activations
/// (`len` elements of `[M, k]`, `per_block` block values per row).
fn check(
    w: &Strips<'_>,
    t: u8,
    len: usize,
    k: usize,
    per_block: &[&[impl Copy]],
    rows: &Range<usize>,
    strips: &Range<usize>,
) {
    assert!(k == w.blocks * BLOCK, "activation rows are not K long");
    assert!(rows.end * k <= len, "activation rows out of range");
    assert!(
        per_block.iter().all(|v| v.len() >= rows.end * w.blocks),
        "block values out of range"
    );
    assert!(strips.end <= w.strips, "strips out of range");
    assert!(w.data.len() >= w.strips * w.blocks * strip_bytes(t));
}

/// Exact precision: rows × strips into `sink`.
pub(super) fn exact<const T: u8>(
    w: &Strips<'_>,
    x: &ExactRows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    let sums: &[&[f32]] = if T == Q8_0 { &[] } else { &[x.sums] };
    check(w, T, x.x.len(), x.k, sums, &rows, &strips);
    assert!(detected(), "AVX-512 kernels on a CPU without AVX-512");
    // SAFETY: the CPU was checked, and so were the ranges the tiles read.
    unsafe { exact_rect::<T>(w, x, rows, strips, sink) }
}

/// Int8 activations: rows × strips into `sink`.
pub(super) fn int8<const T: u8>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    check(w, T, x.q.len(), x.k, &[x.d, x.sx], &rows, &strips);
    assert!(x.qsum.len() >= rows.end * w.blocks);
    assert!(
        detected_vnni(),
        "AVX-512 VNNI kernels on a CPU without them"
    );
    // SAFETY: the CPU was checked, and so were the ranges the tiles read.
    unsafe { int8_rect::<T>(w, x, rows, strips, sink) }
}

/// Walk a rectangle with the largest tiles that fit: 8 rows × 2 strips,
/// 4 × 2, 2 × 4, 1 × 4 (one strip at a time where fewer are left). Strips
/// outer, in groups of 4, so a group's weights stay in L1 while the row
/// tiles pass over them.
macro_rules! walk {
    ($tile:ident, $w:expr, $x:expr, $rows:expr, $strips:expr, $sink:expr) => {{
        let mut s = $strips.start;
        while s < $strips.end {
            let group = ($strips.end - s).min(4);
            let (pairs, wide) = (group / 2, group == 4);
            let mut r = $rows.start;
            while r < $rows.end {
                let left = $rows.end - r;
                // SAFETY (for every call): rows r..r+step and strips
                // s..s+group lie inside the ranges the caller checked.
                let step = unsafe {
                    if left >= 8 {
                        (0..pairs).for_each(|p| $tile::<T, 8, 2>($w, $x, r, s + 2 * p, $sink));
                        (2 * pairs..group).for_each(|j| $tile::<T, 8, 1>($w, $x, r, s + j, $sink));
                        8
                    } else if left >= 4 {
                        (0..pairs).for_each(|p| $tile::<T, 4, 2>($w, $x, r, s + 2 * p, $sink));
                        (2 * pairs..group).for_each(|j| $tile::<T, 4, 1>($w, $x, r, s + j, $sink));
                        4
                    } else if left >= 2 && wide {
                        $tile::<T, 2, 4>($w, $x, r, s, $sink);
                        2
                    } else if left >= 2 {
                        (0..group).for_each(|j| $tile::<T, 2, 1>($w, $x, r, s + j, $sink));
                        2
                    } else if wide {
                        $tile::<T, 1, 4>($w, $x, r, s, $sink);
                        1
                    } else {
                        (0..group).for_each(|j| $tile::<T, 1, 1>($w, $x, r, s + j, $sink));
                        1
                    }
                };
                r += step;
            }
            s += group;
        }
    }};
}

/// # Safety
/// AVX-512 (see the module); `rows` × `strips` checked as in [`exact`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn exact_rect<const T: u8>(
    w: &Strips<'_>,
    x: &ExactRows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    walk!(exact_tile, w, x, rows, strips, sink)
}

/// # Safety
/// AVX-512 with VNNI and VBMI; `rows` × `strips` checked as in [`int8`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn int8_rect<const T: u8>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    walk!(int8_tile, w, x, rows, strips, sink)
}

/// The 16 f16 at `p` as f32.
///
/// # Safety
/// AVX-512; `p` valid for 32 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn f16x16(p: *const u8) -> __m512 {
    // SAFETY: `p` is valid for 32 bytes.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p as *const __m256i) })
}

/// `(d, m)` of strip `s`, block `b` as 16 column lanes (see
/// [`super::scalar`] for the definition of `m` per type).
///
/// # Safety
/// AVX-512; strip `s` and block `b` are inside `w`, built for type `T`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scale_min<const T: u8>(w: &Strips<'_>, s: usize, b: usize) -> (__m512, __m512) {
    // SAFETY: the caller's contract; the record or group record holds the
    // 32 bytes of scales, Q4_1's minima and the grouped zero offsets.
    unsafe {
        let p = w.scales_ptr(T, s, b);
        let dv = f16x16(p);
        let mv = match T {
            Q4_1 => f16x16(p.add(M_OFFSET)),
            Q4_0 => _mm512_mul_ps(dv, _mm512_set1_ps(-8.0)),
            G4 | G8 => {
                let z = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(Z_OFFSET) as *const __m128i));
                _mm512_mul_ps(_mm512_cvtepi32_ps(z), dv)
            }
            _ => _mm512_setzero_ps(),
        };
        (dv, mv)
    }
}

/// Store a tile's accumulators into the sink.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn emit<const MR: usize, const NS: usize>(
    acc: &[[__m512; NS]; MR],
    r0: usize,
    s0: usize,
    sink: &dyn Sink,
) {
    for (i, ai) in acc.iter().enumerate() {
        for (j, aij) in ai.iter().enumerate() {
            let mut v = [0f32; STRIP];
            // SAFETY: `v` holds 16 f32.
            unsafe { _mm512_storeu_ps(v.as_mut_ptr(), *aij) };
            sink.put(r0 + i, (s0 + j) * STRIP, &v);
        }
    }
}

/// `MR` rows from `r0` × `NS` strips from `s0`, exact precision.
///
/// # Safety
/// AVX-512 (see the module); rows `r0..r0+MR` and strips `s0..s0+NS` are
/// inside what [`check`] accepted.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // register tiles read best as index loops
unsafe fn exact_tile<const T: u8, const MR: usize, const NS: usize>(
    w: &Strips<'_>,
    x: &ExactRows<'_>,
    r0: usize,
    s0: usize,
    sink: &dyn Sink,
) {
    const ORDER: [usize; BLOCK] = k_order();
    let (blocks, sb, qs) = (w.blocks, strip_bytes(T), qs_offset(T));
    let iota = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let mut acc = [[_mm512_setzero_ps(); NS]; MR];
    for b in 0..blocks {
        // SAFETY: strips s0..s0+NS and block b are inside `w.data`; rows
        // r0..r0+MR are inside `x.x` (and `x.sums`), all as checked.
        unsafe {
            let rec: [*const u8; NS] =
                std::array::from_fn(|j| w.data.as_ptr().add(((s0 + j) * blocks + b) * sb));
            let xb: [*const f32; MR] =
                std::array::from_fn(|i| x.x.as_ptr().add((r0 + i) * x.k + b * BLOCK));
            let mut aq = [[_mm512_setzero_ps(); NS]; MR];
            if is8(T) {
                for k in 0..BLOCK {
                    let wq: [__m512; NS] = std::array::from_fn(|j| {
                        let p = rec[j].add(qs + STRIP * k) as *const __m128i;
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p)))
                    });
                    for i in 0..MR {
                        let xv = _mm512_set1_ps(*xb[i].add(k));
                        for j in 0..NS {
                            aq[i][j] = _mm512_fmadd_ps(wq[j], xv, aq[i][j]);
                        }
                    }
                }
            } else {
                for t in 0..4 {
                    let mut v: [__m512i; NS] = std::array::from_fn(|j| {
                        _mm512_loadu_si512(rec[j].add(qs + 64 * t) as *const __m512i)
                    });
                    for p in 0..8 {
                        let k = ORDER[8 * t + p];
                        let wq: [__m512; NS] =
                            std::array::from_fn(|j| _mm512_permutexvar_ps(v[j], iota));
                        for i in 0..MR {
                            let xv = _mm512_set1_ps(*xb[i].add(k));
                            for j in 0..NS {
                                aq[i][j] = _mm512_fmadd_ps(wq[j], xv, aq[i][j]);
                            }
                        }
                        for vj in v.iter_mut() {
                            *vj = _mm512_srli_epi32::<4>(*vj);
                        }
                    }
                }
            }
            for j in 0..NS {
                let (dv, mv) = scale_min::<T>(w, s0 + j, b);
                for i in 0..MR {
                    acc[i][j] = _mm512_fmadd_ps(dv, aq[i][j], acc[i][j]);
                    if T != Q8_0 {
                        let s = _mm512_set1_ps(*x.sums.as_ptr().add((r0 + i) * blocks + b));
                        acc[i][j] = _mm512_fmadd_ps(mv, s, acc[i][j]);
                    }
                }
            }
        }
    }
    emit(&acc, r0, s0, sink);
}

/// `vpermb` indices turning 4 k-major rows of 16 bytes into 16 dwords of 4
/// consecutive k: output byte `4c + e` is input byte `16e + c`.
const Q8_TO_DWORDS: [u8; 64] = {
    let mut v = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        v[i] = (16 * (i % 4) + i / 4) as u8;
        i += 1;
    }
    v
};

/// `MR` rows from `r0` × `NS` strips from `s0`, int8 activations.
///
/// # Safety
/// AVX-512 with VNNI and VBMI; rows `r0..r0+MR` and strips `s0..s0+NS` are
/// inside what [`check`] accepted.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // register tiles read best as index loops
unsafe fn int8_tile<const T: u8, const MR: usize, const NS: usize>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    r0: usize,
    s0: usize,
    sink: &dyn Sink,
) {
    let (blocks, sb, qs) = (w.blocks, strip_bytes(T), qs_offset(T));
    let low = _mm512_set1_epi8(0x0F);
    let flip = _mm512_set1_epi8(i8::MIN);
    // SAFETY: the table holds 64 bytes.
    let perm = unsafe { _mm512_loadu_si512(Q8_TO_DWORDS.as_ptr() as *const __m512i) };
    let offset = match T {
        Q4_0 => -8,
        Q8_0 | G8 => -128,
        _ => 0,
    };
    let mut acc = [[_mm512_setzero_ps(); NS]; MR];
    for b in 0..blocks {
        // SAFETY: strips s0..s0+NS and block b are inside `w.data`; rows
        // r0..r0+MR are inside `x.q`, `x.d`, `x.qsum` and `x.sx`, all as
        // checked.
        unsafe {
            let rec: [*const u8; NS] =
                std::array::from_fn(|j| w.data.as_ptr().add(((s0 + j) * blocks + b) * sb));
            let xb: [*const u8; MR] =
                std::array::from_fn(|i| x.q.as_ptr().add((r0 + i) * x.k + b * BLOCK) as *const u8);
            let bi: [usize; MR] = std::array::from_fn(|i| (r0 + i) * blocks + b);
            let mut si: [[__m512i; NS]; MR] = std::array::from_fn(|i| {
                [_mm512_set1_epi32(offset * *x.qsum.as_ptr().add(bi[i])); NS]
            });
            let x4 = |i: usize, at: usize| {
                _mm512_set1_epi32(std::ptr::read_unaligned(xb[i].add(at) as *const i32))
            };
            if is8(T) {
                for g in 0..8 {
                    let u: [__m512i; NS] = std::array::from_fn(|j| {
                        let v = _mm512_loadu_si512(rec[j].add(qs + 64 * g) as *const __m512i);
                        _mm512_xor_si512(_mm512_permutexvar_epi8(perm, v), flip)
                    });
                    for i in 0..MR {
                        let xv = x4(i, 4 * g);
                        for j in 0..NS {
                            si[i][j] = _mm512_dpbusd_epi32(si[i][j], u[j], xv);
                        }
                    }
                }
            } else {
                for t in 0..4 {
                    let lo: [__m512i; NS] = std::array::from_fn(|j| {
                        _mm512_loadu_si512(rec[j].add(qs + 64 * t) as *const __m512i)
                    });
                    let hi: [__m512i; NS] = std::array::from_fn(|j| {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(lo[j]), low)
                    });
                    let lo: [__m512i; NS] = std::array::from_fn(|j| _mm512_and_si512(lo[j], low));
                    for i in 0..MR {
                        let (xl, xh) = (x4(i, 4 * t), x4(i, 16 + 4 * t));
                        for j in 0..NS {
                            si[i][j] = _mm512_dpbusd_epi32(si[i][j], lo[j], xl);
                            si[i][j] = _mm512_dpbusd_epi32(si[i][j], hi[j], xh);
                        }
                    }
                }
            }
            for j in 0..NS {
                let (dv, mv) = scale_min::<T>(w, s0 + j, b);
                for i in 0..MR {
                    let dd = _mm512_mul_ps(dv, _mm512_set1_ps(*x.d.as_ptr().add(bi[i])));
                    acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si[i][j]), dd, acc[i][j]);
                    if has_min(T) {
                        let s = _mm512_set1_ps(*x.sx.as_ptr().add(bi[i]));
                        acc[i][j] = _mm512_fmadd_ps(mv, s, acc[i][j]);
                    }
                }
            }
        }
    }
    emit(&acc, r0, s0, sink);
}

/// Quantise rows (see [`super::activations`]): `x`, `q` `[r, K]`; `d`,
/// `qsum`, `sx` `[r, K/32]`.
pub(super) fn quantize(x: &[f32], q: &mut [i8], d: &mut [f32], qsum: &mut [i32], sx: &mut [f32]) {
    assert!(detected(), "AVX-512 quantiser on a CPU without AVX-512");
    for ((((xb, qb), db), sb), sxb) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
        .zip(qsum.iter_mut())
        .zip(sx.iter_mut())
    {
        let (Ok(xb), Ok(qb)) = (
            <&[f32; BLOCK]>::try_from(xb),
            <&mut [i8; BLOCK]>::try_from(qb),
        ) else {
            continue;
        };
        // SAFETY: the CPU was checked; both blocks hold 32 elements.
        let (dx, sum) = unsafe { quantize_block(xb, qb) };
        *db = dx;
        *sb = sum;
        *sxb = dx * sum as f32;
    }
}

/// `round(v)` half away from zero (exact: `v − trunc(v)` is exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn round_away(v: __m512) -> __m512 {
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let half =
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5));
    let one = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN)),
        _mm512_castps_si512(_mm512_set1_ps(1.0)),
    ));
    _mm512_mask_add_ps(t, half, t, one)
}

/// One block: `q`, and `(d_x, Σq)`.
///
/// # Safety
/// AVX-512 (see the module).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    // SAFETY: `x` holds 32 f32.
    let (a, b) = unsafe {
        (
            _mm512_loadu_ps(x.as_ptr()),
            _mm512_loadu_ps(x.as_ptr().add(16)),
        )
    };
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    let (id, dx) = scales(amax);
    let lim = |v: __m512| {
        let r = round_away(_mm512_mul_ps(v, _mm512_set1_ps(id)));
        let r = _mm512_min_ps(
            _mm512_max_ps(r, _mm512_set1_ps(-127.0)),
            _mm512_set1_ps(127.0),
        );
        _mm512_cvtps_epi32(r)
    };
    let (qa, qb) = (lim(a), lim(b));
    // SAFETY: `q` holds 32 bytes.
    unsafe {
        _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128(
            q.as_mut_ptr().add(16) as *mut __m128i,
            _mm512_cvtsepi32_epi8(qb),
        );
    }
    (dx, _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)))
}
