//! The OpenCL C sources, one per op family, each built as one program with
//! `common.cl` (and, for quantised GEMM, `quant_common.cl`) in front.

/// One program's source.
#[derive(Debug)]
pub struct KernelSource {
    /// File stem under `src/kernels/` (`"attention"`).
    pub name: &'static str,
    /// Headers prepended, in order.
    pub headers: &'static [&'static str],
    /// The file's text.
    pub body: &'static str,
    /// Kernels the Rust side launches from it.
    pub kernels: &'static [&'static str],
}

impl KernelSource {
    /// The complete program text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for h in self.headers {
            s.push_str(h);
            s.push('\n');
        }
        s.push_str(self.body);
        s
    }
}

const COMMON: &str = include_str!("kernels/common.cl");
const QUANT_COMMON: &str = include_str!("kernels/quant_common.cl");

/// RMS norm, RoPE, SiLU-and-mul, add, dense embedding.
pub static ELEMENTWISE: KernelSource = KernelSource {
    name: "elementwise",
    headers: &[COMMON],
    body: include_str!("kernels/elementwise.cl"),
    kernels: &["rms_norm", "rope", "silu_and_mul", "add", "embedding_dense"],
};

/// Tiled dense GEMM.
pub static GEMM: KernelSource = KernelSource {
    name: "gemm",
    headers: &[COMMON],
    body: include_str!("kernels/gemm.cl"),
    kernels: &["gemm", "gemm_skinny"],
};

/// GGUF Q4_0 / Q4_1 / Q8_0 GEMM and embedding.
pub static QUANT_GGUF: KernelSource = KernelSource {
    name: "quant_gguf",
    headers: &[COMMON, QUANT_COMMON],
    body: include_str!("kernels/quant_gguf.cl"),
    kernels: &["gguf_gemm", "gguf_embedding"],
};

/// AWQ and GPTQ GEMM (repacked).
pub static QUANT_INT: KernelSource = KernelSource {
    name: "quant_int",
    headers: &[COMMON, QUANT_COMMON],
    body: include_str!("kernels/quant_int.cl"),
    kernels: &["int_gemm"],
};

/// FP8 E4M3 W8A8: activation scales, quantisation, GEMM.
pub static QUANT_FP8: KernelSource = KernelSource {
    name: "quant_fp8",
    headers: &[COMMON, QUANT_COMMON],
    body: include_str!("kernels/quant_fp8.cl"),
    kernels: &["fp8_row_amax", "fp8_scales", "fp8_quantize", "fp8_gemm"],
};

/// write_kv.
pub static KV_CACHE: KernelSource = KernelSource {
    name: "kv_cache",
    headers: &[COMMON],
    body: include_str!("kernels/kv_cache.cl"),
    kernels: &["write_kv"],
};

/// Paged attention, its split-K reduction, flash attention.
pub static ATTENTION: KernelSource = KernelSource {
    name: "attention",
    headers: &[COMMON],
    body: include_str!("kernels/attention.cl"),
    kernels: &["paged_attention", "attention_reduce", "flash_attention"],
};

/// Every source.
pub static ALL: [&KernelSource; 7] = [
    &ELEMENTWISE,
    &GEMM,
    &QUANT_GGUF,
    &QUANT_INT,
    &QUANT_FP8,
    &KV_CACHE,
    &ATTENTION,
];
