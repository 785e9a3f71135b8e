//! One opened AMD GPU: stream, memory, kernel loading, launches.
//!
//! All work goes to one HIP stream per device, so ops and copies run in the
//! order they were issued; [`hal::Backend::synchronize`] waits for it.
//! Memory comes from the stream-ordered allocator (`hipMallocAsync`) where
//! the runtime has it (ROCm 5.3 and newer), else from `hipMalloc`.
//! The HIP "current device" is per host thread, so every entry point sets it
//! before touching the device.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use hal::{
    Backend, BackendId, Capabilities, DType, DeviceBuffer, HalError, KvLayout, OpDesc, Precision,
    QuantFormat, Result, Unavailable, Unsupported, View, ViewMut,
};

use hal::tensor::ViewInfo;

use crate::compile;
use crate::sources::KernelSource;
use crate::sys::{self, attr, HipFunction, HipModule, HipStream, Runtime};

/// LDS (shared memory) bytes one workgroup may use on every AMD GPU Kiln
/// targets (CDNA 2/3, RDNA 2/3); the kernels are sized to fit it.
pub(crate) const LDS_BYTES: usize = 64 << 10;

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
    /// is what the runtime reads for 4- and 8-byte parameters.
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
pub(crate) struct Function(HipFunction);

// SAFETY: a hipFunction_t is an immutable handle, valid from any thread.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

#[derive(Debug)]
struct Module(HipModule);

// SAFETY: module handles are used only under the device's mutex.
unsafe impl Send for Module {}

/// The device's stream; destroyed when the device and every buffer are gone.
#[derive(Debug)]
struct Stream {
    raw: HipStream,
    ordinal: i32,
}

// SAFETY: HIP streams may be used from any thread.
unsafe impl Send for Stream {}
// SAFETY: as above; every use is an ordered runtime call.
unsafe impl Sync for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(rt) = Runtime::get() {
            // SAFETY: created by hipStreamCreate, destroyed once, last user.
            unsafe {
                let _ = (rt.set_device)(self.ordinal);
                let _ = (rt.stream_destroy)(self.raw);
            }
        }
    }
}

/// Device memory owned by a [`DeviceBuffer`] or a [`Scratch`]; freed in
/// stream order on drop where the runtime allows it.
#[derive(Debug)]
pub(crate) struct Memory {
    ptr: u64,
    /// Allocated by `hipMallocAsync` (freed with `hipFreeAsync`).
    stream_ordered: bool,
    stream: Arc<Stream>,
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
        let Ok(rt) = Runtime::get() else { return };
        let p = self.ptr as *mut c_void;
        // SAFETY: allocated by this runtime on this device, freed once; a
        // synchronous hipFree waits for the work that may still use it.
        unsafe {
            let _ = (rt.set_device)(self.stream.ordinal);
            match rt.free_async {
                Some(free_async) if self.stream_ordered => {
                    let _ = free_async(p, self.stream.raw);
                }
                _ => {
                    let _ = (rt.free)(p);
                }
            }
        }
    }
}

/// Temporary device memory for one op (see [`HipDevice::scratch`]).
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

/// One AMD GPU opened as a Kiln device (`hip:N`).
pub struct HipDevice {
    id: BackendId,
    name: String,
    caps: Capabilities,
    rt: &'static Runtime,
    ordinal: i32,
    /// hipBLAS for dense GEMM, or why it is not used (declared before the
    /// stream, so its handle is destroyed first).
    pub(crate) blas: std::result::Result<crate::blas::Blas, String>,
    stream: Arc<Stream>,
    arch: String,
    wave: u32,
    cus: u32,
    lds: usize,
    kernels: Mutex<Kernels>,
}

impl std::fmt::Debug for HipDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HipDevice")
            .field("name", &self.name)
            .field("device", &self.caps.device)
            .field("arch", &self.arch)
            .field("wavefront", &self.wave)
            .field("blas", &self.blas.as_ref().map(|b| &b.lib_name))
            .finish_non_exhaustive()
    }
}

impl Drop for HipDevice {
    fn drop(&mut self) {
        if let Ok(k) = self.kernels.get_mut() {
            for (_, m) in k.modules.drain() {
                // SAFETY: loaded by hipModuleLoadData, unloaded once; every
                // launch using it was issued on the stream, drained here.
                unsafe {
                    let _ = (self.rt.set_device)(self.ordinal);
                    let _ = (self.rt.stream_synchronize)(self.stream.raw);
                    let _ = (self.rt.module_unload)(m.0);
                }
            }
        }
    }
}

