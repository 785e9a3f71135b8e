//! The opened adapter: memory, deferred submission, pipeline and bind-group
//! caches.
//!
//! Ops are recorded into one pending command encoder (one compute pass per
//! dispatch) and submitted when the host needs a result (`download`,
//! `synchronize`), before an upload (so host writes stay ordered after the
//! ops issued before them), or when the parameter ring is full. A decode
//! step of the default model is therefore one submission.
//!
//! Each dispatch's scalar parameters (at most [`PARAM_WORDS`] words) take one
//! 256-byte slot of a uniform ring buffer bound with a dynamic offset; the
//! ring is written once per submission. Pipelines are cached per kernel
//! variant ([`KernelSpec::key`]), bind groups per (pipeline, buffer ids).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use hal::{BackendId, Capabilities, DeviceBuffer, HalError, Result, Unavailable};

use crate::buffer::{padded_len, WgpuBuffer};
use crate::shader::KernelSpec;

/// Words of scalar parameters one dispatch may pass.
pub(crate) const PARAM_WORDS: usize = 32;
/// Bytes of one parameter slot (≥ every adapter's uniform offset alignment).
const PARAM_SLOT: u64 = 256;
/// Dispatches per submission before the ring is flushed.
const PARAM_SLOTS: u64 = 2048;
/// Bind groups kept before the cache is cleared.
const BIND_GROUP_CACHE: usize = 8192;

/// What the adapter offers, probed once when the device is opened.
#[derive(Clone, Debug)]
pub struct AdapterProbe {
    /// Adapter name, backend and type (`"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, cpu)"`).
    pub description: String,
    /// `SHADER_F16` is available.
    pub shader_f16: bool,
    /// Subgroup sizes (min, max) when subgroup operations are available.
    pub subgroups: Option<(u32, u32)>,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Workgroup memory per workgroup, bytes.
    pub workgroup_memory: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
}

/// A compiled kernel variant.
struct Pipeline {
    index: usize,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Mutable state behind one lock: pending work and the caches.
struct State {
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
    pipelines: HashMap<String, Arc<Pipeline>>,
    bind_groups: HashMap<(usize, Vec<u64>), wgpu::BindGroup>,
    staging: Option<wgpu::Buffer>,
    scratch: Option<Arc<WgpuBuffer>>,
}

/// One wgpu adapter opened as a Kiln device (`wgpu:N`).
pub struct WgpuDevice {
    pub(crate) id: BackendId,
    pub(crate) name: String,
    pub(crate) caps: Capabilities,
    pub(crate) probe: AdapterProbe,
    device: wgpu::Device,
    queue: wgpu::Queue,
    params: wgpu::Buffer,
    state: Mutex<State>,
    next_id: AtomicU64,
    dropped: Arc<Mutex<Vec<u64>>>,
    errors: Arc<Mutex<Option<String>>>,
    max_groups_per_dim: u32,
    /// Placeholder bound where an optional read-only input is absent.
    pub(crate) dummy_ro: WgpuBuffer,
    /// Placeholder bound where an optional written output is absent.
    pub(crate) dummy_rw: WgpuBuffer,
}

impl std::fmt::Debug for WgpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuDevice")
            .field("name", &self.name)
            .field("adapter", &self.probe.description)
            .finish_non_exhaustive()
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn adapters() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .filter(|a| {
            a.get_downlevel_capabilities()
                .flags
                .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect()
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    let ty = match info.device_type {
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Other => "other",
    };
    format!("{} ({:?}, {ty})", info.name, info.backend)
}

/// The adapters wgpu finds, as `(index, description)`, or why there are none.
pub fn list() -> std::result::Result<Vec<(usize, String)>, Unavailable> {
    let found = std::panic::catch_unwind(adapters)
        .map_err(|_| Unavailable::NoDriver("wgpu panicked while enumerating adapters".into()))?;
    if found.is_empty() {
        return Err(Unavailable::NoDevice(
            "wgpu found no adapter with compute shaders (no Vulkan, Metal or DX12 driver; \
             install Mesa's lavapipe for a software one)"
                .into(),
        ));
    }
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, a)| (i, describe(&a.get_info())))
        .collect())
}

