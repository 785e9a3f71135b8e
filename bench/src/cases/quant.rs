//! Quantised GEMM cases: every weight format on one linear layer, with f32
//! activations, in [`Precision::Exact`] (the HAL's default contract) and,
//! as `<format>_int8` variants, [`Precision::Int8Activations`] (backends
//! that refuse a format in that mode list it as skipped).

use hal::quant::{awq, gguf, gptq};
use hal::{
    ActivationScale, DType, Device, GgufType, KvLayout, OpDesc, Precision, QuantGemmArgs,
    QuantSpec, QuantWeights, ScaleGranularity,
};
use half::f16;

use crate::case::{Cost, Family, Op, Runner};
use crate::cases::gemm;
use crate::data;
use crate::rng::Rng;
use crate::shapes::{Linear, ModelShape, Workload};

/// A weight format as the cases build it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantKind {
    /// GGUF Q4_0 (18 B per 32 weights).
    Q4_0,
    /// GGUF Q4_1 (20 B per 32 weights).
    Q4_1,
    /// GGUF Q8_0 (34 B per 32 weights).
    Q8_0,
    /// AutoAWQ GEMM, 4-bit, groups of 128 along K.
    Awq,
    /// AutoGPTQ v1 4-bit, groups of 128, default `g_idx` (sent as `None`).
    Gptq4,
    /// AutoGPTQ v1 4-bit, groups of 128, act-order (a permuted `g_idx`).
    Gptq4ActOrder,
    /// AutoGPTQ v1 8-bit, groups of 128.
    Gptq8,
    /// FP8 E4M3 W8A8, per-channel weight scales, dynamic per-token
    /// activation scales.
    Fp8,
}

impl QuantKind {
    /// Every format the cases time.
    pub const ALL: [QuantKind; 8] = [
        QuantKind::Q4_0,
        QuantKind::Q4_1,
        QuantKind::Q8_0,
        QuantKind::Awq,
        QuantKind::Gptq4,
        QuantKind::Gptq4ActOrder,
        QuantKind::Gptq8,
        QuantKind::Fp8,
    ];

