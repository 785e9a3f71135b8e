//! Every format on every ISA against `hal::reference`, and bitwise batch
//! invariance (each row alone vs inside the batch).

use hal::quant::{awq, gguf, gptq};
use hal::{
    ActivationScale, Backend, DType, GgufType, HostTensor, Precision, QuantGemm, QuantGemmArgs,
    QuantWeights, View, ViewMut,
};
use half::f16;

use super::fp8::round_e4m3;
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
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn weights(rng: &mut Rng, name: &str, n: usize, k: usize) -> QuantWeights {
    let g = 32 * (1 + rng.below(2) as usize);
    match name {
        "q4_0" | "q4_1" | "q8_0" => {
            let ty = match name {
                "q4_0" => GgufType::Q4_0,
                "q4_1" => GgufType::Q4_1,
                _ => GgufType::Q8_0,
            };
            let mut data = Vec::new();
            for _ in 0..n {
                let row: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
                data.extend(gguf::quantize_row(ty, &row));
            }
            QuantWeights::Gguf { ty, n, k, data }
        }
        "awq" => {
            let groups = k / g;
            let vals = |rng: &mut Rng, len: usize| -> Vec<u8> {
                (0..len).map(|_| rng.below(16) as u8).collect()
            };
            let qweight = (0..k).flat_map(|_| awq::pack_row(&vals(rng, n))).collect();
            let qzeros = (0..groups)
                .flat_map(|_| awq::pack_row(&vals(rng, n)))
                .collect();
            let scales = (0..groups * n)
                .map(|_| f16::from_f32(0.01 + 0.02 * rng.unit().abs()))
                .collect();
            QuantWeights::Awq {
                group_size: g,
                n,
                k,
                qweight,
                qzeros,
                scales,
            }
        }
        _ => {
            let bits: u8 = if name.starts_with("gptq8") { 8 } else { 4 };
            let act = name.ends_with("act");
            let g = if name.contains("ragged") { 40 } else { g };
            let groups = gptq::num_groups(k, g);
            let q: Vec<u8> = (0..k * n).map(|_| rng.below(1 << bits) as u8).collect();
            let z: Vec<u8> = (0..groups * n)
                .map(|_| 1 + rng.below((1 << bits) - 1) as u8)
                .collect();
            let mut g_idx: Vec<i32> = (0..k).map(|i| (i / g) as i32).collect();
            if act {
                for i in (1..k).rev() {
                    g_idx.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
            QuantWeights::Gptq {
                bits,
                group_size: g,
                n,
                k,
                qweight: gptq::pack_qweight(bits, k, n, &q),
                qzeros: gptq::pack_qzeros(bits, groups, n, &z),
                scales: (0..groups * n)
                    .map(|_| f16::from_f32(0.002 + 0.01 * rng.unit().abs()))
                    .collect(),
                g_idx: Some(g_idx),
            }
        }
    }
}

fn fp8(rng: &mut Rng, n: usize, k: usize, act: ActivationScale, per_channel: bool) -> QuantWeights {
    let weight = (0..n * k)
        .map(|_| hal::fp8::f32_to_e4m3(rng.unit() * 3.0))
        .collect();
    let weight_scale = (0..if per_channel { n } else { 1 })
        .map(|_| 0.01 + 0.02 * rng.unit().abs())
        .collect();
    QuantWeights::Fp8 {
        n,
        k,
        weight,
        weight_scale,
        activation: act,
        input_scale: Some(0.02),
    }
}

fn run(dev: &CpuBackend, w: &hal::PackedWeight, x: &HostTensor, out: DType) -> HostTensor {
    let (m, n) = (x.shape[0], w.n);
    let mut xb = dev.alloc(x.data.len()).unwrap();
    dev.upload(&mut xb, 0, &x.data).unwrap();
    let mut ob = dev.alloc(out.bytes_for(m * n)).unwrap();
    dev.quant_gemm(QuantGemmArgs {
        x: View::new(&xb, x.dtype, &x.shape),
        w,
        bias: None,
        out: ViewMut::new(&mut ob, out, &[m, n]),
        precision: Precision::Exact,
    })
    .unwrap();
    let mut data = vec![0u8; out.bytes_for(m * n)];
    dev.download(&ob, 0, &mut data).unwrap();
    HostTensor {
        dtype: out,
        shape: vec![m, n],
        data,
    }
}

fn check(dev: &CpuBackend, what: &str, qw: &QuantWeights, rng: &mut Rng, m: usize, xdt: DType) {
    let k = qw.k();
    let n = qw.n();
    let packed = dev.pack(qw).unwrap();
    let xv: Vec<f64> = (0..m * k).map(|_| rng.unit() as f64).collect();
    let x = HostTensor::from_f64(xdt, &[m, k], &xv);
    let got = run(dev, &packed, &x, DType::F32).to_f64();
    let want = hal::reference::quant_gemm(&x, qw, None, Precision::Exact, DType::F32).to_f64();
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + scale),
            "{} {what} m{m} n{n} k{k} [{i}]: {g} vs {w}",
            dev.isa()
        );
    }
    let per_tensor = matches!(
        qw,
        QuantWeights::Fp8 {
            activation: ActivationScale::DynamicPerTensor,
            ..
        }
    );
    if per_tensor {
        return;
    }
    let es = xdt.bytes_for(k);
    for r in [0, m / 2, m - 1] {
        let xr = HostTensor {
            dtype: xdt,
            shape: vec![1, k],
            data: x.data[r * es..(r + 1) * es].to_vec(),
        };
        let one = run(dev, &packed, &xr, DType::F32).to_f64();
        for j in 0..n {
            assert_eq!(
                one[j].to_bits(),
                got[r * n + j].to_bits(),
                "{} {what}: row {r} col {j} differs alone vs in a batch of {m}",
                dev.isa()
            );
        }
    }
}

