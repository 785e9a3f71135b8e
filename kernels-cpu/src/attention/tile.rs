//! One online-softmax step: a tile of at most [`TILE`] keys of one KV head
//! against `n` query rows that all see exactly those keys, and the SIMD
//! micro-kernels it runs (`q · k` scores, `p · v` accumulation).
//!
//! Every row's arithmetic is independent of the other rows in the call: a
//! score is one dot product with its own accumulator (same lanes, same
//! horizontal sum), a row's max / exp / sum run over its own scores, and its
//! output accumulates key by key in tile order. Grouping rows (heads of a
//! KV head, consecutive query tokens) only shares the loads of K and V.

use std::ops::Range;

use super::softmax::{Geometry, KvRows, TILE};
use super::vector::{Load, Simd};

/// The online-softmax state of the call's `n` rows.
pub(super) struct Rows<'a> {
    /// Queries `[n, dp]` (f32, zero-padded).
    pub q: &'a [f32],
    /// Running max `[n]`.
    pub m: &'a mut [f32],
    /// Running sum `[n]`.
    pub l: &'a mut [f32],
    /// Unnormalised output `[n, dp]`.
    pub acc: &'a mut [f32],
    /// Scores, then probabilities, `[n, TILE]` (scratch).
    pub scores: &'a mut [f32],
    /// Rescale factors `[n]` (scratch).
    pub alpha: &'a mut [f32],
}

