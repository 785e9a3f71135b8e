//! Kiln's portable GPU backend: WGSL compute shaders through wgpu (Vulkan,
//! Metal, DX12; Mesa's lavapipe where there is no GPU).
//!
//! * [`device`] — adapter probing, buffers, deferred submission (one command
//!   encoder per forward pass), pipeline and bind-group caches;
//! * `shader` — WGSL assembly: typed accessors for f32 / f16 / bf16 / FP8
//!   data packed in 32-bit words, shared number conversions;
//! * `gemm`, `quant`, `attention`, `kv_cache`, `elementwise` — one module per
//!   op family, their WGSL under `src/kernels/`.
//!
//! Opening never panics: with no adapter the probe reports
//! [`hal::Unavailable`] with the reason.

mod attention;
mod buffer;
mod caps;
pub mod device;
mod elementwise;
mod gemm;
mod kv_cache;
mod launch;
mod quant;
mod shader;

use std::sync::Arc;

use hal::{
    AddArgs, Backend, BackendFactory, Capabilities, DeviceBuffer, DeviceInfo, Elementwise,
    EmbeddingArgs, FlashAttention, FlashAttentionArgs, Gemm, GemmArgs, KvCache, KvCacheOps, OpDesc,
    PackedWeight, PagedAttention, PagedAttentionArgs, Probe, QuantGemm, QuantGemmArgs,
    QuantWeights, Result, RmsNormArgs, RopeArgs, SiluAndMulArgs, StepCapture, Unsupported,
    WriteKvArgs,
};

pub use device::WgpuDevice;

impl WgpuDevice {
    /// `supports`, as an error naming this backend.
    pub(crate) fn check(&self, op: &OpDesc) -> Result<()> {
        self.supports(op).map_err(|u| self.refuse(u))
    }
}

impl Backend for WgpuDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        caps::supports(&self.caps, op)
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        self.alloc_impl(bytes)
    }

    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()> {
        self.upload_impl(dst, offset, src)
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.download_impl(src, offset, dst)
    }

    fn synchronize(&self) -> Result<()> {
        self.synchronize_impl()
    }
}

impl Gemm for WgpuDevice {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        gemm::gemm(self, args)
    }
}

impl QuantGemm for WgpuDevice {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        quant::pack(self, w)
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        gemm::quant_gemm(self, args)
    }
}

impl KvCacheOps for WgpuDevice {
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        kv_cache::write_kv(self, args)
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        kv_cache::copy_blocks(self, cache, pairs)
    }
}

impl PagedAttention for WgpuDevice {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        attention::paged_attention(self, args)
    }
}

impl FlashAttention for WgpuDevice {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        attention::flash_attention(self, args)
    }
}

impl Elementwise for WgpuDevice {
    fn rms_norm(&self, args: RmsNormArgs<'_>) -> Result<()> {
        elementwise::rms_norm(self, args)
    }

    fn rope(&self, args: RopeArgs<'_>) -> Result<()> {
        elementwise::rope(self, args)
    }

    fn silu_and_mul(&self, args: SiluAndMulArgs<'_>) -> Result<()> {
        elementwise::silu_and_mul(self, args)
    }

    fn embedding(&self, args: EmbeddingArgs<'_>) -> Result<()> {
        elementwise::embedding(self, args)
    }

    fn add(&self, args: AddArgs<'_>) -> Result<()> {
        elementwise::add(self, args)
    }
}

impl StepCapture for WgpuDevice {}

/// Open the first adapter (`wgpu:0`).
pub fn open_default() -> Result<WgpuDevice> {
    WgpuDevice::open(0)
}

/// The registry factory of kind `wgpu`.
pub fn factory() -> BackendFactory {
    fn probe() -> Probe {
        match device::list() {
            Ok(devs) => Probe::Available(
                devs.into_iter()
                    .map(|(index, description)| DeviceInfo { index, description })
                    .collect(),
            ),
            Err(reason) => Probe::Unavailable(reason),
        }
    }
    fn open(index: usize) -> Result<Arc<dyn hal::Device>> {
        Ok(Arc::new(WgpuDevice::open(index)?))
    }
    BackendFactory {
        kind: "wgpu",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "Portable GPUs (Vulkan, Metal, DX12): WGSL compute shaders through wgpu",
        api_version: hal::API_VERSION,
        probe,
        open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics_and_open_agrees() {
        let f = factory();
        assert_eq!(f.kind, "wgpu");
        match (f.probe)() {
            Probe::Available(devs) => {
                assert!(!devs.is_empty());
                let d = (f.open)(0).expect("a listed adapter opens");
                assert_eq!(d.name(), "wgpu:0");
                assert!(!d.capabilities().device.is_empty());
                assert!((f.open)(devs.len()).is_err(), "index past the last adapter");
            }
            Probe::Unavailable(reason) => {
                assert!(!reason.to_string().is_empty());
                assert!((f.open)(0).is_err());
            }
        }
    }
}
