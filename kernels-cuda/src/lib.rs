//! Kiln's NVIDIA backend: CUDA C++ kernels compiled at run time by NVRTC for
//! the GPU in hand (sm_80 and newer; `compute_90a` on Hopper), cuBLAS for
//! dense GEMM, everything on one stream per device.
//!
//! * [`device`] — context, stream, stream-ordered memory pool, kernel
//!   loading and launches;
//! * [`compile`](crate::compile) — NVRTC with an on-disk PTX cache (key:
//!   source hash + architecture + NVRTC version);
//! * `capture` — whole decode steps recorded as CUDA graphs and replayed
//!   ([`hal::StepCapture`]);
//! * `attention`, `quant`, `gemm`, `elementwise`, `kv_cache` — one module
//!   per op family, each with its `.cu` source under `src/kernels/`.
//!
//! The crate builds with no CUDA toolkit: the driver, NVRTC and cuBLAS are
//! loaded when a device is opened, and a machine without them gets a clear
//! [`hal::Unavailable`] instead of a panic.

mod attention;
mod capture;
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
    RopeArgs, SiluAndMulArgs, StepCapture, StepKey, StepMode, WriteKvArgs,
};

pub use device::CudaDevice;

impl Gemm for CudaDevice {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        gemm::gemm(self, args)
    }
}

impl QuantGemm for CudaDevice {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        quant::pack(self, w)
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        quant::quant_gemm(self, args)
    }
}

impl KvCacheOps for CudaDevice {
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        kv_cache::write_kv(self, args)
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        kv_cache::copy_blocks(self, cache, pairs)
    }
}

impl PagedAttention for CudaDevice {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        attention::paged_attention(self, args)
    }
}

impl FlashAttention for CudaDevice {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        attention::flash_attention(self, args)
    }
}

impl Elementwise for CudaDevice {
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

impl StepCapture for CudaDevice {
    fn begin_step(&self, key: &StepKey) -> Result<StepMode> {
        self.begin_step_impl(key)
    }

    fn end_step(&self, key: &StepKey) -> Result<()> {
        self.end_step_impl(key)
    }

    fn replay_step(&self, key: &StepKey) -> Result<()> {
        self.replay_step_impl(key)
    }

    fn invalidate_steps(&self) -> Result<()> {
        self.invalidate_steps_impl()
    }
}

/// Open the first GPU (`cuda:0`).
pub fn open_default() -> Result<CudaDevice> {
    CudaDevice::open(0)
}

/// The registry factory of kind `cuda`.
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
        Ok(Arc::new(CudaDevice::open(index)?))
    }
    BackendFactory {
        kind: "cuda",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "NVIDIA GPUs (sm_80+): CUDA kernels compiled by NVRTC, cuBLAS",
        api_version: hal::API_VERSION,
        probe,
        open,
    }
}

/// Compile every kernel source for `target` into the on-disk cache
/// (`$KILN_CUDA_CACHE`, else `~/.cache/kiln/cuda`): CUBINs for a real
/// architecture (`sm_90a`), PTX for a virtual one (`compute_90a`), so a GPU
/// machine's first start skips NVRTC and the driver's JIT; one thread per
/// source. Returns each source's name and image size.
pub fn precompile_parallel(
    target: &str,
) -> std::result::Result<Vec<(&'static str, usize)>, String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources::ALL
            .iter()
            .map(|src| {
                scope.spawn(move || compile::cached_image(src, target).map(|i| (src.name, i.len())))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("a compile thread panicked".to_string()),
            })
            .collect()
    })
}

/// Every source's PTX for `arch` (compile checks).
#[doc(hidden)]
pub fn ptx_for_tests(arch: &str) -> std::result::Result<Vec<(&'static str, String)>, String> {
    sources::ALL
        .iter()
        .map(|src| {
            compile::compile_ptx(src, arch)
                .map(|ptx| (src.name, ptx))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The kernel names the Rust side of source `name` may launch (compile
/// checks: a name missing from the PTX would fail only on a GPU).
#[doc(hidden)]
pub fn entry_points_for_tests(name: &str) -> Vec<String> {
    match name {
        "elementwise" => elementwise::kernel_names(),
        "kv_cache" => kv_cache::kernel_names(),
        "paged_attention" | "flash_attention" => attention::kernel_names(name),
        "quant_gguf" | "quant_int4" | "quant_fp8" => quant::kernel_names(name),
        _ => Vec::new(),
    }
}

/// Whether NVRTC can be loaded on this machine.
pub fn nvrtc_available() -> bool {
    compile::nvrtc_present()
}

#[cfg(test)]
mod tests {
    #[test]
    fn factory_probes_without_panicking() {
        let f = super::factory();
        assert_eq!(f.kind, "cuda");
        match (f.probe)() {
            hal::Probe::Available(devs) => assert!(!devs.is_empty()),
            hal::Probe::Unavailable(reason) => {
                let opened = (f.open)(0);
                assert!(opened.is_err(), "probe said {reason} but open succeeded");
            }
        }
    }
}