/// Prefetch `bytes` bytes at `p` into L1 (a hint; never faults).
#[inline(always)]
fn prefetch(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetching is a hint and cannot fault; the address is
            // inside a row we are allowed to read.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// Keys `js` of KV head `h` for the rows `r`; `ahead` lists keys worth
/// prefetching for the next step (all `< seq_len`).
///
/// # Safety
/// The CPU must support `S`; `rows` returns `g.d`-element rows for every key
/// of `js` and `ahead`.
#[inline(always)]
pub(super) unsafe fn tile<S: Simd, E: Load<S>, R: KvRows<E>>(
    rows: &R,
    h: usize,
    js: Range<usize>,
    ahead: Range<usize>,
    g: &Geometry,
    mut r: Rows<'_>,
) {
    let n_rows = r.m.len();
    let n = js.len();
    let d = g.d;
    let row_bytes = d * std::mem::size_of::<E>();
    let (mut krows, mut vrows): ([&[E]; TILE], [&[E]; TILE]) = ([&[]; TILE], [&[]; TILE]);
    rows.gather(h, js, &mut krows[..n], &mut vrows[..n]);
    let (mut kp, mut vp) = ([std::ptr::null::<E>(); TILE], [std::ptr::null::<E>(); TILE]);
    for i in 0..n {
        assert!(
            krows[i].len() >= d && vrows[i].len() >= d,
            "K / V row shorter than head_dim"
        );
        (kp[i], vp[i]) = (krows[i].as_ptr(), vrows[i].as_ptr());
    }
    // Decode-like steps (one token's heads) wait on memory: fetch the next
    // tile's rows early. Prefill blocks find them in cache.
    if !ahead.is_empty() && n_rows <= g.group {
        let m = ahead.len();
        rows.gather(h, ahead, &mut krows[..m], &mut vrows[..m]);
        for i in 0..m {
            prefetch(krows[i].as_ptr() as *const u8, row_bytes);
            prefetch(vrows[i].as_ptr() as *const u8, row_bytes);
        }
    }
    // SAFETY: q is `[n_rows, dp]` (dp ≥ d, whole vectors), scores
    // `[n_rows, TILE]`, every key pointer has `d` elements.
    unsafe { qk::<S, E>(r.q.as_ptr(), n_rows, g, &kp[..n], r.scores.as_mut_ptr()) };
    // SAFETY: forwarded.
    unsafe { softmax_step::<S>(n, g, &mut r) };
    // SAFETY: acc is `[n_rows, dp]`, probabilities `[n_rows, TILE]`, every
    // value pointer has `d` elements.
    unsafe {
        pv::<S, E>(
            r.acc.as_mut_ptr(),
            n_rows,
            g,
            r.scores.as_ptr(),
            r.alpha,
            &vp[..n],
        )
    };
}

/// Most KV heads [`tile_wide`] takes.
pub(super) const WIDE_MAX_KV: usize = 16;
/// Largest query group [`tile_wide`] takes.
pub(super) const WIDE_MAX_GROUP: usize = 64;

/// Keys `js` of every KV head `kv` for one token (rows `[kv.len() · group]`
/// of `r`, KV-head-major), in position-major order: key groups of 4
/// outer, heads inner, so each position's `[num_kv_heads, head_dim]` row
/// of the cache is read front to back. Every row sees exactly the
/// arithmetic of [`tile`]: the same dot products, and its outputs still
/// accumulate key by key (rescaled by `alpha` once, then by exactly 1).
///
/// # Safety
/// As [`tile`]; `kv.len() ≤ WIDE_MAX_KV`, `group ≤ WIDE_MAX_GROUP`.
#[inline(always)]
pub(super) unsafe fn tile_wide<S: Simd, E: Load<S>, R: KvRows<E>>(
    rows: &R,
    kv: Range<usize>,
    js: Range<usize>,
    ahead: Range<usize>,
    g: &Geometry,
    mut r: Rows<'_>,
) {
    const KEYS: usize = 4;
    let n = js.len();
    let (d, gs, dp) = (g.d, g.group, g.dp);
    let row_bytes = d * std::mem::size_of::<E>();
    let mut kp = [[std::ptr::null::<E>(); TILE]; WIDE_MAX_KV];
    let mut vp = [[std::ptr::null::<E>(); TILE]; WIDE_MAX_KV];
    let (mut krows, mut vrows): ([&[E]; TILE], [&[E]; TILE]) = ([&[]; TILE], [&[]; TILE]);
    for (k, h) in kv.clone().enumerate() {
        rows.gather(h, js.clone(), &mut krows[..n], &mut vrows[..n]);
        for i in 0..n {
            assert!(
                krows[i].len() >= d && vrows[i].len() >= d,
                "K / V row shorter than head_dim"
            );
            (kp[k][i], vp[k][i]) = (krows[i].as_ptr(), vrows[i].as_ptr());
        }
    }
    if !ahead.is_empty() {
        let m = ahead.len();
        for h in kv.clone() {
            rows.gather(h, ahead.clone(), &mut krows[..m], &mut vrows[..m]);
            for i in 0..m {
                prefetch(krows[i].as_ptr() as *const u8, row_bytes);
                prefetch(vrows[i].as_ptr() as *const u8, row_bytes);
            }
        }
    }
    let n_kv = kv.len();
    // SAFETY: q / acc are `[n_kv · group, dp]`, scores `[n_kv · group,
    // TILE]`; every pointer has `d` elements.
    unsafe {
        let mut j = 0;
        while j < n {
            let e = (j + KEYS).min(n);
            for (k, keys) in kp.iter().take(n_kv).enumerate() {
                qk::<S, E>(
                    r.q.as_ptr().add(k * gs * dp),
                    gs,
                    g,
                    &keys[j..e],
                    r.scores.as_mut_ptr().add(k * gs * TILE + j),
                );
            }
            j = e;
        }
    }
    // SAFETY: forwarded.
    unsafe { softmax_step::<S>(n, g, &mut r) };
    let ones = [1f32; WIDE_MAX_GROUP];
    // SAFETY: as above.
    unsafe {
        let mut j = 0;
        while j < n {
            let e = (j + KEYS).min(n);
            for (k, vals) in vp.iter().take(n_kv).enumerate() {
                let alpha = if j == 0 {
                    &r.alpha[k * gs..(k + 1) * gs]
                } else {
                    &ones[..gs]
                };
                pv::<S, E>(
                    r.acc.as_mut_ptr().add(k * gs * dp),
                    gs,
                    g,
                    r.scores.as_ptr().add(k * gs * TILE + j),
                    alpha,
                    &vals[j..e],
                );
            }
            j = e;
        }
    }
}

/// The online-softmax update of every row of `r` for a step of `n` keys
/// whose scores are in `r.scores`: soft-cap, new running max, `alpha =
/// e^(m_old − m_new)`, probabilities `e^(s − m_new)` in place, `l = l ·
/// alpha + Σ p`.
///
/// # Safety
/// As [`Simd`].
#[inline(always)]
unsafe fn softmax_step<S: Simd>(n: usize, g: &Geometry, r: &mut Rows<'_>) {
    let n_rows = r.m.len();
    if let Some(cap) = g.softcap {
        for row in r.scores.chunks_exact_mut(TILE).take(n_rows) {
            for x in &mut row[..n] {
                *x = cap * (*x / cap).tanh();
            }
        }
    }
    let padded = n.div_ceil(S::LANES) * S::LANES;
    for (i, row) in r.scores.chunks_exact_mut(TILE).take(n_rows).enumerate() {
        row[n..padded].fill(f32::NEG_INFINITY);
        // SAFETY: `row` holds TILE ≥ padded floats.
        let tmax = unsafe { max_of::<S>(row.as_ptr(), padded) };
        let m_new = r.m[i].max(tmax);
        r.alpha[i] = (r.m[i] - m_new).exp();
        // SAFETY: as above.
        let sum = unsafe { exp_sum::<S>(row.as_mut_ptr(), padded, m_new) };
        r.l[i] = r.l[i] * r.alpha[i] + sum;
        r.m[i] = m_new;
    }
}

/// Largest of `n` (a multiple of `S::LANES`) floats (NaN may be ignored:
/// a NaN score still poisons its row through `e^(s − m)`).
///
/// # Safety
/// As [`Simd`]; `x` valid for `n` floats.
#[inline(always)]
unsafe fn max_of<S: Simd>(x: *const f32, n: usize) -> f32 {
    // SAFETY: every access is below `n`.
    unsafe {
        let mut m = S::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            m = S::max(m, S::load(x.add(i)));
            i += S::LANES;
        }
        S::max_lane(m)
    }
}