impl WgpuDevice {
    /// Open adapter `index` (see [`list`]).
    pub fn open(index: usize) -> Result<WgpuDevice> {
        let name = format!("wgpu:{index}");
        let unavailable = |u: Unavailable| HalError::Unavailable {
            backend: name.clone(),
            reason: u,
        };
        let mut found = std::panic::catch_unwind(adapters).map_err(|_| {
            unavailable(Unavailable::NoDriver(
                "wgpu panicked while enumerating adapters".into(),
            ))
        })?;
        if found.is_empty() {
            return Err(unavailable(list().err().unwrap_or_else(|| {
                Unavailable::NoDevice("wgpu found no adapter".into())
            })));
        }
        if index >= found.len() {
            return Err(unavailable(Unavailable::NoDevice(format!(
                "adapter {index} asked for, {} found",
                found.len()
            ))));
        }
        let adapter = found.swap_remove(index);
        let info = adapter.get_info();
        let limits = adapter.limits();
        let af = adapter.features();
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let features = af & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| HalError::device(&name, "open", format!("request_device: {e}")))?;
        let errors: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let probe = AdapterProbe {
            description: describe(&info),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features
                .contains(wgpu::Features::SUBGROUP)
                .then_some((info.subgroup_min_size, info.subgroup_max_size)),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            workgroup_memory: limits.max_compute_workgroup_storage_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
        };
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kiln params"),
            size: PARAM_SLOT * PARAM_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let mk = |id: u64| WgpuBuffer {
            id,
            buffer: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln placeholder"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            dropped: dropped.clone(),
        };
        let dummy_ro = mk(1);
        let dummy_rw = mk(2);
        let caps = crate::caps::capabilities(&probe);
        Ok(WgpuDevice {
            id: BackendId::fresh(),
            name,
            caps,
            probe,
            device,
            queue,
            params,
            state: Mutex::new(State {
                encoder: None,
                params: Vec::new(),
                pipelines: HashMap::new(),
                bind_groups: HashMap::new(),
                staging: None,
                scratch: None,
            }),
            next_id: AtomicU64::new(3),
            dropped,
            errors,
            max_groups_per_dim: limits.max_compute_workgroups_per_dimension,
            dummy_ro,
            dummy_rw,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| HalError::device(&self.name, "lock", "device state poisoned"))
    }

