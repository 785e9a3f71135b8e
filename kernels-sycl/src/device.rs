//! One opened OpenCL device: context, in-order queue, memory, programs and
//! kernel launches.
//!
//! Every op and copy goes to one in-order command queue, so work runs in the
//! order it was issued; [`hal::Backend::synchronize`] waits for it. Programs
//! are built once per device (see [`crate::compile`]) and their kernel
//! objects are kept: a decode step sets arguments on cached kernels and
//! enqueues them, with no program or kernel creation on the hot path.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::Mutex;

use hal::tensor::ViewInfo;
use hal::{
    Backend, BackendId, Capabilities, DType, DeviceBuffer, HalError, KvLayout, OpDesc, Precision,
    QuantFormat, Result, Unavailable, Unsupported, View, ViewMut,
};
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::{Device, CL_DEVICE_TYPE_ALL};
use opencl3::kernel::Kernel;
use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
use opencl3::program::Program;
use opencl3::types::{cl_device_id, cl_mem, CL_BLOCKING};

use crate::compile;
use crate::sources::KernelSource;

/// The kernel path a device runs (chosen from its extensions when opened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPath {
    /// OpenCL 1.2, fp32 math, fp16 as storage only (`vload_half` /
    /// `vstore_half`), local-memory reductions. Runs everywhere, PoCL included.
    Portable,
    /// Intel GPUs: `cl_khr_fp16` half loads, stores and f16 element-wise
    /// arithmetic, `cl_intel_subgroups`
    /// reductions and block reads, kernels pinned to 16-wide subgroups.
    IntelTuned,
}

impl KernelPath {
    /// The OpenCL C build options of this path.
    pub fn build_options(self) -> &'static str {
        match self {
            KernelPath::Portable => "-cl-std=CL1.2",
            KernelPath::IntelTuned => "-cl-std=CL1.2 -DKILN_INTEL=1",
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Portable => "portable",
            KernelPath::IntelTuned => "intel-tuned",
        }
    }
}

/// The dtype code a kernel's `dt` argument takes (see `common.cl`).
pub(crate) fn dtype_code(d: DType) -> i32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        _ => 3, // F8E4M3, the only other dtype a kernel is handed
    }
}

/// A kernel argument.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    /// A buffer (`__global T*`).
    Mem(cl_mem),
    /// A `__global` pointer that the kernel does not touch (NULL).
    Null,
    /// `int`.
    I32(i32),
    /// `ulong` (byte offsets).
    U64(u64),
    /// `float`.
    F32(f32),
    /// `__local` memory of this many bytes.
    Local(usize),
}

/// Device memory behind a [`DeviceBuffer`] or a scratch allocation.
#[derive(Debug)]
pub(crate) struct Memory {
    buf: Buffer<u8>,
}

impl Memory {
    /// The `cl_mem` handle.
    pub(crate) fn mem(&self) -> cl_mem {
        self.buf.get()
    }
}

/// Programs and kernels built on one device.
#[derive(Default)]
struct Kernels {
    programs: HashMap<&'static str, Program>,
    kernels: HashMap<(&'static str, &'static str), Kernel>,
}

/// One OpenCL device opened as a Kiln device (`opencl:N`).
pub struct OpenClDevice {
    id: BackendId,
    name: String,
    caps: Capabilities,
    device: Device,
    context: Context,
    queue: CommandQueue,
    path: KernelPath,
    /// Programs and kernels; also serialises argument setting and enqueueing
    /// (an OpenCL kernel object holds its arguments).
    kernels: Mutex<Kernels>,
}

impl std::fmt::Debug for OpenClDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClDevice")
            .field("name", &self.name)
            .field("device", &self.caps.device)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn unavailable(index: usize, reason: Unavailable) -> HalError {
    HalError::Unavailable {
        backend: format!("opencl:{index}"),
        reason,
    }
}

/// Serialises platform discovery, context creation and program builds
/// across the process: some ICDs (PoCL among them) are not safe when
/// several threads do these at once.
pub(crate) static DRIVER_LOCK: Mutex<()> = Mutex::new(());

/// Every device of every platform, in platform order.
fn all_devices() -> std::result::Result<Vec<cl_device_id>, Unavailable> {
    let _guard = DRIVER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let platforms = opencl3::platform::get_platforms().map_err(|e| {
        Unavailable::NoDriver(format!(
            "no OpenCL platform ({e}); install an ICD such as pocl-opencl-icd or intel-opencl-icd"
        ))
    })?;
    let mut out = Vec::new();
    for p in platforms {
        if let Ok(ids) = p.get_devices(CL_DEVICE_TYPE_ALL) {
            out.extend(ids);
        }
    }
    if out.is_empty() {
        return Err(Unavailable::NoDevice(
            "the OpenCL platforms list no device".into(),
        ));
    }
    Ok(out)
}

