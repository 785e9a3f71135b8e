//! # A minimal Kiln backend: the template a hardware vendor starts from
//!
//! This crate depends on `hal` alone, exactly as a backend living in a
//! vendor's own repository would. It shows every piece a backend needs, with
//! the smallest kernels that are still real:
//!
//! * **device memory** behind the opaque [`hal::DeviceBuffer`]: here plain
//!   host memory in a private handle type, so no other crate can read it;
//! * **execution**: work runs immediately, so `synchronize` has nothing to
//!   wait for (a GPU backend would enqueue on a stream here);
//! * **a subset of ops**, each with its own naive f32 kernel: `gemm`,
//!   `rms_norm` (with and without the fused residual), `silu_and_mul` and
//!   `add`. Every other op is refused through [`Backend::supports`] with a
//!   reason, and left to the op traits' default bodies, so the conformance
//!   suite prints a skip for it;
//! * **a registry factory** ([`factory`], kind `minimal`) and
//!   [`MinimalBackend::open_default`] for `hal::conformance_suite!`.
//!
//! Copy the crate, rename the kind, and replace one kernel at a time.

use std::sync::Arc;

use hal::tensor::ViewInfo;
use hal::{
    AddArgs, Backend, BackendFactory, BackendId, Capabilities, DType, Device, DeviceBuffer,
    DeviceInfo, Elementwise, FlashAttention, Gemm, GemmArgs, HalError, KvCacheOps, OpDesc,
    PagedAttention, Probe, QuantGemm, Result, RmsNormArgs, SiluAndMulArgs, StepCapture,
    Unavailable, Unsupported, View, ViewMut,
};

/// The device kind, the `minimal` in `--device minimal:0`.
pub const KIND: &str = "minimal";

/// What `kiln devices` prints for this backend.
pub const DESCRIPTION: &str = "host memory, naive f32 kernels";

/// The private type behind every [`DeviceBuffer`] this backend makes.
///
/// A GPU backend would keep a device pointer (and its context) here. Nothing
/// outside this crate can name the type, so nothing outside it can look
/// inside a buffer: the host sees the bytes only through `download`.
///
/// No lock is needed: ops write through `ViewMut`, which holds the buffer
/// mutably, so the borrow checker already rules out a read racing a write.
struct HostMemory(Vec<u8>);

/// One opened `minimal` device: host memory, naive f32 kernels.
///
/// Tensors follow the HAL's row-major layouts, e.g. activations
/// `[num_tokens, hidden]` and GEMM weights `[N, K]`.
#[derive(Debug)]
pub struct MinimalBackend {
    /// Stamped on every buffer we allocate; a buffer with another id was made
    /// by another backend (or another instance of this one).
    id: BackendId,
    /// `"minimal:0"`: the registry checks it matches the name it was opened by.
    name: String,
    caps: Capabilities,
}

impl MinimalBackend {
    /// Open device `index` (only 0 exists).
    pub fn open(index: usize) -> Result<MinimalBackend> {
        if index != 0 {
            return Err(HalError::Unavailable {
                backend: format!("{KIND}:{index}"),
                reason: Unavailable::NoDevice(format!(
                    "the {KIND} backend has one device, {KIND}:0"
                )),
            });
        }
        Ok(MinimalBackend {
            id: BackendId::fresh(),
            name: format!("{KIND}:0"),
            // The honest answer to "what can you do?", printed by `kiln
            // devices` and used by `supports`. No KV cache, no quantised
            // formats, so no quantised-GEMM precision modes either (add
            // `Precision::Exact` with your first quantised format).
            caps: Capabilities {
                device: format!("{KIND} ({DESCRIPTION})"),
                memory_bytes: None,
                activation_dtypes: vec![DType::F32],
                kv_cache_dtypes: vec![],
                kv_layouts: vec![],
                head_dims: vec![],
                block_sizes: vec![],
                quant_formats: vec![],
                precisions: vec![],
                // Every output row is computed by the same loop in the same
                // order whatever else is in the batch: bitwise invariant.
                batch_invariant: true,
                step_capture: false,
            },
        })
    }

    /// Open `minimal:0`; what `hal::conformance_suite!` calls.
    pub fn open_default() -> Result<MinimalBackend> {
        MinimalBackend::open(0)
    }

    /// Our bytes of `buf`, or [`HalError::ForeignBuffer`] if another backend made it.
    fn memory<'b>(&self, op: &'static str, buf: &'b DeviceBuffer) -> Result<&'b Vec<u8>> {
        match buf.handle::<HostMemory>(self.id) {
            Some(m) => Ok(&m.0),
            None => Err(self.foreign(op, buf.owner())),
        }
    }

