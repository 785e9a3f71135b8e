//! Kiln's Intel backend, written in OpenCL C (not SYCL: no SYCL compiler can
//! be installed where Kiln is built, while Intel GPUs run OpenCL C through
//! Intel's compute runtime, and PoCL runs the same sources on any CPU).
//!
//! The OpenCL library is loaded at run time through `opencl3`: the crate
//! builds anywhere, and a machine without an OpenCL platform gets a clear
//! [`hal::Unavailable`] when a device is opened, not a panic.
//!
//! * [`device`] — context, in-order queue, buffers, cached kernels, launches;
//!   the kernel path ([`KernelPath`]) chosen from the device's extensions;
//! * `compile` — program builds with an on-disk binary cache, build logs in
//!   errors;
//! * `sources` — the `.cl` files under `src/kernels/`;
//! * `gemm`, `quant`, `kv_cache`, `attention`, `elementwise` — one module
//!   per op family.

mod attention;
mod compile;
pub mod device;
mod elementwise;
mod gemm;
mod kv_cache;
mod quant;
mod sources;

use std::sync::Arc;

use hal::{
    AddArgs, BackendFactory, DeviceInfo, Elementwise, EmbeddingArgs, FlashAttention,
    FlashAttentionArgs, Gemm, GemmArgs, KvCache, KvCacheOps, PackedWeight, PagedAttention,
    PagedAttentionArgs, Probe, QuantGemm, QuantGemmArgs, QuantWeights, Result, RmsNormArgs,
    RopeArgs, SiluAndMulArgs, StepCapture, WriteKvArgs,
};

pub use device::{KernelPath, OpenClDevice};

impl Gemm for OpenClDevice {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        gemm::gemm(self, args)
    }
}

impl QuantGemm for OpenClDevice {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        quant::pack(self, w)
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        quant::quant_gemm(self, args)
    }
}

impl KvCacheOps for OpenClDevice {
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        kv_cache::write_kv(self, args)
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        kv_cache::copy_blocks(self, cache, pairs)
    }
}

impl PagedAttention for OpenClDevice {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        attention::paged_attention(self, args)
    }
}

impl FlashAttention for OpenClDevice {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        attention::flash_attention(self, args)
    }
}

impl Elementwise for OpenClDevice {
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

/// Steps run eagerly (no step capture).
impl StepCapture for OpenClDevice {}

/// Open the first OpenCL device (`opencl:0`).
pub fn open_default() -> Result<OpenClDevice> {
    OpenClDevice::open(0)
}

/// The registry factory of kind `opencl`.
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
        Ok(Arc::new(OpenClDevice::open(index)?))
    }
    BackendFactory {
        kind: "opencl",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "Intel GPUs (and any OpenCL 1.2 device, e.g. PoCL): OpenCL C kernels",
        api_version: hal::API_VERSION,
        probe,
        open,
    }
}

/// One program's complete OpenCL C text, for offline compile checks.
#[derive(Debug, Clone)]
pub struct ProgramText {
    /// Source name (`"attention"`).
    pub name: &'static str,
    /// The text (headers included).
    pub text: String,
    /// Kernels the Rust side launches from it.
    pub kernels: &'static [&'static str],
}

/// Every program's text (compile checks with `ocloc`).
pub fn program_texts() -> Vec<ProgramText> {
    sources::ALL
        .iter()
        .map(|s| ProgramText {
            name: s.name,
            text: s.text(),
            kernels: s.kernels,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn factory_probes_without_panicking() {
        let f = super::factory();
        assert_eq!(f.kind, "opencl");
        match (f.probe)() {
            hal::Probe::Available(devs) => assert!(!devs.is_empty()),
            hal::Probe::Unavailable(reason) => {
                let opened = (f.open)(0);
                assert!(opened.is_err(), "probe said {reason} but open succeeded");
            }
        }
    }
}
