//! Capabilities of a PJRT device, and the limits `supports` adds to
//! [`hal::Capabilities::check`].

use hal::{Capabilities, DType, KvLayout, OpDesc, Precision, QuantFormat, Unsupported};

/// What every device behind the PJRT plugin runs: the lowerings are plain
/// StableHLO, so nothing here depends on the chip; `device` says which
/// platform answered.
pub(crate) fn capabilities(device: String) -> Capabilities {
    Capabilities {
        device,
        memory_bytes: None,
        activation_dtypes: vec![DType::F32, DType::F16, DType::BF16],
        kv_cache_dtypes: vec![DType::F32, DType::F16, DType::BF16, DType::F8E4M3],
        // NHD first: the engine uses the first layout; split-x (x elements
        // make 16 bytes: 4 for f32, 8 for f16 / bf16, 16 for FP8) is there
        // for caches shared with vLLM-style kernels.
        kv_layouts: vec![
            KvLayout::Nhd,
            KvLayout::VllmSplitX { x: 4 },
            KvLayout::VllmSplitX { x: 8 },
            KvLayout::VllmSplitX { x: 16 },
        ],
        head_dims: Vec::new(),
        block_sizes: Vec::new(),
        quant_formats: vec![
            QuantFormat::Q4_0,
            QuantFormat::Q4_1,
            QuantFormat::Q8_0,
            QuantFormat::Awq,
            QuantFormat::Gptq4,
            QuantFormat::Gptq8,
            QuantFormat::Fp8,
        ],
        precisions: vec![Precision::Exact, Precision::Int8Activations],
        batch_invariant: false,
        step_capture: false,
    }
}

/// [`Capabilities::check`] plus this backend's own limits.
pub(crate) fn supports(caps: &Capabilities, op: &OpDesc) -> Result<(), Unsupported> {
    caps.check(op)
}