    /// Mutable variant of [`MinimalBackend::memory`].
    fn memory_mut<'b>(
        &self,
        op: &'static str,
        buf: &'b mut DeviceBuffer,
    ) -> Result<&'b mut Vec<u8>> {
        let owner = buf.owner();
        match buf.handle_mut::<HostMemory>(self.id) {
            Some(m) => Ok(&mut m.0),
            None => Err(self.foreign(op, owner)),
        }
    }

    fn foreign(&self, op: &'static str, owner: BackendId) -> HalError {
        HalError::ForeignBuffer {
            backend: self.name.clone(),
            op,
            owner: format!("{owner:?}, not this {KIND} instance"),
        }
    }

    /// `start..start + len`, or an error naming the op if it leaves a buffer
    /// of `size` bytes (no panics on bad input).
    fn range(
        &self,
        op: &'static str,
        start: usize,
        len: usize,
        size: usize,
    ) -> Result<std::ops::Range<usize>> {
        match start.checked_add(len) {
            Some(end) if end <= size => Ok(start..end),
            _ => Err(HalError::invalid(
                &self.name,
                op,
                format!("bytes {start}..{start}+{len} lie outside a buffer of {size} bytes"),
            )),
        }
    }

    /// Read a (validated, contiguous) view as f32 values. Non-F32 views (only
    /// a GEMM bias can be one) are converted.
    fn load(&self, op: &'static str, v: &View<'_>) -> Result<Vec<f32>> {
        let mem = self.memory(op, v.buffer)?;
        let bytes = &mem[self.range(op, v.byte_offset(), v.byte_len(), mem.len())?];
        Ok(match v.dtype {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            d => (0..v.layout.numel())
                .map(|i| d.read_f64(bytes, i) as f32)
                .collect(),
        })
    }

    /// Write f32 values into a (validated, contiguous, F32) view.
    fn store(&self, op: &'static str, v: &mut ViewMut<'_>, values: &[f32]) -> Result<()> {
        let (start, len) = (v.byte_offset(), v.byte_len());
        let mem = self.memory_mut(op, v.buffer)?;
        let r = self.range(op, start, len, mem.len())?;
        for (dst, x) in mem[r].chunks_exact_mut(4).zip(values) {
            dst.copy_from_slice(&x.to_le_bytes());
        }
        Ok(())
    }

    /// An op must agree with `supports`: refuse here what `supports` refuses.
    fn ensure_supported(&self, op: &OpDesc) -> Result<()> {
        self.supports(op).map_err(|u| self.refuse(u))
    }
}

impl Backend for MinimalBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The four op families with kernels go through the capability lists
    /// (which allow F32 only); everything else is refused by name.
    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        match op {
            OpDesc::Gemm { .. }
            | OpDesc::RmsNorm { .. }
            | OpDesc::SiluAndMul { .. }
            | OpDesc::Add { .. } => self.caps.check(op),
            other => Err(Unsupported::new(
                other.name(),
                "not implemented by the minimal backend (it has kernels for gemm, rms_norm, \
                 silu_and_mul and add only)",
            )),
        }
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        // `vec![0; n]` would abort the process on failure; ask politely instead.
        let mut mem = Vec::new();
        mem.try_reserve_exact(bytes)
            .map_err(|_| HalError::OutOfMemory {
                backend: self.name.clone(),
                bytes,
            })?;
        mem.resize(bytes, 0);
        Ok(DeviceBuffer::new(self.id, bytes, HostMemory(mem)))
    }

    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()> {
        let mem = self.memory_mut("upload", dst)?;
        let r = self.range("upload", offset, src.len(), mem.len())?;
        mem[r].copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mem = self.memory("download", src)?;
        dst.copy_from_slice(&mem[self.range("download", offset, dst.len(), mem.len())?]);
        Ok(())
    }

    /// Every op has finished when it returns: nothing to wait for.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl Gemm for MinimalBackend {
    /// `out[M, N] = x[M, K] · w[N, K]ᵀ + bias[N]`, one dot product per
    /// output element, accumulated in f32 in order of `k`.
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        let (m, n, k) = args.validate(self.name())?; // shapes, dtypes, bounds
        self.ensure_supported(&args.desc())?; // F32 x, w and out
        let x = self.load("gemm", &args.x)?;
        let w = self.load("gemm", &args.w)?;
        let bias = match &args.bias {
            Some(b) => self.load("gemm", b)?,
            None => vec![0.0; n],
        };
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            for j in 0..n {
                let col = &w[j * k..(j + 1) * k];
                let dot = row.iter().zip(col).fold(0f32, |acc, (a, b)| acc + a * b);
                out[i * n + j] = dot + bias[j];
            }
        }
        let mut dst = args.out;
        self.store("gemm", &mut dst, &out)
    }
}

