//! The batch-invariant dot-product engine shared by dense and quantised GEMM.
//!
//! Every output is `out[m, n] = post[n] · dot(x[m, :], w[n, :]) + bias[n]`,
//! where the dot product is computed in one fixed order that depends only on
//! K and the ISA:
//!
//! * K is cut into *steps* of 32 elements (the last one zero-padded);
//! * each output owns one accumulator of `L` f32 lanes (`L` = 16 on AVX-512,
//!   8 on AVX2 and scalar); step after step, lane `l` accumulates the
//!   products of the step's elements that fall on lane `l`, in increasing k
//!   (AVX-512 and AVX2 with fused multiply-add, scalar with a multiply then
//!   an add);
//! * the lanes are summed by one fixed tree ([`hsum8`] order);
//! * then `post` scales and `bias` adds, in f32.
//!
//! Tiles of 4 rows × 4 columns share each decoded weight step between rows;
//! a tile that runs past M or N repeats its last row or column, so a row's
//! result never depends on which other rows (or how many) share its tile.
//! K is never split between threads: work is split over M and N only.
//!
//! A weight format plugs in by implementing a per-ISA block decoder
//! ([`avx512::Block512`], [`avx2::Block256`], [`scalar::BlockScalar`]) that
//! turns step `s` of output row `n` into 32 f32 weights.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod scalar;

use rayon::prelude::*;

use crate::isa::Isa;

/// Elements of K per step.
pub(crate) const STEP: usize = 32;
/// Rows of `x` per tile.
pub(crate) const MR: usize = 4;
/// Output columns per tile.
pub(crate) const NR: usize = 4;

/// What every weight decoder knows about its shape.
pub(crate) trait Weights: Sync {
    /// Output rows N.
    fn rows(&self) -> usize;
    /// Steps of [`STEP`] elements along K (the last may be partial).
    fn steps(&self) -> usize;
}

/// One ISA's tile kernels over one weight format.
///
/// `x` rows hold at least `steps · 32` f32 (zero past K); `n` indices are
/// below `rows()`. Both tiles compute each output in exactly the same order.
pub(crate) trait Dot: Sync {
    /// Steps along K.
    fn steps(&self) -> usize;
    /// Output rows N.
    fn rows(&self) -> usize;
    /// `[MR][NR]` dot products of `x[i]` with weight rows `n[j]`.
    fn tile4(&self, x: [&[f32]; MR], n: [usize; NR]) -> [[f32; NR]; MR];
    /// `[NR]` dot products of one `x` row with weight rows `n[j]`.
    fn tile1(&self, x: &[f32], n: [usize; NR]) -> [f32; NR];
}

