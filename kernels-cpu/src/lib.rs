//! # kernels-cpu: Kiln's CPU backend
//!
//! Every HAL op on the host CPU: SIMD kernels chosen at run time
//! ([`Isa`]: AVX-512, AVX2, scalar; `KILN_CPU_ISA` forces one), all cores
//! through one persistent rayon pool (`KILN_NUM_THREADS` sizes it), and
//! **batch invariance**: each output row is reduced in an order that depends
//! only on that row, never on the batch size, the thread count or how a
//! sequence's tokens are chunked — so a request recomputed as prefill after
//! preemption gets bitwise the logits it had while decoding.
//!
//! Buffers are 64-byte aligned host memory behind the HAL's opaque handle;
//! ops run synchronously, so `synchronize` has nothing to wait for.

mod attention;
mod convert;
mod elementwise;
mod gemm;
pub mod isa;
mod kv_cache;
mod memory;
mod quant_gemm;
mod simd;

use std::sync::Arc;

use hal::{
    Backend, BackendFactory, BackendId, Capabilities, DType, Device, DeviceBuffer, DeviceInfo,
    HalError, KvLayout, OpDesc, Precision, Probe, QuantFormat, Result, StepCapture, Unavailable,
    Unsupported, API_VERSION,
};

pub use isa::Isa;
use memory::{Access, HostMem};

/// The CPU device.
pub struct CpuBackend {
    id: BackendId,
    caps: Capabilities,
    isa: Isa,
    pool: rayon::ThreadPool,
}

impl CpuBackend {
    /// Open the CPU with the best ISA (or `KILN_CPU_ISA`) and
    /// `KILN_NUM_THREADS` threads (default: all cores).
    pub fn open_default() -> Result<Self> {
        let isa = Isa::select().map_err(|m| unavailable(Unavailable::NoDevice(m)))?;
        let threads = match std::env::var("KILN_NUM_THREADS") {
            Ok(s) if !s.is_empty() => {
                s.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    HalError::invalid(
                        "cpu",
                        "open",
                        format!("KILN_NUM_THREADS={s:?} is not a positive integer"),
                    )
                })?
            }
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Self::with(isa, threads)
    }

    /// Open with an explicit ISA and thread count.
    pub fn with(isa: Isa, threads: usize) -> Result<Self> {
        if !Isa::available().contains(&isa) {
            return Err(unavailable(Unavailable::NoDevice(format!(
                "this CPU cannot run {isa} kernels"
            ))));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("kiln-cpu-{i}"))
            .build()
            .map_err(|e| HalError::device("cpu", "open", format!("thread pool: {e}")))?;
        Ok(CpuBackend {
            id: BackendId::fresh(),
            caps: capabilities(isa, threads),
            isa,
            pool,
        })
    }

    /// The SIMD level in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    pub(crate) fn access(&self) -> Access<'_> {
        Access {
            id: self.id,
            name: "cpu",
        }
    }

    pub(crate) fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    /// Refuse an op `supports` refuses (ops call this after validating).
    pub(crate) fn check(&self, op: &OpDesc) -> Result<()> {
        self.supports(op).map_err(|u| self.refuse(u))
    }
}

fn unavailable(reason: Unavailable) -> HalError {
    HalError::Unavailable {
        backend: "cpu".into(),
        reason,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn capabilities(isa: Isa, threads: usize) -> Capabilities {
    Capabilities {
        device: format!("{} ({threads} threads, {isa})", cpu_model()),
        memory_bytes: memory_bytes(),
        activation_dtypes: vec![DType::F32, DType::F16, DType::BF16],
        kv_cache_dtypes: vec![DType::F32, DType::F16, DType::BF16, DType::F8E4M3],
        kv_layouts: vec![KvLayout::Nhd],
        head_dims: Vec::new(),
        block_sizes: Vec::new(),
        quant_formats: QuantFormat::ALL.to_vec(),
        precisions: vec![Precision::Exact, Precision::Int8Activations],
        batch_invariant: true,
        step_capture: false,
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        self.caps.check(op)?;
        match op {
            OpDesc::Gemm { .. } => gemm::supports(op),
            OpDesc::QuantGemm { .. } => quant_gemm::supports(op),
            OpDesc::WriteKv { .. } | OpDesc::CopyBlocks { .. } => kv_cache::supports(op),
            OpDesc::PagedAttention { .. } | OpDesc::FlashAttention { .. } => {
                attention::supports(op)
            }
            OpDesc::RmsNorm { .. }
            | OpDesc::Rope { .. }
            | OpDesc::SiluAndMul { .. }
            | OpDesc::Embedding { .. }
            | OpDesc::Add { .. } => elementwise::supports(op),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        Ok(DeviceBuffer::new(self.id, bytes, HostMem::new(bytes)))
    }

    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()> {
        let len = dst.len();
        let bytes = self.access().buffer_bytes_mut("upload", dst)?;
        let end = offset
            .checked_add(src.len())
            .filter(|&e| e <= len)
            .ok_or_else(|| {
                HalError::invalid(
                    "cpu",
                    "upload",
                    format!(
                        "{} bytes at offset {offset} overflow a {len}-byte buffer",
                        src.len()
                    ),
                )
            })?;
        bytes[offset..end].copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let bytes = self.access().buffer_bytes("download", src)?;
        let end = offset
            .checked_add(dst.len())
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                HalError::invalid(
                    "cpu",
                    "download",
                    format!(
                        "{} bytes at offset {offset} overflow a {}-byte buffer",
                        dst.len(),
                        bytes.len()
                    ),
                )
            })?;
        dst.copy_from_slice(&bytes[offset..end]);
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl StepCapture for CpuBackend {}

/// The registry factory for kind `cpu`.
pub fn factory() -> BackendFactory {
    fn probe() -> Probe {
        match Isa::select() {
            Ok(isa) => Probe::Available(vec![DeviceInfo {
                index: 0,
                description: format!("{} ({isa})", cpu_model()),
            }]),
            Err(m) => Probe::Unavailable(Unavailable::NoDevice(m)),
        }
    }
    fn open(index: usize) -> Result<Arc<dyn Device>> {
        if index != 0 {
            return Err(HalError::Unavailable {
                backend: format!("cpu:{index}"),
                reason: Unavailable::NoDevice("the CPU backend has one device, cpu".into()),
            });
        }
        Ok(Arc::new(CpuBackend::open_default()?))
    }
    BackendFactory {
        kind: "cpu",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "CPU: SIMD kernels with run-time ISA detection, all cores, batch-invariant",
        api_version: API_VERSION,
        probe,
        open,
    }
}