impl Elementwise for MinimalBackend {
    /// `out = r / sqrt(mean(r²) + eps) · weight` per row of `[num_tokens,
    /// hidden]`, where `r = x`, or `r = x + residual` stored back into
    /// `residual` first (the fused residual add).
    fn rms_norm(&self, args: RmsNormArgs<'_>) -> Result<()> {
        let (t, h) = args.validate(self.name())?;
        self.ensure_supported(&args.desc())?;
        if t * h == 0 {
            return Ok(()); // nothing to normalise (and `chunks_exact(0)` would panic)
        }
        let mut r = self.load("rms_norm", &args.x)?;
        let weight = self.load("rms_norm", &args.weight)?;
        if let Some(mut res) = args.residual {
            let old = self.load("rms_norm", &res.as_view())?;
            r.iter_mut().zip(&old).for_each(|(a, b)| *a += b);
            self.store("rms_norm", &mut res, &r)?;
        }
        let mut out = vec![0f32; t * h];
        for (src, dst) in r.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            let mean_sq = src.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let inv = 1.0 / (mean_sq + args.eps).sqrt();
            for ((o, v), w) in dst.iter_mut().zip(src).zip(&weight) {
                *o = v * inv * w;
            }
        }
        let mut dst = args.out;
        self.store("rms_norm", &mut dst, &out)
    }

    /// `out[t, i] = silu(x[t, i]) · x[t, I + i]` for `x` `[num_tokens, 2·I]`.
    fn silu_and_mul(&self, args: SiluAndMulArgs<'_>) -> Result<()> {
        let (t, i_dim) = args.validate(self.name())?;
        self.ensure_supported(&args.desc())?;
        if t * i_dim == 0 {
            return Ok(());
        }
        let x = self.load("silu_and_mul", &args.x)?;
        let mut out = Vec::with_capacity(t * i_dim);
        for row in x.chunks_exact(2 * i_dim) {
            let (gate, up) = row.split_at(i_dim);
            out.extend(
                gate.iter()
                    .zip(up)
                    .map(|(&a, &b)| a / (1.0 + (-a).exp()) * b),
            );
        }
        let mut dst = args.out;
        self.store("silu_and_mul", &mut dst, &out)
    }

    /// `out = a + b` for `[rows, n]`; a rank-1 `b` `[n]` is added to every row.
    fn add(&self, args: AddArgs<'_>) -> Result<()> {
        let (_rows, n) = args.validate(self.name())?;
        self.ensure_supported(&args.desc())?;
        let a = self.load("add", &args.a)?;
        let b = self.load("add", &args.b)?;
        let broadcast = args.b.layout.rank() == 1;
        let out: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + if broadcast { b[i % n] } else { b[i] })
            .collect();
        let mut dst = args.out;
        self.store("add", &mut dst, &out)
    }
    // `rope` and `embedding` keep their default bodies: "not implemented".
}

// No kernels for these families: the default bodies return an "unsupported"
// error, and `supports` has already told callers so. Implement one by
// writing its method here and accepting its `OpDesc` in `supports`.
impl QuantGemm for MinimalBackend {}
impl KvCacheOps for MinimalBackend {}
impl PagedAttention for MinimalBackend {}
impl FlashAttention for MinimalBackend {}
// Whole-step capture (CUDA graphs, XLA) is optional: the defaults run eagerly.
impl StepCapture for MinimalBackend {}
// `Backend` + every op trait + `StepCapture` = `hal::Device`, automatically.

/// The registry factory of this crate: kind `minimal`, one device.
///
/// Register it next to the built-in ones and `kiln --device minimal` works.
pub fn factory() -> BackendFactory {
    fn probe() -> Probe {
        // A real backend loads its driver here and lists devices, returning
        // `Probe::Unavailable(NoDriver(..))` rather than panicking without one.
        Probe::Available(vec![DeviceInfo {
            index: 0,
            description: DESCRIPTION.to_string(),
        }])
    }
    fn open(index: usize) -> Result<Arc<dyn Device>> {
        Ok(Arc::new(MinimalBackend::open(index)?))
    }
    BackendFactory {
        kind: KIND,
        crate_name: env!("CARGO_PKG_NAME"),
        description: DESCRIPTION,
        api_version: hal::API_VERSION,
        probe,
        open,
    }
}
