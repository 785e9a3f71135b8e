//! One opened NVIDIA GPU: context, stream, memory, kernel loading, launches.
//!
//! All work goes to one CUDA stream per device, so ops and copies run in the
//! order they were issued; [`hal::Backend::synchronize`] waits for it.
//! Memory comes from the device's stream-ordered pool (`cuMemAllocAsync`),
//! whose release threshold is raised so freed blocks are reused rather than
//! returned to the driver: allocation in a decode loop costs no driver call
//! beyond the pool's bookkeeping.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream, DriverError};
use hal::{
    Backend, BackendId, Capabilities, DType, DeviceBuffer, HalError, KvLayout, OpDesc, Precision,
    QuantFormat, Result, Unavailable, Unsupported, View, ViewMut,
};

use hal::tensor::ViewInfo;

use crate::compile;
use crate::sources::KernelSource;

/// A kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// A device address.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `long long`.
    I64(i64),
    /// `float`.
    F32(f32),
}

impl Arg {
    /// The argument's bytes in the low end of a u64 (little-endian), which
    /// is what the driver reads for 4- and 8-byte parameters.
    fn bits(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        }
    }
}

/// A loaded kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Function(sys::CUfunction);

// SAFETY: a CUfunction is an immutable handle valid in its context from any
// thread; launches bind the context first.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

#[derive(Debug)]
struct Module(sys::CUmodule);

// SAFETY: module handles are used only under the device's mutex and with
// its context bound.
unsafe impl Send for Module {}

/// Device memory owned by a [`DeviceBuffer`] or a [`Scratch`]; freed in
/// stream order on drop.
#[derive(Debug)]
pub(crate) struct Memory {
    ptr: u64,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl Memory {
    /// Device address of the first byte.
    pub(crate) fn ptr(&self) -> u64 {
        self.ptr
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by cuMemAllocAsync on this stream, freed once.
            let _ = unsafe { result::free_async(self.ptr, self.stream.cu_stream()) };
        }
    }
}

/// Temporary device memory for one op (see [`CudaDevice::scratch`]).
#[derive(Debug)]
pub(crate) struct Scratch(Memory);

impl Scratch {
    /// Device address of the first byte.
    pub(crate) fn ptr(&self) -> u64 {
        self.0.ptr
    }
}

/// Loaded modules and kernels of one device.
#[derive(Debug, Default)]
struct Kernels {
    modules: HashMap<&'static str, Module>,
    functions: HashMap<(&'static str, String), Function>,
}

/// One NVIDIA GPU opened as a Kiln device (`cuda:N`).
pub struct CudaDevice {
    id: BackendId,
    name: String,
    caps: Capabilities,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    sm: String,
    sms: u32,
    kernels: Mutex<Kernels>,
    pub(crate) graphs: Mutex<crate::capture::Graphs>,
    pub(crate) blas: Option<crate::gemm::Blas>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.name)
            .field("device", &self.caps.device)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

/// Whether the CUDA driver library can be loaded.
pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names.
    unsafe { sys::is_culib_present() }
}

fn unavailable(index: usize, reason: Unavailable) -> HalError {
    HalError::Unavailable {
        backend: format!("cuda:{index}"),
        reason,
    }
}

/// Devices the driver sees: `(index, description)`.
pub(crate) fn list() -> std::result::Result<Vec<(usize, String)>, Unavailable> {
    if !driver_present() {
        return Err(Unavailable::NoDriver(
            "libcuda.so not found (no NVIDIA driver installed)".into(),
        ));
    }
    result::init().map_err(|e| Unavailable::NoDriver(format!("cuInit failed: {e}")))?;
    let count = result::device::get_count()
        .map_err(|e| Unavailable::NoDriver(format!("cuDeviceGetCount failed: {e}")))?;
    if count <= 0 {
        return Err(Unavailable::NoDevice(
            "the driver sees no NVIDIA GPU".into(),
        ));
    }
    let mut out = Vec::new();
    for i in 0..count {
        let desc = describe(i).unwrap_or_else(|e| format!("NVIDIA GPU ({e})"));
        out.push((i as usize, desc));
    }
    Ok(out)
}

fn describe(ordinal: i32) -> std::result::Result<String, DriverError> {
    let dev = result::device::get(ordinal)?;
    let name = result::device::get_name(dev)?;
    // SAFETY: `dev` is a valid device handle.
    let (major, minor, mem) = unsafe {
        (
            result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            )?,
            result::device::get_attribute(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            )?,
            result::device::total_mem(dev)?,
        )
    };
    Ok(format!(
        "{name} (sm_{major}{minor}, {:.1} GiB)",
        mem as f64 / (1u64 << 30) as f64
    ))
}

