//! Quantised weight formats, exactly as checkpoints store them.
//!
//! [`QuantWeights`] holds a linear layer's weight in its published layout
//! (host memory); a backend turns it into a [`PackedWeight`] in its own
//! layout with [`crate::QuantGemm::pack`]. Every format computes
//! `y[M, N] = x[M, K] · W[N, K]ᵀ` where `W` is the dequantised weight.
//! The per-format modules define how element `(n, k)` of `W` is decoded —
//! that definition is what the reference oracle uses.

pub mod awq;
pub mod fp8_w8a8;
pub mod gguf;
pub mod gptq;

use half::f16;

use crate::DeviceBuffer;

pub use gguf::GgufType;

/// How an FP8 weight scale is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleGranularity {
    /// One f32 scale for the whole weight.
    PerTensor,
    /// One f32 scale per output channel (`[N]`).
    PerChannel,
}

/// How FP8 W8A8 activations are scaled before they are cast to E4M3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivationScale {
    /// A calibrated scale stored in the checkpoint (`input_scale`).
    Static,
    /// `max|x| / 448` over the whole activation tensor, computed per call.
    /// Not batch-invariant: the scale depends on every row.
    DynamicPerTensor,
    /// `max|x[m, :]| / 448` for each row (token). Batch-invariant.
    DynamicPerToken,
}

/// A quantised weight format with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantSpec {
    /// A GGUF block format (blocks of 32 along K).
    Gguf(GgufType),
    /// AutoAWQ "GEMM" layout, 4-bit with zero points.
    Awq {
        /// Rows of K sharing a scale and zero (e.g. 128).
        group_size: usize,
    },
    /// AutoGPTQ v1 layout (zeros stored minus one), 4 or 8 bit.
    Gptq {
        /// 4 or 8.
        bits: u8,
        /// Rows of K per group (K for a single group).
        group_size: usize,
        /// Whether `g_idx` is a permutation (desc_act / act-order).
        act_order: bool,
    },
    /// FP8 E4M3 weights and activations (W8A8).
    Fp8 {
        /// Weight scale layout.
        weight_scale: ScaleGranularity,
        /// Activation scaling.
        activation: ActivationScale,
    },
}

/// A format family, for capability lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantFormat {
    /// GGUF Q4_0.
    Q4_0,
    /// GGUF Q4_1.
    Q4_1,
    /// GGUF Q8_0.
    Q8_0,
    /// AWQ int4.
    Awq,
    /// GPTQ int4.
    Gptq4,
    /// GPTQ int8.
    Gptq8,
    /// FP8 E4M3 W8A8.
    Fp8,
}

impl QuantFormat {
    /// Every format.
    pub const ALL: [QuantFormat; 7] = [
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q8_0,
        QuantFormat::Awq,
        QuantFormat::Gptq4,
        QuantFormat::Gptq8,
        QuantFormat::Fp8,
    ];

    /// Lower-case name (`"q4_0"`, `"awq"`, `"gptq4"`, `"fp8"`).
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4_1 => "q4_1",
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Awq => "awq",
            QuantFormat::Gptq4 => "gptq4",
            QuantFormat::Gptq8 => "gptq8",
            QuantFormat::Fp8 => "fp8",
        }
    }
}

impl QuantSpec {
    /// The format family.
    pub fn format(&self) -> QuantFormat {
        match self {
            QuantSpec::Gguf(GgufType::Q4_0) => QuantFormat::Q4_0,
            QuantSpec::Gguf(GgufType::Q4_1) => QuantFormat::Q4_1,
            QuantSpec::Gguf(GgufType::Q8_0) => QuantFormat::Q8_0,
            QuantSpec::Awq { .. } => QuantFormat::Awq,
            QuantSpec::Gptq { bits: 8, .. } => QuantFormat::Gptq8,
            QuantSpec::Gptq { .. } => QuantFormat::Gptq4,
            QuantSpec::Fp8 { .. } => QuantFormat::Fp8,
        }
    }
}

