//! The backend traits: [`Backend`] (memory, sync, capability questions),
//! the op traits in [`crate::ops`], [`StepCapture`], and [`Device`], their sum.

use crate::{
    DType, DeviceBuffer, Elementwise, FlashAttention, Gemm, HalError, KvCacheOps, KvLayout, OpDesc,
    PagedAttention, Precision, QuantFormat, QuantGemm, Result, TableFormat, Unsupported,
};

/// What a device can do, answered once when it is opened.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    /// Human-readable device description (`"NVIDIA H100 80GB HBM3 (sm_90)"`).
    pub device: String,
    /// Device memory in bytes, where known.
    pub memory_bytes: Option<u64>,
    /// Activation dtypes the ops accept.
    pub activation_dtypes: Vec<DType>,
    /// KV-cache dtypes.
    pub kv_cache_dtypes: Vec<DType>,
    /// KV-cache physical layouts, preferred first.
    pub kv_layouts: Vec<KvLayout>,
    /// Attention head dims (empty: any).
    pub head_dims: Vec<usize>,
    /// KV block sizes in tokens (empty: any).
    pub block_sizes: Vec<usize>,
    /// Quantised weight formats.
    pub quant_formats: Vec<QuantFormat>,
    /// Activation precision modes of quantised GEMM.
    pub precisions: Vec<Precision>,
    /// A row's result is bitwise independent of the rest of the batch and of
    /// how its sequence's tokens are chunked (decode, prefill, chunked prefill).
    pub batch_invariant: bool,
    /// The device captures and replays whole steps ([`StepCapture`]).
    pub step_capture: bool,
}

impl Capabilities {
    /// Answer [`Backend::supports`] from these lists alone: dtypes, head dims,
    /// block sizes, layouts, formats, precisions. A backend with further limits
    /// checks them after calling this.
    pub fn check(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        let name = op.name();
        let no = |reason: String| Err(Unsupported::new(name, reason));
        let act = |d: DType| -> std::result::Result<(), Unsupported> {
            if self.activation_dtypes.contains(&d) {
                Ok(())
            } else {
                Err(Unsupported::new(
                    name,
                    format!("activation dtype {d} not supported"),
                ))
            }
        };
        match *op {
            OpDesc::Gemm { input, output, .. } => {
                act(input)?;
                act(output)
            }
            OpDesc::QuantGemm {
                spec,
                input,
                output,
                precision,
                ..
            } => {
                act(input)?;
                act(output)?;
                if !self.quant_formats.contains(&spec.format()) {
                    return no(format!(
                        "quant format {} not supported",
                        spec.format().name()
                    ));
                }
                if !self.precisions.contains(&precision) {
                    return no(format!("precision {} not supported", precision.name()));
                }
                Ok(())
            }
            OpDesc::WriteKv { input, cache } => {
                act(input)?;
                self.check_cache(name, &cache)
            }
            OpDesc::CopyBlocks { cache } => self.check_cache(name, &cache),
            OpDesc::PagedAttention { dtype, cache, .. } => {
                act(dtype)?;
                self.check_head_dim(name, cache.head_dim)?;
                self.check_cache(name, &cache)
            }
            OpDesc::FlashAttention {
                dtype, head_dim, ..
            } => {
                act(dtype)?;
                self.check_head_dim(name, head_dim)
            }
            OpDesc::RmsNorm { dtype, .. } | OpDesc::Rope { dtype, .. } => act(dtype),
            OpDesc::SiluAndMul { dtype } | OpDesc::Add { dtype, .. } => act(dtype),
            OpDesc::Embedding { table, output } => {
                act(output)?;
                match table {
                    TableFormat::Dense(d) => act(d),
                    TableFormat::Quant(spec) if self.quant_formats.contains(&spec.format()) => {
                        Ok(())
                    }
                    TableFormat::Quant(spec) => no(format!(
                        "quant format {} not supported",
                        spec.format().name()
                    )),
                }
            }
        }
    }

    fn check_head_dim(&self, name: &'static str, d: usize) -> std::result::Result<(), Unsupported> {
        if self.head_dims.is_empty() || self.head_dims.contains(&d) {
            Ok(())
        } else {
            Err(Unsupported::new(
                name,
                format!("head_dim {d} not in {:?}", self.head_dims),
            ))
        }
    }