impl CudaDevice {
    /// Open GPU `index`. Fails with [`HalError::Unavailable`] when the driver,
    /// the GPU or NVRTC is missing, or the GPU is older than sm_80.
    pub fn open(index: usize) -> Result<CudaDevice> {
        let devices = list().map_err(|r| unavailable(index, r))?;
        if index >= devices.len() {
            return Err(unavailable(
                index,
                Unavailable::NoDevice(format!(
                    "cuda:{index} does not exist ({} GPU(s) visible)",
                    devices.len()
                )),
            ));
        }
        if !compile::nvrtc_present() {
            return Err(unavailable(
                index,
                Unavailable::NoDriver(compile::no_nvrtc_message()),
            ));
        }
        let name = format!("cuda:{index}");
        let dev_err =
            |what: &str, e: DriverError| HalError::device(&name, "open", format!("{what}: {e}"));
        let ctx = CudaContext::new(index).map_err(|e| dev_err("creating the context", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| dev_err("reading the compute capability", e))?;
        let cc = (major as u32, minor as u32);
        if cc.0 < 8 {
            return Err(unavailable(
                index,
                Unavailable::NoDevice(format!(
                    "cuda:{index} is sm_{}{}: Kiln's CUDA kernels need sm_80 or newer",
                    cc.0, cc.1
                )),
            ));
        }
        let stream = ctx
            .new_stream()
            .map_err(|e| dev_err("creating a stream", e))?;
        keep_pool_memory(&ctx).map_err(|e| dev_err("configuring the memory pool", e))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| dev_err("reading the SM count", e))? as u32;
        let memory = ctx.total_mem().ok().map(|m| m as u64);
        let description = describe(index as i32).unwrap_or_else(|_| "NVIDIA GPU".into());
        let blas = crate::gemm::Blas::new(&ctx, &stream);
        let caps = capabilities(description, memory);
        let graphs = Mutex::new(crate::capture::Graphs::new(ctx.clone()));
        Ok(CudaDevice {
            id: BackendId::fresh(),
            name,
            caps,
            ctx,
            stream,
            arch: compile::arch_for(cc.0, cc.1),
            sm: compile::sm_for(cc.0, cc.1),
            sms,
            kernels: Mutex::new(Kernels::default()),
            graphs,
            blas,
        })
    }

    /// Streaming multiprocessors.
    pub(crate) fn num_sms(&self) -> u32 {
        self.sms
    }

    /// Blocks of 256 threads for a grid-stride loop over `n` elements: enough
    /// to cover them, at most 8 per SM.
    pub(crate) fn stride_grid(&self, n: usize) -> u32 {
        n.div_ceil(256).clamp(1, self.sms as usize * 8) as u32
    }

    pub(crate) fn bind(&self, op: &'static str) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.driver_err(op, "binding the context", e))
    }

    /// The raw handle of the device's stream.
    pub(crate) fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    pub(crate) fn driver_err(&self, op: &'static str, what: &str, e: DriverError) -> HalError {
        HalError::device(&self.name, op, format!("{what}: {e}"))
    }

