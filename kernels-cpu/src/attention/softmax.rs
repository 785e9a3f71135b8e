//! The attention kernel: a block of consecutive query tokens of one
//! sequence against that sequence's keys, online softmax over key tiles,
//! split into partitions at fixed absolute key positions, the query heads of
//! each KV head processed together ([`super::tile`]).
//!
//! The arithmetic a query row sees is a function of that row alone — its
//! query vector, its visible key range `lo..hi` and the K/V data — so the
//! result is bitwise the same in any batch, chunking or thread count:
//!
//! * keys are cut into **partitions** of [`PARTITION`] positions at
//!   multiples of [`PARTITION`] (absolute positions within the sequence), and
//!   each partition into **tiles** of [`TILE`] positions at multiples of
//!   [`TILE`]; a row's first and last tile are cut by its own `lo` / `hi`;
//! * each partition runs the online softmax from an empty state; the tiles
//!   of a partition update it in order (running max `m`, running sum `l`,
//!   unnormalised output `acc`);
//! * partition states are folded in increasing order ([`fold`]) — whether
//!   they were computed in one work item or in parallel (split-K);
//! * tokens of a block share a tile step only when they see exactly the
//!   same keys of that tile; otherwise each takes its own step; a single
//!   token over several KV heads (decode batches) walks the tile's cache
//!   positions front to back across heads ([`super::tile::tile_wide`]).

use std::ops::Range;

use super::tile::{tile, tile_wide, Rows, WIDE_MAX_GROUP, WIDE_MAX_KV};
use super::vector::{KvElem, Load, Scalar, Simd, MAX_LANES};

/// Key positions per online-softmax step (a multiple of every lane count).
pub(crate) const TILE: usize = 32;
/// Key positions per split-K partition (a multiple of [`TILE`]).
pub(crate) const PARTITION: usize = 512;

/// Where one sequence's keys and values live.
pub(crate) trait KvRows<E: KvElem>: Sync {
    /// The key and value rows (`head_dim` elements each) of KV head `h` at
    /// positions `js` (at most [`TILE`]): `keys[i]` / `values[i]` for
    /// position `js.start + i`.
    fn gather<'s>(
        &'s self,
        h: usize,
        js: Range<usize>,
        keys: &mut [&'s [E]],
        values: &mut [&'s [E]],
    );
}

/// Sizes and scalars shared by every row of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Query heads per KV head.
    pub group: usize,
    /// Elements per head.
    pub d: usize,
    /// `d` rounded up to a multiple of [`MAX_LANES`] (row stride of q and acc).
    pub dp: usize,
    /// Multiplies `q · k` (the op's scale times the FP8 key scale).
    pub score_scale: f32,
    /// Logit soft-cap.
    pub softcap: Option<f32>,
    /// Multiplies the output (the FP8 value scale, else 1).
    pub v_scale: f32,
}

impl Geometry {
    /// `d` padded to whole vectors.
    pub(crate) fn padded(d: usize) -> usize {
        d.div_ceil(MAX_LANES) * MAX_LANES
    }
}

/// Online-softmax state of `n` query rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    /// Running max of the scores, `[n]`.
    pub m: Vec<f32>,
    /// Running sum of `e^(s − m)`, `[n]`.
    pub l: Vec<f32>,
    /// Unnormalised output `[n, dp]`.
    pub acc: Vec<f32>,
}

impl State {
    fn new(n: usize, dp: usize) -> Self {
        State {
            m: vec![f32::NEG_INFINITY; n],
            l: vec![0.0; n],
            acc: vec![0.0; n * dp],
        }
    }

    /// Empty the state of rows `rows`.
    fn reset(&mut self, rows: Range<usize>, dp: usize) {
        self.m[rows.clone()].fill(f32::NEG_INFINITY);
        self.l[rows.clone()].fill(0.0);
        self.acc[rows.start * dp..rows.end * dp].fill(0.0);
    }