/// The f32 lanes summed in the fixed order every ISA uses:
/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline(always)]
pub(crate) fn hsum8(l: [f32; 8]) -> f32 {
    let s4 = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

/// How each output is finished after its dot product.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<'a> {
    /// Per-column scale `[N]` (e.g. FP8 weight scales), or `None`.
    pub post: Option<&'a [f32]>,
    /// Per-column bias `[N]` in f32, or `None`.
    pub bias: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    #[inline(always)]
    fn apply(&self, n: usize, v: f32) -> f32 {
        let v = match self.post {
            Some(p) => v * p[n],
            None => v,
        };
        match self.bias {
            Some(b) => v + b[n],
            None => v,
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint (m, n) elements; see `run`.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// `out[m, n] = epi(dot(x[m], w[n]))` for all `m < M`, `n < N = d.rows()`.
///
/// `x` is `[M, x_stride]` f32 with `x_stride ≥ steps · 32` and zeros past K;
/// `out` is `[M, N]` f32, row-major. Runs on `pool`; the split over tasks
/// never changes any output's bits.
pub(crate) fn run<D: Dot>(
    pool: &rayon::ThreadPool,
    d: &D,
    x: &[f32],
    x_stride: usize,
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    let n = d.rows();
    if n == 0 || out.is_empty() {
        return;
    }
    let m = out.len() / n;
    assert!(
        x_stride >= d.steps() * STEP,
        "x rows too short for the weight's K"
    );
    assert!(x.len() >= m * x_stride, "x holds fewer than M rows");
    assert_eq!(out.len(), m * n, "out is not [M, N]");
    if let Some(p) = epi.post {
        assert!(p.len() >= n);
    }
    if let Some(b) = epi.bias {
        assert!(b.len() >= n);
    }
    let threads = pool.current_num_threads().max(1);
    // Block sizes: rows of x kept in L2 while a few weight rows sit in L1.
    let mb = if m == 1 { 1 } else { 64 };
    let m_blocks = m.div_ceil(mb);
    // Enough column blocks to keep every thread busy, at least 4 columns each.
    let want_tasks = 8 * threads;
    let nb = if m_blocks >= want_tasks {
        64
    } else {
        (n.div_ceil(want_tasks.div_ceil(m_blocks))
            .next_multiple_of(NR))
        .clamp(NR, 64)
    };
    let n_blocks = n.div_ceil(nb);
    let ptr = OutPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (bm, bn) = (t / n_blocks, t % n_blocks);
        let (m0, m1) = (bm * mb, ((bm + 1) * mb).min(m));
        let (n0, n1) = (bn * nb, ((bn + 1) * nb).min(n));
        let row = |i: usize| &x[i * x_stride..(i + 1) * x_stride];
        let mut j0 = n0;
        while j0 < n1 {
            let cols: [usize; NR] = std::array::from_fn(|j| (j0 + j).min(n1 - 1));
            let real_cols = (n1 - j0).min(NR);
            let mut i0 = m0;
            while i0 < m1 {
                let real_rows = (m1 - i0).min(MR);
                let write = |i: usize, j: usize, v: f32| {
                    let (mi, nj) = (i0 + i, cols[j]);
                    // SAFETY: `mi < m`, `nj < n`, so the element is inside
                    // `out`; each (mi, nj) belongs to exactly one task and one
                    // tile (blocks partition M × N), so no two writes alias.
                    unsafe { *ptr.get().add(mi * n + nj) = epi.apply(nj, v) };
                };
                if m == 1 {
                    let r = d.tile1(row(i0), cols);
                    (0..real_cols).for_each(|j| write(0, j, r[j]));
                } else {
                    let rows: [&[f32]; MR] = std::array::from_fn(|i| row((i0 + i).min(m1 - 1)));
                    let r = d.tile4(rows, cols);
                    for (i, ri) in r.iter().enumerate().take(real_rows) {
                        (0..real_cols).for_each(|j| write(i, j, ri[j]));
                    }
                }
                i0 += MR;
            }
            j0 += NR;
        }
    };
    let tasks = m_blocks * n_blocks;
    if tasks == 1 {
        task(0);
    } else {
        pool.install(|| (0..tasks).into_par_iter().for_each(task));
    }
}

/// Pick the tile kernels of `isa` for a weight decoder and run them.
///
/// `W` implements the block decoder of every ISA; the wrappers check the
/// CPU's features again, so a hand-built `Isa` value can never run an
/// instruction the CPU lacks (it falls back to scalar).
pub(crate) fn run_isa<W>(
    isa: Isa,
    pool: &rayon::ThreadPool,
    w: W,
    x: &[f32],
    x_stride: usize,
    epi: Epilogue<'_>,
    out: &mut [f32],
) where
    W: Weights + scalar::BlockScalar + AnyIsa,
{
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 {
            if let Some(d) = avx512::Avx512::new(&w) {
                return run(pool, &d, x, x_stride, epi, out);
            }
        }
        if isa >= Isa::Avx2 {
            if let Some(d) = avx2::Avx2::new(&w) {
                return run(pool, &d, x, x_stride, epi, out);
            }
        }
    }
    let _ = isa;
    run(pool, &scalar::Scalar(&w), x, x_stride, epi, out)
}

/// The block decoders a format provides on this architecture.
#[cfg(target_arch = "x86_64")]
pub(crate) trait AnyIsa: avx512::Block512 + avx2::Block256 {}
#[cfg(target_arch = "x86_64")]
impl<T: avx512::Block512 + avx2::Block256> AnyIsa for T {}
/// The block decoders a format provides on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait AnyIsa {}
#[cfg(not(target_arch = "x86_64"))]
impl<T> AnyIsa for T {}

/// Rows of `x` as f32, `[m, stride]`, zero-padded past `k`: `src` holds
/// `m · k` elements of `dtype`. Borrows `src` when it already is f32 with
/// `k` a multiple of [`STEP`].
pub(crate) fn rows_f32<'a>(
    isa: Isa,
    dtype: hal::DType,
    src: &'a [u8],
    m: usize,
    k: usize,
) -> (std::borrow::Cow<'a, [f32]>, usize) {
    let stride = k.next_multiple_of(STEP);
    if dtype == hal::DType::F32 && stride == k {
        if let Ok(s) = bytemuck::try_cast_slice::<u8, f32>(src) {
            return (std::borrow::Cow::Borrowed(&s[..m * k]), k);
        }
    }
    let esize = dtype.bytes_for(1);
    let mut out = vec![0f32; m * stride];
    for (i, row) in out.chunks_exact_mut(stride).enumerate() {
        crate::convert::to_f32(
            isa,
            dtype,
            &src[i * k * esize..(i + 1) * k * esize],
            &mut row[..k],
        );
    }
    (std::borrow::Cow::Owned(out), stride)
}

/// One view as f32 (bias vectors and other short per-column tensors).
pub(crate) fn vec_f32(isa: Isa, dtype: hal::DType, src: &[u8], len: usize) -> Vec<f32> {
    let mut out = vec![0f32; len];
    crate::convert::to_f32(isa, dtype, src, &mut out);
    out
}

/// Run `f` on an f32 `[len]` output and store it into `out` (`len`
/// elements of `dtype`, little-endian), converting with round-to-nearest-even
/// when `dtype` is not F32. An F32 output is written in place.
pub(crate) fn with_out_f32(
    isa: Isa,
    dtype: hal::DType,
    out: &mut [u8],
    len: usize,
    f: impl FnOnce(&mut [f32]),
) {
    if dtype == hal::DType::F32 {
        if let Ok(o) = bytemuck::try_cast_slice_mut::<u8, f32>(&mut out[..4 * len]) {
            return f(o);
        }
    }
    let mut tmp = vec![0f32; len];
    f(&mut tmp);
    crate::convert::from_f32(isa, dtype, &tmp, out);
}