fn describe(d: &Device) -> String {
    let name = d.name().unwrap_or_else(|_| "OpenCL device".into());
    let version = d.version().unwrap_or_default();
    let mem = d.global_mem_size().unwrap_or(0);
    format!(
        "{} ({}, {:.1} GiB)",
        name.trim(),
        version.trim(),
        mem as f64 / (1u64 << 30) as f64
    )
}

/// Devices the OpenCL ICD loader sees: `(index, description)`.
pub(crate) fn list() -> std::result::Result<Vec<(usize, String)>, Unavailable> {
    Ok(all_devices()?
        .into_iter()
        .enumerate()
        .map(|(i, id)| (i, describe(&Device::new(id))))
        .collect())
}

/// The path for a device with these extensions; `KILN_OPENCL_PORTABLE=1`
/// forces the portable one.
fn path_for(extensions: &str) -> KernelPath {
    let forced = std::env::var("KILN_OPENCL_PORTABLE").is_ok_and(|v| v == "1");
    let has = |e: &str| extensions.split_whitespace().any(|x| x == e);
    if !forced && has("cl_khr_fp16") && has("cl_intel_subgroups") {
        KernelPath::IntelTuned
    } else {
        KernelPath::Portable
    }
}

impl OpenClDevice {
    /// Open device `index` (platforms in order, then their devices). Fails
    /// with [`HalError::Unavailable`] when no OpenCL platform or no such
    /// device exists.
    pub fn open(index: usize) -> Result<OpenClDevice> {
        let ids = all_devices().map_err(|r| unavailable(index, r))?;
        let Some(&id) = ids.get(index) else {
            return Err(unavailable(
                index,
                Unavailable::NoDevice(format!(
                    "opencl:{index} does not exist ({} device(s) visible)",
                    ids.len()
                )),
            ));
        };
        let name = format!("opencl:{index}");
        let err = |what: &str, e: opencl3::error_codes::ClError| {
            HalError::device(&name, "open", format!("{what}: {e}"))
        };
        let device = Device::new(id);
        let _guard = DRIVER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let context = Context::from_device(&device).map_err(|e| err("creating a context", e))?;
        #[allow(deprecated)]
        let queue =
            CommandQueue::create_default(&context, 0).map_err(|e| err("creating a queue", e))?;
        let extensions = device.extensions().unwrap_or_default();
        let path = path_for(&extensions);
        let max_wg = device.max_work_group_size().unwrap_or(0);
        if max_wg < 256 {
            return Err(unavailable(
                index,
                Unavailable::NoDevice(format!(
                    "opencl:{index} allows {max_wg} work-items per work-group; Kiln's kernels need 256"
                )),
            ));
        }
        let caps = capabilities(
            format!("{} [{} kernels]", describe(&device), path.name()),
            device.global_mem_size().ok(),
        );
        Ok(OpenClDevice {
            id: BackendId::fresh(),
            name,
            caps,
            device,
            context,
            queue,
            path,
            kernels: Mutex::new(Kernels::default()),
        })
    }

    /// The kernel path this device runs.
    pub fn kernel_path(&self) -> KernelPath {
        self.path
    }

    #[cfg(test)]
    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    #[cfg(test)]
    pub(crate) fn cl_device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn err(&self, op: &'static str, msg: impl Into<String>) -> HalError {
        HalError::device(&self.name, op, msg)
    }

