//! f32 vectors per ISA: the one abstraction the attention kernels and the
//! small elementwise ops are written against, plus loads of KV-cache
//! elements (f32, f16, bf16, FP8 E4M3) as f32 vectors.
//!
//! Every kernel is generic over a [`Simd`] level and monomorphised into one
//! `#[target_feature]` entry point per ISA; the methods here are
//! `#[inline(always)]` so they compile with the entry point's features. A
//! level's results are deterministic: a lane's arithmetic never depends on
//! what the other lanes hold, and [`Simd::sum`] / [`Simd::max`] reduce lanes in
//! a fixed order. Different levels may differ in the last bits (FMA versus
//! separate multiply and add, polynomial versus libm `exp`).

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

/// Most lanes any level has (AVX-512: 16 f32).
pub(crate) const MAX_LANES: usize = 16;

/// One SIMD level: an f32 vector type and its operations.
///
/// # Safety (all methods)
/// The CPU must support the level's instructions (guaranteed when the level
/// comes from [`crate::Isa::available`]); pointer arguments must be valid
/// for [`Simd::LANES`] f32 reads or writes.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// The vector of [`Simd::LANES`] f32.
    type V: Copy;
    /// f32 lanes per vector.
    const LANES: usize;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// Load `LANES` f32 (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Store `LANES` f32 (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, fused where the level has FMA.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise division `a / b`.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum (either operand when one is NaN).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Largest lane (NaN lanes may be ignored).
    unsafe fn max_lane(v: Self::V) -> f32;
    /// Sum of the lanes, in a fixed order.
    unsafe fn sum(v: Self::V) -> f32;
    /// `out[i] = Self::sum(v[i])` for every `i`, bit for bit the same
    /// additions; levels reduce `LANES` vectors at once with shuffles.
    #[inline(always)]
    unsafe fn sum_each(v: &[Self::V], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(v) {
            // SAFETY: forwarded from the caller.
            *o = unsafe { Self::sum(x) };
        }
    }
    /// `e^x` per lane (relative error a few ulp; `-inf` → 0, NaN → NaN,
    /// overflow → `+inf`).
    unsafe fn exp(x: Self::V) -> Self::V;
}

/// The portable level: 8 lanes as a plain array, no intrinsics (LLVM may
/// still vectorise it with SSE2). Multiply and add are separate roundings;
/// `exp` is libm's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = [f32; 8];
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 8 writable f32 at `p`.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], v) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] / b[i])
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i].max(b[i]))
    }
    #[inline(always)]
    unsafe fn max_lane(v: Self::V) -> f32 {
        v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
    }
    #[inline(always)]
    unsafe fn sum(v: Self::V) -> f32 {
        ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
    }
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        std::array::from_fn(|i| x[i].exp())
    }
}

/// A KV-cache (or dense K/V) element type.
pub(crate) trait KvElem: Pod + Default + Send + Sync + 'static {
    /// The element as f32 (before any FP8 scale).
    fn to_f32(self) -> f32;
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl KvElem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// An FP8 E4M3 (`e4m3fn`) code as stored in a cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub(crate) struct E4m3(pub u8);

/// E4M3 → f32, exact: the 7 magnitude bits placed at the top of an f32's
/// exponent/mantissa and rescaled by 2^(127 − 7) (which also handles
/// subnormals), `S.1111.111` → NaN.
const fn e4m3_decode(b: u8) -> f32 {
    let mag = b & 0x7F;
    if mag == 0x7F {
        return f32::NAN;
    }
    let v = f32::from_bits((mag as u32) << 20) * E4M3_REBIAS;
    if b & 0x80 != 0 {
        -v
    } else {
        v
    }
}

/// 2^120: moves an E4M3 exponent (bias 7) placed in an f32 (bias 127).
const E4M3_REBIAS: f32 = f32::from_bits((127 + 120) << 23);
/// The same re-bias as an integer added to the bits of a normal code
/// placed in an f32 (`mag << 20`).
#[cfg(target_arch = "x86_64")]
const E4M3_BIAS_BITS: i32 = 120 << 23;
/// Value of the smallest E4M3 subnormal, 2^-9.
#[cfg(target_arch = "x86_64")]
const E4M3_SUBNORMAL: f32 = 1.0 / 512.0;

/// Every E4M3 code decoded.
static E4M3_TABLE: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = e4m3_decode(i as u8);
        i += 1;
    }
    t
};

impl KvElem for E4m3 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        E4M3_TABLE[self.0 as usize]
    }
}

/// `x` → E4M3 code, round to nearest even, saturating to ±448 (infinities
/// too), NaN → NaN: bit-exact with [`hal::fp8::f32_to_e4m3`], without its
/// f64 arithmetic.
pub(crate) fn e4m3_encode(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return sign | 0x7F;
    }
    if abs >= 0x43E0_0000 {
        // ≥ 448 (and inf): saturate.
        return sign | 0x7E;
    }
    if abs < 0x3C80_0000 {
        // Below 2^-6: subnormal quanta of 2^-9 (8 rounds up to the smallest normal).
        let q = (f32::from_bits(abs) * 512.0).round_ties_even();
        return sign | q as u8;
    }
    // Normal: keep 3 mantissa bits, round to nearest even, re-bias 127 → 7.
    let r = (abs + 0x7_FFFF + ((abs >> 20) & 1)) >> 20;
    let code = r - (120 << 3);
    sign | code.min(0x7E) as u8
}

/// Loading `S::LANES` elements as an f32 vector.
pub(crate) trait Load<S: Simd>: KvElem {
    /// Load `S::LANES` elements from `p`.
    ///
    /// # Safety
    /// As [`Simd`]; `p` valid for `S::LANES` element reads.
    unsafe fn load(p: *const Self) -> S::V;

    /// Load `n < S::LANES` elements from `p`, the other lanes zero.
    ///
    /// # Safety
    /// As [`Simd`]; `p` valid for `n` element reads.
    #[inline(always)]
    unsafe fn load_partial(p: *const Self, n: usize) -> S::V {
        let mut buf = [Self::default(); MAX_LANES];
        // SAFETY: `n < LANES ≤ MAX_LANES` elements are readable at `p`.
        unsafe {
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n.min(MAX_LANES));
            Self::load(buf.as_ptr())
        }
    }
}

impl<E: KvElem> Load<Scalar> for E {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        let e = unsafe { std::ptr::read_unaligned(p as *const [E; 8]) };
        std::array::from_fn(|i| e[i].to_f32())
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(test)]
mod tests;
