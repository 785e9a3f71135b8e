//! Round-to-nearest quantisation: integer grids per group, the AWQ and
//! GPTQ packings, GGUF Q4_0 / Q8_0 blocks and FP8 e4m3 with a per-tensor
//! scale. GPTQ and AWQ reuse the grid fitting here.

use hal::quant::{awq, gptq};
use hal::{ActivationScale, GgufType, QuantWeights};
use half::f16;

use super::linalg::Mat;

/// The integer grid of one group: `w ≈ scale · (q − zero)`, `q ∈ 0..=maxq`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// Step, as stored (f16).
    pub scale: f16,
    /// Zero point.
    pub zero: u32,
    /// Largest code, `2^bits − 1`.
    pub maxq: u32,
}

impl Grid {
    /// Fit a grid to `values` as GPTQ's quantiser does: the range always
    /// holds 0; symmetric grids centre on `(maxq + 1) / 2`. The step is
    /// rounded to f16 first so codes are chosen against the stored scale.
    /// `min_zero` keeps zero points at or above it (1 for GPTQ v1, whose
    /// stored `zero − 1` cannot hold −1).
    pub fn fit(values: impl Iterator<Item = f32>, bits: u8, sym: bool, min_zero: u32) -> Grid {
        let maxq = (1u32 << bits) - 1;
        let (mut lo, mut hi) = (0f32, 0f32);
        for v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if sym {
            let m = hi.max(-lo);
            lo = -m;
            hi = m;
        }
        let mut step = (hi - lo) / maxq as f32;
        if step.is_nan() || step <= 0.0 || !step.is_finite() {
            step = 1.0;
        }
        let mut scale = f16::from_f32(step);
        if scale.to_f32() <= 0.0 {
            scale = f16::from_f32(1e-5);
        }
        let s = scale.to_f32();
        let zero = if sym {
            maxq.div_ceil(2)
        } else {
            ((-lo / s).round_ties_even().max(0.0) as u32).clamp(min_zero, maxq)
        };
        Grid { scale, zero, maxq }
    }

    /// The code of `v`.
    pub fn code(&self, v: f32) -> u32 {
        let q = (v / self.scale.to_f32()).round_ties_even() + self.zero as f32;
        q.clamp(0.0, self.maxq as f32) as u32
    }

    /// The value code `q` stands for.
    pub fn value(&self, q: u32) -> f32 {
        self.scale.to_f32() * (q as f32 - self.zero as f32)
    }
}

/// A weight quantised on integer grids per group of K, in the layouts the
/// packers take: codes `[K, N]`, scales and zero points `[G, N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct IntQuant {
    /// Bits per code.
    pub bits: u8,
    /// Rows of K per group.
    pub group_size: usize,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Codes, `[K, N]`.
    pub codes: Vec<u8>,
    /// Steps, `[G, N]`.
    pub scales: Vec<f16>,
    /// Zero points, `[G, N]`.
    pub zeros: Vec<u8>,
    /// Group of each input row (`None`: `k / group_size`).
    pub g_idx: Option<Vec<i32>>,
}

impl IntQuant {
    /// Round-to-nearest of `w` `[N, K]` with groups of `group_size` along K.
    pub fn rtn(w: &Mat, bits: u8, group_size: usize, sym: bool, min_zero: u32) -> IntQuant {
        let (n, k) = (w.rows, w.cols);
        let groups = k.div_ceil(group_size);
        let mut codes = vec![0u8; k * n];
        let mut scales = vec![f16::ZERO; groups * n];
        let mut zeros = vec![0u8; groups * n];
        for row in 0..n {
            let r = w.row(row);
            for g in 0..groups {
                let cols = g * group_size..((g + 1) * group_size).min(k);
                let grid = Grid::fit(r[cols.clone()].iter().copied(), bits, sym, min_zero);
                scales[g * n + row] = grid.scale;
                zeros[g * n + row] = grid.zero as u8;
                for c in cols {
                    codes[c * n + row] = grid.code(r[c]) as u8;
                }
            }
        }
        IntQuant {
            bits,
            group_size,
            n,
            k,
            codes,
            scales,
            zeros,
            g_idx: None,
        }
    }

    /// The dequantised weight `[N, K]`.
    pub fn dequantize(&self) -> Mat {
        let (n, k) = (self.n, self.k);
        let mut out = vec![0f32; n * k];
        for c in 0..k {
            let g = match &self.g_idx {
                Some(g) => g[c] as usize,
                None => c / self.group_size,
            };
            for row in 0..n {
                let s = self.scales[g * n + row].to_f32();
                let z = self.zeros[g * n + row] as f32;
                out[row * k + c] = s * (self.codes[c * n + row] as f32 - z);
            }
        }
        Mat::new(n, k, out)
    }

    /// AutoAWQ GEMM packing (4-bit only).
    pub fn to_awq(&self) -> QuantWeights {
        let (n, k) = (self.n, self.k);
        let groups = self.scales.len() / n;
        let qweight = (0..k)
            .flat_map(|c| awq::pack_row(&self.codes[c * n..(c + 1) * n]))
            .collect();
        let qzeros = (0..groups)
            .flat_map(|g| awq::pack_row(&self.zeros[g * n..(g + 1) * n]))
            .collect();
        QuantWeights::Awq {
            group_size: self.group_size,
            n,
            k,
            qweight,
            qzeros,
            scales: self.scales.clone(),
        }
    }

