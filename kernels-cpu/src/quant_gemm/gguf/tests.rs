//! GGUF kernels: every ISA path against the scalar path (bitwise — the
//! arithmetic is the same on every path) and against `hal::reference`
//! (within the HAL's budgets), bitwise batch invariance across M, tiles and
//! thread counts, and the activation quantiser against the reference's.

use std::sync::Mutex;

use hal::conformance::{compare, Budget};
use hal::quant::gguf;
use hal::{
    Backend, DType, GgufType, HostTensor, OpDesc, PackedWeight, Precision, QuantGemm,
    QuantGemmArgs, QuantSpec, QuantWeights, View, ViewMut,
};

use super::activations::{ExactRows, Int8Rows};
use super::{Sink, Strips, BLOCK, Q4_0, Q4_1, Q8_0};
use crate::isa::Isa;
use crate::CpuBackend;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

const TYPES: [GgufType; 3] = [GgufType::Q4_0, GgufType::Q4_1, GgufType::Q8_0];
const PRECISIONS: [Precision; 2] = [Precision::Exact, Precision::Int8Activations];

fn weights(rng: &mut Rng, ty: GgufType, n: usize, k: usize) -> QuantWeights {
    let mut data = Vec::new();
    for _ in 0..n {
        let row: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
        data.extend(gguf::quantize_row(ty, &row));
    }
    QuantWeights::Gguf { ty, n, k, data }
}

/// `x · w` on `dev` (out f32), with an optional f32 bias.
fn run(
    dev: &CpuBackend,
    w: &PackedWeight,
    x: &HostTensor,
    bias: Option<&HostTensor>,
    precision: Precision,
) -> Vec<f32> {
    let (m, n) = (x.shape[0], w.n);
    let mut xb = dev.alloc(x.data.len()).unwrap();
    dev.upload(&mut xb, 0, &x.data).unwrap();
    let bb = bias.map(|b| {
        let mut buf = dev.alloc(b.data.len()).unwrap();
        dev.upload(&mut buf, 0, &b.data).unwrap();
        buf
    });
    let mut ob = dev.alloc(4 * m * n).unwrap();
    dev.quant_gemm(QuantGemmArgs {
        x: View::new(&xb, x.dtype, &x.shape),
        w,
        bias: bb.as_ref().map(|b| View::new(b, DType::F32, &[n])),
        out: ViewMut::new(&mut ob, DType::F32, &[m, n]),
        precision,
    })
    .unwrap();
    let mut data = vec![0u8; 4 * m * n];
    dev.download(&ob, 0, &mut data).unwrap();
    bytemuck::cast_slice(&data).to_vec()
}

/// Rows `start..start + len` of `x`.
fn rows(x: &HostTensor, start: usize, len: usize) -> HostTensor {
    let es = x.dtype.bytes_for(x.shape[1]);
    HostTensor {
        dtype: x.dtype,
        shape: vec![len, x.shape[1]],
        data: x.data[start * es..(start + len) * es].to_vec(),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn every_path_matches_scalar_bitwise_and_the_reference() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let scalar = CpuBackend::with(Isa::Scalar, 2).unwrap();
    // (M, N, K, x dtype, bias): N not a multiple of 16, odd block counts,
    // M crossing every row-tile size.
    let shapes = [
        (1, 16, 32, DType::F32, false),
        (3, 40, 96, DType::F32, true),
        (7, 130, 160, DType::F16, false),
        (9, 72, 64, DType::BF16, true),
        (17, 33, 128, DType::F32, false),
        (33, 48, 96, DType::F32, true),
    ];
    for ty in TYPES {
        for &(m, n, k, xdt, with_bias) in &shapes {
            let qw = weights(&mut rng, ty, n, k);
            let xv: Vec<f64> = (0..m * k).map(|_| 2.0 * rng.unit() as f64).collect();
            let x = HostTensor::from_f64(xdt, &[m, k], &xv);
            let bv: Vec<f64> = (0..n).map(|_| rng.unit() as f64).collect();
            let bias = with_bias.then(|| HostTensor::from_f64(DType::F32, &[n], &bv));
            for precision in PRECISIONS {
                let packed = scalar.pack(&qw).unwrap();
                let want = run(&scalar, &packed, &x, bias.as_ref(), precision);
                let reference =
                    hal::reference::quant_gemm(&x, &qw, bias.as_ref(), precision, DType::F32);
                let budget = match precision {
                    Precision::Exact => Budget::quant_weights(DType::F32),
                    Precision::Int8Activations => Budget::int8_activations(DType::F32),
                };
                let got64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                if let Err(e) = compare(&got64, &reference.to_f64(), &budget) {
                    panic!(
                        "scalar {} {} m{m} n{n} k{k}: {e}",
                        ty.name(),
                        precision.name()
                    );
                }
                for isa in Isa::available() {
                    let dev = CpuBackend::with(isa, 2).unwrap();
                    let packed = dev.pack(&qw).unwrap();
                    let got = run(&dev, &packed, &x, bias.as_ref(), precision);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{isa} {} {} m{m} n{n} k{k}: differs from scalar",
                        ty.name(),
                        precision.name()
                    );
                }
            }
        }
    }
}

