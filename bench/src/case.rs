//! One bench case: an op at one shape on whichever device it is built on.

use std::sync::Arc;

use hal::{Device, HalError, OpDesc};

/// The op families, one criterion group each, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Dense GEMM (f32, f16, bf16).
    Gemm,
    /// Quantised GEMM (GGUF, AWQ, GPTQ, FP8).
    QuantGemm,
    /// `write_kv` into the paged cache.
    WriteKv,
    /// Paged attention (decode, chunked prefill).
    PagedAttention,
    /// Dense varlen flash attention (prefill).
    FlashAttention,
    /// RMS norm, with and without the fused residual add.
    RmsNorm,
    /// Rotary embedding (NeoX).
    Rope,
    /// `silu(gate) · up`.
    SiluAndMul,
    /// Embedding lookup (f16 and Q8_0 tables).
    Embedding,
    /// Element-wise add.
    Add,
}

impl Family {
    /// Every family, in run order.
    pub const ALL: [Family; 10] = [
        Family::Gemm,
        Family::QuantGemm,
        Family::WriteKv,
        Family::PagedAttention,
        Family::FlashAttention,
        Family::RmsNorm,
        Family::Rope,
        Family::SiluAndMul,
        Family::Embedding,
        Family::Add,
    ];

    /// Snake-case name: the first segment of case names and the criterion
    /// group name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gemm => "gemm",
            Family::QuantGemm => "quant_gemm",
            Family::WriteKv => "write_kv",
            Family::PagedAttention => "paged_attention",
            Family::FlashAttention => "flash_attention",
            Family::RmsNorm => "rms_norm",
            Family::Rope => "rope",
            Family::SiluAndMul => "silu_and_mul",
            Family::Embedding => "embedding",
            Family::Add => "add",
        }
    }
}

/// What one call of an op costs, for the roofline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cost {
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: u64,
    /// Bytes that must cross the memory interface at least once: weights
    /// (in their stored format), KV cache, activations read and written,
    /// metadata.
    pub bytes: u64,
}

impl Cost {
    /// FLOPs per byte.
    pub fn intensity(&self) -> f64 {
        if self.bytes == 0 {
            0.0
        } else {
            self.flops as f64 / self.bytes as f64
        }
    }
}

/// Whether the reused operand stays cache-resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Temp {
    /// The same weights (cache, table) every call: cache-resident when they fit.
    Hot,
    /// Calls cycle through enough copies of the weights that the working set
    /// exceeds the cold threshold (300 MiB, more than the L3).
    Cold,
}

impl Temp {
    /// `hot` or `cold`.
    pub fn name(self) -> &'static str {
        match self {
            Temp::Hot => "hot",
            Temp::Cold => "cold",
        }
    }
}

/// An op at one shape, independent of any device.
pub trait Op: Send + Sync {
    /// The family.
    fn family(&self) -> Family;

    /// The case name after the family (`q4_0/smollm2-135m.mlp_down/decode_b1`).
    fn label(&self) -> String;

    /// The description the op's arguments will have, on a device whose
    /// preferred KV layout is `kv_layout` (ignored by ops without a cache).
    fn desc(&self, kv_layout: hal::KvLayout) -> OpDesc;

    /// FLOPs and bytes of one call.
    fn cost(&self) -> Cost;

    /// Bytes of the operand a cold variant makes copies of (weight, KV
    /// cache); 0 when there is none.
    fn resident_bytes(&self) -> usize {
        0
    }

    /// Whether the case also runs cold: memory-bound decode on weights or a
    /// KV cache.
    fn has_cold_variant(&self) -> bool {
        false
    }

    /// Allocate and fill the inputs on `dev` (`copies` copies of the resident
    /// operand) and return the closure that runs the op once and
    /// synchronizes. Called only after `dev.supports(&self.desc(..))` said yes.
    fn build<'d>(&self, dev: &'d dyn Device, copies: usize) -> hal::Result<Runner<'d>>;
}