fn unavailable(index: usize, reason: Unavailable) -> HalError {
    HalError::Unavailable {
        backend: format!("hip:{index}"),
        reason,
    }
}

/// The runtime, initialised, and the number of devices it sees.
fn runtime() -> std::result::Result<(&'static Runtime, i32), Unavailable> {
    let rt = Runtime::get().map_err(|e| Unavailable::NoDriver(format!("no HIP runtime: {e}")))?;
    // SAFETY: hipInit takes flags 0.
    let init = unsafe { (rt.init)(0) };
    if init == sys::HIP_ERROR_NO_DEVICE || init == sys::HIP_ERROR_INVALID_DEVICE {
        return Err(Unavailable::NoDevice(format!(
            "the HIP runtime ({}) sees no AMD GPU: hipInit returned {} (no GPU, or /dev/kfd \
             not accessible)",
            rt.lib_name,
            rt.message(init)
        )));
    }
    rt.check(init)
        .map_err(|e| Unavailable::NoDriver(format!("hipInit failed: {e}")))?;
    let mut count = 0;
    // SAFETY: `count` is valid for writes.
    let status = unsafe { (rt.get_device_count)(&mut count) };
    if status == sys::HIP_ERROR_NO_DEVICE || (status == sys::HIP_SUCCESS && count <= 0) {
        return Err(Unavailable::NoDevice(format!(
            "the HIP runtime ({}) sees no AMD GPU",
            rt.lib_name
        )));
    }
    rt.check(status)
        .map_err(|e| Unavailable::NoDriver(format!("hipGetDeviceCount failed: {e}")))?;
    Ok((rt, count))
}

/// Devices the runtime sees: `(index, description)`.
pub(crate) fn list() -> std::result::Result<Vec<(usize, String)>, Unavailable> {
    let (rt, count) = runtime()?;
    Ok((0..count)
        .map(|i| {
            let desc = describe(rt, i).unwrap_or_else(|e| format!("AMD GPU ({e})"));
            (i as usize, desc)
        })
        .collect())
}

fn describe(rt: &Runtime, ordinal: i32) -> std::result::Result<String, String> {
    let mut dev = 0;
    // SAFETY: `dev` is valid for writes.
    rt.check(unsafe { (rt.device_get)(&mut dev, ordinal) })?;
    let name = rt.device_name(dev)?;
    let arch = rt.arch(ordinal)?;
    let mut mem = 0usize;
    // SAFETY: `mem` is valid for writes.
    rt.check(unsafe { (rt.device_total_mem)(&mut mem, dev) })?;
    Ok(format!(
        "{name} ({arch}, {:.1} GiB)",
        mem as f64 / (1u64 << 30) as f64
    ))
}

impl HipDevice {
    /// Open GPU `index`. Fails with [`HalError::Unavailable`] when the HIP
    /// runtime, the GPU or hiprtc is missing, or hiprtc cannot target it.
    pub fn open(index: usize) -> Result<HipDevice> {
        let (rt, count) = runtime().map_err(|r| unavailable(index, r))?;
        if index >= count as usize {
            return Err(unavailable(
                index,
                Unavailable::NoDevice(format!(
                    "hip:{index} does not exist ({count} GPU(s) visible)"
                )),
            ));
        }
        if let Err(e) = crate::sys::Rtc::get() {
            return Err(unavailable(
                index,
                Unavailable::NoDriver(compile::no_compiler_message(&e)),
            ));
        }
        let name = format!("hip:{index}");
        let ordinal = index as i32;
        let dev_err =
            |what: &str, e: String| HalError::device(&name, "open", format!("{what}: {e}"));
        // SAFETY: the ordinal is in range.
        rt.check(unsafe { (rt.set_device)(ordinal) })
            .map_err(|e| dev_err("selecting the device", e))?;
        let mut dev = 0;
        // SAFETY: `dev` is valid for writes.
        rt.check(unsafe { (rt.device_get)(&mut dev, ordinal) })
            .map_err(|e| dev_err("hipDeviceGet", e))?;
        let arch = rt
            .arch(ordinal)
            .map_err(|e| dev_err("reading the architecture", e))?;
        let version = rt
            .version()
            .map_err(|e| dev_err("reading the runtime version", e))?;
        if let Some(why) = compile::unsupported_target(&arch, version) {
            return Err(unavailable(index, Unavailable::NoDevice(why)));
        }
        let attribute = |a: i32, what: &str| {
            rt.attribute(dev, a)
                .map_err(|e| dev_err(&format!("reading the {what}"), e))
        };
        let cus = attribute(attr::MULTIPROCESSOR_COUNT, "compute-unit count")?.max(1) as u32;
        let wave = attribute(attr::WARP_SIZE, "wavefront size")?.max(1) as u32;
        let lds = attribute(attr::MAX_SHARED_MEMORY_PER_BLOCK, "LDS size")?.max(0) as usize;
        if lds < LDS_BYTES || !wave.is_multiple_of(32) {
            return Err(unavailable(
                index,
                Unavailable::NoDevice(format!(
                    "{arch}: {lds} bytes of LDS per workgroup and wavefronts of {wave} lanes; \
                     Kiln's HIP kernels need 64 KiB and 32 or 64 lanes"
                )),
            ));
        }
        let mut raw: HipStream = std::ptr::null_mut();
        // SAFETY: `raw` is valid for writes; the device is current.
        rt.check(unsafe { (rt.stream_create)(&mut raw) })
            .map_err(|e| dev_err("creating a stream", e))?;
        let stream = Arc::new(Stream { raw, ordinal });
        let mut mem = 0usize;
        // SAFETY: `mem` is valid for writes.
        let memory = rt
            .check(unsafe { (rt.device_total_mem)(&mut mem, dev) })
            .ok()
            .map(|()| mem as u64);
        let description = describe(rt, ordinal).unwrap_or_else(|_| format!("AMD GPU ({arch})"));
        let blas = crate::blas::Blas::load(stream.raw, version);
        Ok(HipDevice {
            id: BackendId::fresh(),
            name,
            caps: capabilities(description, memory),
            rt,
            ordinal,
            stream,
            arch,
            wave,
            cus,
            lds,
            kernels: Mutex::new(Kernels::default()),
            blas,
        })
    }