/// `x[i] = e^(x[i] − m)` for `n` (a multiple of `S::LANES`) floats; returns
/// their sum (lane sums, then [`Simd::sum`]).
///
/// # Safety
/// As [`Simd`]; `x` valid for `n` floats.
#[inline(always)]
unsafe fn exp_sum<S: Simd>(x: *mut f32, n: usize, m: f32) -> f32 {
    // SAFETY: every access is below `n`.
    unsafe {
        let mv = S::splat(m);
        let neg = S::splat(-1.0);
        let mut acc = S::splat(0.0);
        let mut i = 0;
        while i < n {
            let e = S::exp(S::mul_add(mv, neg, S::load(x.add(i))));
            S::store(x.add(i), e);
            acc = S::add(acc, e);
            i += S::LANES;
        }
        S::sum(acc)
    }
}

/// Scores `out[r · TILE + j] = (q_r · k_j) · scale` of `n_rows` rows. Rows
/// go 4, 2, 1 at a time with 4 (AVX-512) or 2, 4, 8 keys to match.
///
/// # Safety
/// As [`Simd`]; `q` is `[n_rows, dp]`, `out` is `[n_rows, TILE]`, every key
/// has `g.d` elements.
#[inline(always)]
unsafe fn qk<S: Simd, E: Load<S>>(
    q: *const f32,
    n_rows: usize,
    g: &Geometry,
    keys: &[*const E],
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY: row offsets stay below `n_rows`.
    unsafe {
        while r + 4 <= n_rows {
            if S::LANES >= 16 {
                qk_rows::<S, E, 4, 4>(q.add(r * g.dp), g, keys, out.add(r * TILE));
            } else {
                qk_rows::<S, E, 4, 2>(q.add(r * g.dp), g, keys, out.add(r * TILE));
            }
            r += 4;
        }
        if r + 2 <= n_rows {
            qk_rows::<S, E, 2, 4>(q.add(r * g.dp), g, keys, out.add(r * TILE));
            r += 2;
        }
        if r < n_rows {
            qk_rows::<S, E, 1, 8>(q.add(r * g.dp), g, keys, out.add(r * TILE));
        }
    }
}

/// # Safety
/// As [`qk`], for `H` rows.
#[inline(always)]
unsafe fn qk_rows<S: Simd, E: Load<S>, const H: usize, const K: usize>(
    q: *const f32,
    g: &Geometry,
    keys: &[*const E],
    out: *mut f32,
) {
    let mut j = 0;
    // SAFETY: key offsets stay below `keys.len()` ≤ TILE.
    unsafe {
        while j + K <= keys.len() {
            qk_block::<S, E, H, K>(q, g, &keys[j..j + K], out.add(j));
            j += K;
        }
        while j < keys.len() {
            qk_block::<S, E, H, 1>(q, g, &keys[j..j + 1], out.add(j));
            j += 1;
        }
    }
}

/// `H × K` dot products, each with its own accumulator: the same lanes and
/// the same horizontal sum whatever `H` and `K` are.
///
/// # Safety
/// As [`qk`]; `keys.len() == K`.
#[inline(always)]
unsafe fn qk_block<S: Simd, E: Load<S>, const H: usize, const K: usize>(
    q: *const f32,
    g: &Geometry,
    keys: &[*const E],
    out: *mut f32,
) {
    let (d, dp) = (g.d, g.dp);
    let full = d / S::LANES * S::LANES;
    // SAFETY: full chunks read `d` key elements at most; the tail is a
    // partial load; q rows are `dp ≥ d` rounded up to whole vectors.
    unsafe {
        let mut acc = [[S::splat(0.0); K]; H];
        let mut c = 0;
        while c < full {
            let mut kv = [S::splat(0.0); K];
            for k in 0..K {
                kv[k] = E::load(keys[k].add(c));
            }
            for (h, a) in acc.iter_mut().enumerate() {
                let qv = S::load(q.add(h * dp + c));
                for k in 0..K {
                    a[k] = S::mul_add(qv, kv[k], a[k]);
                }
            }
            c += S::LANES;
        }
        if c < d {
            let mut kv = [S::splat(0.0); K];
            for k in 0..K {
                kv[k] = E::load_partial(keys[k].add(c), d - c);
            }
            for (h, a) in acc.iter_mut().enumerate() {
                let qv = S::load(q.add(h * dp + c));
                for k in 0..K {
                    a[k] = S::mul_add(qv, kv[k], a[k]);
                }
            }
        }
        let mut sums = [0f32; 32];
        S::sum_each(acc.as_flattened(), &mut sums[..H * K]);
        for h in 0..H {
            for k in 0..K {
                *out.add(h * TILE + k) = sums[h * K + k] * g.score_scale;
            }
        }
    }
}

