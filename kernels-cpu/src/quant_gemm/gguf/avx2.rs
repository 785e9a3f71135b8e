//! AVX2 GGUF kernels: one 256-bit vector holds one output of each of 8
//! columns (half a strip); register tiles of `MR` rows × `NH` half-strips.
//!
//! * Exact: the stored integers become f32 by mask-and-convert (4-bit,
//!   shifting by 4 per nibble) or sign extension (Q8_0), each reused by the
//!   tile's rows.
//! * Int8: `vpdpbusd` (AVX-VNNI) where the CPU has it, else `vpmaddubsw` +
//!   `vpmaddwd` (no saturation can occur: 4-bit weights are at most 15, and
//!   Q8_0 uses the sign trick, `|w| · (x · sign w)`, at most 2 · 128 · 127 per
//!   pair). Either way the integer block sum is exact, so both give the same
//!   bits as every other path.
//!
//! Every `unsafe fn` here needs AVX2, FMA and F16C (and AVX-VNNI for the
//! `VNNI = true` kernels); the safe entry points check the CPU and every
//! index their pointers reach.

use std::arch::x86_64::*;
use std::ops::Range;

use super::activations::{scales, ExactRows, Int8Rows};
use super::{
    has_min, is8, k_order, qs_offset, strip_bytes, Sink, Strips, BLOCK, G4, G8, M_OFFSET, Q4_0,
    Q4_1, Q8_0, STRIP, Z_OFFSET,
};

/// Columns per vector.
const HALF: usize = 8;

/// Whether this CPU runs the kernels and the quantiser.
pub(super) fn detected() -> bool {
    crate::simd::avx2::detected()
}

/// Whether this CPU has AVX-VNNI (the faster int8 kernels).
pub(super) fn detected_vnni() -> bool {
    detected() && is_x86_feature_detected!("avxvnni")
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
    assert!(detected(), "AVX2 kernels on a CPU without AVX2");
    // SAFETY: the CPU was checked, and so were the ranges the tiles read.
    unsafe { exact_rect::<T>(w, x, rows, strips, sink) }
}

/// Int8 activations: rows × strips into `sink`; `VNNI` picks `vpdpbusd`.
pub(super) fn int8<const T: u8, const VNNI: bool>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    check(w, T, x.q.len(), x.k, &[x.d, x.sx], &rows, &strips);
    assert!(x.qsum.len() >= rows.end * w.blocks);
    assert!(detected(), "AVX2 kernels on a CPU without AVX2");
    if VNNI {
        assert!(
            detected_vnni(),
            "AVX-VNNI kernels on a CPU without AVX-VNNI"
        );
        // SAFETY: the CPU was checked, and so were the ranges the tiles read.
        unsafe { int8_rect_vnni::<T>(w, x, rows, strips, sink) }
    } else {
        // SAFETY: as above.
        unsafe { int8_rect::<T>(w, x, rows, strips, sink) }
    }
}

/// Walk a rectangle in half-strips: 4 rows × 1 half, 2 × 2, 1 × 2 (a strip
/// is two halves, so groups of two always fill).
macro_rules! walk {
    ($tile:ident; $w:expr, $x:expr, $rows:expr, $strips:expr, $sink:expr) => {{
        for s in $strips {
            let h = 2 * s;
            let mut r = $rows.start;
            while r < $rows.end {
                let left = $rows.end - r;
                // SAFETY (for every call): rows r..r+step and halves h, h+1
                // lie inside the ranges the caller checked.
                let step = unsafe {
                    if left >= 4 {
                        $tile::<T, 4, 2>($w, $x, r, h, $sink);
                        4
                    } else if left >= 2 {
                        $tile::<T, 2, 2>($w, $x, r, h, $sink);
                        2
                    } else {
                        $tile::<T, 1, 2>($w, $x, r, h, $sink);
                        1
                    }
                };
                r += step;
            }
        }
    }};
}

/// # Safety
/// AVX2, FMA, F16C; `rows` × `strips` checked as in [`exact`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_rect<const T: u8>(
    w: &Strips<'_>,
    x: &ExactRows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    walk!(exact_tile; w, x, rows, strips, sink)
}

/// # Safety
/// AVX2, FMA, F16C; `rows` × `strips` checked as in [`int8`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn int8_rect<const T: u8>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    walk!(int8_tile; w, x, rows, strips, sink)
}