#[test]
fn rows_give_the_same_bits_whatever_shares_their_batch() {
    let mut rng = Rng(0x0dd_ba11);
    let (m, n, k) = (37, 200, 192);
    for isa in Isa::available() {
        let devs: Vec<CpuBackend> = [1, 2, 3]
            .iter()
            .map(|&t| CpuBackend::with(isa, t).unwrap())
            .collect();
        for ty in TYPES {
            let qw = weights(&mut rng, ty, n, k);
            let xv: Vec<f64> = (0..m * k).map(|_| rng.unit() as f64).collect();
            let x = HostTensor::from_f64(DType::F32, &[m, k], &xv);
            for precision in PRECISIONS {
                let packed = devs[1].pack(&qw).unwrap();
                let full = bits(&run(&devs[1], &packed, &x, None, precision));
                for dev in [&devs[0], &devs[2]] {
                    let own = dev.pack(&qw).unwrap();
                    assert_eq!(
                        bits(&run(dev, &own, &x, None, precision)),
                        full,
                        "{isa} {} {}: {} threads differ from 2",
                        ty.name(),
                        precision.name(),
                        dev.threads()
                    );
                }
                // Every sub-batch length 1..=9 at several offsets, and a few
                // long ones, so each row lands in every tile shape and slot.
                let mut subsets: Vec<(usize, usize)> = (1..=9)
                    .flat_map(|len| [0, 1, 3, 5].map(|s| (s, len)))
                    .collect();
                subsets.extend([(0, 16), (2, 17), (4, 33), (20, 17)]);
                for (start, len) in subsets {
                    let got = bits(&run(
                        &devs[1],
                        &packed,
                        &rows(&x, start, len),
                        None,
                        precision,
                    ));
                    assert_eq!(
                        got[..],
                        full[start * n..(start + len) * n],
                        "{isa} {} {}: rows {start}..{} differ alone vs in a batch of {m}",
                        ty.name(),
                        precision.name(),
                        start + len
                    );
                }
            }
        }
    }
}