    /// Name in case names.
    pub fn name(self) -> &'static str {
        match self {
            QuantKind::Q4_0 => "q4_0",
            QuantKind::Q4_1 => "q4_1",
            QuantKind::Q8_0 => "q8_0",
            QuantKind::Awq => "awq",
            QuantKind::Gptq4 => "gptq4",
            QuantKind::Gptq4ActOrder => "gptq4_actorder",
            QuantKind::Gptq8 => "gptq8",
            QuantKind::Fp8 => "fp8",
        }
    }

    /// The spec of a `[N, K]` weight of this kind.
    pub fn spec(self, k: usize) -> QuantSpec {
        let group_size = group_size(k);
        match self {
            QuantKind::Q4_0 => QuantSpec::Gguf(GgufType::Q4_0),
            QuantKind::Q4_1 => QuantSpec::Gguf(GgufType::Q4_1),
            QuantKind::Q8_0 => QuantSpec::Gguf(GgufType::Q8_0),
            QuantKind::Awq => QuantSpec::Awq { group_size },
            QuantKind::Gptq4 | QuantKind::Gptq4ActOrder | QuantKind::Gptq8 => QuantSpec::Gptq {
                bits: if self == QuantKind::Gptq8 { 8 } else { 4 },
                group_size,
                act_order: self == QuantKind::Gptq4ActOrder,
            },
            QuantKind::Fp8 => QuantSpec::Fp8 {
                weight_scale: ScaleGranularity::PerChannel,
                activation: ActivationScale::DynamicPerToken,
            },
        }
    }

    /// Bytes of a `[N, K]` weight in its checkpoint layout
    /// ([`QuantWeights::storage_bytes`]): packed values, zeros, scales and
    /// `g_idx` where the format stores them.
    pub fn storage_bytes(self, n: usize, k: usize) -> usize {
        let groups = k.div_ceil(group_size(k));
        match self.spec(k) {
            QuantSpec::Gguf(ty) => n * ty.row_bytes(k),
            // qweight [K, N/8] i32, qzeros [G, N/8] i32, scales [G, N] f16.
            QuantSpec::Awq { .. } => 4 * (k * n / 8 + groups * n / 8) + 2 * groups * n,
            // qweight [K/P, N] i32, qzeros [G, N/P] i32, scales [G, N] f16,
            // g_idx [K] i32 with act-order.
            QuantSpec::Gptq {
                bits, act_order, ..
            } => {
                let p = 32 / bits as usize;
                let g_idx = if act_order { 4 * k } else { 0 };
                4 * (k / p * n + groups * n / p) + 2 * groups * n + g_idx
            }
            // e4m3 [N, K] plus f32 scales [N].
            QuantSpec::Fp8 { .. } => n * k + 4 * n,
        }
    }

    /// Random checkpoint tensors of a `[N, K]` weight (fixed seed).
    pub fn weights(self, n: usize, k: usize, seed: u64) -> QuantWeights {
        let mut rng = Rng::new(seed);
        let group_size = group_size(k);
        let groups = k.div_ceil(group_size);
        let scales = |rng: &mut Rng, len: usize| -> Vec<f16> {
            (0..len)
                .map(|_| f16::from_f32(rng.uniform(0.002, 0.02)))
                .collect()
        };
        match self.spec(k) {
            QuantSpec::Gguf(ty) => {
                let mut data = Vec::with_capacity(n * ty.row_bytes(k));
                for _ in 0..n {
                    data.extend(gguf::quantize_row(ty, &rng.signed_units(k)));
                }
                QuantWeights::Gguf { ty, n, k, data }
            }
            QuantSpec::Awq { group_size } => {
                let pack_rows = |rng: &mut Rng, rows: usize| -> Vec<i32> {
                    let mut out = Vec::with_capacity(rows * n / 8);
                    for _ in 0..rows {
                        out.extend(awq::pack_row(&rng.small_ints(n, 4)));
                    }
                    out
                };
                let qweight = pack_rows(&mut rng, k);
                let qzeros = pack_rows(&mut rng, groups);
                QuantWeights::Awq {
                    group_size,
                    n,
                    k,
                    qweight,
                    qzeros,
                    scales: scales(&mut rng, groups * n),
                }
            }
            QuantSpec::Gptq {
                bits,
                group_size,
                act_order,
            } => {
                let q = rng.small_ints(k * n, bits);
                // True zero points in 1..=2^bits − 1.
                let z: Vec<u8> = rng
                    .small_ints(groups * n, bits)
                    .into_iter()
                    .map(|v| v.max(1))
                    .collect();
                let g_idx = act_order.then(|| {
                    let mut g: Vec<i32> = (0..k)
                        .map(|i| gptq::default_group(i, group_size) as i32)
                        .collect();
                    rng.shuffle(&mut g);
                    g
                });
                QuantWeights::Gptq {
                    bits,
                    group_size,
                    n,
                    k,
                    qweight: gptq::pack_qweight(bits, k, n, &q),
                    qzeros: gptq::pack_qzeros(bits, groups, n, &z),
                    scales: scales(&mut rng, groups * n),
                    g_idx,
                }
            }
            QuantSpec::Fp8 { activation, .. } => {
                // Random E4M3 bit patterns, NaN (S.1111.111) mapped to the
                // largest finite magnitude.
                let weight = (0..n * k)
                    .map(|_| {
                        let b = rng.next_u64() as u8;
                        if b & 0x7F == 0x7F {
                            b ^ 1
                        } else {
                            b
                        }
                    })
                    .collect();
                QuantWeights::Fp8 {
                    n,
                    k,
                    weight,
                    weight_scale: (0..n).map(|_| rng.uniform(1e-4, 1e-3)).collect(),
                    activation,
                    input_scale: None,
                }
            }
        }
    }
}

/// Group size of the AWQ and GPTQ cases: 128 (32 for the tiny test shapes).
pub fn group_size(k: usize) -> usize {
    if k >= 512 {
        128
    } else {
        32
    }
}

/// A quantised GEMM on one linear layer.
pub struct QuantGemmCase {
    /// Model the layer belongs to.
    pub model: ModelShape,
    /// The layer (`N`, `K`).
    pub layer: Linear,
    /// `M` comes from its token count.
    pub workload: Workload,
    /// Weight format.
    pub kind: QuantKind,
    /// Activation precision.
    pub precision: Precision,
}

/// Activation dtype of every quantised GEMM case.
pub const ACTIVATIONS: DType = DType::F32;

impl Op for QuantGemmCase {
    fn family(&self) -> Family {
        Family::QuantGemm
    }

