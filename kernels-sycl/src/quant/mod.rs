//! Quantised GEMM: `pack` turns a checkpoint's weight into this backend's
//! layout, `quant_gemm` runs the matching kernel. One module per family:
//!
//! * [`gguf`] — Q4_0 / Q4_1 / Q8_0 kept as GGUF blocks (`kernels/quant_gguf.cl`);
//! * [`int`] — AWQ and GPTQ (4 and 8 bit, act-order) repacked into rows
//!   (`kernels/quant_int.cl`);
//! * [`fp8`] — FP8 E4M3 W8A8 (`kernels/quant_fp8.cl`).
//!
//! All three share one kernel skeleton (`kernels/quant_common.cl`): a
//! work-group covers `64 / tpc` output columns and 4 rows of x, the `tpc`
//! work-items of a column splitting K in 32-element chunks.

pub(crate) mod fp8;
pub(crate) mod gguf;
pub(crate) mod int;

use hal::{Backend, HalError, PackedWeight, QuantGemmArgs, QuantSpec, QuantWeights, Result};

use crate::device::{KernelPath, OpenClDevice};

/// Rows of x per work-group (`QMT` in the kernels).
pub(crate) const ROWS_PER_GROUP: usize = 4;
/// Work-items per work-group (`QWG`).
pub(crate) const GROUP: usize = 64;

/// Work-items per output column for K elements. Portable path: enough to
/// give each about one 32-element chunk, a power of two ≤ 64. Intel-tuned
/// path: one 16-wide subgroup per column (its partial sums meet in a
/// subgroup reduction). Depends on K and the path only, never on M, so a
/// row's bits do not depend on the batch.
pub(crate) fn threads_per_column(d: &OpenClDevice, k: usize) -> usize {
    match d.kernel_path() {
        KernelPath::IntelTuned => 16,
        KernelPath::Portable => k.div_ceil(32).next_power_of_two().clamp(1, GROUP),
    }
}

/// Global size `[columns · 64 / (64 / tpc)…, row groups, 1]` for N × M.
pub(crate) fn grid(n: usize, m: usize, tpc: usize) -> [usize; 3] {
    let cols = GROUP / tpc;
    [n.div_ceil(cols) * GROUP, m.div_ceil(ROWS_PER_GROUP), 1]
}

/// Validate, repack and upload a checkpoint weight.
pub(crate) fn pack(d: &OpenClDevice, w: &QuantWeights) -> Result<PackedWeight> {
    let op = "quant_gemm";
    w.validate()
        .map_err(|m| HalError::invalid(d.name(), op, m))?;
    match w {
        QuantWeights::Gguf { .. } => gguf::pack(d, w),
        QuantWeights::Awq { .. } | QuantWeights::Gptq { .. } => int::pack(d, w),
        QuantWeights::Fp8 { .. } => fp8::pack(d, w),
    }
}

/// Run [`QuantGemmArgs`].
pub(crate) fn quant_gemm(d: &OpenClDevice, args: QuantGemmArgs<'_>) -> Result<()> {
    let (m, n, k) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    match args.w.spec {
        QuantSpec::Gguf(_) => gguf::gemm(d, &args, m, n, k),
        QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } => int::gemm(d, &args, m, n, k),
        QuantSpec::Fp8 { .. } => fp8::gemm(d, &args, m, n, k),
    }
}

/// The error for a packed weight whose parts do not match its format.
pub(crate) fn foreign_layout(d: &OpenClDevice, w: &PackedWeight) -> HalError {
    HalError::invalid(
        d.name(),
        "quant_gemm",
        format!(
            "packed weight has layout {:?} with {} parts: pack it with this backend",
            w.layout,
            w.parts.len()
        ),
    )
}
