//! The CUDA C++ kernel sources, embedded in the binary and compiled at run
//! time by NVRTC (see [`crate::compile`]).
//!
//! Every source is compiled with [`PRELUDE`] (`kernels/common.cuh`) and its
//! shared headers in front of it, so no CUDA header is needed on the machine.

/// One translation unit of kernels.
#[derive(Debug)]
pub(crate) struct KernelSource {
    /// Short name, used in cache file names and errors.
    pub name: &'static str,
    /// Shared code compiled in front of `code` (after the prelude).
    pub headers: &'static [&'static str],
    /// CUDA C++ code (without the prelude).
    pub code: &'static str,
}

/// Types, dtype conversions and reductions every source uses.
pub(crate) const PRELUDE: &str = include_str!("kernels/common.cuh");

/// The attention core shared by the paged and flash kernels.
const ATTENTION_CORE: &str = include_str!("kernels/attention_core.cuh");

/// Loads and stores shared by the quantised-GEMM kernels.
const QUANT_COMMON: &str = include_str!("kernels/quant_common.cuh");

/// RMS norm, RoPE, SiLU-and-mul, dense embedding, add, GEMM epilogue.
pub(crate) static ELEMENTWISE: KernelSource = KernelSource {
    name: "elementwise",
    headers: &[],
    code: include_str!("kernels/elementwise.cu"),
};

/// `write_kv` and `copy_blocks`.
pub(crate) static KV_CACHE: KernelSource = KernelSource {
    name: "kv_cache",
    headers: &[],
    code: include_str!("kernels/kv_cache.cu"),
};

/// Paged attention (decode, chunked prefill; partitioned for long contexts).
pub(crate) static PAGED_ATTENTION: KernelSource = KernelSource {
    name: "paged_attention",
    headers: &[ATTENTION_CORE],
    code: include_str!("kernels/paged_attention.cu"),
};

/// Dense varlen FlashAttention-2.
pub(crate) static FLASH_ATTENTION: KernelSource = KernelSource {
    name: "flash_attention",
    headers: &[ATTENTION_CORE],
    code: include_str!("kernels/flash_attention.cu"),
};

/// GGUF Q4_0 / Q4_1 / Q8_0 GEMM and embedding rows.
pub(crate) static QUANT_GGUF: KernelSource = KernelSource {
    name: "quant_gguf",
    headers: &[QUANT_COMMON],
    code: include_str!("kernels/quant_gguf.cu"),
};

/// AWQ / GPTQ int4 (and GPTQ int8) GEMM.
pub(crate) static QUANT_INT4: KernelSource = KernelSource {
    name: "quant_int4",
    headers: &[QUANT_COMMON],
    code: include_str!("kernels/quant_int4.cu"),
};

/// FP8 E4M3 W8A8 GEMM and activation quantisation.
pub(crate) static QUANT_FP8: KernelSource = KernelSource {
    name: "quant_fp8",
    headers: &[QUANT_COMMON],
    code: include_str!("kernels/quant_fp8.cu"),
};

/// Every source, for compile checks and warm-up.
pub(crate) static ALL: [&KernelSource; 7] = [
    &ELEMENTWISE,
    &KV_CACHE,
    &PAGED_ATTENTION,
    &FLASH_ATTENTION,
    &QUANT_GGUF,
    &QUANT_INT4,
    &QUANT_FP8,
];