#[test]
fn quantiser_matches_the_reference_on_every_isa() {
    let mut rng = Rng(99);
    let k = 32 * 12;
    let mut x: Vec<f32> = (0..3 * k).map(|_| rng.unit() * 3.0).collect();
    // Block 0: d = 1 exactly, so x · (1/d) hits the .5 ties of round().
    x[0] = 127.0;
    for (j, v) in [2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 1.4999999, -0.49999997]
        .into_iter()
        .enumerate()
    {
        x[1 + j] = v;
    }
    // Block 1 all zeros (d = 0), block 2 tiny values (f16 subnormal d).
    x[32..64].fill(0.0);
    for v in &mut x[64..96] {
        *v *= 1e-6;
    }
    let blocks = x.len() / BLOCK;
    let mut want = vec![0i8; x.len()];
    let (mut wd, mut ws, mut wsx) = (vec![0f32; blocks], vec![0i32; blocks], vec![0f32; blocks]);
    super::scalar::quantize(&x, &mut want, &mut wd, &mut ws, &mut wsx);
    assert_eq!(&want[1..9], &[3, -3, 1, -1, 127, -127, 1, 0]);
    for row in 0..3 {
        let r = hal::reference::int8_activation_row(&x[row * k..(row + 1) * k]);
        for (j, v) in r.iter().enumerate() {
            let i = row * k + j;
            assert_eq!(*v, want[i] as f64 * wd[i / BLOCK] as f64, "element {i}");
        }
    }
    for isa in Isa::available() {
        let mut q = vec![0i8; x.len()];
        let (mut d, mut s, mut sx) = (vec![0f32; blocks], vec![0i32; blocks], vec![0f32; blocks]);
        super::activations::quantize(isa, &x, &mut q, &mut d, &mut s, &mut sx);
        assert_eq!(q, want, "{isa}: q");
        assert_eq!(bits(&d), bits(&wd), "{isa}: d");
        assert_eq!(s, ws, "{isa}: Σq");
        assert_eq!(bits(&sx), bits(&wsx), "{isa}: d·Σq");
    }
}

/// Collects kernel output `[M, N]` (f32) for direct kernel calls.
struct Collect {
    n: usize,
    out: Mutex<Vec<f32>>,
}

impl Sink for Collect {
    fn put(&self, row: usize, col0: usize, v: &[f32]) {
        let mut o = self.out.lock().unwrap();
        for (c, &val) in v.iter().enumerate() {
            if col0 + c < self.n {
                o[row * self.n + col0 + c] = val;
            }
        }
    }
}

/// Each kernel of every instruction set this CPU has, called directly —
/// including the AVX2 int8 kernel without AVX-VNNI, which the dispatch
/// skips on a CPU that has it — against the scalar kernel, bitwise.
#[test]
fn every_kernel_variant_matches_scalar() {
    let mut rng = Rng(4242);
    let dev = CpuBackend::with(Isa::Scalar, 1).unwrap();
    let (m, n, k) = (11, 72, 160);
    let blocks = k / BLOCK;
    let xf: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
    let sums: Vec<f32> = xf
        .chunks_exact(BLOCK)
        .map(|b| super::block_sum(b.try_into().unwrap()))
        .collect();
    let mut q = vec![0i8; m * k];
    let (mut d, mut qs, mut sx) = (
        vec![0f32; m * blocks],
        vec![0i32; m * blocks],
        vec![0f32; m * blocks],
    );
    super::scalar::quantize(&xf, &mut q, &mut d, &mut qs, &mut sx);
    let exact_rows = ExactRows {
        x: &xf,
        k,
        sums: &sums,
    };
    let int8_rows = Int8Rows {
        q: &q,
        k,
        d: &d,
        qsum: &qs,
        sx: &sx,
    };
    for ty in TYPES {
        let t = match ty {
            GgufType::Q4_0 => Q4_0,
            GgufType::Q4_1 => Q4_1,
            GgufType::Q8_0 => Q8_0,
        };
        let qw = weights(&mut rng, ty, n, k);
        let packed = dev.pack(&qw).unwrap();
        let data = dev.access().buffer_bytes("test", &packed.parts[0]).unwrap();
        let st = Strips::new(t, data, n, k).unwrap();
        let collect = |f: &dyn Fn(&Collect)| {
            let c = Collect {
                n,
                out: Mutex::new(vec![f32::NAN; m * n]),
            };
            f(&c);
            bits(&c.out.into_inner().unwrap())
        };
        let exact = |kern: super::ExactKernel| {
            collect(&|c: &Collect| kern(&st, &exact_rows, 0..m, 0..st.strips, c))
        };
        let int8 = |kern: super::Int8Kernel| {
            collect(&|c: &Collect| kern(&st, &int8_rows, 0..m, 0..st.strips, c))
        };
        let want_exact = exact(super::exact_kernel(Isa::Scalar, t));
        let want_int8 = int8(super::int8_kernel(Isa::Scalar, t));
        let mut variants: Vec<(&str, Vec<u32>, Vec<u32>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use super::{avx2, avx512};
            if avx2::detected() {
                let (e, i): (super::ExactKernel, super::Int8Kernel) = match t {
                    Q4_0 => (avx2::exact::<Q4_0>, avx2::int8::<Q4_0, false>),
                    Q4_1 => (avx2::exact::<Q4_1>, avx2::int8::<Q4_1, false>),
                    _ => (avx2::exact::<Q8_0>, avx2::int8::<Q8_0, false>),
                };
                variants.push(("avx2", exact(e), int8(i)));
            }
            if avx2::detected_vnni() {
                let i: super::Int8Kernel = match t {
                    Q4_0 => avx2::int8::<Q4_0, true>,
                    Q4_1 => avx2::int8::<Q4_1, true>,
                    _ => avx2::int8::<Q8_0, true>,
                };
                variants.push(("avx2+vnni", want_exact.clone(), int8(i)));
            }
            if avx512::detected_vnni() {
                let (e, i): (super::ExactKernel, super::Int8Kernel) = match t {
                    Q4_0 => (avx512::exact::<Q4_0>, avx512::int8::<Q4_0>),
                    Q4_1 => (avx512::exact::<Q4_1>, avx512::int8::<Q4_1>),
                    _ => (avx512::exact::<Q8_0>, avx512::int8::<Q8_0>),
                };
                variants.push(("avx512", exact(e), int8(i)));
            }
        }
        for (name, e, i) in variants {
            assert_eq!(e, want_exact, "{name} exact {}", ty.name());
            assert_eq!(i, want_int8, "{name} int8 {}", ty.name());
        }
    }
}

