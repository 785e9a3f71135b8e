//! Real model shapes and the workloads the cases are timed on.

/// The dimensions of a Llama-family decoder that the ops see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// Short name used in case names (`smollm2-135m`).
    pub name: &'static str,
    /// Hidden size (elements per token in the residual stream).
    pub hidden: usize,
    /// Query heads.
    pub num_heads: usize,
    /// KV heads (GQA).
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// MLP intermediate size `I` (gate and up are `[I, hidden]` each).
    pub intermediate: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
}

/// SmolLM2-135M (Kiln's default model): hidden 576, 9 heads, 3 KV heads,
/// head_dim 64, intermediate 1536, vocab 49152.
pub const SMOLLM2_135M: ModelShape = ModelShape {
    name: "smollm2-135m",
    hidden: 576,
    num_heads: 9,
    num_kv_heads: 3,
    head_dim: 64,
    intermediate: 1536,
    vocab: 49152,
};

/// Llama-3-8B: hidden 4096, 32 heads, 8 KV heads, head_dim 128,
/// intermediate 14336, vocab 128256.
pub const LLAMA3_8B: ModelShape = ModelShape {
    name: "llama3-8b",
    hidden: 4096,
    num_heads: 32,
    num_kv_heads: 8,
    head_dim: 128,
    intermediate: 14336,
    vocab: 128256,
};

/// A toy shape for the harness's own tests ([`Scale::Tiny`]): hidden 64,
/// 4 heads, 2 KV heads, head_dim 16, intermediate 128, vocab 256.
pub const TINY: ModelShape = ModelShape {
    name: "tiny",
    hidden: 64,
    num_heads: 4,
    num_kv_heads: 2,
    head_dim: 16,
    intermediate: 128,
    vocab: 256,
};

impl ModelShape {
    /// The MLP down projection `[N = hidden, K = intermediate]`, the linear
    /// layer the GEMM cases time.
    pub fn mlp_down(&self) -> Linear {
        Linear {
            name: "mlp_down",
            n: self.hidden,
            k: self.intermediate,
        }
    }

    /// The attention output projection `[N = hidden, K = heads · head_dim]`
    /// (4096 × 4096 on Llama-3-8B), timed by the quantised decode cases.
    pub fn attn_out(&self) -> Linear {
        Linear {
            name: "attn_out",
            n: self.hidden,
            k: self.num_heads * self.head_dim,
        }
    }

    /// Elements of K (or V) per token over all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// A linear layer `y[M, N] = x[M, K] · W[N, K]ᵀ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Layer name (`mlp_down`, `attn_out`).
    pub name: &'static str,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
}

/// What one engine step feeds an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `batch` sequences generating one token each, with `context` tokens in
    /// the cache (including the new one). GEMMs see `M = batch`.
    Decode {
        /// Sequences (= new tokens).
        batch: usize,
        /// Tokens per sequence in the KV cache, new token included.
        context: usize,
    },
    /// One prompt of `tokens` tokens and no cache. GEMMs see `M = tokens`.
    Prefill {
        /// Prompt length.
        tokens: usize,
    },
    /// One sequence's chunk of `query` new tokens at the end of `context`
    /// tokens (`context − query` already cached), causal.
    ChunkedPrefill {
        /// New tokens.
        query: usize,
        /// Tokens in the cache after the step.
        context: usize,
    },
}

impl Workload {
    /// New tokens in the step (rows of the activations).
    pub fn num_tokens(&self) -> usize {
        match *self {
            Workload::Decode { batch, .. } => batch,
            Workload::Prefill { tokens } => tokens,
            Workload::ChunkedPrefill { query, .. } => query,
        }
    }

    /// Label for case names without the context (`decode_b8`, `prefill_512`).
    pub fn tokens_label(&self) -> String {
        match *self {
            Workload::Decode { batch, .. } => format!("decode_b{batch}"),
            Workload::Prefill { tokens } => format!("prefill_{}", short(tokens)),
            Workload::ChunkedPrefill { query, .. } => format!("chunk_{}", short(query)),
        }
    }

    /// Label with the context (`decode_b8_ctx2k`, `prefill_512`,
    /// `chunk_512_ctx2k`), for attention cases.
    pub fn label(&self) -> String {
        match *self {
            Workload::Decode { context, .. } | Workload::ChunkedPrefill { context, .. } => {
                format!("{}_ctx{}", self.tokens_label(), short(context))
            }
            Workload::Prefill { .. } => self.tokens_label(),
        }
    }
}

/// `2048` → `2k`, `512` → `512`.
pub fn short(n: usize) -> String {
    if n >= 1024 && n.trailing_zeros() >= 10 {
        format!("{}k", n / 1024)
    } else {
        n.to_string()
    }
}

/// How large the shapes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    /// The real models and workloads.
    #[default]
    Real,
    /// [`TINY`] with contexts of tens of tokens and a 256 KiB cold working
    /// set: for exercising every case quickly in tests (e.g. on the f64
    /// `loopback` backend). Timings at this scale mean nothing.
    Tiny,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let d = Workload::Decode {
            batch: 8,
            context: 2048,
        };
        assert_eq!(d.label(), "decode_b8_ctx2k");
        assert_eq!(d.tokens_label(), "decode_b8");
        assert_eq!(Workload::Prefill { tokens: 512 }.label(), "prefill_512");
        let c = Workload::ChunkedPrefill {
            query: 512,
            context: 2048,
        };
        assert_eq!(c.label(), "chunk_512_ctx2k");
        assert_eq!(c.num_tokens(), 512);
        assert_eq!(SMOLLM2_135M.kv_dim(), 192);
        assert_eq!(LLAMA3_8B.mlp_down().k, 14336);
    }
}
