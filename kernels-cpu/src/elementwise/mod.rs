//! The small ops around the big ones: RMS norm with the fused residual add
//! ([`norm`]), RoPE ([`rope`]), SiLU-and-mul and add ([`activation`]),
//! embedding lookup ([`embedding`]).
//!
//! Every op works row by row (a row: one token's `[hidden]` elements),
//! rows in parallel on the backend's pool. A row is converted to f32,
//! computed, and rounded once to the output dtype; reductions (RMS norm's
//! sum of squares) run in an order fixed by the row length alone, so a row's
//! result never depends on the batch around it.

mod activation;
mod embedding;
mod norm;
mod rope;

use hal::{OpDesc, QuantSpec, Result, TableFormat, Unsupported};

use crate::attention::vector::{Scalar, Simd, MAX_LANES};
use crate::{CpuBackend, Isa};

/// Which descriptions this module runs: every dtype the capabilities list;
/// quantised embedding tables in the GGUF block formats only.
pub(crate) fn supports(op: &OpDesc) -> std::result::Result<(), Unsupported> {
    match op {
        OpDesc::Embedding {
            table: TableFormat::Quant(spec),
            ..
        } if !matches!(spec, QuantSpec::Gguf(_)) => Err(Unsupported::new(
            op.name(),
            format!("quantised embedding tables must be GGUF Q8_0, Q4_0 or Q4_1, got {spec:?}"),
        )),
        OpDesc::RmsNorm { .. }
        | OpDesc::Rope { .. }
        | OpDesc::SiluAndMul { .. }
        | OpDesc::Embedding { .. }
        | OpDesc::Add { .. } => Ok(()),
        _ => Err(Unsupported::new(op.name(), "not an elementwise op")),
    }
}

impl hal::Elementwise for CpuBackend {
    fn rms_norm(&self, args: hal::RmsNormArgs<'_>) -> Result<()> {
        norm::rms_norm(self, args)
    }

    fn rope(&self, args: hal::RopeArgs<'_>) -> Result<()> {
        rope::rope(self, args)
    }

    fn silu_and_mul(&self, args: hal::SiluAndMulArgs<'_>) -> Result<()> {
        activation::silu_and_mul(self, args)
    }

    fn embedding(&self, args: hal::EmbeddingArgs<'_>) -> Result<()> {
        embedding::embedding(self, args)
    }

    fn add(&self, args: hal::AddArgs<'_>) -> Result<()> {
        activation::add(self, args)
    }
}

/// Rows per parallel task so a task holds at least ~16 K elements.
pub(super) fn rows_per_task(row_len: usize) -> usize {
    (16 * 1024 / row_len.max(1)).max(1)
}

/// The SIMD row kernels of one level.
trait RowKernels: Simd {
    /// `Σ x²` over the row, in a fixed order: four vector accumulators over
    /// whole groups of `4 · LANES`, then single vectors into the first, the
    /// zero-padded tail last; `(a0 + a1) + (a2 + a3)`, then [`Simd::sum`].
    ///
    /// # Safety
    /// The CPU must support the level.
    unsafe fn sum_squares(x: &[f32]) -> f32;

    /// `a[i] = a[i] / (1 + e^(−a[i])) · b[i]` (SiLU of the gate times up).
    ///
    /// # Safety
    /// The CPU must support the level; `b.len() ≥ a.len()`.
    unsafe fn silu_mul(a: &mut [f32], b: &[f32]);
}

/// See [`RowKernels::sum_squares`].
///
/// # Safety
/// As [`Simd`].
#[inline(always)]
unsafe fn sum_squares<S: Simd>(x: &[f32]) -> f32 {
    let l = S::LANES;
    let n = x.len();
    let p = x.as_ptr();
    // SAFETY: every full-vector load stays below `n`; the tail is copied.
    unsafe {
        let mut a = [S::splat(0.0); 4];
        let mut i = 0;
        while i + 4 * l <= n {
            for (k, acc) in a.iter_mut().enumerate() {
                let v = S::load(p.add(i + k * l));
                *acc = S::mul_add(v, v, *acc);
            }
            i += 4 * l;
        }
        while i + l <= n {
            let v = S::load(p.add(i));
            a[0] = S::mul_add(v, v, a[0]);
            i += l;
        }
        if i < n {
            let mut buf = [0f32; MAX_LANES];
            buf[..n - i].copy_from_slice(&x[i..]);
            let v = S::load(buf.as_ptr());
            a[0] = S::mul_add(v, v, a[0]);
        }
        S::sum(S::add(S::add(a[0], a[1]), S::add(a[2], a[3])))
    }
}