    fn label(&self) -> String {
        let suffix = match self.precision {
            Precision::Exact => "",
            Precision::Int8Activations => "_int8",
        };
        format!(
            "{}{suffix}/{}.{}/{}",
            self.kind.name(),
            self.model.name,
            self.layer.name,
            self.workload.tokens_label()
        )
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::QuantGemm {
            spec: self.kind.spec(self.layer.k),
            input: ACTIVATIONS,
            output: ACTIVATIONS,
            precision: self.precision,
            n: self.layer.n,
            k: self.layer.k,
        }
    }

    /// `2·M·N·K` FLOPs; bytes: the weight's storage bytes, f32 `x` `[M, K]`
    /// and f32 `out` `[M, N]`.
    fn cost(&self) -> Cost {
        let (m, n, k) = (self.workload.num_tokens(), self.layer.n, self.layer.k);
        Cost {
            flops: gemm::flops(m, n, k),
            bytes: (self.kind.storage_bytes(n, k) + ACTIVATIONS.bytes_for(m * k + m * n)) as u64,
        }
    }

    fn has_cold_variant(&self) -> bool {
        matches!(self.workload, Workload::Decode { .. })
    }

    fn resident_bytes(&self) -> usize {
        self.kind.storage_bytes(self.layer.n, self.layer.k)
    }

    fn build<'d>(&self, dev: &'d dyn Device, copies: usize) -> hal::Result<Runner<'d>> {
        let (m, n, k) = (self.workload.num_tokens(), self.layer.n, self.layer.k);
        let host = self.kind.weights(n, k, 11);
        host.validate()
            .map_err(|msg| hal::HalError::invalid(dev.name(), "bench quant weights", msg))?;
        let ws = (0..copies)
            .map(|_| dev.pack(&host))
            .collect::<hal::Result<Vec<_>>>()?;
        drop(host);
        let x = data::random(dev, ACTIVATIONS, &[m, k], 12)?;
        let mut out = data::output(dev, ACTIVATIONS, &[m, n])?;
        let mut i = 0;
        let precision = self.precision;
        Ok(Runner::new(move || {
            let w = &ws[i % ws.len()];
            i += 1;
            dev.quant_gemm(QuantGemmArgs {
                x: x.view(),
                w,
                bias: None,
                out: out.view_mut(),
                precision,
            })?;
            dev.synchronize()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{LLAMA3_8B, SMOLLM2_135M, TINY};

    #[test]
    fn q4_0_matvec_bytes() {
        let layer = SMOLLM2_135M.mlp_down();
        let c = QuantGemmCase {
            model: SMOLLM2_135M,
            layer,
            workload: Workload::Decode {
                batch: 1,
                context: 512,
            },
            kind: QuantKind::Q4_0,
            precision: Precision::Exact,
        };
        let (n, k) = (576, 1536);
        assert_eq!(
            c.cost().bytes,
            (n * k / 32 * 18 + 4 * k + 4 * n) as u64,
            "weights N·K/32·18 + f32 x + f32 out"
        );
        assert_eq!(c.cost().flops, (2 * n * k) as u64);
    }

    #[test]
    fn storage_bytes_by_hand() {
        let (n, k) = (LLAMA3_8B.hidden, LLAMA3_8B.intermediate);
        let g = k / 128;
        assert_eq!(QuantKind::Q4_1.storage_bytes(n, k), n * k / 32 * 20);
        assert_eq!(QuantKind::Q8_0.storage_bytes(n, k), n * k / 32 * 34);
        assert_eq!(
            QuantKind::Awq.storage_bytes(n, k),
            n * k / 2 + g * n / 2 + 2 * g * n
        );
        assert_eq!(
            QuantKind::Gptq4ActOrder.storage_bytes(n, k),
            n * k / 2 + g * n / 2 + 2 * g * n + 4 * k
        );
        assert_eq!(
            QuantKind::Gptq8.storage_bytes(n, k),
            n * k + g * n + 2 * g * n
        );
        assert_eq!(QuantKind::Fp8.storage_bytes(n, k), n * k + 4 * n);
    }

    #[test]
    fn built_weights_match_spec_and_bytes() {
        let layer = TINY.mlp_down();
        for kind in QuantKind::ALL {
            let w = kind.weights(layer.n, layer.k, 5);
            w.validate()
                .unwrap_or_else(|m| panic!("{}: {m}", kind.name()));
            assert_eq!(w.spec(), kind.spec(layer.k), "{}", kind.name());
            assert_eq!(
                w.storage_bytes(),
                kind.storage_bytes(layer.n, layer.k),
                "{}",
                kind.name()
            );
        }
    }
}
