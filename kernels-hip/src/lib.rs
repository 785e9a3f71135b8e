//! Kiln's AMD backend: kernels compiled at run time by hiprtc for the GPU's
//! `gcnArchName` (CDNA: MI200 / MI300, RDNA 2 / 3), everything on one HIP
//! stream per device.
//!
//! * [`sys`](crate::sys) — a thin `libloading` binding to `libamdhip64`
//!   and hiprtc, so the crate builds with no ROCm and a machine without it
//!   gets a clear [`hal::Unavailable`] ("no HIP runtime", "no HIP device");
//! * [`device`] — stream, memory, kernel loading and launches;
//! * [`compile`](crate::compile) — hiprtc with an on-disk code-object cache
//!   (key: source hash + target + hiprtc version + options);
//! * `sources` — the kernel sources: the CUDA backend's, shared through a
//!   portability prelude (`kernels/hip_prelude.h`) where they port
//!   honestly, this crate's own where AMD hardware wants something else;
//! * `attention`, `quant`, `gemm`, `elementwise`, `kv_cache` — one module
//!   per op family.

mod attention;
mod blas;
mod compile;
pub mod device;
mod elementwise;
mod gemm;
mod kv_cache;
mod quant;
mod sources;
mod sys;

use std::sync::Arc;

use hal::{
    AddArgs, BackendFactory, DeviceInfo, Elementwise, EmbeddingArgs, FlashAttention,
    FlashAttentionArgs, Gemm, GemmArgs, KvCache, KvCacheOps, PackedWeight, PagedAttention,
    PagedAttentionArgs, Probe, QuantGemm, QuantGemmArgs, QuantWeights, Result, RmsNormArgs,
    RopeArgs, SiluAndMulArgs, StepCapture, WriteKvArgs,
};

pub use device::HipDevice;

impl Gemm for HipDevice {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        gemm::gemm(self, args)
    }
}

impl QuantGemm for HipDevice {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        quant::pack(self, w)
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        quant::quant_gemm(self, args)
    }
}

impl KvCacheOps for HipDevice {
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        kv_cache::write_kv(self, args)
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        kv_cache::copy_blocks(self, cache, pairs)
    }
}

impl PagedAttention for HipDevice {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        attention::paged_attention(self, args)
    }
}

impl FlashAttention for HipDevice {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        attention::flash_attention(self, args)
    }
}

impl Elementwise for HipDevice {
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

/// Steps run eagerly (HIP graphs are not used yet).
impl StepCapture for HipDevice {}

/// Open the first GPU (`hip:0`).
pub fn open_default() -> Result<HipDevice> {
    HipDevice::open(0)
}

/// The registry factory of kind `hip`.
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
        Ok(Arc::new(HipDevice::open(index)?))
    }
    BackendFactory {
        kind: "hip",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "AMD GPUs (CDNA, RDNA): HIP kernels compiled by hiprtc",
        api_version: hal::API_VERSION,
        probe,
        open,
    }
}

/// Compile every kernel source for `arch` (a `gcnArchName` such as
/// `gfx90a:sramecc+:xnack-`) into the on-disk cache (`$KILN_HIP_CACHE`,
/// else `~/.cache/kiln/hip`), one thread per source, so a GPU machine's
/// first start skips hiprtc. Returns each source's name and code-object
/// size. Targets this ROCm's hiprtc cannot compile for (gfx94x before ROCm
/// 6, where it aborts the process) are refused up front.
pub fn precompile_parallel(arch: &str) -> std::result::Result<Vec<(&'static str, usize)>, String> {
    if !sys::is_arch_name(arch) {
        return Err(format!(
            "{arch:?} is not an AMD GPU target (expected e.g. gfx90a or gfx942:sramecc+:xnack-)"
        ));
    }
    let runtime_version = sys::Runtime::get().and_then(|rt| rt.version()).unwrap_or(0);
    if let Some(why) = compile::unsupported_target(arch, runtime_version) {
        return Err(why);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources::ALL
            .iter()
            .map(|src| {
                scope.spawn(move || {
                    compile::cached_code_object(src, arch)
                        .map(|code| (src.name, code.len()))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(_) => Err("a compile thread panicked".to_string()),
            })
            .collect()
    })
}

/// Whether hiprtc can be loaded on this machine.
pub fn hiprtc_available() -> bool {
    compile::compiler_present()
}

/// Every kernel source's name and full text (prelude, shared headers,
/// body), as hiprtc or `hipcc` compiles it (compile checks).
#[doc(hidden)]
pub fn sources_for_tests() -> std::result::Result<Vec<(&'static str, String)>, String> {
    sources::ALL
        .iter()
        .map(|src| {
            compile::full_source(src)
                .map(|text| (src.name, text))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Compile source `name` for `arch` (e.g. `gfx90a`) with hiprtc, through
/// the on-disk cache; returns the code object (compile checks).
#[doc(hidden)]
pub fn code_object_for_tests(name: &str, arch: &str) -> std::result::Result<Vec<u8>, String> {
    let src = sources::ALL
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no kernel source {name}"))?;
    compile::cached_code_object(src, arch).map_err(|e| e.to_string())
}

/// The kernel names the Rust side of source `name` may launch (compile
/// checks: a name missing from the code object would fail only on a GPU).
#[doc(hidden)]
pub fn entry_points_for_tests(name: &str) -> Vec<String> {
    match name {
        "elementwise" => elementwise::kernel_names(),
        "kv_cache" => kv_cache::kernel_names(),
        "paged_attention" | "flash_attention" => attention::kernel_names(name),
        "quant_gguf" | "quant_int4" | "quant_fp8" => quant::kernel_names(name),
        "gemm" => gemm::kernel_names(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn factory_probes_without_panicking() {
        let f = super::factory();
        assert_eq!(f.kind, "hip");
        match (f.probe)() {
            hal::Probe::Available(devs) => assert!(!devs.is_empty()),
            hal::Probe::Unavailable(reason) => {
                let text = reason.to_string();
                assert!(text.contains("HIP runtime"), "{text}");
                let opened = (f.open)(0);
                assert!(opened.is_err(), "probe said {reason} but open succeeded");
            }
        }
    }

    #[test]
    fn precompile_refuses_bad_targets() {
        let e = super::precompile_parallel("sm_90a")
            .err()
            .unwrap_or_default();
        assert!(e.contains("not an AMD GPU target"), "{e}");
        // Without ROCm 6 (or without any runtime) gfx942 is refused, never
        // handed to a hiprtc that would abort.
        let rocm6 = super::sys::Runtime::get()
            .and_then(|rt| rt.version())
            .is_ok_and(|v| v >= 60_000_000);
        if !rocm6 {
            assert!(super::precompile_parallel("gfx942").is_err());
        }
    }

    #[test]
    fn every_launched_kernel_has_a_source() {
        let names = super::sources_for_tests().unwrap_or_default();
        assert_eq!(names.len(), 8);
        for (name, _) in &names {
            assert!(!super::entry_points_for_tests(name).is_empty(), "{name}");
        }
    }
}