    fn module(&self, src: &'static KernelSource, op: &'static str) -> Result<sys::CUmodule> {
        let mut k = self
            .kernels
            .lock()
            .map_err(|_| HalError::device(&self.name, op, "kernel cache poisoned"))?;
        if let Some(m) = k.modules.get(src.name) {
            return Ok(m.0);
        }
        // A CUBIN for this GPU (no driver JIT); PTX for the virtual
        // architecture where NVRTC cannot target the GPU itself.
        let image = compile::cached_image(src, &self.sm)
            .or_else(|_| compile::cached_image(src, &self.arch))
            .map_err(|e| HalError::device(&self.name, op, e.to_string()))?;
        self.bind(op)?;
        // SAFETY: `image` is a CUBIN or a NUL-terminated PTX image, alive
        // for the call; the context is bound.
        let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| self.driver_err(op, &format!("loading {}.cu", src.name), e))?;
        k.modules.insert(src.name, Module(module));
        Ok(module)
    }

    /// Kernel `func` of `src`, compiled by NVRTC for this GPU on first use
    /// (and cached in memory and on disk).
    pub(crate) fn function(&self, src: &'static KernelSource, func: &str) -> Result<Function> {
        let op = "load_kernel";
        {
            let k = self
                .kernels
                .lock()
                .map_err(|_| HalError::device(&self.name, op, "kernel cache poisoned"))?;
            if let Some(f) = k.functions.get(&(src.name, func.to_string())) {
                return Ok(*f);
            }
        }
        let module = self.module(src, op)?;
        let cname = CString::new(func)
            .map_err(|_| HalError::device(&self.name, op, "kernel name contains NUL"))?;
        self.bind(op)?;
        // SAFETY: `module` is loaded in this context; the name is NUL-terminated.
        let f = unsafe { result::module::get_function(module, cname) }.map_err(|e| {
            self.driver_err(op, &format!("finding kernel {func} in {}.cu", src.name), e)
        })?;
        let f = Function(f);
        let mut k = self
            .kernels
            .lock()
            .map_err(|_| HalError::device(&self.name, op, "kernel cache poisoned"))?;
        k.functions.insert((src.name, func.to_string()), f);
        Ok(f)
    }

    /// Kernel `func` of `src` (see [`CudaDevice::function`]), allowed
    /// `smem` bytes of dynamic shared memory (opting in above 48 KiB).
    pub(crate) fn function_with_smem(
        &self,
        op: &'static str,
        src: &'static KernelSource,
        func: &str,
        smem: u32,
    ) -> Result<Function> {
        let f = self.function(src, func)?;
        if smem > 48 << 10 {
            self.set_max_dynamic_shared(op, &f, smem)?;
        }
        Ok(f)
    }

    /// Allow `f` up to `bytes` of dynamic shared memory (needed above 48 KiB).
    pub(crate) fn set_max_dynamic_shared(
        &self,
        op: &'static str,
        f: &Function,
        bytes: u32,
    ) -> Result<()> {
        self.bind(op)?;
        // SAFETY: `f` is a loaded function of this context.
        unsafe {
            result::function::set_function_attribute(
                f.0,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        }
        .map_err(|e| self.driver_err(op, "raising the shared-memory limit", e))
    }

    /// Launch `f` on the device's stream (asynchronous). A grid with a zero
    /// dimension launches nothing.
    pub(crate) fn launch(
        &self,
        op: &'static str,
        f: &Function,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        self.bind(op)?;
        let mut values: Vec<u64> = args.iter().map(|a| a.bits()).collect();
        let mut params: Vec<*mut c_void> = values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        // SAFETY: `f` is a loaded kernel; `params` points at one value per
        // parameter, alive until the call returns (the driver copies them).
        unsafe {
            result::launch_kernel(
                f.0,
                grid,
                block,
                shared_mem_bytes,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| self.driver_err(op, "launching a kernel", e))
    }

    fn alloc_memory(&self, op: &'static str, bytes: usize) -> Result<Memory> {
        let mut mem = Memory {
            ptr: 0,
            ctx: self.ctx.clone(),
            stream: self.stream.clone(),
        };
        if bytes == 0 {
            return Ok(mem);
        }
        self.bind(op)?;
        // SAFETY: the stream belongs to the bound context.
        mem.ptr = unsafe { result::malloc_async(self.stream.cu_stream(), bytes) }.map_err(|e| {
            if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                HalError::OutOfMemory {
                    backend: self.name.clone(),
                    bytes,
                }
            } else {
                self.driver_err(op, &format!("allocating {bytes} bytes"), e)
            }
        })?;
        Ok(mem)
    }

    /// Temporary device memory for one op, freed in stream order when dropped
    /// (so work queued before the drop may still use it).
    pub(crate) fn scratch(&self, op: &'static str, bytes: usize) -> Result<Scratch> {
        self.alloc_memory(op, bytes).map(Scratch)
    }

    /// A new buffer holding `bytes`.
    pub(crate) fn upload_bytes(&self, op: &'static str, bytes: &[u8]) -> Result<DeviceBuffer> {
        let mem = self.alloc_memory(op, bytes.len())?;
        let mut buf = DeviceBuffer::new(self.id, bytes.len(), mem);
        self.copy_in(op, &mut buf, 0, bytes)?;
        Ok(buf)
    }

    fn memory<'b>(&self, op: &'static str, b: &'b DeviceBuffer) -> Result<&'b Memory> {
        b.handle::<Memory>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{:?}", b.owner()),
            })
    }

    /// Base address of a whole buffer.
    pub(crate) fn buffer_ptr(&self, op: &'static str, b: &DeviceBuffer) -> Result<u64> {
        self.memory(op, b).map(Memory::ptr)
    }

    /// Address of a view's first element.
    pub(crate) fn ptr(&self, op: &'static str, v: &View<'_>) -> Result<u64> {
        Ok(self.buffer_ptr(op, v.buffer)? + v.byte_offset() as u64)
    }

    /// Address of a writable view's first element.
    pub(crate) fn ptr_mut(&self, op: &'static str, v: &ViewMut<'_>) -> Result<u64> {
        Ok(self.buffer_ptr(op, v.buffer)? + v.byte_offset() as u64)
    }

    fn copy_in(
        &self,
        op: &'static str,
        dst: &mut DeviceBuffer,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > dst.len())
        {
            return Err(HalError::invalid(
                &self.name,
                op,
                format!(
                    "{} bytes at offset {offset} overrun a {}-byte buffer",
                    src.len(),
                    dst.len()
                ),
            ));
        }
        if src.is_empty() {
            return Ok(());
        }
        let base = self.buffer_ptr(op, dst)?;
        self.bind(op)?;
        // SAFETY: the range lies inside the allocation (checked above); a
        // pageable source is staged by the driver before the call returns.
        unsafe { result::memcpy_htod_async(base + offset as u64, src, self.stream.cu_stream()) }
            .map_err(|e| self.driver_err(op, "copying to the device", e))
    }

    /// Copy `bytes` from one buffer range to another (stream-ordered).
    pub(crate) fn copy_device(
        &self,
        op: &'static str,
        dst: u64,
        src: u64,
        bytes: usize,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind(op)?;
        // SAFETY: callers pass ranges inside live allocations.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| self.driver_err(op, "copying on the device", e))
    }
}