/// # Safety
/// AVX2, FMA, F16C, AVX-VNNI; `rows` × `strips` checked as in [`int8`].
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn int8_rect_vnni<const T: u8>(
    w: &Strips<'_>,
    x: &Int8Rows<'_>,
    rows: Range<usize>,
    strips: Range<usize>,
    sink: &dyn Sink,
) {
    walk!(int8_tile_vnni; w, x, rows, strips, sink)
}

/// The 8 f16 at `p` as f32.
///
/// # Safety
/// AVX2, F16C; `p` valid for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16x8(p: *const u8) -> __m256 {
    // SAFETY: `p` is valid for 16 bytes.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
}

/// Store a tile's accumulators into the sink (half `h` is columns `8h..`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn emit<const MR: usize, const NH: usize>(
    acc: &[[__m256; NH]; MR],
    r0: usize,
    h0: usize,
    sink: &dyn Sink,
) {
    for (i, ai) in acc.iter().enumerate() {
        for (j, aij) in ai.iter().enumerate() {
            let mut v = [0f32; HALF];
            // SAFETY: `v` holds 8 f32.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *aij) };
            sink.put(r0 + i, (h0 + j) * HALF, &v);
        }
    }
}

/// Pointer to the record of half `h` (strip `h / 2`), block `b`, and the
/// half's column offset (0 or 8).
///
/// # Safety
/// Strip `h / 2` and block `b` are inside `w`.
#[inline(always)]
unsafe fn record(w: &Strips<'_>, t: u8, h: usize, b: usize) -> (*const u8, usize) {
    // SAFETY: the record is inside `w.data` (caller's contract).
    let p = unsafe {
        w.data
            .as_ptr()
            .add(((h / 2) * w.blocks + b) * strip_bytes(t))
    };
    (p, HALF * (h % 2))
}

/// `(d, m)` of half `h` (strip `h / 2`), block `b` as 8 column lanes (see
/// [`super::scalar`] for the definition of `m` per type).
///
/// # Safety
/// AVX2, FMA, F16C; strip `h / 2` and block `b` are inside `w`, built for
/// type `T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_min<const T: u8>(w: &Strips<'_>, h: usize, b: usize) -> (__m256, __m256) {
    let c = HALF * (h % 2);
    // SAFETY: the caller's contract; the record or group record holds the
    // 32 bytes of scales, Q4_1's minima and the grouped zero offsets.
    unsafe {
        let p = w.scales_ptr(T, h / 2, b);
        let dv = f16x8(p.add(2 * c));
        let mv = match T {
            Q4_1 => f16x8(p.add(M_OFFSET + 2 * c)),
            Q4_0 => _mm256_mul_ps(dv, _mm256_set1_ps(-8.0)),
            G4 | G8 => {
                let z = _mm_loadl_epi64(p.add(Z_OFFSET + c) as *const __m128i);
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(z)), dv)
            }
            _ => _mm256_setzero_ps(),
        };
        (dv, mv)
    }
}

/// `MR` rows from `r0` × `NH` half-strips from `h0`, exact precision.
///
/// # Safety
/// AVX2, FMA, F16C; rows `r0..r0+MR` and strips of halves `h0..h0+NH` are
/// inside what [`check`] accepted.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // register tiles read best as index loops
unsafe fn exact_tile<const T: u8, const MR: usize, const NH: usize>(
    w: &Strips<'_>,
    x: &ExactRows<'_>,
    r0: usize,
    h0: usize,
    sink: &dyn Sink,
) {
    const ORDER: [usize; BLOCK] = k_order();
    let (blocks, qs) = (w.blocks, qs_offset(T));
    let low = _mm256_set1_epi32(0xF);
    let mut acc = [[_mm256_setzero_ps(); NH]; MR];
    for b in 0..blocks {
        // SAFETY: the halves' strips and block b are inside `w.data`; rows
        // r0..r0+MR are inside `x.x` (and `x.sums`), all as checked.
        unsafe {
            let rc: [(*const u8, usize); NH] = std::array::from_fn(|j| record(w, T, h0 + j, b));
            let xb: [*const f32; MR] =
                std::array::from_fn(|i| x.x.as_ptr().add((r0 + i) * x.k + b * BLOCK));
            let mut aq = [[_mm256_setzero_ps(); NH]; MR];
            if is8(T) {
                for k in 0..BLOCK {
                    let wq: [__m256; NH] = std::array::from_fn(|j| {
                        let (p, c) = rc[j];
                        let v = _mm_loadl_epi64(p.add(qs + STRIP * k + c) as *const __m128i);
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
                    });
                    for i in 0..MR {
                        let xv = _mm256_set1_ps(*xb[i].add(k));
                        for j in 0..NH {
                            aq[i][j] = _mm256_fmadd_ps(wq[j], xv, aq[i][j]);
                        }
                    }
                }
            } else {
                for t in 0..4 {
                    let mut v: [__m256i; NH] = std::array::from_fn(|j| {
                        let (p, c) = rc[j];
                        _mm256_loadu_si256(p.add(qs + 64 * t + 4 * c) as *const __m256i)
                    });
                    for p in 0..8 {
                        let k = ORDER[8 * t + p];
                        let wq: [__m256; NH] = std::array::from_fn(|j| {
                            _mm256_cvtepi32_ps(_mm256_and_si256(v[j], low))
                        });
                        for i in 0..MR {
                            let xv = _mm256_set1_ps(*xb[i].add(k));
                            for j in 0..NH {
                                aq[i][j] = _mm256_fmadd_ps(wq[j], xv, aq[i][j]);
                            }
                        }
                        for vj in v.iter_mut() {
                            *vj = _mm256_srli_epi32::<4>(*vj);
                        }
                    }
                }
            }
            for j in 0..NH {
                let (dv, mv) = scale_min::<T>(w, h0 + j, b);
                for i in 0..MR {
                    acc[i][j] = _mm256_fmadd_ps(dv, aq[i][j], acc[i][j]);
                    if T != Q8_0 {
                        let s = _mm256_set1_ps(*x.sums.as_ptr().add((r0 + i) * blocks + b));
                        acc[i][j] = _mm256_fmadd_ps(mv, s, acc[i][j]);
                    }
                }
            }
        }
    }
    emit(&acc, r0, h0, sink);
}