/// A linear layer's quantised weight `W[N, K]` in its checkpoint layout.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantWeights {
    /// GGUF blocks: `N` rows, each `K / 32` consecutive blocks
    /// (Q4_0: 18 B, Q4_1: 20 B, Q8_0: 34 B per block).
    Gguf {
        /// Block type.
        ty: GgufType,
        /// Output features (rows).
        n: usize,
        /// Input features (multiple of 32).
        k: usize,
        /// `n * k / 32 * ty.block_bytes()` bytes.
        data: Vec<u8>,
    },
    /// AutoAWQ GEMM: `qweight` i32 `[K, N/8]`, `qzeros` i32 `[K/G, N/8]`,
    /// `scales` f16 `[K/G, N]`; see [`awq`].
    Awq {
        /// Group size G (K is a multiple of it).
        group_size: usize,
        /// Output features (multiple of 8).
        n: usize,
        /// Input features.
        k: usize,
        /// Packed weights.
        qweight: Vec<i32>,
        /// Packed zero points.
        qzeros: Vec<i32>,
        /// Scales.
        scales: Vec<f16>,
    },
    /// AutoGPTQ v1: `qweight` i32 `[K·bits/32, N]`, `qzeros` i32
    /// `[G, N·bits/32]` holding `z - 1`, `scales` f16 `[G, N]`, `g_idx` i32
    /// `[K]` (`None` means `k / group_size`); see [`gptq`].
    Gptq {
        /// 4 or 8.
        bits: u8,
        /// Group size.
        group_size: usize,
        /// Output features (multiple of 32/bits).
        n: usize,
        /// Input features (multiple of 32/bits).
        k: usize,
        /// Packed weights.
        qweight: Vec<i32>,
        /// Packed zero points (minus one).
        qzeros: Vec<i32>,
        /// Scales.
        scales: Vec<f16>,
        /// Group of each input row; a permutation of the default with act-order.
        g_idx: Option<Vec<i32>>,
    },
    /// FP8 E4M3 W8A8: `weight` e4m3 bytes `[N, K]`, `weight_scale` f32 `[1]`
    /// or `[N]`, `input_scale` for static activation scaling.
    Fp8 {
        /// Output features.
        n: usize,
        /// Input features.
        k: usize,
        /// E4M3 bytes, row-major `[N, K]`.
        weight: Vec<u8>,
        /// `[1]` (per-tensor) or `[N]` (per-channel).
        weight_scale: Vec<f32>,
        /// How activations are scaled.
        activation: ActivationScale,
        /// The static activation scale (required with `ActivationScale::Static`).
        input_scale: Option<f32>,
    },
}

impl QuantWeights {
    /// Output features N.
    pub fn n(&self) -> usize {
        match self {
            QuantWeights::Gguf { n, .. }
            | QuantWeights::Awq { n, .. }
            | QuantWeights::Gptq { n, .. }
            | QuantWeights::Fp8 { n, .. } => *n,
        }
    }

    /// Input features K.
    pub fn k(&self) -> usize {
        match self {
            QuantWeights::Gguf { k, .. }
            | QuantWeights::Awq { k, .. }
            | QuantWeights::Gptq { k, .. }
            | QuantWeights::Fp8 { k, .. } => *k,
        }
    }

    /// The format and its parameters.
    pub fn spec(&self) -> QuantSpec {
        match self {
            QuantWeights::Gguf { ty, .. } => QuantSpec::Gguf(*ty),
            QuantWeights::Awq { group_size, .. } => QuantSpec::Awq {
                group_size: *group_size,
            },
            QuantWeights::Gptq {
                bits,
                group_size,
                k,
                g_idx,
                ..
            } => QuantSpec::Gptq {
                bits: *bits,
                group_size: *group_size,
                act_order: g_idx
                    .as_ref()
                    .is_some_and(|g| !gptq::is_trivial_g_idx(g, *group_size, *k)),
            },
            QuantWeights::Fp8 {
                n,
                weight_scale,
                activation,
                ..
            } => QuantSpec::Fp8 {
                weight_scale: if weight_scale.len() == *n && *n != 1 {
                    ScaleGranularity::PerChannel
                } else {
                    ScaleGranularity::PerTensor
                },
                activation: *activation,
            },
        }
    }

