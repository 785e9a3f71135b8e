//! Quantised GEMM `out[M, N] = x[M, K] · dequant(w)[N, K]ᵀ + bias[N]` and
//! GGUF embedding rows.
//!
//! Layouts after [`pack`] (all parts are device buffers):
//!
//! | format | layout | parts |
//! |---|---|---|
//! | GGUF Q4_0 / Q4_1 / Q8_0 | `"cuda-gguf"` | see [`gguf`]: block quants `[N, K/32, 16 or 32]`, f16 scales (and mins) `[N, K/32]` |
//! | AWQ, GPTQ 4/8-bit | `"cuda-int4"` | see [`int4`]: K ordered by group (act-order) and padded per group to 32, nibbles / bytes per row, `(scale, zero)` per row and group, block → group table, K permutation |
//! | FP8 E4M3 W8A8 | `"cuda-fp8"` | see [`fp8`]: e4m3 bytes `[N, Kp]` (K padded to 32), f32 weight scales `[N]` |
//!
//! Every kernel dequantises in registers and accumulates in f32; only
//! [`Precision::Exact`] is offered (FP8 casts activations to E4M3 as its
//! format defines). M ≤ [`MATVEC_MAX_M`] runs the matvec kernels (one warp per
//! output row, up to 8 activation rows per weight read), larger M the
//! 64 × 64-tiled kernels.

mod fp8;
mod gguf;
mod int4;

use hal::{
    Backend, DType, HalError, OpDesc, PackedWeight, Precision, QuantGemmArgs, QuantSpec,
    QuantWeights, Result, Unsupported,
};

use crate::device::CudaDevice;

/// Largest M served by the matvec kernels; larger M uses the tiled kernels.
pub(crate) const MATVEC_MAX_M: usize = 16;

/// Largest N, K (and M) the kernels index with 32-bit integers.
const MAX_DIM: usize = 1 << 30;

/// Limits beyond the capability lists: exact precision only, activations
/// and outputs in F32 / F16 / BF16, GPTQ with 4 or 8 bits, N and K below 2^30.
pub(crate) fn supports(op: &OpDesc) -> std::result::Result<(), Unsupported> {
    let OpDesc::QuantGemm {
        spec,
        input,
        output,
        precision,
        n,
        k,
    } = op
    else {
        return Err(Unsupported::new(op.name(), "not a quant_gemm"));
    };
    if *precision != Precision::Exact {
        return Err(Unsupported::new(
            "quant_gemm",
            "the CUDA kernels use activations as given (Precision::Exact); int8 activations \
             are not implemented",
        ));
    }
    for (what, dt) in [("activations", input), ("output", output)] {
        if dtype_code(*dt).is_none() {
            return Err(Unsupported::new(
                "quant_gemm",
                format!("{what} dtype {dt:?} is not F32, F16 or BF16"),
            ));
        }
    }
    if *n >= MAX_DIM || *k >= MAX_DIM {
        return Err(Unsupported::new(
            "quant_gemm",
            format!("N = {n} and K = {k} must be below 2^30"),
        ));
    }
    if let QuantSpec::Gptq { bits, .. } = spec {
        if *bits != 4 && *bits != 8 {
            return Err(Unsupported::new(
                "quant_gemm",
                format!("GPTQ with {bits} bits (4 or 8 are supported)"),
            ));
        }
    }
    Ok(())
}

/// Validate `w`, repack it on the host into this backend's layout and upload it.
pub(crate) fn pack(dev: &CudaDevice, w: &QuantWeights) -> Result<PackedWeight> {
    w.validate()
        .map_err(|m| HalError::invalid(dev.name(), "pack", m))?;
    if w.n() >= MAX_DIM || w.k() >= MAX_DIM {
        return Err(dev.refuse(Unsupported::new(
            "quant_gemm",
            format!("N = {} and K = {} must be below 2^30", w.n(), w.k()),
        )));
    }
    match w {
        QuantWeights::Gguf { ty, n, k, data } => gguf::pack(dev, *ty, *n, *k, data),
        QuantWeights::Awq { .. } | QuantWeights::Gptq { .. } => int4::pack(dev, w),
        QuantWeights::Fp8 { .. } => fp8::pack(dev, w),
    }
}