    fn cl_err(
        &self,
        op: &'static str,
        what: &str,
    ) -> impl Fn(opencl3::error_codes::ClError) -> HalError + '_ {
        let what = what.to_string();
        move |e| self.err(op, format!("{what}: {e}"))
    }

    /// Launch kernel `func` of `src` over `global` work-items (each
    /// dimension rounded up to a multiple of `local`). A zero-sized launch
    /// does nothing. The program is built (or loaded from the binary cache)
    /// on first use.
    pub(crate) fn launch(
        &self,
        op: &'static str,
        src: &'static KernelSource,
        func: &'static str,
        global: [usize; 3],
        local: [usize; 3],
        args: &[Arg],
    ) -> Result<()> {
        if global.contains(&0) {
            return Ok(());
        }
        let global: [usize; 3] = std::array::from_fn(|i| global[i].div_ceil(local[i]) * local[i]);
        let mut k = self
            .kernels
            .lock()
            .map_err(|_| self.err(op, "kernel cache poisoned"))?;
        if !k.kernels.contains_key(&(src.name, func)) {
            if !k.programs.contains_key(src.name) {
                let _guard = DRIVER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                let program = compile::build(&self.context, &self.device, src, self.path)
                    .map_err(|e| self.err(op, e))?;
                k.programs.insert(src.name, program);
            }
            let program = &k.programs[src.name];
            let kernel = Kernel::create(program, func).map_err(|e| {
                self.err(
                    op,
                    format!("kernel {func} missing from {}.cl: {e}", src.name),
                )
            })?;
            k.kernels.insert((src.name, func), kernel);
        }
        let kernel = &k.kernels[&(src.name, func)];
        for (i, a) in args.iter().enumerate() {
            let i = i as u32;
            // SAFETY: each value has the size and type of the kernel's
            // parameter i (the kernels' signatures are mirrored by the
            // callers); buffers outlive the enqueued work (DeviceBuffers are
            // dropped only after the caller synchronises or the queue holds
            // a reference, as OpenCL retains memory objects in flight).
            let r = unsafe {
                match *a {
                    Arg::Mem(m) => kernel.set_arg(i, &m),
                    Arg::Null => kernel.set_arg(i, &ptr::null_mut::<c_void>()),
                    Arg::I32(v) => kernel.set_arg(i, &v),
                    Arg::U64(v) => kernel.set_arg(i, &v),
                    Arg::F32(v) => kernel.set_arg(i, &v),
                    Arg::Local(bytes) => kernel.set_arg_local_buffer(i, bytes),
                }
            };
            r.map_err(|e| self.err(op, format!("setting argument {i} of {func}: {e}")))?;
        }
        // SAFETY: every argument is set; the size arrays have 3 entries.
        unsafe {
            self.queue.enqueue_nd_range_kernel(
                kernel.get(),
                3,
                ptr::null(),
                global.as_ptr(),
                local.as_ptr(),
                &[],
            )
        }
        .map_err(self.cl_err(op, &format!("enqueueing {func}")))?;
        Ok(())
    }

    fn alloc_memory(&self, op: &'static str, bytes: usize) -> Result<Memory> {
        // OpenCL refuses zero-sized buffers: allocate one byte instead.
        // SAFETY: no host pointer is passed.
        let buf = unsafe {
            Buffer::<u8>::create(
                &self.context,
                CL_MEM_READ_WRITE,
                bytes.max(1),
                ptr::null_mut(),
            )
        }
        .map_err(|e| {
            if e.0 == opencl3::error_codes::CL_MEM_OBJECT_ALLOCATION_FAILURE
                || e.0 == opencl3::error_codes::CL_OUT_OF_RESOURCES
                || e.0 == opencl3::error_codes::CL_INVALID_BUFFER_SIZE
                || e.0 == opencl3::error_codes::CL_OUT_OF_HOST_MEMORY
            {
                HalError::OutOfMemory {
                    backend: self.name.clone(),
                    bytes,
                }
            } else {
                self.err(op, format!("allocating {bytes} bytes: {e}"))
            }
        })?;
        Ok(Memory { buf })
    }

    /// Temporary device memory for one op. OpenCL retains a buffer while
    /// enqueued work uses it, so dropping it after enqueueing is safe.
    pub(crate) fn scratch(&self, op: &'static str, bytes: usize) -> Result<Memory> {
        self.alloc_memory(op, bytes)
    }

    /// A new buffer holding `bytes`.
    pub(crate) fn upload_bytes(&self, op: &'static str, bytes: &[u8]) -> Result<DeviceBuffer> {
        let mut mem = self.alloc_memory(op, bytes.len())?;
        self.write(op, &mut mem, 0, bytes)?;
        Ok(DeviceBuffer::new(self.id, bytes.len(), mem))
    }

    fn write(&self, op: &'static str, mem: &mut Memory, offset: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: a blocking write: `src` is read before the call returns;
        // the range was checked against the buffer by the callers.
        unsafe {
            self.queue
                .enqueue_write_buffer(&mut mem.buf, CL_BLOCKING, offset, src, &[])
        }
        .map_err(self.cl_err(op, "copying to the device"))?;
        Ok(())
    }

    pub(crate) fn memory<'b>(&self, op: &'static str, b: &'b DeviceBuffer) -> Result<&'b Memory> {
        b.handle::<Memory>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{:?}", b.owner()),
            })
    }

    /// A buffer's `cl_mem` as a kernel argument.
    pub(crate) fn buf(&self, op: &'static str, b: &DeviceBuffer) -> Result<Arg> {
        Ok(Arg::Mem(self.memory(op, b)?.mem()))
    }

    /// A view as the `(buffer, byte offset)` argument pair.
    pub(crate) fn view(&self, op: &'static str, v: &View<'_>) -> Result<[Arg; 2]> {
        Ok([self.buf(op, v.buffer)?, Arg::U64(v.byte_offset() as u64)])
    }

    /// A writable view as the `(buffer, byte offset)` argument pair.
    pub(crate) fn view_mut(&self, op: &'static str, v: &ViewMut<'_>) -> Result<[Arg; 2]> {
        Ok([self.buf(op, v.buffer)?, Arg::U64(v.byte_offset() as u64)])
    }

    /// An optional view as `(buffer, byte offset)`, NULL when absent.
    pub(crate) fn opt_view(&self, op: &'static str, v: Option<&View<'_>>) -> Result<[Arg; 2]> {
        match v {
            Some(v) => self.view(op, v),
            None => Ok([Arg::Null, Arg::U64(0)]),
        }
    }

    /// Copy `bytes` between buffers on the queue.
    pub(crate) fn copy(
        &self,
        op: &'static str,
        src: &Memory,
        src_offset: usize,
        dst: &mut Memory,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: the ranges lie inside both buffers (checked by callers).
        unsafe {
            self.queue.enqueue_copy_buffer(
                &src.buf,
                &mut dst.buf,
                src_offset,
                dst_offset,
                bytes,
                &[],
            )
        }
        .map_err(self.cl_err(op, "copying on the device"))?;
        Ok(())
    }

    /// The memory of a writable buffer.
    pub(crate) fn memory_mut<'b>(
        &self,
        op: &'static str,
        b: &'b mut DeviceBuffer,
    ) -> Result<&'b mut Memory> {
        let owner = b.owner();
        b.handle_mut::<Memory>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{owner:?}"),
            })
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
}