/// `acc + Σ` of the four `u[4c + e] · s[4c + e]` products of each dword `c`
/// (`u` unsigned, `s` signed bytes), with AVX-VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn dot_vnni(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, u, s)
}

/// As [`dot_vnni`] with AVX2 alone (sums of two products must fit i16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_madd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(u, s);
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

/// The int8 tile, once per instruction set (`$dot` is [`dot_vnni`] or
/// [`dot_madd`]).
macro_rules! int8_tile {
    ($name:ident, $features:literal, $dot:ident) => {
        /// `MR` rows from `r0` × `NH` half-strips from `h0`, int8 activations.
        ///
        /// # Safety
        /// The CPU has the features enabled here; rows `r0..r0+MR` and
        /// strips of halves `h0..h0+NH` are inside what [`check`] accepted.
        #[inline]
        #[target_feature(enable = $features)]
        #[allow(clippy::needless_range_loop)] // register tiles read best as index loops
        unsafe fn $name<const T: u8, const MR: usize, const NH: usize>(
            w: &Strips<'_>,
            x: &Int8Rows<'_>,
            r0: usize,
            h0: usize,
            sink: &dyn Sink,
        ) {
            let (blocks, qs) = (w.blocks, qs_offset(T));
            let low = _mm256_set1_epi8(0x0F);
            let mut acc = [[_mm256_setzero_ps(); NH]; MR];
            for b in 0..blocks {
                // SAFETY: the halves' strips and block b are inside
                // `w.data`; rows r0..r0+MR are inside `x.q`, `x.d`, `x.qsum`
                // and `x.sx`, all as checked.
                unsafe {
                    let rc: [(*const u8, usize); NH] =
                        std::array::from_fn(|j| record(w, T, h0 + j, b));
                    let xb: [*const u8; MR] = std::array::from_fn(|i| {
                        x.q.as_ptr().add((r0 + i) * x.k + b * BLOCK) as *const u8
                    });
                    let bi: [usize; MR] = std::array::from_fn(|i| (r0 + i) * blocks + b);
                    let mut si: [[__m256i; NH]; MR] = std::array::from_fn(|i| {
                        let init = if T == Q4_0 {
                            -8 * *x.qsum.as_ptr().add(bi[i])
                        } else {
                            0
                        };
                        [_mm256_set1_epi32(init); NH]
                    });
                    let x4 = |i: usize, at: usize| {
                        _mm256_set1_epi32(std::ptr::read_unaligned(xb[i].add(at) as *const i32))
                    };
                    if is8(T) {
                        for g in 0..8 {
                            let wv: [__m256i; NH] = std::array::from_fn(|j| {
                                let (p, c) = rc[j];
                                let row = |e: usize| {
                                    let at = qs + STRIP * (4 * g + e) + c;
                                    _mm_loadl_epi64(p.add(at) as *const __m128i)
                                };
                                let a = _mm_unpacklo_epi8(row(0), row(1));
                                let bb = _mm_unpacklo_epi8(row(2), row(3));
                                _mm256_set_m128i(
                                    _mm_unpackhi_epi16(a, bb),
                                    _mm_unpacklo_epi16(a, bb),
                                )
                            });
                            let ua: [__m256i; NH] = std::array::from_fn(|j| _mm256_abs_epi8(wv[j]));
                            for i in 0..MR {
                                let xv = x4(i, 4 * g);
                                for j in 0..NH {
                                    let sx = _mm256_sign_epi8(xv, wv[j]);
                                    si[i][j] = $dot(si[i][j], ua[j], sx);
                                }
                            }
                        }
                    } else {
                        for t in 0..4 {
                            let v: [__m256i; NH] = std::array::from_fn(|j| {
                                let (p, c) = rc[j];
                                _mm256_loadu_si256(p.add(qs + 64 * t + 4 * c) as *const __m256i)
                            });
                            let lo: [__m256i; NH] =
                                std::array::from_fn(|j| _mm256_and_si256(v[j], low));
                            let hi: [__m256i; NH] = std::array::from_fn(|j| {
                                _mm256_and_si256(_mm256_srli_epi16::<4>(v[j]), low)
                            });
                            for i in 0..MR {
                                let (xl, xh) = (x4(i, 4 * t), x4(i, 16 + 4 * t));
                                for j in 0..NH {
                                    si[i][j] = $dot(si[i][j], lo[j], xl);
                                    si[i][j] = $dot(si[i][j], hi[j], xh);
                                }
                            }
                        }
                    }
                    for j in 0..NH {
                        let (dv, mv) = scale_min::<T>(w, h0 + j, b);
                        for i in 0..MR {
                            let dd = _mm256_mul_ps(dv, _mm256_set1_ps(*x.d.as_ptr().add(bi[i])));
                            let f = _mm256_cvtepi32_ps(si[i][j]);
                            acc[i][j] = _mm256_fmadd_ps(f, dd, acc[i][j]);
                            if has_min(T) {
                                let s = _mm256_set1_ps(*x.sx.as_ptr().add(bi[i]));
                                acc[i][j] = _mm256_fmadd_ps(mv, s, acc[i][j]);
                            }
                        }
                    }
                }
            }
            emit(&acc, r0, h0, sink);
        }
    };
}