    /// The [`crate::OpDesc`] of a `quant_gemm` with this weight, for asking
    /// `supports` before packing.
    pub fn op_desc(
        &self,
        input: crate::DType,
        output: crate::DType,
        precision: crate::Precision,
    ) -> crate::OpDesc {
        crate::OpDesc::QuantGemm {
            spec: self.spec(),
            input,
            output,
            precision,
            n: self.n(),
            k: self.k(),
        }
    }

    /// Check every length and range against the layout rules; the message
    /// names the offending tensor.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            QuantWeights::Gguf { ty, n, k, data } => gguf::validate(*ty, *n, *k, data),
            QuantWeights::Awq {
                group_size,
                n,
                k,
                qweight,
                qzeros,
                scales,
            } => awq::validate(*group_size, *n, *k, qweight, qzeros, scales),
            QuantWeights::Gptq {
                bits,
                group_size,
                n,
                k,
                qweight,
                qzeros,
                scales,
                g_idx,
            } => gptq::validate(
                *bits,
                *group_size,
                *n,
                *k,
                qweight,
                qzeros,
                scales,
                g_idx.as_deref(),
            ),
            QuantWeights::Fp8 {
                n,
                k,
                weight,
                weight_scale,
                activation,
                input_scale,
            } => fp8_w8a8::validate(*n, *k, weight, weight_scale, *activation, *input_scale),
        }
    }

    /// Bytes the checkpoint tensors occupy (what a matvec must read).
    pub fn storage_bytes(&self) -> usize {
        match self {
            QuantWeights::Gguf { data, .. } => data.len(),
            QuantWeights::Awq {
                qweight,
                qzeros,
                scales,
                ..
            } => 4 * (qweight.len() + qzeros.len()) + 2 * scales.len(),
            QuantWeights::Gptq {
                qweight,
                qzeros,
                scales,
                g_idx,
                ..
            } => {
                4 * (qweight.len() + qzeros.len() + g_idx.as_ref().map_or(0, Vec::len))
                    + 2 * scales.len()
            }
            QuantWeights::Fp8 {
                weight,
                weight_scale,
                ..
            } => weight.len() + 4 * weight_scale.len(),
        }
    }

    /// The dequantised weight element `W[n, k]`, exactly as the format defines it.
    pub fn weight(&self, row: usize, col: usize) -> f64 {
        match self {
            QuantWeights::Gguf { ty, k, data, .. } => gguf::weight(*ty, *k, data, row, col),
            QuantWeights::Awq {
                group_size,
                n,
                qweight,
                qzeros,
                scales,
                ..
            } => awq::weight(*group_size, *n, qweight, qzeros, scales, row, col),
            QuantWeights::Gptq {
                bits,
                group_size,
                n,
                qweight,
                qzeros,
                scales,
                g_idx,
                ..
            } => gptq::weight(
                *bits,
                *group_size,
                *n,
                qweight,
                qzeros,
                scales,
                g_idx.as_deref(),
                row,
                col,
            ),
            QuantWeights::Fp8 {
                k,
                weight,
                weight_scale,
                ..
            } => fp8_w8a8::weight(*k, weight, weight_scale, row, col),
        }
    }

    /// The whole dequantised weight, row-major `[N, K]`, in f64.
    pub fn dequantize(&self) -> Vec<f64> {
        let (n, k) = (self.n(), self.k());
        let mut out = Vec::with_capacity(n * k);
        for row in 0..n {
            for col in 0..k {
                out.push(self.weight(row, col));
            }
        }
        out
    }
}

/// A quantised weight in a backend's own device layout (from `pack`).
#[derive(Debug)]
pub struct PackedWeight {
    /// Format and parameters.
    pub spec: QuantSpec,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Name of the backend's physical layout (`"checkpoint"`, `"marlin"`, …).
    pub layout: &'static str,
    /// Device buffers; their meaning is private to the backend.
    pub parts: Vec<DeviceBuffer>,
    /// Scalar parameters the kernels need on the host side (e.g. a static
    /// FP8 input scale); meaning private to the backend.
    pub scalars: Vec<f32>,
}