#[test]
fn int8_is_offered_for_gguf_awq_gptq_not_fp8() {
    let dev = CpuBackend::with(Isa::Scalar, 1).unwrap();
    assert!(dev
        .capabilities()
        .precisions
        .contains(&Precision::Int8Activations));
    let desc = |spec: QuantSpec| OpDesc::QuantGemm {
        spec,
        input: DType::F32,
        output: DType::F32,
        precision: Precision::Int8Activations,
        n: 64,
        k: 128,
    };
    for ty in TYPES {
        assert!(dev.supports(&desc(QuantSpec::Gguf(ty))).is_ok());
    }
    let awq = QuantWeights::Awq {
        group_size: 32,
        n: 8,
        k: 32,
        qweight: vec![0; 32],
        qzeros: vec![0; 1],
        scales: vec![half::f16::ONE; 8],
    };
    assert!(dev.supports(&desc(awq.spec())).is_ok());
    let fp8 = QuantSpec::Fp8 {
        weight_scale: hal::ScaleGranularity::PerChannel,
        activation: hal::ActivationScale::DynamicPerToken,
    };
    let why = dev.supports(&desc(fp8)).unwrap_err().to_string();
    assert!(why.contains("FP8") && why.contains("Exact"), "{why}");
}

#[test]
fn dequantized_rows_match_the_checkpoint() {
    let mut rng = Rng(17);
    let dev = CpuBackend::with(Isa::Scalar, 1).unwrap();
    for ty in TYPES {
        let (n, k) = (37, 96);
        let qw = weights(&mut rng, ty, n, k);
        let packed = dev.pack(&qw).unwrap();
        let mut row = vec![0f32; k];
        for r in [0, 15, 16, 36] {
            crate::quant_gemm::dequantize_row(dev.access(), &packed, r, &mut row).unwrap();
            for (c, v) in row.iter().enumerate() {
                assert_eq!(*v as f64, qw.weight(r, c), "{} [{r}, {c}]", ty.name());
            }
        }
        assert!(crate::quant_gemm::dequantize_row(dev.access(), &packed, n, &mut row).is_err());
    }
}
