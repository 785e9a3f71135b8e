//! Dense GEMM `out[M, N] = x[M, K] · w[N, K]ᵀ + bias[N]` for F32, F16 and
//! BF16 inputs (w in x's dtype), any activation dtype out and bias, f32
//! accumulation.
//!
//! The weight is read in place (row-major `[N, K]`, no repacking): each
//! output is a dot product of an x row with a w row in the fixed order of
//! [`crate::simd`], so results are batch-invariant. Half-precision weights
//! are widened to f32 in registers, a 32-element step at a time.

use hal::{DType, GemmArgs, OpDesc, Result, Unsupported};

use crate::simd::{self, Epilogue, Weights, STEP};
use crate::CpuBackend;

/// Which descriptions this module runs: every dtype the capabilities allow.
pub(crate) fn supports(op: &OpDesc) -> Result<(), Unsupported> {
    match op {
        OpDesc::Gemm { .. } => Ok(()),
        _ => Err(Unsupported::new(op.name(), "not a gemm")),
    }
}

impl hal::Gemm for CpuBackend {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        let (m, n, k) = args.validate("cpu")?;
        self.check(&args.desc())?;
        let (isa, acc) = (self.isa(), self.access());
        let xb = acc.read_bytes("gemm", &args.x)?;
        let wb = acc.read_bytes("gemm", &args.w)?;
        let bias = match &args.bias {
            Some(b) => Some(simd::vec_f32(isa, b.dtype, acc.read_bytes("gemm", b)?, n)),
            None => None,
        };
        let (x, stride) = simd::rows_f32(isa, args.x.dtype, xb, m, k);
        let epi = Epilogue {
            post: None,
            bias: bias.as_deref(),
        };
        let dtype = args.x.dtype;
        let out_dtype = args.out.dtype;
        let out = acc.write::<u8>("gemm", args.out)?;
        simd::with_out_f32(isa, out_dtype, out, m * n, |o| {
            let pool = self.pool();
            match dtype {
                DType::F16 => {
                    simd::run_isa(isa, pool, Dense::<F16>::new(wb, n, k), &x, stride, epi, o)
                }
                DType::BF16 => {
                    simd::run_isa(isa, pool, Dense::<BF16>::new(wb, n, k), &x, stride, epi, o)
                }
                _ => simd::run_isa(isa, pool, Dense::<F32>::new(wb, n, k), &x, stride, epi, o),
            }
        });
        Ok(())
    }
}

/// Element encodings of a dense weight.
const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// A dense row-major `[N, K]` weight of encoding `E` ([`F32`], [`F16`],
/// [`BF16`]), read in place.
struct Dense<'a, const E: u8> {
    /// Little-endian elements, at least `n · k` of them.
    w: &'a [u8],
    n: usize,
    k: usize,
}

impl<'a, const E: u8> Dense<'a, E> {
    const ESIZE: usize = if E == F32 { 4 } else { 2 };

    fn new(w: &'a [u8], n: usize, k: usize) -> Self {
        assert!(
            w.len() >= n * k * Self::ESIZE,
            "weight view shorter than [N, K]"
        );
        Dense { w, n, k }
    }

    /// First byte of step `s` of row `n`, and how many of its 32 elements exist.
    #[inline(always)]
    fn at(&self, n: usize, s: usize) -> (*const u8, usize) {
        let first = n * self.k + s * STEP;
        // SAFETY (for callers): `first` is within the weight for n < N, s < steps.
        (
            self.w[first * Self::ESIZE..].as_ptr(),
            (self.k - s * STEP).min(STEP),
        )
    }

    /// Step `s` of row `n` with the elements past K zeroed, as raw bytes.
    #[inline(always)]
    fn padded(&self, n: usize, s: usize) -> [u8; 4 * STEP] {
        let (p, len) = self.at(n, s);
        let mut buf = [0u8; 4 * STEP];
        // SAFETY: `len` elements from `p` are inside the weight.
        let src = unsafe { std::slice::from_raw_parts(p, len * Self::ESIZE) };
        buf[..src.len()].copy_from_slice(src);
        buf
    }
}

impl<const E: u8> Weights for Dense<'_, E> {
    fn rows(&self) -> usize {
        self.n
    }
    fn steps(&self) -> usize {
        self.k.div_ceil(STEP)
    }
}

