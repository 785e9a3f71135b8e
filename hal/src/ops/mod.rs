//! The op traits and their argument types, one module per op family.
//!
//! Every op takes one `…Args` struct; `args.validate(backend_name)` checks
//! shapes, dtypes and buffer bounds (cheap, host-only), and `args.desc()`
//! gives the [`OpDesc`] a caller passes to [`crate::Backend::supports`].

pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod kv_cache;
pub mod quant_gemm;

use crate::{DType, KvCacheSpec, QuantSpec};

pub use attention::{
    AttentionBatch, AttentionMetadata, AttentionParams, DeviceAttentionBatch, FlashAttention,
    FlashAttentionArgs, PagedAttention, PagedAttentionArgs, SeqSlice,
};
pub use elementwise::{
    AddArgs, Elementwise, EmbeddingArgs, EmbeddingTable, RmsNormArgs, RopeArgs, RopeStyle,
    SiluAndMulArgs,
};
pub use gemm::{Gemm, GemmArgs};
pub use kv_cache::{KvCacheOps, WriteKvArgs};
pub use quant_gemm::{QuantGemm, QuantGemmArgs};

/// How activations enter a quantised GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    /// Activations used as given (f32/f16/bf16), f32 accumulation. The
    /// default, and what correctness is judged on.
    Exact,
    /// llama.cpp style: activations quantised to int8 in blocks of 32 along
    /// K (`d = amax / 127` rounded to f16, `q = round(x / d)` half away from
    /// zero) before the product. Faster on CPUs, with its own error budget.
    Int8Activations,
}

impl Precision {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Exact => "exact",
            Precision::Int8Activations => "int8-activations",
        }
    }
}

/// Where an embedding table's rows come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableFormat {
    /// A dense `[vocab, hidden]` tensor of this dtype.
    Dense(DType),
    /// A packed quantised weight (GGUF block formats), as used for tied
    /// output layers.
    Quant(QuantSpec),
}

/// A description of one op call: what [`crate::Backend::supports`] decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpDesc {
    /// Dense GEMM `out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N])`.
    Gemm {
        /// Dtype of `x` and `w`.
        input: DType,
        /// Dtype of `out`.
        output: DType,
        /// Output features.
        n: usize,
        /// Input features.
        k: usize,
        /// Whether a bias is added.
        bias: bool,
    },
    /// Quantised GEMM (and `pack` for the same format).
    QuantGemm {
        /// Weight format.
        spec: QuantSpec,
        /// Dtype of `x`.
        input: DType,
        /// Dtype of `out`.
        output: DType,
        /// Activation precision.
        precision: Precision,
        /// Output features.
        n: usize,
        /// Input features.
        k: usize,
    },
    /// `write_kv` into a cache.
    WriteKv {
        /// Dtype of the new keys and values.
        input: DType,
        /// The cache.
        cache: KvCacheSpec,
    },
    /// `copy_blocks` within a cache.
    CopyBlocks {
        /// The cache.
        cache: KvCacheSpec,
    },
    /// Paged attention.
    PagedAttention {
        /// Dtype of `q` and `out`.
        dtype: DType,
        /// Query heads.
        num_heads: usize,
        /// The cache (KV heads, head dim, block size, dtype, layout).
        cache: KvCacheSpec,
        /// A sliding window is set.
        sliding_window: bool,
        /// A logit soft-cap is set.
        softcap: bool,
    },
    /// Dense varlen flash attention.
    FlashAttention {
        /// Dtype of `q`, `k`, `v` and `out`.
        dtype: DType,
        /// Query heads.
        num_heads: usize,
        /// KV heads.
        num_kv_heads: usize,
        /// Elements per head.
        head_dim: usize,
        /// Causal mask.
        causal: bool,
        /// A sliding window is set.
        sliding_window: bool,
        /// A logit soft-cap is set.
        softcap: bool,
    },
    /// RMS norm, optionally with a fused residual add.
    RmsNorm {
        /// Dtype of `x`, `out` and `residual`.
        dtype: DType,
        /// Dtype of the weight.
        weight: DType,
        /// Hidden size.
        hidden: usize,
        /// Fused residual add.
        residual: bool,
    },
    /// Rotary position embedding.
    Rope {
        /// Dtype of `q` and `k`.
        dtype: DType,
        /// Elements per head.
        head_dim: usize,
        /// Elements rotated (≤ head_dim).
        rotary_dim: usize,
        /// Pairing style.
        style: RopeStyle,
    },
    /// `silu(x[:, :I]) * x[:, I:]`.
    SiluAndMul {
        /// Dtype of `x` and `out`.
        dtype: DType,
    },
    /// Embedding lookup.
    Embedding {
        /// The table.
        table: TableFormat,
        /// Dtype of `out`.
        output: DType,
    },
    /// Element-wise add, optionally broadcasting a row.
    Add {
        /// Dtype of all operands.
        dtype: DType,
        /// `b` is one row broadcast over `a`'s rows.
        broadcast: bool,
    },
}

impl OpDesc {
    /// The op family's name, as used in errors and case names.
    pub fn name(&self) -> &'static str {
        match self {
            OpDesc::Gemm { .. } => "gemm",
            OpDesc::QuantGemm { .. } => "quant_gemm",
            OpDesc::WriteKv { .. } => "write_kv",
            OpDesc::CopyBlocks { .. } => "copy_blocks",
            OpDesc::PagedAttention { .. } => "paged_attention",
            OpDesc::FlashAttention { .. } => "flash_attention",
            OpDesc::RmsNorm { .. } => "rms_norm",
            OpDesc::Rope { .. } => "rope",
            OpDesc::SiluAndMul { .. } => "silu_and_mul",
            OpDesc::Embedding { .. } => "embedding",
            OpDesc::Add { .. } => "add",
        }
    }
}