    /// Copy rows `rows` of `other` into `self`.
    fn copy_rows(&mut self, other: &State, rows: Range<usize>, dp: usize) {
        self.m[rows.clone()].copy_from_slice(&other.m[rows.clone()]);
        self.l[rows.clone()].copy_from_slice(&other.l[rows.clone()]);
        let a = rows.start * dp..rows.end * dp;
        self.acc[a.clone()].copy_from_slice(&other.acc[a]);
    }
}

/// The rows of one work item: `keys.len()` consecutive query tokens of one
/// sequence (token `i` sees keys `keys[i]`), each with `group` query
/// heads for every KV head of `kv`. Row `(k, i, h)` — KV head `kv.start + k`,
/// token `i`, head `h` of the group — is row `(k · tokens + i) · group + h`
/// of the scratch buffers.
#[derive(Clone, Debug)]
pub(crate) struct Block<'a> {
    /// KV heads.
    pub kv: Range<usize>,
    /// Each token's visible keys.
    pub keys: &'a [Range<usize>],
}

/// Per-thread buffers of one work item.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Queries as f32, `[rows, dp]`, zero-padded.
    pub q: Vec<f32>,
    /// The partition being computed.
    pub part: State,
    /// The folded row state.
    pub row: State,
    /// Scores / probabilities of one tile step, `[rows, TILE]`.
    scores: Vec<f32>,
    /// Rescale factors of one tile step, `[rows]`.
    alpha: Vec<f32>,
    /// Tokens that have not folded a partition yet.
    first: Vec<bool>,
    /// Final output rows as f32, `[rows, d]`.
    pub out: Vec<f32>,
}

impl Scratch {
    /// Buffers for blocks of up to `tokens` tokens and `n_kv` KV heads.
    pub(crate) fn new(n_kv: usize, tokens: usize, g: &Geometry) -> Self {
        let rows = n_kv * tokens * g.group;
        Scratch {
            q: vec![0.0; rows * g.dp],
            part: State::new(rows, g.dp),
            row: State::new(rows, g.dp),
            scores: vec![0.0; rows * TILE],
            alpha: vec![0.0; rows],
            first: vec![true; tokens],
            out: vec![0.0; rows * g.d],
        }
    }
}

/// The partitions of keys `lo..hi`, in order.
pub(crate) fn partitions(keys: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let first = keys.start / PARTITION;
    let count = if keys.is_empty() {
        0
    } else {
        (keys.end - 1) / PARTITION + 1 - first
    };
    (first..first + count)
        .map(move |k| (k * PARTITION).max(keys.start)..((k + 1) * PARTITION).min(keys.end))
}

/// Keys of `keys` inside `within`.
fn clip(keys: &Range<usize>, within: &Range<usize>) -> Range<usize> {
    keys.start.max(within.start)..keys.end.min(within.end)
}

/// The ISA entry points: each level's kernels compiled with its features.
pub(crate) trait Kernels: Simd {
    /// Attention of every row of `b` (queries in `s.q`) into `s.row`:
    /// every partition of each token, folded in order.
    ///
    /// # Safety
    /// The CPU must support the level; `rows` must return `d`-element rows
    /// for every key of the tokens' ranges and every KV head of `b.kv`.
    unsafe fn rows<E: Load<Self>, R: KvRows<E>>(
        rows: &R,
        b: &Block<'_>,
        g: &Geometry,
        s: &mut Scratch,
    ) {
        let n = b.keys.len();
        let per_kv = n * g.group;
        s.row.reset(0..b.kv.len() * per_kv, g.dp);
        s.first[..n].fill(true);
        let live = || b.keys.iter().filter(|k| !k.is_empty());
        let (Some(k0), Some(k1)) = (
            live().map(|k| k.start / PARTITION).min(),
            live().map(|k| (k.end - 1) / PARTITION).max(),
        ) else {
            return;
        };
        for k in k0..=k1 {
            let part = k * PARTITION..(k + 1) * PARTITION;
            // SAFETY: forwarded from the caller.
            unsafe { Self::partition::<E, R>(rows, b, k, g, s) };
            for (i, keys) in b.keys.iter().enumerate() {
                if clip(keys, &part).is_empty() {
                    continue;
                }
                for kv in 0..b.kv.len() {
                    let r = kv * per_kv + i * g.group..kv * per_kv + (i + 1) * g.group;
                    if s.first[i] {
                        s.row.copy_rows(&s.part, r, g.dp);
                    } else {
                        fold(&mut s.row, &s.part, r, g.dp);
                    }
                }
                s.first[i] = false;
            }
        }
    }