/// Keep freed pool memory for reuse instead of returning it at every
/// synchronisation.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> std::result::Result<(), DriverError> {
    ctx.bind_to_thread()?;
    // SAFETY: the device handle is valid; the attribute takes a u64.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device())?;
        let mut threshold: u64 = u64::MAX;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut c_void,
        )
    }
}

/// What every CUDA device offers.
fn capabilities(device: String, memory_bytes: Option<u64>) -> Capabilities {
    Capabilities {
        device,
        memory_bytes,
        activation_dtypes: vec![DType::F32, DType::F16, DType::BF16],
        kv_cache_dtypes: vec![DType::F16, DType::BF16, DType::F32, DType::F8E4M3],
        kv_layouts: vec![KvLayout::Nhd],
        head_dims: vec![64, 80, 96, 128, 256],
        block_sizes: vec![16, 32],
        quant_formats: QuantFormat::ALL.to_vec(),
        precisions: vec![Precision::Exact],
        batch_invariant: false,
        step_capture: true,
    }
}

impl Backend for CudaDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        self.caps.check(op)?;
        match op {
            OpDesc::PagedAttention { .. } => crate::attention::supports_paged(op),
            OpDesc::FlashAttention { .. } => crate::attention::supports_flash(op),
            OpDesc::QuantGemm { .. } => crate::quant::supports(op),
            OpDesc::Embedding {
                table: hal::TableFormat::Quant(spec),
                ..
            } if !matches!(spec, hal::QuantSpec::Gguf(_)) => Err(Unsupported::new(
                "embedding",
                "quantised tables must be GGUF blocks",
            )),
            OpDesc::Gemm { .. } => crate::gemm::supports(self, op),
            _ => Ok(()),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        let mem = self.alloc_memory("alloc", bytes)?;
        Ok(DeviceBuffer::new(self.id, bytes, mem))
    }

    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()> {
        self.copy_in("upload", dst, offset, src)
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let op = "download";
        if offset
            .checked_add(dst.len())
            .is_none_or(|end| end > src.len())
        {
            return Err(HalError::invalid(
                &self.name,
                op,
                format!(
                    "{} bytes at offset {offset} overrun a {}-byte buffer",
                    dst.len(),
                    src.len()
                ),
            ));
        }
        if dst.is_empty() {
            return Ok(());
        }
        let base = self.buffer_ptr(op, src)?;
        self.bind(op)?;
        // SAFETY: the range lies inside the allocation; the stream is
        // synchronised before `dst` is used.
        unsafe { result::memcpy_dtoh_async(dst, base + offset as u64, self.stream.cu_stream()) }
            .map_err(|e| self.driver_err(op, "copying to the host", e))?;
        self.stream
            .synchronize()
            .map_err(|e| self.driver_err(op, "waiting for the copy", e))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind("synchronize")?;
        self.stream
            .synchronize()
            .map_err(|e| self.driver_err("synchronize", "waiting for the stream", e))
    }
}