/// Runs one call of a built case: the op on the next copy of its inputs,
/// then `synchronize`.
pub struct Runner<'d> {
    f: Box<dyn FnMut() -> hal::Result<()> + 'd>,
}

impl<'d> Runner<'d> {
    /// Wrap a closure that runs the op once and synchronizes.
    pub fn new(f: impl FnMut() -> hal::Result<()> + 'd) -> Self {
        Runner { f: Box::new(f) }
    }

    /// Run the op once and wait for it.
    pub fn run(&mut self) -> hal::Result<()> {
        (self.f)()
    }
}

/// A case: an op, hot or cold.
pub struct Case {
    /// `family/label/temp`, e.g. `quant_gemm/q4_0/smollm2-135m.mlp_down/decode_b1/hot`.
    pub name: String,
    /// Hot or cold.
    pub temp: Temp,
    /// Copies of the resident operand the calls cycle through (1 when hot).
    pub copies: usize,
    op: Arc<dyn Op>,
}

/// The outcome of building a case on a device.
pub enum Prepared<'d> {
    /// Built and run once successfully: ready to time.
    Ready(Runner<'d>),
    /// The device refused the op (its reason).
    Skipped(String),
    /// Building or the first run failed.
    Failed(String),
}

impl Case {
    /// A case of `op`; `copies` is 1 for [`Temp::Hot`].
    pub fn new(op: Arc<dyn Op>, temp: Temp, copies: usize) -> Self {
        let name = format!("{}/{}/{}", op.family().name(), op.label(), temp.name());
        Case {
            name,
            temp,
            copies: copies.max(1),
            op,
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.op.family()
    }

    /// FLOPs and bytes of one call.
    pub fn cost(&self) -> Cost {
        self.op.cost()
    }

    /// Bytes the calls touch over a whole cycle of copies: the cost's bytes
    /// plus the extra copies of the resident operand.
    pub fn working_set(&self) -> u64 {
        self.cost().bytes + (self.copies as u64 - 1) * self.op.resident_bytes() as u64
    }

    /// The op description on `dev`.
    pub fn desc(&self, dev: &dyn Device) -> OpDesc {
        let layout = dev
            .capabilities()
            .kv_layouts
            .first()
            .copied()
            .unwrap_or(hal::KvLayout::Nhd);
        self.op.desc(layout)
    }

    /// Ask `dev` whether it runs the op; if so build the inputs and run the
    /// op once (a warm-up that also catches failures).
    pub fn prepare<'d>(&self, dev: &'d dyn Device) -> Prepared<'d> {
        if let Err(u) = dev.supports(&self.desc(dev)) {
            return Prepared::Skipped(u.reason);
        }
        let mut runner = match self.op.build(dev, self.copies) {
            Ok(r) => r,
            Err(e) => return refused_or_failed(e),
        };
        // Flush the uploads, then one warm-up call.
        if let Err(e) = dev.synchronize().and_then(|()| runner.run()) {
            return refused_or_failed(e);
        }
        Prepared::Ready(runner)
    }
}

fn refused_or_failed<'d>(e: HalError) -> Prepared<'d> {
    match e {
        HalError::Unsupported { unsupported, .. } => Prepared::Skipped(unsupported.reason),
        other => Prepared::Failed(other.to_string()),
    }
}

/// Copies of an operand of `resident` bytes needed for a working set over
/// `threshold` bytes (at least 2, so cold never equals hot).
pub fn cold_copies(resident: usize, threshold: usize) -> usize {
    if resident == 0 {
        return 1;
    }
    threshold.div_ceil(resident).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_exceed_the_threshold() {
        let t = 300 << 20;
        assert_eq!(cold_copies(1 << 20, t), 300);
        assert_eq!(cold_copies(497_664, t), t.div_ceil(497_664));
        assert!(cold_copies(497_664, t) * 497_664 >= t);
        assert_eq!(cold_copies(1 << 30, t), 2);
        assert_eq!(cold_copies(0, t), 1);
    }
}