    /// Compute units (the CUDA sources' "SMs").
    pub(crate) fn num_sms(&self) -> u32 {
        self.cus
    }

    /// The device's `gcnArchName`, e.g. `gfx90a:sramecc+:xnack-`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Lanes of a hardware wavefront: 64 on CDNA, 32 on RDNA.
    pub fn wavefront_size(&self) -> u32 {
        self.wave
    }

    /// Workgroups of 256 threads for a grid-stride loop over `n` elements:
    /// enough to cover them, at most 8 per compute unit.
    pub(crate) fn stride_grid(&self, n: usize) -> u32 {
        n.div_ceil(256).clamp(1, self.cus as usize * 8) as u32
    }

    fn bind(&self, op: &'static str) -> Result<()> {
        // SAFETY: the ordinal was valid at open.
        self.rt
            .check(unsafe { (self.rt.set_device)(self.ordinal) })
            .map_err(|e| self.hip_err(op, "selecting the device", e))
    }

    fn hip_err(&self, op: &'static str, what: &str, e: String) -> HalError {
        HalError::device(&self.name, op, format!("{what}: {e}"))
    }

    fn module(&self, src: &'static KernelSource, op: &'static str) -> Result<HipModule> {
        let mut k = self
            .kernels
            .lock()
            .map_err(|_| HalError::device(&self.name, op, "kernel cache poisoned"))?;
        if let Some(m) = k.modules.get(src.name) {
            return Ok(m.0);
        }
        let code = compile::cached_code_object(src, &self.arch)
            .map_err(|e| HalError::device(&self.name, op, e.to_string()))?;
        self.bind(op)?;
        let mut module: HipModule = std::ptr::null_mut();
        // SAFETY: `code` is a code object for this device, alive for the call.
        self.rt
            .check(unsafe { (self.rt.module_load_data)(&mut module, code.as_ptr().cast()) })
            .map_err(|e| self.hip_err(op, &format!("loading {}", src.name), e))?;
        k.modules.insert(src.name, Module(module));
        Ok(module)
    }

