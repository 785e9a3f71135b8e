//! Kiln's TPU backend: every op is a StableHLO program, compiled and run by
//! a PJRT plugin (`libtpu.so` on a TPU VM; XLA's CPU plugin elsewhere).
//!
//! * [`pjrt`] — the binding to the PJRT C API (dlopen, `GetPjrtApi`,
//!   version check, client, compile, execute, buffers, events, errors);
//! * [`hlo`] — a typed builder producing StableHLO programs as MLIR text;
//! * [`device`] — the process-wide client, byte buffers kept on the device,
//!   the compiled-program cache, and the view load/store helpers;
//! * `gemm`, `quant`, `attention`, `kv_cache`, `elementwise` — the lowerings,
//!   one module per op family.
//!
//! The plugin is `$KILN_PJRT_PLUGIN`, else the cached CPU plugin
//! (`~/.cache/kiln/pjrt/pjrt_c_api_cpu_plugin.so`). Opening never panics:
//! without a plugin the probe reports [`hal::Unavailable`] with the reason.

mod attention;
mod caps;
pub mod device;
mod elementwise;
mod gemm;
pub mod hlo;
mod kv_cache;
pub mod pjrt;
mod quant;

use std::sync::Arc;

use hal::{
    AddArgs, Backend, BackendFactory, Capabilities, DeviceBuffer, DeviceInfo, Elementwise,
    EmbeddingArgs, FlashAttention, FlashAttentionArgs, Gemm, GemmArgs, KvCache, KvCacheOps, OpDesc,
    PackedWeight, PagedAttention, PagedAttentionArgs, Probe, QuantGemm, QuantGemmArgs,
    QuantWeights, Result, RmsNormArgs, RopeArgs, SiluAndMulArgs, StepCapture, Unsupported,
    WriteKvArgs,
};

pub use device::TpuDevice;

impl TpuDevice {
    /// `supports`, as an error naming this backend.
    pub(crate) fn check(&self, op: &OpDesc) -> Result<()> {
        self.supports(op).map_err(|u| self.refuse(u))
    }
}

impl Backend for TpuDevice {
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

    /// Every program run waits for its completion event, so there is
    /// nothing left to wait for.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl Gemm for TpuDevice {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        gemm::gemm(self, args)
    }
}

impl QuantGemm for TpuDevice {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        quant::pack(self, w)
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        quant::quant_gemm(self, args)
    }
}

impl KvCacheOps for TpuDevice {
    /// K and V as typed arrays `[num_blocks, block_size, kv_heads, head_dim]`
    /// of the cache dtype, so attention and `write_kv` use them in place.
    fn alloc_kv_cache(
        &self,
        spec: &hal::KvCacheSpec,
        k_scale: f32,
        v_scale: f32,
    ) -> Result<KvCache> {
        kv_cache::alloc_kv_cache(self, spec, k_scale, v_scale)
    }

    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        kv_cache::write_kv(self, args)
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        kv_cache::copy_blocks(self, cache, pairs)
    }
}

impl PagedAttention for TpuDevice {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        attention::paged_attention(self, args)
    }
}

impl FlashAttention for TpuDevice {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        attention::flash_attention(self, args)
    }
}

impl Elementwise for TpuDevice {
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

/// Eager steps: every op is its own program (see the crate README for the
/// plan to compile a whole decode step as one program).
impl StepCapture for TpuDevice {}

/// Open the plugin's first device (`tpu:0`).
pub fn open_default() -> Result<TpuDevice> {
    TpuDevice::open(0)
}

/// The registry factory of kind `tpu`.
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
        Ok(Arc::new(TpuDevice::open(index)?))
    }
    BackendFactory {
        kind: "tpu",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "TPUs (and XLA's CPU plugin): StableHLO through PJRT",
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
        assert_eq!(f.kind, "tpu");
        match (f.probe)() {
            Probe::Available(devs) => {
                assert!(!devs.is_empty());
                let d = (f.open)(0).expect("a listed device opens");
                assert_eq!(d.name(), "tpu:0");
                assert!(d.capabilities().device.contains("PJRT"));
                assert!((f.open)(devs.len()).is_err(), "index past the last device");
            }
            Probe::Unavailable(reason) => {
                let required = std::env::var("KILN_REQUIRE_TPU").is_ok_and(|v| v == "1");
                assert!(!required, "KILN_REQUIRE_TPU=1 but no PJRT device: {reason}");
                assert!(!reason.to_string().is_empty());
                assert!((f.open)(0).is_err());
            }
        }
    }

    #[test]
    fn upload_download_round_trip() {
        let Ok(d) = open_default() else {
            return;
        };
        let mut b = d.alloc(16).expect("alloc");
        let mut out = [0xffu8; 16];
        d.download(&b, 0, &mut out).expect("download");
        assert_eq!(out, [0u8; 16]);
        d.upload(&mut b, 0, &[7u8; 16]).expect("upload");
        d.upload(&mut b, 4, &[1, 2, 3]).expect("partial upload");
        d.download(&b, 0, &mut out).expect("download");
        assert_eq!(&out[..8], &[7, 7, 7, 7, 1, 2, 3, 7]);
        let mut part = [0u8; 2];
        d.download(&b, 5, &mut part).expect("partial download");
        assert_eq!(part, [2, 3]);
        assert!(d.upload(&mut b, 15, &[0, 0]).is_err());
        assert!(d.download(&b, 20, &mut part).is_err());
    }
}