/// `acc_r = acc_r · alpha_r + Σ_j p[r · TILE + j] · v_j` for `n_rows` rows.
/// Rows go 4, 2, 1 at a time with 4 (AVX-512) or 2, 4, 8 vectors of `d`.
///
/// # Safety
/// As [`Simd`]; `acc` is `[n_rows, dp]`, `p` is `[n_rows, TILE]`, every
/// value has `g.d` elements.
#[inline(always)]
unsafe fn pv<S: Simd, E: Load<S>>(
    acc: *mut f32,
    n_rows: usize,
    g: &Geometry,
    p: *const f32,
    alpha: &[f32],
    vals: &[*const E],
) {
    let mut r = 0;
    // SAFETY: row offsets stay below `n_rows`.
    unsafe {
        while r + 4 <= n_rows {
            let (a, pr, al) = (acc.add(r * g.dp), p.add(r * TILE), &alpha[r..]);
            if S::LANES >= 16 {
                pv_rows::<S, E, 4, 4>(a, g, pr, al, vals);
            } else {
                pv_rows::<S, E, 4, 2>(a, g, pr, al, vals);
            }
            r += 4;
        }
        if r + 2 <= n_rows {
            pv_rows::<S, E, 2, 4>(acc.add(r * g.dp), g, p.add(r * TILE), &alpha[r..], vals);
            r += 2;
        }
        if r < n_rows {
            pv_rows::<S, E, 1, 8>(acc.add(r * g.dp), g, p.add(r * TILE), &alpha[r..], vals);
        }
    }
}

/// # Safety
/// As [`pv`], for `H` rows.
#[inline(always)]
unsafe fn pv_rows<S: Simd, E: Load<S>, const H: usize, const C: usize>(
    acc: *mut f32,
    g: &Geometry,
    p: *const f32,
    alpha: &[f32],
    vals: &[*const E],
) {
    let full = g.d / S::LANES;
    let mut c = 0;
    // SAFETY: chunk offsets stay below `d`; the last partial chunk is loaded partially.
    unsafe {
        while c + C <= full {
            pv_block::<S, E, H, C>(acc, g, c * S::LANES, S::LANES, p, alpha, vals);
            c += C;
        }
        while c < full {
            pv_block::<S, E, H, 1>(acc, g, c * S::LANES, S::LANES, p, alpha, vals);
            c += 1;
        }
        let rest = g.d - full * S::LANES;
        if rest > 0 {
            pv_block::<S, E, H, 1>(acc, g, full * S::LANES, rest, p, alpha, vals);
        }
    }
}

/// `C` vectors of `H` rows' accumulators at element `c0`, over every key
/// of the tile. `width < S::LANES` only for the last, partial vector.
///
/// # Safety
/// As [`pv`]; `c0 + C · LANES ≤ dp`.
#[inline(always)]
unsafe fn pv_block<S: Simd, E: Load<S>, const H: usize, const C: usize>(
    acc: *mut f32,
    g: &Geometry,
    c0: usize,
    width: usize,
    p: *const f32,
    alpha: &[f32],
    vals: &[*const E],
) {
    let dp = g.dp;
    // SAFETY: acc rows hold `dp` floats; value reads stay below `d`.
    unsafe {
        let mut a = [[S::splat(0.0); C]; H];
        for (h, ah) in a.iter_mut().enumerate() {
            let al = S::splat(alpha[h]);
            for (c, x) in ah.iter_mut().enumerate() {
                *x = S::mul(S::load(acc.add(h * dp + c0 + c * S::LANES)), al);
            }
        }
        for (j, &v) in vals.iter().enumerate() {
            let mut vv = [S::splat(0.0); C];
            for (c, x) in vv.iter_mut().enumerate() {
                *x = if width == S::LANES {
                    E::load(v.add(c0 + c * S::LANES))
                } else {
                    E::load_partial(v.add(c0 + c * S::LANES), width)
                };
            }
            for (h, ah) in a.iter_mut().enumerate() {
                let pb = S::splat(*p.add(h * TILE + j));
                for c in 0..C {
                    ah[c] = S::mul_add(pb, vv[c], ah[c]);
                }
            }
        }
        for (h, ah) in a.iter().enumerate() {
            for (c, &x) in ah.iter().enumerate() {
                S::store(acc.add(h * dp + c0 + c * S::LANES), x);
            }
        }
    }
}
