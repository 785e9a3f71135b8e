//! The kernel sources, embedded in the binary and compiled at run time by
//! hiprtc for the GPU's `gcnArchName` (see [`crate::compile`]).
//!
//! Most sources are the CUDA backend's, shared unchanged: every source is
//! compiled with [`PRELUDE`] (`kernels/hip_prelude.h`, the HIP counterpart
//! of the CUDA prelude, which maps the CUDA warp vocabulary explicitly onto
//! AMD wavefronts) and its shared headers in front of it. Where AMD
//! hardware wants something else the source is this crate's own:
//!
//! * `kernels/attention_core.h` — the attention core staged through one LDS
//!   buffer with plain loads (the CUDA core double-buffers with `cp.async`);
//! * flash attention — the CUDA source up to its tensor-core section
//!   (`mma.sync`, `ldmatrix`), i.e. the SIMT kernels for f32, f16 and bf16;
//! * `kernels/gemm.hip` — the dense GEMM (cuBLAS on the CUDA side).

/// Types, dtype conversions, wavefront mapping and reductions.
pub(crate) const PRELUDE: &str = include_str!("kernels/hip_prelude.h");

/// The attention core shared by the paged and flash kernels (HIP version).
const ATTENTION_CORE: &str = include_str!("kernels/attention_core.h");

/// Loads and stores shared by the quantised-GEMM kernels (CUDA source).
const QUANT_COMMON: &str = include_str!("../../kernels-cuda/src/kernels/quant_common.cuh");

/// Where the tensor-core half of the CUDA flash-attention source starts.
pub(crate) const FLASH_MMA_MARKER: &str =
    "// ---------------------------------------------------------------------------\n// Tensor-core FlashAttention-2";

/// One translation unit of kernels.
#[derive(Debug)]
pub(crate) struct KernelSource {
    /// Short name, used in cache file names and errors.
    pub name: &'static str,
    /// Shared code compiled in front of `code` (after the prelude).
    pub headers: &'static [&'static str],
    /// HIP / CUDA C++ code (without the prelude).
    pub code: &'static str,
    /// Where given, only the text of `code` before this line is compiled.
    pub until: Option<&'static str>,
}

impl KernelSource {
    /// The code hiprtc compiles for this source (without prelude and
    /// headers). `Err` when the `until` marker is missing, i.e. the shared
    /// CUDA source changed shape.
    pub(crate) fn body(&self) -> Result<&'static str, String> {
        match self.until {
            None => Ok(self.code),
            Some(marker) => self
                .code
                .find(marker)
                .map(|at| &self.code[..at])
                .ok_or_else(|| format!("{}: marker {marker:?} not found", self.name)),
        }
    }
}

/// RMS norm, RoPE, SiLU-and-mul, dense embedding, add, GEMM epilogue.
pub(crate) static ELEMENTWISE: KernelSource = KernelSource {
    name: "elementwise",
    headers: &[],
    code: include_str!("../../kernels-cuda/src/kernels/elementwise.cu"),
    until: None,
};

/// `write_kv` and `copy_blocks`.
pub(crate) static KV_CACHE: KernelSource = KernelSource {
    name: "kv_cache",
    headers: &[],
    code: include_str!("../../kernels-cuda/src/kernels/kv_cache.cu"),
    until: None,
};

/// Paged attention (decode, chunked prefill; partitioned for long contexts).
pub(crate) static PAGED_ATTENTION: KernelSource = KernelSource {
    name: "paged_attention",
    headers: &[ATTENTION_CORE],
    code: include_str!("../../kernels-cuda/src/kernels/paged_attention.cu"),
    until: None,
};

/// Dense varlen FlashAttention-2: the SIMT kernels of the CUDA source.
pub(crate) static FLASH_ATTENTION: KernelSource = KernelSource {
    name: "flash_attention",
    headers: &[ATTENTION_CORE],
    code: include_str!("../../kernels-cuda/src/kernels/flash_attention.cu"),
    until: Some(FLASH_MMA_MARKER),
};

/// GGUF Q4_0 / Q4_1 / Q8_0 GEMM and embedding rows.
pub(crate) static QUANT_GGUF: KernelSource = KernelSource {
    name: "quant_gguf",
    headers: &[QUANT_COMMON],
    code: include_str!("../../kernels-cuda/src/kernels/quant_gguf.cu"),
    until: None,
};

/// AWQ / GPTQ int4 (and GPTQ int8) GEMM.
pub(crate) static QUANT_INT4: KernelSource = KernelSource {
    name: "quant_int4",
    headers: &[QUANT_COMMON],
    code: include_str!("../../kernels-cuda/src/kernels/quant_int4.cu"),
    until: None,
};

/// FP8 E4M3 W8A8 GEMM and activation quantisation.
pub(crate) static QUANT_FP8: KernelSource = KernelSource {
    name: "quant_fp8",
    headers: &[QUANT_COMMON],
    code: include_str!("../../kernels-cuda/src/kernels/quant_fp8.cu"),
    until: None,
};

/// Dense GEMM (LDS-tiled, f32 accumulation, fused bias and output cast).
pub(crate) static GEMM: KernelSource = KernelSource {
    name: "gemm",
    headers: &[],
    code: include_str!("kernels/gemm.hip"),
    until: None,
};

/// Every source, for compile checks and warm-up (slowest first, so a
/// parallel compile finishes sooner).
pub(crate) static ALL: [&KernelSource; 8] = [
    &PAGED_ATTENTION,
    &QUANT_GGUF,
    &QUANT_INT4,
    &FLASH_ATTENTION,
    &QUANT_FP8,
    &GEMM,
    &ELEMENTWISE,
    &KV_CACHE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_body_is_found() {
        for src in ALL {
            let body = src.body().unwrap_or_default();
            assert!(!body.is_empty(), "{}", src.name);
            assert!(
                !body.contains("asm(") && !body.contains("asm volatile"),
                "{}",
                src.name
            );
        }
        let flash = FLASH_ATTENTION.body().unwrap_or_default();
        assert!(flash.contains("flash_attention_impl"));
        assert!(!flash.contains("mma.sync"));
    }

    #[test]
    fn no_source_holds_inline_ptx() {
        for text in [PRELUDE, ATTENTION_CORE, QUANT_COMMON] {
            assert!(!text.contains("asm(") && !text.contains("asm volatile"));
        }
    }
}
