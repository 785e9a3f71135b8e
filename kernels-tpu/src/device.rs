//! The opened device: the process-wide PJRT client, buffers, the compiled
//! program cache and the helpers every lowering uses.
//!
//! Every HAL buffer is one PJRT buffer of `ui8[len]` that stays on the
//! device. An op's program takes the byte buffers of its inputs and of its
//! outputs, reinterprets the viewed ranges as typed tensors
//! (`slice` + `bitcast_convert` + `reshape`), computes, and returns each
//! output buffer with the result written over the viewed range
//! (`dynamic_update_slice`). Output buffers are donated to the program
//! (`tf.aliasing_output`), so XLA can update them in place; the new PJRT
//! buffer replaces the old one inside the HAL buffer. Host copies happen
//! only in `upload` and `download`.
//!
//! Programs are compiled once per key (op, shapes, dtypes, offsets and the
//! few constants baked into them) and cached for the life of the process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use hal::{BackendId, Capabilities, DType, DeviceBuffer, HalError, Result, Unavailable};

use crate::hlo::{BResult, Builder, El, Ty, Val};
use crate::pjrt::{Api, Buffer, Client, ElementType, Executable, PjrtError};

/// Environment variable naming the PJRT plugin to load.
pub const PLUGIN_ENV: &str = "KILN_PJRT_PLUGIN";

/// File name of XLA's CPU plugin in the cache directory.
pub const CPU_PLUGIN_FILE: &str = "pjrt_c_api_cpu_plugin.so";

/// The plugin path: `$KILN_PJRT_PLUGIN`, else the cached CPU plugin
/// (`$XDG_CACHE_HOME/kiln/pjrt/` or `~/.cache/kiln/pjrt/`).
pub fn plugin_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(PLUGIN_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("kiln").join("pjrt").join(CPU_PLUGIN_FILE))
}