#[test]
fn every_format_every_isa() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for isa in Isa::available() {
        let dev = CpuBackend::with(isa, 2).unwrap();
        for name in [
            "q4_0",
            "q4_1",
            "q8_0",
            "awq",
            "gptq4",
            "gptq4_act",
            "gptq8",
            "gptq8_act",
            "gptq4_ragged",
            "gptq8_ragged_act",
        ] {
            for &(m, n, k, xdt) in &[
                (33, 20, 128, DType::F32),
                (5, 8, 256, DType::F16),
                (1, 37, 64, DType::BF16),
            ] {
                let qw = weights(&mut rng, name, (n as usize).next_multiple_of(8), k);
                check(&dev, name, &qw, &mut rng, m, xdt);
            }
        }
        for act in [
            ActivationScale::Static,
            ActivationScale::DynamicPerTensor,
            ActivationScale::DynamicPerToken,
        ] {
            for &(m, n, k, pc) in &[(33, 19, 100, true), (3, 5, 64, false), (1, 7, 31, true)] {
                let qw = fp8(&mut rng, n, k, act, pc);
                check(&dev, &format!("fp8 {act:?}"), &qw, &mut rng, m, DType::F32);
            }
        }
    }
}

#[test]
fn fp8_nan_weights_stay_nan() {
    let mut rng = Rng(7);
    for isa in Isa::available() {
        let dev = CpuBackend::with(isa, 2).unwrap();
        let mut qw = fp8(&mut rng, 4, 40, ActivationScale::DynamicPerToken, true);
        if let QuantWeights::Fp8 { weight, .. } = &mut qw {
            weight[40 + 3] = 0x7F;
            weight[120 + 35] = 0xFF;
        }
        let packed = dev.pack(&qw).unwrap();
        let x = HostTensor::from_f64(DType::F32, &[2, 40], &vec![0.5; 80]);
        let got = run(&dev, &packed, &x, DType::F32).to_f64();
        for (i, v) in got.iter().enumerate() {
            assert_eq!(
                v.is_nan(),
                i % 4 == 1 || i % 4 == 3,
                "{isa}: output {i} = {v}"
            );
        }
    }
}

#[test]
fn round_e4m3_matches_hal() {
    let mut rng = Rng(42);
    let check = |v: f32| {
        let want = hal::fp8::e4m3_to_f32(hal::fp8::f32_to_e4m3(v));
        let got = round_e4m3(v);
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{v:e} ({:#x}): {got} vs {want}",
            v.to_bits()
        );
    };
    for b in 0..=255u8 {
        let v = hal::fp8::e4m3_to_f32(b);
        for d in [-2i32, -1, 0, 1, 2] {
            check(f32::from_bits((v.to_bits() as i32).wrapping_add(d) as u32));
        }
    }
    for _ in 0..2_000_000 {
        let r = rng.next();
        check(f32::from_bits(r as u32));
        check(f32::from_bits(
            ((r >> 32) as u32 & 0x83FF_FFFF) | 0x3800_0000,
        ));
        check(f32::from_bits(
            ((r >> 32) as u32 & 0x807F_FFFF) | (((r & 31) as u32 + 112) << 23),
        ));
    }
}

#[test]
fn dequantize_row_matches_the_format() {
    let mut rng = Rng(3);
    let dev = CpuBackend::with(Isa::Scalar, 1).unwrap();
    for name in ["q4_0", "q4_1", "q8_0"] {
        let qw = weights(&mut rng, name, 3, 96);
        let packed = dev.pack(&qw).unwrap();
        let mut row = vec![0f32; 96];
        super::dequantize_row(dev.access(), &packed, 2, &mut row).unwrap();
        for (c, v) in row.iter().enumerate() {
            assert_eq!(*v as f64, qw.weight(2, c), "{name} col {c}");
        }
        assert!(super::dequantize_row(dev.access(), &packed, 3, &mut row).is_err());
    }
}