/// What every OpenCL device offers (the kernels are the same on both paths).
fn capabilities(device: String, memory_bytes: Option<u64>) -> Capabilities {
    Capabilities {
        device,
        memory_bytes,
        activation_dtypes: vec![DType::F32, DType::F16, DType::BF16],
        kv_cache_dtypes: vec![DType::F16, DType::F32, DType::BF16, DType::F8E4M3],
        kv_layouts: vec![KvLayout::Nhd],
        head_dims: Vec::new(),
        block_sizes: Vec::new(),
        quant_formats: QuantFormat::ALL.to_vec(),
        precisions: vec![Precision::Exact],
        // Every kernel gives a row the same work split and reduction order
        // whatever the batch: GEMM tiles walk K identically for every row,
        // quantised GEMM splits K by K alone, attention tiles a token's keys
        // from its own window start, and an unsplit attention row is
        // normalised exactly as a one-partition split-K row.
        batch_invariant: true,
        step_capture: false,
    }
}

/// Largest head dim the attention kernels hold in local memory.
pub(crate) const MAX_HEAD_DIM: usize = 256;

impl Backend for OpenClDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        self.caps.check(op)?;
        match *op {
            OpDesc::PagedAttention { cache, .. } if cache.head_dim > MAX_HEAD_DIM => {
                Err(Unsupported::new(
                    "paged_attention",
                    format!(
                        "head_dim {} > {MAX_HEAD_DIM} does not fit the kernel's local memory",
                        cache.head_dim
                    ),
                ))
            }
            OpDesc::FlashAttention { head_dim, .. } if head_dim > MAX_HEAD_DIM => {
                Err(Unsupported::new(
                    "flash_attention",
                    format!(
                        "head_dim {head_dim} > {MAX_HEAD_DIM} does not fit the kernel's local memory"
                    ),
                ))
            }
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
        let op = "upload";
        self.check_range(op, offset, src.len(), dst.len())?;
        let mem = self.memory_mut(op, dst)?;
        self.write(op, mem, offset, src)
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let op = "download";
        self.check_range(op, offset, dst.len(), src.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let mem = self.memory(op, src)?;
        // SAFETY: a blocking read into `dst`, whose length was checked.
        unsafe {
            self.queue
                .enqueue_read_buffer(&mem.buf, CL_BLOCKING, offset, dst, &[])
        }
        .map_err(self.cl_err(op, "copying to the host"))?;
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.queue
            .finish()
            .map_err(self.cl_err("synchronize", "waiting for the queue"))
    }
}