impl<const E: u8> simd::scalar::BlockScalar for Dense<'_, E> {
    fn block(&self, n: usize, s: usize, out: &mut [f32; STEP]) {
        let (_, len) = self.at(n, s);
        let first = (n * self.k + s * STEP) * Self::ESIZE;
        let src = &self.w[first..first + len * Self::ESIZE];
        for (o, e) in out.iter_mut().zip(src.chunks_exact(Self::ESIZE)) {
            *o = match E {
                F32 => f32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                F16 => half::f16::from_le_bytes([e[0], e[1]]).to_f32(),
                _ => half::bf16::from_le_bytes([e[0], e[1]]).to_f32(),
            };
        }
        out[len..].fill(0.0);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Dense, F16, F32};
    use crate::simd::avx2::Block256;
    use crate::simd::avx512::{self, Block512};
    use crate::simd::STEP;

    impl<const E: u8> Block512 for Dense<'_, E> {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m512; 2] {
            let (p, len) = self.at(n, s);
            let (m0, m1) = (avx512::lanes(len), avx512::lanes(len.saturating_sub(16)));
            // SAFETY: masked loads touch only the `len` elements that exist.
            unsafe {
                match E {
                    F32 => {
                        let p = p as *const f32;
                        [
                            _mm512_maskz_loadu_ps(m0, p),
                            _mm512_maskz_loadu_ps(m1, p.add(16)),
                        ]
                    }
                    F16 => {
                        let p = p as *const i16;
                        [
                            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m0, p)),
                            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m1, p.add(16))),
                        ]
                    }
                    _ => {
                        let p = p as *const i16;
                        [
                            bf16_512(_mm256_maskz_loadu_epi16(m0, p)),
                            bf16_512(_mm256_maskz_loadu_epi16(m1, p.add(16))),
                        ]
                    }
                }
            }
        }
    }

    impl<const E: u8> Block256 for Dense<'_, E> {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(&self, n: usize, s: usize) -> [__m256; 4] {
            let (p, len) = self.at(n, s);
            if len < STEP {
                let buf = self.padded(n, s);
                // SAFETY: `buf` holds a whole step.
                return unsafe { load8x4::<E>(buf.as_ptr()) };
            }
            // SAFETY: the whole step exists.
            unsafe { load8x4::<E>(p) }
        }
    }

    /// 16 bf16 bit patterns widened to f32 (exact).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn bf16_512(h: __m256i) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// 8 bf16 bit patterns widened to f32 (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn bf16_256(h: __m128i) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }

    /// 32 elements of encoding `E` at `p` as four vectors of 8 f32.
    ///
    /// # Safety
    /// AVX2, F16C; `p` valid for 32 elements.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8x4<const E: u8>(p: *const u8) -> [__m256; 4] {
        // SAFETY: 32 elements from `p` are readable.
        unsafe {
            match E {
                F32 => {
                    let p = p as *const f32;
                    [
                        _mm256_loadu_ps(p),
                        _mm256_loadu_ps(p.add(8)),
                        _mm256_loadu_ps(p.add(16)),
                        _mm256_loadu_ps(p.add(24)),
                    ]
                }
                F16 => {
                    let h = |i: usize| _mm_loadu_si128(p.add(16 * i) as *const __m128i);
                    [
                        _mm256_cvtph_ps(h(0)),
                        _mm256_cvtph_ps(h(1)),
                        _mm256_cvtph_ps(h(2)),
                        _mm256_cvtph_ps(h(3)),
                    ]
                }
                _ => {
                    let h = |i: usize| _mm_loadu_si128(p.add(16 * i) as *const __m128i);
                    [
                        bf16_256(h(0)),
                        bf16_256(h(1)),
                        bf16_256(h(2)),
                        bf16_256(h(3)),
                    ]
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hal::{Backend, Gemm, GemmArgs, HostTensor, View, ViewMut};

    use super::*;
    use crate::isa::Isa;

    fn rand(seed: &mut u64, len: usize) -> Vec<f64> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    /// `x · wᵀ` on `dev`, as f64.
    fn run(
        dev: &CpuBackend,
        dt: DType,
        odt: DType,
        x: &HostTensor,
        w: &HostTensor,
        bias: Option<&HostTensor>,
    ) -> HostTensor {
        let (m, n) = (x.shape[0], w.shape[0]);
        let up = |t: &HostTensor| {
            let mut b = dev.alloc(t.data.len()).unwrap();
            dev.upload(&mut b, 0, &t.data).unwrap();
            b
        };
        let (xb, wb) = (up(x), up(w));
        let bb = bias.map(up);
        let mut ob = dev.alloc(odt.bytes_for(m * n)).unwrap();
        dev.gemm(GemmArgs {
            x: View::new(&xb, dt, &x.shape),
            w: View::new(&wb, dt, &w.shape),
            bias: bb.as_ref().map(|b| View::new(b, bias.unwrap().dtype, &[n])),
            out: ViewMut::new(&mut ob, odt, &[m, n]),
        })
        .unwrap();
        let mut data = vec![0u8; odt.bytes_for(m * n)];
        dev.download(&ob, 0, &mut data).unwrap();
        HostTensor {
            dtype: odt,
            shape: vec![m, n],
            data,
        }
    }

    #[test]
    fn matches_reference_and_is_batch_invariant() {
        let mut seed = 0x1234_5678_9abc_def0;
        for isa in Isa::available() {
            let dev = CpuBackend::with(isa, 2).unwrap();
            for &(dt, m, n, k) in &[
                (DType::F32, 33, 37, 100),
                (DType::F16, 5, 9, 64),
                (DType::BF16, 33, 13, 129),
                (DType::F32, 1, 1, 1),
                (DType::F32, 3, 5, 0),
            ] {
                let x = HostTensor::from_f64(dt, &[m, k], &rand(&mut seed, m * k));
                let w = HostTensor::from_f64(dt, &[n, k], &rand(&mut seed, n * k));
                let b = HostTensor::from_f64(DType::F32, &[n], &rand(&mut seed, n));
                let got = run(&dev, dt, DType::F32, &x, &w, Some(&b)).to_f64();
                let want = hal::reference::gemm(&x, &w, Some(&b), DType::F32).to_f64();
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{isa} {dt} {m}x{n}x{k}: {g} vs {w}"
                    );
                }
                for r in 0..m {
                    let xr = HostTensor {
                        dtype: dt,
                        shape: vec![1, k],
                        data: x.data[r * dt.bytes_for(k)..(r + 1) * dt.bytes_for(k)].to_vec(),
                    };
                    let one = run(&dev, dt, DType::F32, &xr, &w, Some(&b)).to_f64();
                    for j in 0..n {
                        assert_eq!(
                            one[j].to_bits(),
                            got[r * n + j].to_bits(),
                            "{isa} {dt} row {r} col {j}"
                        );
                    }
                }
            }
        }
    }
}