    /// Kernel `func` of `src`, compiled by hiprtc for this GPU on first use
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
        let mut f: HipFunction = std::ptr::null_mut();
        // SAFETY: `module` is loaded; the name is NUL-terminated.
        self.rt
            .check(unsafe { (self.rt.module_get_function)(&mut f, module, cname.as_ptr()) })
            .map_err(|e| self.hip_err(op, &format!("finding kernel {func} in {}", src.name), e))?;
        let f = Function(f);
        let mut k = self
            .kernels
            .lock()
            .map_err(|_| HalError::device(&self.name, op, "kernel cache poisoned"))?;
        k.functions.insert((src.name, func.to_string()), f);
        Ok(f)
    }

    /// Kernel `func` of `src` (see [`HipDevice::function`]) that will be
    /// launched with `smem` bytes of dynamic LDS; an error if the device
    /// has less (callers keep within [`LDS_BYTES`]).
    pub(crate) fn function_with_smem(
        &self,
        op: &'static str,
        src: &'static KernelSource,
        func: &str,
        smem: u32,
    ) -> Result<Function> {
        if smem as usize > self.lds {
            return Err(HalError::device(
                &self.name,
                op,
                format!(
                    "kernel {func} needs {smem} bytes of LDS; the device allows {}",
                    self.lds
                ),
            ));
        }
        self.function(src, func)
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
        // parameter, alive until the call returns (the runtime copies them).
        let status = unsafe {
            (self.rt.module_launch_kernel)(
                f.0,
                grid.0,
                grid.1,
                grid.2,
                block.0,
                block.1,
                block.2,
                shared_mem_bytes,
                self.stream.raw,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.rt
            .check(status)
            .map_err(|e| self.hip_err(op, "launching a kernel", e))
    }

    fn alloc_memory(&self, op: &'static str, bytes: usize) -> Result<Memory> {
        let mut mem = Memory {
            ptr: 0,
            stream_ordered: false,
            stream: self.stream.clone(),
        };
        if bytes == 0 {
            return Ok(mem);
        }
        self.bind(op)?;
        let mut p: *mut c_void = std::ptr::null_mut();
        let mut status = sys::HIP_ERROR_NOT_SUPPORTED;
        if let (Some(malloc_async), Some(_)) = (self.rt.malloc_async, self.rt.free_async) {
            // SAFETY: `p` is valid for writes; the stream belongs to the device.
            status = unsafe { malloc_async(&mut p, bytes, self.stream.raw) };
            mem.stream_ordered = status == sys::HIP_SUCCESS;
        }
        if status != sys::HIP_SUCCESS && status != sys::HIP_ERROR_OUT_OF_MEMORY {
            // No stream-ordered pool on this device or runtime.
            // SAFETY: `p` is valid for writes.
            status = unsafe { (self.rt.malloc)(&mut p, bytes) };
        }
        if status == sys::HIP_ERROR_OUT_OF_MEMORY {
            return Err(HalError::OutOfMemory {
                backend: self.name.clone(),
                bytes,
            });
        }
        self.rt
            .check(status)
            .map_err(|e| self.hip_err(op, &format!("allocating {bytes} bytes"), e))?;
        mem.ptr = p as u64;
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

    fn check_range(&self, op: &'static str, offset: usize, len: usize, size: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(HalError::invalid(
                &self.name,
                op,
                format!("{len} bytes at offset {offset} overrun a {size}-byte buffer"),
            ));
        }
        Ok(())
    }

    fn copy_in(
        &self,
        op: &'static str,
        dst: &mut DeviceBuffer,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        self.check_range(op, offset, src.len(), dst.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let base = self.buffer_ptr(op, dst)?;
        self.bind(op)?;
        // SAFETY: the range lies inside the allocation (checked above). A
        // pageable source may still be read after the call returns, so the
        // stream is drained before `src` can be freed by the caller.
        let status = unsafe {
            (self.rt.memcpy_htod_async)(
                (base + offset as u64) as *mut c_void,
                src.as_ptr().cast(),
                src.len(),
                self.stream.raw,
            )
        };
        self.rt
            .check(status)
            .map_err(|e| self.hip_err(op, "copying to the device", e))?;
        self.sync(op)
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
        let status = unsafe {
            (self.rt.memcpy_dtod_async)(
                dst as *mut c_void,
                src as *mut c_void,
                bytes,
                self.stream.raw,
            )
        };
        self.rt
            .check(status)
            .map_err(|e| self.hip_err(op, "copying on the device", e))
    }

    fn sync(&self, op: &'static str) -> Result<()> {
        self.bind(op)?;
        // SAFETY: the stream is live.
        self.rt
            .check(unsafe { (self.rt.stream_synchronize)(self.stream.raw) })
            .map_err(|e| self.hip_err(op, "waiting for the stream", e))
    }
}

/// What every HIP device offers.
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
        step_capture: false,
    }
}

impl Backend for HipDevice {
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
        self.check_range(op, offset, dst.len(), src.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let base = self.buffer_ptr(op, src)?;
        self.bind(op)?;
        // SAFETY: the range lies inside the allocation; the stream is
        // synchronised before `dst` is used.
        let status = unsafe {
            (self.rt.memcpy_dtoh_async)(
                dst.as_mut_ptr().cast(),
                (base + offset as u64) as *mut c_void,
                dst.len(),
                self.stream.raw,
            )
        };
        self.rt
            .check(status)
            .map_err(|e| self.hip_err(op, "copying to the host", e))?;
        self.sync(op)
    }

    fn synchronize(&self) -> Result<()> {
        self.sync("synchronize")
    }
}