    fn check_cache(
        &self,
        name: &'static str,
        c: &crate::KvCacheSpec,
    ) -> std::result::Result<(), Unsupported> {
        if !self.kv_cache_dtypes.contains(&c.dtype) {
            return Err(Unsupported::new(
                name,
                format!("KV cache dtype {} not supported", c.dtype),
            ));
        }
        if !self.kv_layouts.contains(&c.layout) {
            return Err(Unsupported::new(
                name,
                format!("KV layout {:?} not supported", c.layout),
            ));
        }
        if !self.block_sizes.is_empty() && !self.block_sizes.contains(&c.block_size) {
            return Err(Unsupported::new(
                name,
                format!("block size {} not in {:?}", c.block_size, self.block_sizes),
            ));
        }
        Ok(())
    }
}

/// Memory, synchronisation and capability questions of one opened device.
///
/// Work may be deferred: an op may return before it ran. Results are visible
/// to [`Backend::download`] only after [`Backend::synchronize`]. Uploads and
/// ops are ordered as issued.
pub trait Backend: Send + Sync {
    /// Device name in the registry scheme: `cpu`, `cuda:0`, `hip:1`,
    /// `opencl:0`, `wgpu:0`, `tpu:0`, or a vendor's own kind.
    fn name(&self) -> &str;

    /// What the device can do.
    fn capabilities(&self) -> &Capabilities;

    /// Whether an op with this description can run, with the reason if not.
    /// Callers ask before dispatching; an op that runs must agree.
    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported>;

    /// Allocate `bytes` of device memory (contents unspecified).
    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer>;

    /// Copy `src` into `dst` at byte `offset`, ordered after earlier work.
    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()>;

    /// Copy `dst.len()` bytes from `src` at byte `offset` to the host. Sees the
    /// effects of ops only after [`Backend::synchronize`].
    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()>;

    /// Wait until all issued work has finished.
    fn synchronize(&self) -> Result<()>;

    /// The error an op returns when this backend does not implement it.
    fn not_implemented(&self, op: &'static str) -> HalError {
        HalError::unsupported(
            self.name(),
            Unsupported::new(op, "not implemented by this backend"),
        )
    }

    /// The error for a `supports` refusal, for backends checking in an op.
    fn refuse(&self, unsupported: Unsupported) -> HalError {
        HalError::unsupported(self.name(), unsupported)
    }
}

/// A step's shape, the key under which a backend records and replays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StepKey {
    /// New tokens in the step (padded to a bucket by the engine).
    pub num_tokens: usize,
    /// Sequences in the step (padded to a bucket).
    pub num_seqs: usize,
    /// Longest query (1 for pure decode).
    pub max_query_len: usize,
    /// Columns of the block table (a bucket).
    pub max_blocks_per_seq: usize,
}

/// What the engine should do with a step, as answered by [`StepCapture::begin_step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepMode {
    /// Issue the ops one by one (every backend supports this).
    Eager,
    /// Issue the ops one by one; the backend records them (CUDA graph
    /// capture, or tracing into one XLA program) and runs them at `end_step`.
    Record,
    /// Do not issue the ops: refresh the step's input buffers in place and
    /// call [`StepCapture::replay_step`].
    Replay,
}

/// Whole-step capture and replay (CUDA graphs, whole-program XLA). A no-op by
/// default. Replay requires the engine to reuse the same buffers (same
/// addresses) for the step's inputs, outputs and scratch.
pub trait StepCapture: Backend {
    /// Called before a step with shape `key`.
    fn begin_step(&self, key: &StepKey) -> Result<StepMode> {
        let _ = key;
        Ok(StepMode::Eager)
    }

    /// Called after the ops of an `Eager` or `Record` step were issued.
    fn end_step(&self, key: &StepKey) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// Run a step recorded earlier under `key`.
    fn replay_step(&self, key: &StepKey) -> Result<()> {
        let _ = key;
        Err(self.not_implemented("replay_step"))
    }

    /// Forget every recorded step: the engine calls this when a buffer a
    /// recording may refer to was reallocated (or its contents moved), so
    /// no later replay reads memory that is gone. A no-op by default.
    fn invalidate_steps(&self) -> Result<()> {
        Ok(())
    }
}

/// An opened device: a [`Backend`] with every op trait (each op possibly
/// refused through `supports`). Implemented automatically; the engine holds
/// `Arc<dyn Device>` from the registry or a concrete type.
pub trait Device:
    Backend
    + Gemm
    + QuantGemm
    + KvCacheOps
    + PagedAttention
    + FlashAttention
    + Elementwise
    + StepCapture
{
}

impl<T> Device for T where
    T: Backend
        + Gemm
        + QuantGemm
        + KvCacheOps
        + PagedAttention
        + FlashAttention
        + Elementwise
        + StepCapture
{
}