    /// Partition `k` of every token of `b` that has keys in it, from an
    /// empty state into `s.part` (other tokens' rows are left as they are),
    /// compiled with the level's features.
    ///
    /// # Safety
    /// As [`Kernels::rows`].
    unsafe fn partition<E: Load<Self>, R: KvRows<E>>(
        rows: &R,
        b: &Block<'_>,
        k: usize,
        g: &Geometry,
        s: &mut Scratch,
    );
}

impl Kernels for Scalar {
    unsafe fn partition<E: Load<Self>, R: KvRows<E>>(
        rows: &R,
        b: &Block<'_>,
        k: usize,
        g: &Geometry,
        s: &mut Scratch,
    ) {
        // SAFETY: forwarded; the scalar level needs no CPU feature.
        unsafe { one_partition::<Scalar, E, R>(rows, b, k, g, s) }
    }
}

#[cfg(target_arch = "x86_64")]
mod entries {
    use super::*;
    use crate::attention::vector::{Avx2, Avx512};

    /// # Safety
    /// AVX-512 F/BW/VL, AVX2, FMA and F16C; otherwise as [`Kernels::partition`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn part_avx512<E: Load<Avx512>, R: KvRows<E>>(
        rows: &R,
        b: &Block<'_>,
        k: usize,
        g: &Geometry,
        s: &mut Scratch,
    ) {
        // SAFETY: forwarded; the features are enabled here.
        unsafe { one_partition::<Avx512, E, R>(rows, b, k, g, s) }
    }

    /// # Safety
    /// AVX2, FMA and F16C; otherwise as [`Kernels::partition`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn part_avx2<E: Load<Avx2>, R: KvRows<E>>(
        rows: &R,
        b: &Block<'_>,
        k: usize,
        g: &Geometry,
        s: &mut Scratch,
    ) {
        // SAFETY: forwarded; the features are enabled here.
        unsafe { one_partition::<Avx2, E, R>(rows, b, k, g, s) }
    }

    impl Kernels for Avx512 {
        unsafe fn partition<E: Load<Self>, R: KvRows<E>>(
            rows: &R,
            b: &Block<'_>,
            k: usize,
            g: &Geometry,
            s: &mut Scratch,
        ) {
            // SAFETY: the caller guarantees the features.
            unsafe { part_avx512::<E, R>(rows, b, k, g, s) }
        }
    }

    impl Kernels for Avx2 {
        unsafe fn partition<E: Load<Self>, R: KvRows<E>>(
            rows: &R,
            b: &Block<'_>,
            k: usize,
            g: &Geometry,
            s: &mut Scratch,
        ) {
            // SAFETY: the caller guarantees the features.
            unsafe { part_avx2::<E, R>(rows, b, k, g, s) }
        }
    }
}

/// `row ⊕= part` for rows `rows`: the two online-softmax states merged.
pub(crate) fn fold(row: &mut State, part: &State, rows: Range<usize>, dp: usize) {
    for h in rows {
        let m = row.m[h].max(part.m[h]);
        let a = (row.m[h] - m).exp();
        let b = (part.m[h] - m).exp();
        row.m[h] = m;
        row.l[h] = row.l[h] * a + part.l[h] * b;
        let (ra, pa) = (&mut row.acc[h * dp..][..dp], &part.acc[h * dp..][..dp]);
        for (x, &y) in ra.iter_mut().zip(pa) {
            *x = *x * a + y * b;
        }
    }
}