/// See [`RowKernels::silu_mul`].
///
/// # Safety
/// As [`Simd`]; `b.len() ≥ a.len()`.
#[inline(always)]
unsafe fn silu_mul<S: Simd>(a: &mut [f32], b: &[f32]) {
    let l = S::LANES;
    let n = a.len().min(b.len());
    /// `x / (1 + e^−x) · y`.
    ///
    /// # Safety
    /// As [`Simd`].
    #[inline(always)]
    unsafe fn f<S: Simd>(x: S::V, y: S::V) -> S::V {
        // SAFETY: the caller guarantees the level.
        unsafe {
            S::mul(
                S::div(x, S::add(S::splat(1.0), S::exp(S::mul(x, S::splat(-1.0))))),
                y,
            )
        }
    }
    let (pa, pb) = (a.as_mut_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: full vectors stay below `n`; the tail goes through buffers.
    unsafe {
        while i + l <= n {
            S::store(pa.add(i), f::<S>(S::load(pa.add(i)), S::load(pb.add(i))));
            i += l;
        }
        if i < n {
            let (mut x, mut y) = ([0f32; MAX_LANES], [0f32; MAX_LANES]);
            x[..n - i].copy_from_slice(&a[i..n]);
            y[..n - i].copy_from_slice(&b[i..n]);
            S::store(
                x.as_mut_ptr(),
                f::<S>(S::load(x.as_ptr()), S::load(y.as_ptr())),
            );
            a[i..n].copy_from_slice(&x[..n - i]);
        }
    }
}

impl RowKernels for Scalar {
    unsafe fn sum_squares(x: &[f32]) -> f32 {
        // SAFETY: the scalar level needs no CPU feature.
        unsafe { sum_squares::<Scalar>(x) }
    }
    unsafe fn silu_mul(a: &mut [f32], b: &[f32]) {
        // SAFETY: as above.
        unsafe { silu_mul::<Scalar>(a, b) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{silu_mul, sum_squares, RowKernels};
    use crate::attention::vector::{Avx2, Avx512};

    /// # Safety
    /// AVX-512 F/BW/VL, AVX2, FMA, F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn sum_squares_avx512(x: &[f32]) -> f32 {
        // SAFETY: the features are enabled here.
        unsafe { sum_squares::<Avx512>(x) }
    }

    /// # Safety
    /// As [`sum_squares_avx512`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn silu_mul_avx512(a: &mut [f32], b: &[f32]) {
        // SAFETY: the features are enabled here.
        unsafe { silu_mul::<Avx512>(a, b) }
    }

    /// # Safety
    /// AVX2, FMA, F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sum_squares_avx2(x: &[f32]) -> f32 {
        // SAFETY: the features are enabled here.
        unsafe { sum_squares::<Avx2>(x) }
    }

    /// # Safety
    /// As [`sum_squares_avx2`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn silu_mul_avx2(a: &mut [f32], b: &[f32]) {
        // SAFETY: the features are enabled here.
        unsafe { silu_mul::<Avx2>(a, b) }
    }

    impl RowKernels for Avx512 {
        unsafe fn sum_squares(x: &[f32]) -> f32 {
            // SAFETY: the caller guarantees the features.
            unsafe { sum_squares_avx512(x) }
        }
        unsafe fn silu_mul(a: &mut [f32], b: &[f32]) {
            // SAFETY: the caller guarantees the features.
            unsafe { silu_mul_avx512(a, b) }
        }
    }

    impl RowKernels for Avx2 {
        unsafe fn sum_squares(x: &[f32]) -> f32 {
            // SAFETY: the caller guarantees the features.
            unsafe { sum_squares_avx2(x) }
        }
        unsafe fn silu_mul(a: &mut [f32], b: &[f32]) {
            // SAFETY: the caller guarantees the features.
            unsafe { silu_mul_avx2(a, b) }
        }
    }
}

/// `Σ x²` of a row with `isa`'s kernel (see [`RowKernels::sum_squares`]).
pub(super) fn row_sum_squares(isa: Isa, x: &[f32]) -> f32 {
    // SAFETY: a backend's `Isa` is one its CPU supports (`CpuBackend::with`).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::attention::vector::Avx512::sum_squares(x),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::attention::vector::Avx2::sum_squares(x),
            _ => Scalar::sum_squares(x),
        }
    }
}

/// `a = silu(a) · b` with `isa`'s kernel (see [`RowKernels::silu_mul`]).
pub(super) fn row_silu_mul(isa: Isa, a: &mut [f32], b: &[f32]) {
    // SAFETY: as in `row_sum_squares`; `silu_mul` stops at the shorter row.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::attention::vector::Avx512::silu_mul(a, b),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::attention::vector::Avx2::silu_mul(a, b),
            _ => Scalar::silu_mul(a, b),
        }
    }
}