/// Run [`QuantGemmArgs`] on the device's stream.
pub(crate) fn quant_gemm(dev: &CudaDevice, args: QuantGemmArgs<'_>) -> Result<()> {
    let op = "quant_gemm";
    let (m, n, k) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    let expected = match args.w.spec {
        QuantSpec::Gguf(_) => gguf::LAYOUT,
        QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } => int4::LAYOUT,
        QuantSpec::Fp8 { .. } => fp8::LAYOUT,
    };
    if args.w.layout != expected {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!(
                "packed weight has layout {:?}, expected {expected:?}: pack it with this backend",
                args.w.layout
            ),
        ));
    }
    if m >= MAX_DIM {
        return Err(dev.refuse(Unsupported::new(op, format!("M = {m} must be below 2^30"))));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (bias, bias_dt) = match &args.bias {
        Some(b) => (dev.ptr(op, b)?, code(dev, b.dtype)?),
        None => (0, -1),
    };
    let call = Call {
        x: dev.ptr(op, &args.x)?,
        x_dtype: args.x.dtype,
        bias,
        bias_dt,
        out: dev.ptr_mut(op, &args.out)?,
        out_dt: code(dev, args.out.dtype)?,
        m,
        n,
        k,
    };
    match args.w.spec {
        QuantSpec::Gguf(ty) => gguf::run(dev, ty, args.w, &call),
        QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } => int4::run(dev, args.w, &call),
        QuantSpec::Fp8 { activation, .. } => fp8::run(dev, activation, args.w, &call),
    }
}

/// `out[t, :] = dequant(table)[ids[t], :]` for a GGUF table packed by
/// [`pack`]. `ids`: device address of `num_tokens` I32; `out`: device
/// address of `[num_tokens, table.k]` elements of `out_dtype`. An id outside
/// `0..table.n` yields a row of zeros (nothing out of bounds is read).
pub(crate) fn embedding_rows(
    dev: &CudaDevice,
    ids: u64,
    num_tokens: usize,
    table: &PackedWeight,
    out: u64,
    out_dtype: DType,
) -> Result<()> {
    gguf::embedding_rows(dev, ids, num_tokens, table, out, out_dtype)
}

/// One quant GEMM call's device addresses and sizes.
pub(crate) struct Call {
    /// Activations `[m, k]`.
    pub x: u64,
    /// Their dtype.
    pub x_dtype: DType,
    /// Bias `[n]` (0 without bias).
    pub bias: u64,
    /// Bias dtype code (-1 without bias).
    pub bias_dt: i32,
    /// Output `[m, n]`.
    pub out: u64,
    /// Output dtype code.
    pub out_dt: i32,
    /// Rows of x.
    pub m: usize,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
}

/// The kernels' runtime dtype code: 0 f32, 1 f16, 2 bf16.
pub(crate) fn dtype_code(dt: DType) -> Option<i32> {
    match dt {
        DType::F32 => Some(0),
        DType::F16 => Some(1),
        DType::BF16 => Some(2),
        _ => None,
    }
}

fn code(dev: &CudaDevice, dt: DType) -> Result<i32> {
    dtype_code(dt).ok_or_else(|| {
        HalError::invalid(
            dev.name(),
            "quant_gemm",
            format!("dtype {dt:?} is not F32, F16 or BF16"),
        )
    })
}

/// Kernel-name suffix of an activation dtype.
pub(crate) fn suffix(dt: DType) -> &'static str {
    match dt {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// Activation rows per weight read of the matvec kernel for `m` rows.
pub(crate) fn matvec_rows(m: usize) -> u32 {
    match m {
        0 | 1 => 1,
        2 => 2,
        3 | 4 => 4,
        _ => 8,
    }
}

/// Whether x at `ptr` suits the kernels' vector loads (16 B for f32, 8 B
/// for f16 / bf16; rows stay aligned because K is a multiple of 32).
pub(crate) fn vector_aligned(ptr: u64, dt: DType) -> bool {
    let align = if dt == DType::F32 { 16 } else { 8 };
    ptr.is_multiple_of(align)
}

/// `ceil(a / b)` as a grid dimension.
pub(crate) fn blocks(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// Grid size for a grid-stride loop over `total` elements, 256 threads a block.
pub(crate) fn stride_grid(total: usize) -> u32 {
    total.div_ceil(256).clamp(1, 65_536) as u32
}

/// Device address of part `i` of `w`, checked to hold at least `bytes`.
pub(crate) fn part(
    dev: &CudaDevice,
    op: &'static str,
    w: &PackedWeight,
    i: usize,
    bytes: usize,
) -> Result<u64> {
    let b = w.parts.get(i).ok_or_else(|| {
        HalError::invalid(
            dev.name(),
            op,
            format!(
                "packed {:?} weight has {} parts, expected more than {i}",
                w.spec,
                w.parts.len()
            ),
        )
    })?;
    if b.len() < bytes {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!(
                "part {i} of a packed {:?} weight has {} bytes, expected {bytes}",
                w.spec,
                b.len()
            ),
        ));
    }
    dev.buffer_ptr(op, b)
}

/// Scalar `i` of `w` as a non-negative integer (stored exactly in f32).
pub(crate) fn scalar_usize(dev: &CudaDevice, w: &PackedWeight, i: usize) -> Result<usize> {
    match w.scalars.get(i) {
        Some(&v) if v >= 0.0 && v.fract() == 0.0 && v < 16_777_216.0 => Ok(v as usize),
        _ => Err(HalError::invalid(
            dev.name(),
            "quant_gemm",
            format!("packed {:?} weight lacks scalar {i}", w.spec),
        )),
    }
}
