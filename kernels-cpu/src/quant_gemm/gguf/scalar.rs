//! Portable GGUF kernels: the arithmetic of the module documentation, one
//! output at a time, with `f32::mul_add` for every fused step (so the SIMD
//! paths, which use FMA instructions, give the same bits).

use std::ops::Range;

use half::f16;

use super::activations::{round_q, scales, ExactRows, Int8Rows};
use super::{
    has_min, is8, k_order, qs_offset, Sink, Strips, BLOCK, META, M_OFFSET, Q4_0, Q4_1, Q8_0, STRIP,
    Z_OFFSET,
};

fn f16_at(r: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([r[off], r[off + 1]]).to_f32()
}

/// The stored integers of column `c` in a record, in element order:
/// 0..15 for the 4-bit types, −128..127 for Q8_0 and G8.
#[inline(always)]
fn ints<const T: u8>(rec: &[u8], c: usize) -> [i32; BLOCK] {
    let qs = &rec[qs_offset(T)..];
    let mut q = [0i32; BLOCK];
    if is8(T) {
        for (k, qk) in q.iter_mut().enumerate() {
            *qk = qs[STRIP * k + c] as i8 as i32;
        }
    } else {
        for t in 0..4 {
            for e in 0..4 {
                let b = qs[64 * t + 4 * c + e];
                q[4 * t + e] = (b & 0xF) as i32;
                q[16 + 4 * t + e] = (b >> 4) as i32;
            }
        }
    }
    q
}

/// `(d, m)` of column `c` of strip `s`, block `b`: `m` is the minimum
/// (Q4_1), `−8d` (Q4_0), `(Z0 − z)·d` (grouped, see [`super::zero_bias`])
/// or 0.
#[inline(always)]
fn scale_min<const T: u8>(w: &Strips<'_>, rec: &[u8], s: usize, b: usize, c: usize) -> (f32, f32) {
    if super::grouped(T) {
        let g = s * w.groups + b / w.per_group;
        let meta = &w.meta[g * META..(g + 1) * META];
        let d = f16_at(meta, 2 * c);
        return (d, (meta[Z_OFFSET + c] as i8 as f32) * d);
    }
    let d = f16_at(rec, 2 * c);
    let m = match T {
        Q4_1 => f16_at(rec, M_OFFSET + 2 * c),
        Q4_0 => d * -8.0,
        _ => 0.0,
    };
    (d, m)
}

/// Exact precision: rows × strips into `sink`.
pub(super) fn exact<const T: u8>(
    w: &Strips<'_>,
    x: &ExactRows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    let order = if is8(T) {
        std::array::from_fn(|k| k)
    } else {
        k_order()
    };
    let blocks = w.blocks;
    for s in strips {
        for i in rows.clone() {
            let xr = &x.x[i * x.k..(i + 1) * x.k];
            let mut acc = [0f32; STRIP];
            for b in 0..blocks {
                let rec = w.record(T, s, b);
                let xb = &xr[b * BLOCK..(b + 1) * BLOCK];
                for (c, ac) in acc.iter_mut().enumerate() {
                    let q = ints::<T>(rec, c);
                    let mut a = 0f32;
                    for &k in &order {
                        a = (q[k] as f32).mul_add(xb[k], a);
                    }
                    let (d, m) = scale_min::<T>(w, rec, s, b, c);
                    *ac = d.mul_add(a, *ac);
                    if T != Q8_0 {
                        *ac = m.mul_add(x.sums[i * blocks + b], *ac);
                    }
                }
            }
            sink.put(i, s * STRIP, &acc);
        }
    }
}

/// Int8 activations: rows × strips into `sink`.
pub(super) fn int8<const T: u8>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    let blocks = w.blocks;
    for s in strips {
        for i in rows.clone() {
            let xr = &x.q[i * x.k..(i + 1) * x.k];
            let mut acc = [0f32; STRIP];
            for b in 0..blocks {
                let rec = w.record(T, s, b);
                let xb = &xr[b * BLOCK..(b + 1) * BLOCK];
                let (dx, sx) = (x.d[i * blocks + b], x.sx[i * blocks + b]);
                for (c, ac) in acc.iter_mut().enumerate() {
                    let q = ints::<T>(rec, c);
                    let off = if T == Q4_0 { 8 } else { 0 };
                    let sum: i32 = q.iter().zip(xb).map(|(&w, &v)| (w - off) * v as i32).sum();
                    let (d, m) = scale_min::<T>(w, rec, s, b, c);
                    *ac = (sum as f32).mul_add(d * dx, *ac);
                    if has_min(T) {
                        *ac = m.mul_add(sx, *ac);
                    }
                }
            }
            sink.put(i, s * STRIP, &acc);
        }
    }
}

/// Quantise rows (see [`super::activations`]): `x`, `q` `[r, K]`; `d`,
/// `qsum`, `sx` `[r, K/32]`.
pub(super) fn quantize(x: &[f32], q: &mut [i8], d: &mut [f32], qsum: &mut [i32], sx: &mut [f32]) {
    for ((((xb, qb), db), sb), sxb) in x
        .chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut())
        .zip(qsum.iter_mut())
        .zip(sx.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (id, dx) = scales(amax);
        let mut sum = 0i32;
        for (qv, &v) in qb.iter_mut().zip(xb) {
            *qv = round_q(v * id);
            sum += *qv as i32;
        }
        *db = dx;
        *sb = sum;
        *sxb = dx * sum as f32;
    }
}