    /// AutoGPTQ v1 packing (zero points stored minus one; they must be ≥ 1).
    pub fn to_gptq(&self) -> QuantWeights {
        let (n, k) = (self.n, self.k);
        let groups = self.scales.len() / n;
        QuantWeights::Gptq {
            bits: self.bits,
            group_size: self.group_size,
            n,
            k,
            qweight: gptq::pack_qweight(self.bits, k, n, &self.codes),
            qzeros: gptq::pack_qzeros(self.bits, groups, n, &self.zeros),
            scales: self.scales.clone(),
            g_idx: self.g_idx.clone(),
        }
    }
}

/// GGUF blocks of `w` `[N, K]` (K a multiple of 32), rounded as llama.cpp's
/// reference quantisers do ([`hal::quant::gguf::quantize_row`]).
pub fn gguf(w: &Mat, ty: GgufType) -> Result<QuantWeights, String> {
    let (n, k) = (w.rows, w.cols);
    if !k.is_multiple_of(32) {
        return Err(format!("{} needs K a multiple of 32, got {k}", ty.name()));
    }
    let data = (0..n)
        .flat_map(|row| hal::quant::gguf::quantize_row(ty, w.row(row)))
        .collect();
    Ok(QuantWeights::Gguf { ty, n, k, data })
}

/// FP8 e4m3 with one per-tensor scale `max|w| / 448`.
pub fn fp8(w: &Mat, activation: ActivationScale, input_scale: Option<f32>) -> QuantWeights {
    let amax = w.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if amax > 0.0 { amax / 448.0 } else { 1.0 };
    let weight = w
        .data
        .iter()
        .map(|&v| hal::fp8::f32_to_e4m3(v / scale))
        .collect();
    QuantWeights::Fp8 {
        n: w.rows,
        k: w.cols,
        weight,
        weight_scale: vec![scale],
        activation,
        input_scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, k: usize, seed: u64) -> Mat {
        let mut rng = hal::conformance::Rng::new(seed);
        Mat::new(
            n,
            k,
            (0..n * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect(),
        )
    }

    #[test]
    fn grids_hold_zero_and_round_to_nearest() {
        let g = Grid::fit([-1.0f32, 0.5, 2.0].into_iter(), 4, false, 0);
        assert_eq!(g.maxq, 15);
        assert_eq!(g.scale, f16::from_f32(0.2));
        assert_eq!(g.zero, 5);
        assert_eq!(g.code(0.0), 5);
        assert_eq!(g.code(100.0), 15);
        assert!((g.value(g.code(0.61)) - 0.6).abs() < 1e-3);
        let s = Grid::fit([-1.0f32, 0.5].into_iter(), 4, true, 0);
        assert_eq!(s.zero, 8);
        // All-positive group: GPTQ v1 keeps the zero point at 1 or above.
        assert_eq!(Grid::fit([1.0f32, 2.0].into_iter(), 4, false, 1).zero, 1);
        assert_eq!(Grid::fit([0.0f32; 4].into_iter(), 4, false, 0).code(0.0), 0);
    }

    #[test]
    fn packings_decode_to_the_rtn_values() {
        let w = random(16, 64, 1);
        let q = IntQuant::rtn(&w, 4, 32, false, 1);
        let want = q.dequantize();
        for packed in [q.to_awq(), q.to_gptq()] {
            packed.validate().unwrap();
            let got = packed.dequantize();
            for (a, b) in got.iter().zip(&want.data) {
                assert_eq!(*a as f32, *b);
            }
        }
        // Half a step of error at most.
        for (row, c) in (0..16).zip(0..64) {
            let g = c / 32;
            let s = q.scales[g * 16 + row].to_f32();
            assert!((want.data[row * 64 + c] - w.data[row * 64 + c]).abs() <= s / 2.0 + 1e-6);
        }
        let q8 = IntQuant::rtn(&w, 8, 64, true, 1);
        q8.to_gptq().validate().unwrap();
    }

    #[test]
    fn gguf_blocks_as_llama_cpp_rounds_them() {
        let w = random(4, 64, 2);
        for ty in [GgufType::Q4_0, GgufType::Q4_1, GgufType::Q8_0] {
            let q = gguf(&w, ty).unwrap();
            q.validate().unwrap();
            let got = q.dequantize();
            let tol = if ty == GgufType::Q8_0 {
                1.0 / 127.0
            } else {
                2.0 / 15.0
            };
            for (a, b) in got.iter().zip(&w.data) {
                assert!((*a as f32 - b).abs() <= tol, "{ty:?}: {a} vs {b}");
            }
        }
        assert!(gguf(&random(1, 48, 3), GgufType::Q8_0).is_err());
        // Q4_0 by hand: the largest magnitude (−2) becomes code 0, d = 0.25.
        let mut block = vec![0f32; 32];
        block[0] = -2.0;
        block[16] = 1.0;
        let QuantWeights::Gguf { data, .. } =
            gguf(&Mat::new(1, 32, block), GgufType::Q4_0).unwrap()
        else {
            panic!()
        };
        assert_eq!(f16::from_le_bytes([data[0], data[1]]).to_f32(), 0.25);
        assert_eq!(data[2], 12 << 4);
    }

    #[test]
    fn fp8_per_tensor() {
        let w = random(8, 32, 4);
        let q = fp8(&w, ActivationScale::DynamicPerTensor, None);
        q.validate().unwrap();
        let got = q.dequantize();
        for (a, b) in got.iter().zip(&w.data) {
            assert!((*a as f32 - b).abs() <= 0.07 * b.abs() + 1e-3);
        }
    }
}