int8_tile!(int8_tile, "avx2,fma,f16c", dot_madd);
int8_tile!(int8_tile_vnni, "avx2,fma,f16c,avxvnni", dot_vnni);

/// Quantise rows (see [`super::activations`]): `x`, `q` `[r, K]`; `d`,
/// `qsum`, `sx` `[r, K/32]`.
pub(super) fn quantize(x: &[f32], q: &mut [i8], d: &mut [f32], qsum: &mut [i32], sx: &mut [f32]) {
    assert!(detected(), "AVX2 quantiser on a CPU without AVX2");
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

/// One block: `q`, and `(d_x, Σq)`.
///
/// # Safety
/// AVX2, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    // SAFETY: `x` holds 32 f32.
    let v: [__m256; 4] = std::array::from_fn(|c| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * c)) });
    let m = _mm256_max_ps(
        _mm256_max_ps(_mm256_and_ps(v[0], abs), _mm256_and_ps(v[1], abs)),
        _mm256_max_ps(_mm256_and_ps(v[2], abs), _mm256_and_ps(v[3], abs)),
    );
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2)));
    let (id, dx) = scales(amax);
    let qi: [__m256i; 4] = std::array::from_fn(|c| {
        let s = _mm256_mul_ps(v[c], _mm256_set1_ps(id));
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
        let half = _mm256_cmp_ps::<_CMP_GE_OQ>(
            _mm256_and_ps(_mm256_sub_ps(s, t), abs),
            _mm256_set1_ps(0.5),
        );
        let one = _mm256_or_ps(_mm256_and_ps(s, sign), _mm256_set1_ps(1.0));
        let r = _mm256_add_ps(t, _mm256_and_ps(half, one));
        let r = _mm256_min_ps(
            _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
            _mm256_set1_ps(127.0),
        );
        _mm256_cvtps_epi32(r)
    });
    let b = _mm256_packs_epi16(
        _mm256_packs_epi32(qi[0], qi[1]),
        _mm256_packs_epi32(qi[2], qi[3]),
    );
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: `q` holds 32 bytes.
    unsafe { _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b) };
    let s = _mm256_add_epi32(
        _mm256_add_epi32(qi[0], qi[1]),
        _mm256_add_epi32(qi[2], qi[3]),
    );
    let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b01>(s2));
    (dx, _mm_cvtsi128_si32(s1))
}