/// The process-wide runtime: one plugin, one client, one program cache.
pub(crate) struct Runtime {
    pub(crate) client: Client,
    programs: Mutex<HashMap<String, Arc<Executable>>>,
    /// Path of the plugin that was loaded.
    pub(crate) plugin: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("client", &self.client)
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

/// Load the plugin and create the client once per process; the answer
/// (including a failure) is remembered.
pub(crate) fn runtime() -> std::result::Result<Arc<Runtime>, Unavailable> {
    static RT: OnceLock<std::result::Result<Arc<Runtime>, Unavailable>> = OnceLock::new();
    RT.get_or_init(|| {
        let path = plugin_path().ok_or_else(|| {
            Unavailable::NoPlugin(format!(
                "no PJRT plugin: set {PLUGIN_ENV} (libtpu.so on a TPU VM) or install XLA's CPU plugin in ~/.cache/kiln/pjrt/"
            ))
        })?;
        if !path.is_file() {
            return Err(Unavailable::NoPlugin(format!(
                "no PJRT plugin at {} (set {PLUGIN_ENV} to libtpu.so on a TPU VM, or run ci/test.sh's tpu stage to fetch XLA's CPU plugin)",
                path.display()
            )));
        }
        let api = Api::load(&path)
            .map_err(|e| Unavailable::NoDriver(format!("{}: {e}", path.display())))?;
        let client =
            Client::create(api).map_err(|e| Unavailable::NoDriver(format!("{}: {e}", path.display())))?;
        if client.num_devices() == 0 {
            return Err(Unavailable::NoDevice(format!(
                "the {} PJRT client has no addressable devices",
                client.platform
            )));
        }
        Ok(Arc::new(Runtime {
            client,
            programs: Mutex::new(HashMap::new()),
            plugin: path,
        }))
    })
    .clone()
}

/// A HAL buffer's private handle: one device buffer holding its bytes,
/// either as `ui8[len]` or (KV caches) as a typed dense array of the same
/// bytes, so programs use it without reinterpreting it.
#[derive(Debug)]
pub(crate) struct Mem {
    pub(crate) buf: Buffer,
    /// The device array's type (`ui8[len]` for plain buffers).
    pub(crate) ty: Ty,
}

impl Mem {
    /// A plain byte buffer of `len` bytes.
    pub(crate) fn bytes(buf: Buffer, len: usize) -> Mem {
        Mem {
            buf,
            ty: Ty::new(&[len], El::U8),
        }
    }
}

/// The PJRT element type of a device array type.
fn element_type(e: El) -> Option<ElementType> {
    Some(match e {
        El::U8 => ElementType::U8,
        El::I64 => ElementType::S64,
        El::F16 => ElementType::F16,
        El::F32 => ElementType::F32,
        El::BF16 => ElementType::BF16,
        El::F8E4M3 => ElementType::F8E4M3FN,
        _ => return None,
    })
}

/// One addressable device of the PJRT client (`tpu:N`).
#[derive(Debug)]
pub struct TpuDevice {
    pub(crate) id: BackendId,
    pub(crate) name: String,
    pub(crate) caps: Capabilities,
    pub(crate) rt: Arc<Runtime>,
    pub(crate) index: usize,
}

/// The element type a HAL dtype is computed in.
pub(crate) fn el(d: DType) -> Option<El> {
    Some(match d {
        DType::F32 => El::F32,
        DType::F16 => El::F16,
        DType::BF16 => El::BF16,
        DType::F8E4M3 => El::F8E4M3,
        DType::F8E5M2 => El::F8E5M2,
        DType::I8 => El::I8,
        DType::I32 => El::I32,
        DType::I64 => El::I64,
        DType::U8 => El::U8,
        DType::U4 => return None,
    })
}

/// Description of one device and its platform, for `kiln devices`.
pub(crate) fn describe(rt: &Runtime, index: usize) -> String {
    let (major, minor) = rt.client.api().version;
    format!(
        "PJRT {} device {index} ({}, PJRT C API {major}.{minor})",
        rt.client.platform,
        rt.plugin
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Devices the plugin offers, as `(index, description)`.
pub fn list() -> std::result::Result<Vec<(usize, String)>, Unavailable> {
    let rt = runtime()?;
    Ok((0..rt.client.num_devices())
        .map(|i| (i, describe(&rt, i)))
        .collect())
}

/// An input of a program: a HAL buffer (read whole).
pub(crate) type Input<'a> = &'a DeviceBuffer;

impl TpuDevice {
    /// Open device `index` of the plugin's client.
    pub fn open(index: usize) -> Result<TpuDevice> {
        let name = format!("tpu:{index}");
        let rt = runtime().map_err(|reason| HalError::Unavailable {
            backend: name.clone(),
            reason,
        })?;
        if index >= rt.client.num_devices() {
            return Err(HalError::Unavailable {
                backend: name,
                reason: Unavailable::NoDevice(format!(
                    "the PJRT client has {} devices",
                    rt.client.num_devices()
                )),
            });
        }
        let caps = crate::caps::capabilities(describe(&rt, index));
        Ok(TpuDevice {
            id: BackendId::fresh(),
            name,
            caps,
            rt,
            index,
        })
    }

    /// A PJRT failure as a HAL error naming this device and `op`.
    pub(crate) fn pjrt_err(&self, op: &'static str, e: PjrtError) -> HalError {
        HalError::device(&self.name, op, e.to_string())
    }

    /// The private handle of `buf`, or `ForeignBuffer`.
    pub(crate) fn mem<'b>(&self, op: &'static str, buf: &'b DeviceBuffer) -> Result<&'b Mem> {
        buf.handle::<Mem>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{:?}", buf.owner()),
            })
    }

    fn mem_mut<'b>(&self, op: &'static str, buf: &'b mut DeviceBuffer) -> Result<&'b mut Mem> {
        let owner = buf.owner();
        buf.handle_mut::<Mem>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{owner:?}"),
            })
    }

    /// A new device buffer holding `bytes`.
    pub(crate) fn buffer_from(&self, op: &'static str, bytes: &[u8]) -> Result<Buffer> {
        self.rt
            .client
            .buffer_from_host(self.index, bytes, ElementType::U8, &[bytes.len() as i64])
            .map_err(|e| self.pjrt_err(op, e))
    }

    pub(crate) fn alloc_impl(&self, bytes: usize) -> Result<DeviceBuffer> {
        let mut zeros = Vec::new();
        zeros
            .try_reserve_exact(bytes)
            .map_err(|_| HalError::OutOfMemory {
                backend: self.name.clone(),
                bytes,
            })?;
        zeros.resize(bytes, 0u8);
        let buf = self.buffer_from("alloc", &zeros).map_err(|e| match e {
            HalError::Device { msg, .. } if msg.contains("RESOURCE_EXHAUSTED") => {
                HalError::OutOfMemory {
                    backend: self.name.clone(),
                    bytes,
                }
            }
            other => other,
        })?;
        Ok(DeviceBuffer::new(self.id, bytes, Mem::bytes(buf, bytes)))
    }

    /// A zero-filled buffer stored on the device as a dense array of `ty`
    /// (its byte length is `ty`'s).
    pub(crate) fn alloc_typed(&self, op: &'static str, ty: Ty) -> Result<DeviceBuffer> {
        let bytes = ty.numel() * ty.el.bytes();
        let pt = element_type(ty.el).ok_or_else(|| {
            HalError::device(&self.name, op, format!("no PJRT type for {}", ty.mlir()))
        })?;
        let mut zeros = Vec::new();
        zeros
            .try_reserve_exact(bytes)
            .map_err(|_| HalError::OutOfMemory {
                backend: self.name.clone(),
                bytes,
            })?;
        zeros.resize(bytes, 0u8);
        let dims: Vec<i64> = ty.dims.iter().map(|&d| d as i64).collect();
        let buf = self
            .rt
            .client
            .buffer_from_host(self.index, &zeros, pt, &dims)
            .map_err(|e| self.pjrt_err(op, e))?;
        Ok(DeviceBuffer::new(self.id, bytes, Mem { buf, ty }))
    }

    pub(crate) fn upload_impl(
        &self,
        dst: &mut DeviceBuffer,
        offset: usize,
        src: &[u8],
    ) -> Result<()> {
        let len = dst.len();
        let end = offset.checked_add(src.len()).filter(|&e| e <= len);
        if end.is_none() {
            return Err(HalError::invalid(
                &self.name,
                "upload",
                format!(
                    "{} bytes at offset {offset} outside a buffer of {len} bytes",
                    src.len()
                ),
            ));
        }
        if src.is_empty() {
            return Ok(());
        }
        if offset == 0 && src.len() == len {
            let ty = self.mem("upload", dst)?.ty.clone();
            let buf = if ty.el == El::U8 {
                self.buffer_from("upload", src)?
            } else {
                let pt = element_type(ty.el).ok_or_else(|| {
                    HalError::device(
                        &self.name,
                        "upload",
                        format!("no PJRT type for {}", ty.mlir()),
                    )
                })?;
                let dims: Vec<i64> = ty.dims.iter().map(|&d| d as i64).collect();
                self.rt
                    .client
                    .buffer_from_host(self.index, src, pt, &dims)
                    .map_err(|e| self.pjrt_err("upload", e))?
            };
            self.mem_mut("upload", dst)?.buf = buf;
            return Ok(());
        }
        // A partial write: patch the range on the device.
        let staged = DeviceBuffer::new(
            self.id,
            src.len(),
            Mem::bytes(self.buffer_from("upload", src)?, src.len()),
        );
        let n = src.len();
        self.run(
            "upload",
            format!("upload|{len}|{n}|{offset}"),
            &[&staged],
            &mut [dst],
            |b, ins, outs| {
                let bytes = as_bytes(b, &outs[0])?;
                let at = b.scalar(El::I64, offset as f64);
                let r = b.dynamic_update_slice(&bytes, &ins[0], &[at])?;
                Ok(vec![from_bytes(b, &r, &outs[0].ty)?])
            },
        )
    }

    pub(crate) fn download_impl(
        &self,
        src: &DeviceBuffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        let len = src.len();
        if offset.checked_add(dst.len()).is_none_or(|e| e > len) {
            return Err(HalError::invalid(
                &self.name,
                "download",
                format!(
                    "{} bytes at offset {offset} outside a buffer of {len} bytes",
                    dst.len()
                ),
            ));
        }
        if dst.is_empty() {
            return Ok(());
        }
        let mem = self.mem("download", src)?;
        if offset == 0 && dst.len() == len {
            return mem
                .buf
                .to_host(dst)
                .map_err(|e| self.pjrt_err("download", e));
        }
        let mut all = vec![0u8; len];
        mem.buf
            .to_host(&mut all)
            .map_err(|e| self.pjrt_err("download", e))?;
        dst.copy_from_slice(&all[offset..offset + dst.len()]);
        Ok(())
    }

    /// Run the program cached under `key` (built by `build` on first use)
    /// on the byte buffers `inputs` and `outputs`. `build` gets one `ui8`
    /// value per input and per output buffer and returns the new contents
    /// of every output buffer (same lengths), which replace them.
    pub(crate) fn run(
        &self,
        op: &'static str,
        key: String,
        inputs: &[Input<'_>],
        outputs: &mut [&mut DeviceBuffer],
        build: impl FnOnce(&mut Builder, &[Val], &[Val]) -> BResult<Vec<Val>>,
    ) -> Result<()> {
        let exe = self.program(op, key, inputs, outputs, build)?;
        let mut args: Vec<&Buffer> = Vec::with_capacity(inputs.len() + outputs.len());
        for b in inputs {
            args.push(&self.mem(op, b)?.buf);
        }
        for b in outputs.iter() {
            args.push(&self.mem(op, b)?.buf);
        }
        let results = exe
            .execute(&args, outputs.len())
            .map_err(|e| self.pjrt_err(op, e))?;
        for (dst, new) in outputs.iter_mut().zip(results) {
            self.mem_mut(op, dst)?.buf = new;
        }
        Ok(())
    }

    fn program(
        &self,
        op: &'static str,
        key: String,
        inputs: &[Input<'_>],
        outputs: &[&mut DeviceBuffer],
        build: impl FnOnce(&mut Builder, &[Val], &[Val]) -> BResult<Vec<Val>>,
    ) -> Result<Arc<Executable>> {
        let mut full_key = key;
        let mut in_tys = Vec::with_capacity(inputs.len());
        for b in inputs {
            let ty = self.mem(op, b)?.ty.clone();
            full_key.push_str(&format!("|i{}", ty.mlir()));
            in_tys.push(ty);
        }
        let mut out_tys = Vec::with_capacity(outputs.len());
        for b in outputs {
            let ty = self.mem(op, b)?.ty.clone();
            full_key.push_str(&format!("|o{}", ty.mlir()));
            out_tys.push(ty);
        }
        if let Some(e) = self.cache().get(&full_key) {
            return Ok(e.clone());
        }
        let mut b = Builder::new();
        let ins: Vec<Val> = in_tys.into_iter().map(|t| b.arg(t)).collect();
        let outs: Vec<Val> = out_tys
            .into_iter()
            .enumerate()
            .map(|(i, t)| b.donated_arg(t, i))
            .collect();
        let results = build(&mut b, &ins, &outs)
            .map_err(|e| HalError::device(&self.name, op, e.to_string()))?;
        if results.len() != outs.len() || results.iter().zip(&outs).any(|(r, o)| r.ty != o.ty) {
            return Err(HalError::device(
                &self.name,
                op,
                "internal: a program's results do not match its output buffers",
            ));
        }
        let refs: Vec<&Val> = results.iter().collect();
        let text = b.finish(&refs);
        let exe = Arc::new(
            self.rt
                .client
                .compile(&text)
                .map_err(|e| self.pjrt_err(op, e))?,
        );
        self.cache().insert(full_key, exe.clone());
        Ok(exe)
    }

    /// Number of compiled programs in the process-wide cache whose key
    /// starts with `prefix` (an op name, `"upload|40|"`, …).
    pub fn cached_programs(&self, prefix: &str) -> usize {
        self.cache()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Executable>>> {
        // A panic while holding the lock leaves the map intact: keep using it.
        self.rt
            .programs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Read `shape` elements of `dtype` starting at element `offset` of the
/// byte buffer `buf` as a typed tensor.
pub(crate) fn load(
    b: &mut Builder,
    buf: &Val,
    dtype: El,
    offset: usize,
    shape: &[usize],
) -> BResult<Val> {
    let n: usize = shape.iter().product();
    if buf.ty.el == dtype && buf.ty.el != El::U8 {
        // A typed array of the right element type: no reinterpretation.
        let flat = b.reshape(buf, &[buf.ty.numel()])?;
        let part = b.slice(&flat, &[offset], &[offset + n])?;
        return b.reshape(&part, shape);
    }
    let buf = &as_bytes(b, buf)?;
    let w = dtype.bytes();
    let start = offset * w;
    let bytes = b.slice(buf, &[start], &[start + n * w])?;
    let typed = if w == 1 {
        if dtype == El::U8 {
            bytes
        } else {
            b.bitcast(&bytes, dtype)?
        }
    } else {
        let r = b.reshape(&bytes, &[n, w])?;
        b.bitcast(&r, dtype)?
    };
    b.reshape(&typed, shape)
}

/// Write the typed tensor `value` over the bytes of `buf` starting at
/// element `offset` (of `value`'s dtype); returns the new buffer.
pub(crate) fn store(b: &mut Builder, buf: &Val, offset: usize, value: &Val) -> BResult<Val> {
    let w = value.ty.el.bytes();
    let n = value.ty.numel();
    let flat = b.reshape(value, &[n])?;
    if buf.ty.el != El::U8 {
        if buf.ty.el == value.ty.el {
            let whole = b.reshape(buf, &[buf.ty.numel()])?;
            let r = if offset == 0 && n == whole.ty.numel() {
                flat
            } else {
                let at = b.scalar(El::I64, offset as f64);
                b.dynamic_update_slice(&whole, &flat, &[at])?
            };
            return b.reshape(&r, &buf.ty.dims);
        }
        let bytes = as_bytes(b, buf)?;
        let r = store(b, &bytes, offset, value)?;
        return from_bytes(b, &r, &buf.ty);
    }
    let bytes = if value.ty.el == El::U8 {
        flat
    } else {
        let raw = b.bitcast(&flat, El::U8)?;
        b.reshape(&raw, &[n * w])?
    };
    if offset == 0 && n * w == buf.ty.numel() {
        return Ok(bytes);
    }
    let at = b.scalar(El::I64, (offset * w) as f64);
    b.dynamic_update_slice(buf, &bytes, &[at])
}

/// A device array as its bytes, `ui8[len]`.
pub(crate) fn as_bytes(b: &mut Builder, buf: &Val) -> BResult<Val> {
    if buf.ty.el == El::U8 && buf.dims().len() == 1 {
        return Ok(buf.clone());
    }
    let n = buf.ty.numel();
    let flat = b.reshape(buf, &[n])?;
    if buf.ty.el == El::U8 {
        return Ok(flat);
    }
    let raw = b.bitcast(&flat, El::U8)?;
    b.reshape(&raw, &[n * buf.ty.el.bytes()])
}

/// `ui8[len]` bytes as a device array of `ty`.
pub(crate) fn from_bytes(b: &mut Builder, bytes: &Val, ty: &Ty) -> BResult<Val> {
    if ty.el == El::U8 {
        return b.reshape(bytes, &ty.dims);
    }
    let n = ty.numel();
    let w = ty.el.bytes();
    let v = if w == 1 {
        b.bitcast(bytes, ty.el)?
    } else {
        let r = b.reshape(bytes, &[n, w])?;
        b.bitcast(&r, ty.el)?
    };
    b.reshape(&v, &ty.dims)
}