    /// The private handle of `buf`, or an error naming `op`.
    pub(crate) fn buf<'a>(
        &self,
        op: &'static str,
        buf: &'a DeviceBuffer,
    ) -> Result<&'a WgpuBuffer> {
        buf.handle::<Arc<WgpuBuffer>>(self.id)
            .map(|b| b.as_ref())
            .ok_or_else(|| {
                HalError::invalid(&self.name, op, "buffer was not allocated by this device")
            })
    }

    /// A new buffer of `bytes` (padded), zero-filled by wgpu.
    pub(crate) fn new_buffer(&self, op: &'static str, bytes: usize) -> Result<WgpuBuffer> {
        let size = padded_len(bytes);
        // Every buffer is bound as a storage buffer by some kernel: refuse
        // here what no dispatch could bind, rather than at the first op.
        let limit = self.probe.max_buffer.min(self.probe.max_storage_binding);
        if size > limit {
            return Err(HalError::device(
                &self.name,
                op,
                format!(
                    "{bytes} bytes exceed the adapter's largest storage buffer ({limit} bytes: \
                     buffer limit {}, storage-binding limit {})",
                    self.probe.max_buffer, self.probe.max_storage_binding
                ),
            ));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(HalError::device(
                &self.name,
                op,
                format!("allocating {bytes} bytes: {e}"),
            ));
        }
        Ok(WgpuBuffer {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            buffer,
            dropped: self.dropped.clone(),
        })
    }

    /// A device-private scratch buffer of at least `bytes`, reused across
    /// calls (grown when too small).
    pub(crate) fn scratch(&self, op: &'static str, bytes: usize) -> Result<Arc<WgpuBuffer>> {
        {
            let st = self.lock()?;
            if let Some(s) = &st.scratch {
                if s.buffer.size() >= padded_len(bytes) {
                    return Ok(s.clone());
                }
            }
        }
        let b = Arc::new(self.new_buffer(op, bytes.max(1 << 16))?);
        self.lock()?.scratch = Some(b.clone());
        Ok(b)
    }

    fn pipeline(
        &self,
        st: &mut State,
        op: &'static str,
        spec: &KernelSpec,
    ) -> Result<Arc<Pipeline>> {
        let key = spec.key();
        if let Some(p) = st.pipelines.get(&key) {
            return Ok(p.clone());
        }
        let source = spec.source();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(spec.name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new((PARAM_WORDS * 4) as u64),
            },
            count: None,
        }];
        for (i, b) in spec.bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: !b.write,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(spec.name),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(spec.name),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(spec.name),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(HalError::device(
                &self.name,
                op,
                format!("WGSL kernel {} failed to compile: {e}", key),
            ));
        }
        let p = Arc::new(Pipeline {
            index: st.pipelines.len(),
            pipeline,
            layout,
        });
        st.pipelines.insert(key, p.clone());
        Ok(p)
    }

    /// Record one dispatch of `groups` workgroups (folded into x/y) with
    /// `buffers` bound at 1.. and `params` in the uniform block.
    pub(crate) fn dispatch(
        &self,
        op: &'static str,
        spec: &KernelSpec,
        buffers: &[&WgpuBuffer],
        params: &[u32],
        groups: usize,
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        if params.len() > PARAM_WORDS || buffers.len() != spec.bindings.len() {
            return Err(HalError::device(
                &self.name,
                op,
                format!(
                    "kernel {} called with {} buffers / {} parameter words",
                    spec.name,
                    buffers.len(),
                    params.len()
                ),
            ));
        }
        for b in buffers {
            if b.buffer.size() > self.probe.max_storage_binding {
                return Err(HalError::device(
                    &self.name,
                    op,
                    format!(
                        "a {}-byte buffer exceeds the adapter's storage-binding limit of {} bytes",
                        b.buffer.size(),
                        self.probe.max_storage_binding
                    ),
                ));
            }
        }
        let max = self.max_groups_per_dim as usize;
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max {
            return Err(HalError::device(
                &self.name,
                op,
                format!("{groups} workgroups exceed the adapter's grid ({max} × {max})"),
            ));
        }
        let mut st = self.lock()?;
        let pipeline = self.pipeline(&mut st, op, spec)?;
        if st.params.len() as u64 >= PARAM_SLOT * PARAM_SLOTS {
            self.flush(&mut st);
        }
        self.evict_dropped(&mut st);
        let offset = st.params.len() as u32;
        let mut slot = [0u8; PARAM_SLOT as usize];
        for (i, w) in params.iter().enumerate() {
            slot[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        st.params.extend_from_slice(&slot);
        let key = (
            pipeline.index,
            buffers.iter().map(|b| b.id).collect::<Vec<_>>(),
        );
        if !st.bind_groups.contains_key(&key) {
            if st.bind_groups.len() >= BIND_GROUP_CACHE {
                st.bind_groups.clear();
            }
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.params,
                    offset: 0,
                    size: wgpu::BufferSize::new((PARAM_WORDS * 4) as u64),
                }),
            }];
            for (i, b) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.buffer.as_entire_binding(),
                });
            }
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.layout,
                entries: &entries,
            });
            st.bind_groups.insert(key.clone(), bg);
        }
        let bg = st.bind_groups.get(&key).cloned();
        let encoder = st.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(spec.name),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, bg.as_ref(), &[offset]);
        pass.dispatch_workgroups(x as u32, y as u32, 1);
        Ok(())
    }

    /// Record a buffer-to-buffer copy (offsets and size multiples of 4).
    pub(crate) fn copy(
        &self,
        src: &WgpuBuffer,
        src_offset: u64,
        dst: &WgpuBuffer,
        dst_offset: u64,
        size: u64,
    ) -> Result<()> {
        if size == 0 {
            return Ok(());
        }
        let mut st = self.lock()?;
        let encoder = st.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        encoder.copy_buffer_to_buffer(&src.buffer, src_offset, &dst.buffer, dst_offset, size);
        Ok(())
    }

    fn evict_dropped(&self, st: &mut State) {
        let dead: Vec<u64> = match self.dropped.lock() {
            Ok(mut d) if !d.is_empty() => std::mem::take(&mut *d),
            _ => return,
        };
        st.bind_groups
            .retain(|(_, ids), _| !ids.iter().any(|i| dead.contains(i)));
    }

    /// Submit the pending encoder (and its parameters).
    fn flush(&self, st: &mut State) {
        if let Some(enc) = st.encoder.take() {
            if !st.params.is_empty() {
                self.queue.write_buffer(&self.params, 0, &st.params);
            }
            self.queue.submit([enc.finish()]);
        }
        st.params.clear();
    }

    fn wait(&self, op: &'static str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| HalError::device(&self.name, op, format!("poll: {e}")))?;
        self.check_errors(op)
    }

    fn check_errors(&self, op: &'static str) -> Result<()> {
        let msg = self.errors.lock().ok().and_then(|mut e| e.take());
        match msg {
            Some(m) => Err(HalError::device(&self.name, op, m)),
            None => Ok(()),
        }
    }

    pub(crate) fn alloc_impl(&self, bytes: usize) -> Result<DeviceBuffer> {
        let b = self.new_buffer("alloc", bytes)?;
        Ok(DeviceBuffer::new(self.id, bytes, Arc::new(b)))
    }

    pub(crate) fn upload_impl(
        &self,
        dst: &mut DeviceBuffer,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        let len = dst.len();
        if offset.checked_add(src.len()).is_none_or(|e| e > len) {
            return Err(HalError::invalid(
                &self.name,
                "upload",
                format!(
                    "{} bytes at offset {offset} exceed the {len}-byte buffer",
                    src.len()
                ),
            ));
        }
        if src.is_empty() {
            return Ok(());
        }
        let b = self.buf("upload", dst)?;
        let end = offset + src.len();
        let mut st = self.lock()?;
        self.flush(&mut st);
        let (a0, a1) = (offset / 4 * 4, end.div_ceil(4) * 4);
        let data = if a0 == offset && (end.is_multiple_of(4) || end == len) {
            let mut d = src.to_vec();
            d.resize(a1 - a0, 0);
            d
        } else {
            // Unaligned edges: keep the neighbouring bytes of the edge words.
            drop(st);
            let mut d = vec![0u8; a1 - a0];
            self.read(b, a0, &mut d)?;
            d[offset - a0..end - a0].copy_from_slice(src);
            st = self.lock()?;
            d
        };
        self.queue.write_buffer(&b.buffer, a0 as u64, &data);
        drop(st);
        Ok(())
    }

    /// Read `dst.len()` bytes at byte `offset` (flushes and waits).
    fn read(&self, src: &WgpuBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        let a0 = offset / 4 * 4;
        let a1 = (offset + dst.len()).div_ceil(4) * 4;
        let size = (a1 - a0) as u64;
        let mut st = self.lock()?;
        let staging = match &st.staging {
            Some(s) if s.size() >= size => s.clone(),
            _ => {
                let s = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln staging"),
                    size: size.max(1 << 20).div_ceil(4) * 4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                st.staging = Some(s.clone());
                s
            }
        };
        let encoder = st.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        encoder.copy_buffer_to_buffer(&src.buffer, a0 as u64, &staging, 0, size);
        self.flush(&mut st);
        let slice = staging.slice(0..size);
        let (tx, rx) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait("download")?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(HalError::device(&self.name, "download", e.to_string())),
            Err(_) => {
                return Err(HalError::device(
                    &self.name,
                    "download",
                    "the buffer map never completed",
                ))
            }
        }
        let copied = match slice.get_mapped_range() {
            Ok(view) => {
                dst.copy_from_slice(&view[offset - a0..offset - a0 + dst.len()]);
                Ok(())
            }
            Err(e) => Err(HalError::device(&self.name, "download", e.to_string())),
        };
        staging.unmap();
        copied?;
        drop(st);
        Ok(())
    }

    pub(crate) fn download_impl(
        &self,
        src: &DeviceBuffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        if offset.checked_add(dst.len()).is_none_or(|e| e > src.len()) {
            return Err(HalError::invalid(
                &self.name,
                "download",
                format!(
                    "{} bytes at offset {offset} exceed the {}-byte buffer",
                    dst.len(),
                    src.len()
                ),
            ));
        }
        let b = self.buf("download", src)?;
        self.read(b, offset, dst)
    }

    pub(crate) fn synchronize_impl(&self) -> Result<()> {
        {
            let mut st = self.lock()?;
            self.flush(&mut st);
        }
        self.wait("synchronize")
    }
}