/// Normalise a folded state into `out` (`[n, d]`): `acc · v_scale / l`, or
/// zeros for a row that saw no key.
pub(crate) fn finish(st: &State, g: &Geometry, out: &mut [f32]) {
    for (h, o) in out.chunks_exact_mut(g.d).enumerate() {
        let l = st.l[h];
        if l == 0.0 {
            o.fill(0.0);
        } else {
            let inv = g.v_scale / l;
            for (x, &a) in o.iter_mut().zip(&st.acc[h * g.dp..][..g.d]) {
                *x = a * inv;
            }
        }
    }
}

/// See [`Kernels::partition`]: tile by tile; in each tile, runs of
/// consecutive tokens that see the same keys step together, for every KV
/// head of the block.
///
/// # Safety
/// As [`Kernels::rows`].
#[inline(always)]
unsafe fn one_partition<S: Simd, E: Load<S>, R: KvRows<E>>(
    rows: &R,
    b: &Block<'_>,
    k: usize,
    g: &Geometry,
    s: &mut Scratch,
) {
    let (gs, dp) = (g.group, g.dp);
    let n = b.keys.len();
    let per_kv = n * gs;
    let part = k * PARTITION..(k + 1) * PARTITION;
    let mut span: Option<Range<usize>> = None;
    for (i, keys) in b.keys.iter().enumerate() {
        let c = clip(keys, &part);
        if c.is_empty() {
            continue;
        }
        for kv in 0..b.kv.len() {
            s.part
                .reset(kv * per_kv + i * gs..kv * per_kv + (i + 1) * gs, dp);
        }
        span = Some(span.map_or(c.clone(), |sp| sp.start.min(c.start)..sp.end.max(c.end)));
    }
    let Some(span) = span else { return };
    // A single token over several KV heads (decode batches) reads each
    // cache position's heads together.
    let wide = n == 1 && b.kv.len() > 1 && b.kv.len() <= WIDE_MAX_KV && gs <= WIDE_MAX_GROUP;
    let mut t0 = span.start / TILE * TILE;
    while t0 < span.end {
        let t = t0..t0 + TILE;
        let mut i = 0;
        while i < n {
            let js = clip(&clip(&b.keys[i], &part), &t);
            if js.is_empty() {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < n && clip(&clip(&b.keys[j], &part), &t) == js {
                j += 1;
            }
            // Keys of the next tile that these tokens will read.
            let ahead = clip(&(t.end..t.end + TILE), &clip(&b.keys[j - 1], &part));
            if wide {
                // One token, every KV head: rows `0..n_kv · group`.
                let r = 0..b.kv.len() * gs;
                let st = Rows {
                    q: &s.q[..r.end * dp],
                    m: &mut s.part.m[r.clone()],
                    l: &mut s.part.l[r.clone()],
                    acc: &mut s.part.acc[..r.end * dp],
                    scores: &mut s.scores[..r.len() * TILE],
                    alpha: &mut s.alpha[..r.len()],
                };
                // SAFETY: forwarded; the keys lie in the token's range.
                unsafe {
                    tile_wide::<S, E, R>(rows, b.kv.clone(), js.clone(), ahead.clone(), g, st)
                };
                i = j;
                continue;
            }
            for kv in 0..b.kv.len() {
                let r = kv * per_kv + i * gs..kv * per_kv + j * gs;
                let st = Rows {
                    q: &s.q[r.start * dp..r.end * dp],
                    m: &mut s.part.m[r.clone()],
                    l: &mut s.part.l[r.clone()],
                    acc: &mut s.part.acc[r.start * dp..r.end * dp],
                    scores: &mut s.scores[..r.len() * TILE],
                    alpha: &mut s.alpha[..r.len()],
                };
                // SAFETY: forwarded; the keys lie in the tokens' ranges.
                unsafe { tile::<S, E, R>(rows, b.kv.start + kv, js.clone(), ahead.clone(), g, st) };
            }
            i = j;
        }
        t0 = t.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_absolute() {
        let p: Vec<_> = partitions(100..1100).collect();
        assert_eq!(p, vec![100..512, 512..1024, 1024..1100]);
        assert_eq!(partitions(0..512).count(), 1);
        assert_eq!(partitions(5..5).count(), 0);
        assert_eq!(partitions(512..513).collect::<Vec<_>>(), vec![512..513]);
    }
}
