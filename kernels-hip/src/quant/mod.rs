//! Quantised GEMM `out[M, N] = x[M, K] · dequant(w)[N, K]ᵀ + bias[N]` and
//! GGUF embedding rows.
//!
//! Layouts after [`pack`] (all parts are device buffers):
//!
//! | format | layout | parts |
//! |---|---|---|
//! | GGUF Q4_0 / Q4_1 / Q8_0 | `"hip-gguf"` | see [`gguf`]: block quants `[N, K/32, 16 or 32]`, f16 scales (and mins) `[N, K/32]` |
//! | AWQ, GPTQ 4/8-bit | `"hip-int4"` | see [`int4`]: K ordered by group (act-order) and padded per group to 32, nibbles / bytes per row, `(scale, zero)` per row and group, block → group table, K permutation |
//! | FP8 E4M3 W8A8 | `"hip-fp8"` | see [`fp8`]: e4m3 bytes `[N, Kp]` (K padded to 32), f32 weight scales `[N]` |
//!
//! Every kernel dequantises in registers and accumulates in f32; only
//! [`Precision::Exact`] is offered (FP8 casts activations to E4M3 as its
//! format defines). M ≤ [`MATVEC_MAX_M`] runs the matvec kernels (CTAs of
//! 32 output rows, x staged in shared memory per 1024-column chunk, all M
//! activation rows per weight read, K split across CTAs when N alone gives
//! too few; see [`matvec_plan`]), larger M the 64 × 64-tiled kernels.

mod fp8;
mod gguf;
mod int4;

use hal::{
    Backend, DType, HalError, OpDesc, PackedWeight, Precision, QuantGemmArgs, QuantSpec,
    QuantWeights, Result, Unsupported,
};

use crate::device::{Arg, HipDevice};
use crate::sources::KernelSource;

/// Largest M served by the matvec kernels; larger M uses the tiled kernels.
/// 8 on AMD (16 on CUDA): 16 staged activation rows need 72 KiB of LDS, more
/// than the 64 KiB a workgroup has.
pub(crate) const MATVEC_MAX_M: usize = 8;

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
            "the HIP kernels use activations as given (Precision::Exact); int8 activations \
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
pub(crate) fn pack(dev: &HipDevice, w: &QuantWeights) -> Result<PackedWeight> {
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
pub(crate) fn quant_gemm(dev: &HipDevice, args: QuantGemmArgs<'_>) -> Result<()> {
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
    dev: &HipDevice,
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

fn code(dev: &HipDevice, dt: DType) -> Result<i32> {
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

/// Activation rows the matvec kernel for `m` rows is compiled for (every
/// row of x is served by one pass over the weights).
pub(crate) fn matvec_rows(m: usize) -> u32 {
    match m {
        0 | 1 => 1,
        2 => 2,
        3 | 4 => 4,
        5..=8 => 8,
        _ => 16,
    }
}

/// Output rows per matvec CTA (8 warps × 4 rows).
pub(crate) const MV_ROWS: usize = 32;

/// Weight blocks (of 32 input features) per matvec K chunk: one per lane.
pub(crate) const MV_CHUNK_BLOCKS: usize = 32;

/// f32 slots per staged block of x in shared memory (32 values + 4 padding).
const MV_LD: usize = 36;

/// Resident CTAs (workgroups) per SM (compute unit) the split-K partition aims for.
const MV_CTAS_PER_SM: usize = 4;

/// Threads per matvec CTA.
const MV_THREADS: u32 = 256;

/// Launch shape of the matvec kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MatvecPlan {
    /// Activation rows the kernel is compiled for (`≥ m`).
    pub mr: u32,
    /// CTAs along N: `ceil(n / MV_ROWS)`.
    pub tiles: u32,
    /// CTAs along K; each sums `split_chunks` chunks of [`MV_CHUNK_BLOCKS`] blocks.
    pub splits: u32,
    /// Chunks per split (the last split may hold fewer, never none).
    pub split_chunks: u32,
    /// Dynamic shared memory in bytes: `mr × 32 blocks × 36 × 4`.
    pub smem: u32,
}

/// The matvec launch for `m ≤ MATVEC_MAX_M` rows, `n` outputs and `nb`
/// blocks of 32 input features on a GPU with `sms` SMs: K is split when
/// fewer than about 4 CTAs per SM would cover N alone.
pub(crate) fn matvec_plan(m: usize, n: usize, nb: usize, sms: u32) -> MatvecPlan {
    let mr = matvec_rows(m);
    let tiles = n.div_ceil(MV_ROWS).max(1);
    let chunks = nb.div_ceil(MV_CHUNK_BLOCKS).max(1);
    let want = (MV_CTAS_PER_SM * sms.max(1) as usize)
        .div_ceil(tiles)
        .clamp(1, chunks);
    let split_chunks = chunks.div_ceil(want);
    let splits = chunks.div_ceil(split_chunks);
    MatvecPlan {
        mr,
        tiles: tiles as u32,
        splits: splits as u32,
        split_chunks: split_chunks as u32,
        smem: (mr as usize * MV_CHUNK_BLOCKS * MV_LD * 4) as u32,
    }
}

/// A matvec kernel and the reduce kernel of its source.
pub(crate) struct MatvecKernel<'a> {
    /// The source holding both.
    pub src: &'static KernelSource,
    /// The matvec kernel (compiled for [`MatvecPlan::mr`] rows).
    pub name: &'a str,
    /// The kernel adding split-K partials.
    pub reduce: &'static str,
}

/// Launch matvec kernel `kern` (arguments `lead`, then x, bias, bias dtype,
/// out, out dtype, partials, M, N, K, chunks per split) and, when K is
/// split, its reduce kernel adding the f32 partials `[splits, M, N]` in
/// split order with the bias. `k`: the kernel's K (a multiple of 32).
pub(crate) fn launch_matvec(
    dev: &HipDevice,
    kern: &MatvecKernel<'_>,
    lead: &[Arg],
    x: u64,
    c: &Call,
    k: usize,
    plan: &MatvecPlan,
) -> Result<()> {
    let op = "quant_gemm";
    let f = dev.function_with_smem(op, kern.src, kern.name, plan.smem)?;
    let partials = if plan.splits > 1 {
        Some(dev.scratch(op, plan.splits as usize * c.m * c.n * 4)?)
    } else {
        None
    };
    let part_ptr = partials.as_ref().map_or(0, |s| s.ptr());
    let mut args = lead.to_vec();
    args.extend_from_slice(&[
        Arg::Ptr(x),
        Arg::Ptr(c.bias),
        Arg::I32(c.bias_dt),
        Arg::Ptr(c.out),
        Arg::I32(c.out_dt),
        Arg::Ptr(part_ptr),
        Arg::I32(c.m as i32),
        Arg::I32(c.n as i32),
        Arg::I32(k as i32),
        Arg::I32(plan.split_chunks as i32),
    ]);
    dev.launch(
        op,
        &f,
        (plan.tiles, plan.splits, 1),
        (MV_THREADS, 1, 1),
        plan.smem,
        &args,
    )?;
    if plan.splits > 1 {
        let r = dev.function(kern.src, kern.reduce)?;
        dev.launch(
            op,
            &r,
            (dev.stride_grid(c.m * c.n), 1, 1),
            (256, 1, 1),
            0,
            &[
                Arg::Ptr(part_ptr),
                Arg::I32(plan.splits as i32),
                Arg::Ptr(c.bias),
                Arg::I32(c.bias_dt),
                Arg::Ptr(c.out),
                Arg::I32(c.out_dt),
                Arg::I32(c.m as i32),
                Arg::I32(c.n as i32),
            ],
        )?;
    }
    Ok(())
}

/// Whether x at `ptr` suits the kernels' vector loads (16 B for f32, 8 B
/// for f16 / bf16; rows stay aligned because K is a multiple of 32).
pub(crate) fn vector_aligned(ptr: u64, dt: DType) -> bool {
    let align = if dt == DType::F32 { 16 } else { 8 };
    ptr.is_multiple_of(align)
}

/// The kernel names the Rust side of source `source` (`"quant_gguf"`,
/// `"quant_int4"` or `"quant_fp8"`) may launch; empty for other sources.
pub(crate) fn kernel_names(source: &str) -> Vec<String> {
    const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];
    const MRS: [u32; 5] = [1, 2, 4, 8, 16];
    let mut v = Vec::new();
    match source {
        "quant_gguf" => {
            for f in ["q4_0", "q4_1", "q8_0"] {
                for t in DTYPES {
                    v.extend(MRS.iter().map(|mr| format!("gguf_mv_{f}_{t}_m{mr}")));
                    v.push(format!("gguf_mm_{f}_{t}"));
                    v.push(format!("gguf_embed_{f}_{t}"));
                    v.push(format!("gguf_to_f32_{t}"));
                }
            }
            v.push("gguf_mv_reduce".into());
        }
        "quant_int4" => {
            for bits in [4, 8] {
                for t in DTYPES {
                    v.extend(MRS.iter().map(|mr| format!("int{bits}_mv_{t}_m{mr}")));
                    v.push(format!("int{bits}_mm_{t}"));
                }
            }
            v.extend(DTYPES.iter().map(|t| format!("int4_gather_{t}")));
            v.push("int4_mv_reduce".into());
        }
        "quant_fp8" => {
            v.extend(MRS.iter().map(|mr| format!("fp8_mv_m{mr}")));
            for t in DTYPES {
                v.push(format!("fp8_row_amax_{t}"));
                v.push(format!("fp8_quant_x_{t}"));
            }
            v.extend(["fp8_mm", "fp8_tensor_scale", "fp8_mv_reduce"].map(String::from));
        }
        _ => {}
    }
    v.sort();
    v.dedup();
    v
}

/// `ceil(a / b)` as a grid dimension.
pub(crate) fn blocks(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// Device address of part `i` of `w`, checked to hold at least `bytes`.
pub(crate) fn part(
    dev: &HipDevice,
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
pub(crate) fn scalar_usize(dev: &HipDevice, w: &PackedWeight, i: usize) -> Result<usize> {
    match w.scalars.get(i) {
        Some(&v) if v >= 0.0 && v.fract() == 0.0 && v < 16_777_216.0 => Ok(v as usize),
        _ => Err(HalError::invalid(
            dev.name(),
            "quant_gemm",
            format!("packed {:?} weight lacks scalar {i}", w.spec),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_rows_cover_m() {
        for m in 1..=MATVEC_MAX_M {
            let mr = matvec_rows(m) as usize;
            assert!(mr >= m && mr <= 16 && mr.is_power_of_two(), "m = {m}");
            assert!(mr < 2 * m, "m = {m} wastes more than half of the rows");
        }
    }

    /// Every block is covered by exactly one split, no split is empty, and the
    /// grid reaches about 4 CTAs per SM when K allows it.
    #[test]
    fn matvec_plan_partitions_k() {
        for &(n, nb) in &[
            (4096usize, 448usize),
            (576, 48),
            (14336, 128),
            (1, 1),
            (33, 1000),
            (128_256, 128),
            (4096, 33),
        ] {
            for sms in [1u32, 108, 132] {
                for m in [1, 3, 8] {
                    let p = matvec_plan(m, n, nb, sms);
                    assert_eq!(p.tiles as usize, n.div_ceil(MV_ROWS));
                    let span = p.split_chunks as usize * MV_CHUNK_BLOCKS;
                    let splits = p.splits as usize;
                    assert!(splits >= 1);
                    assert!((splits - 1) * span < nb, "{n} {nb} {sms}: empty last split");
                    assert!(splits * span >= nb, "{n} {nb} {sms}: blocks left over");
                    let chunks = nb.div_ceil(MV_CHUNK_BLOCKS);
                    let ctas = p.tiles as usize * splits;
                    assert!(
                        ctas >= 4 * sms as usize || splits == chunks,
                        "{n} {nb} {sms}: {ctas} CTAs with {splits} of {chunks} splits"
                    );
                    assert_eq!(p.smem as usize, p.mr as usize * 32 * 36 * 4);
                    assert!(p.smem as usize <= crate::device::LDS_BYTES);
                }
            }
        }
    }

    #[test]
    fn llama_mlp_down_plan() {
        // N = 4096, K = 14336 on 132 SMs: 128 row tiles, 14 chunks in 5 splits.
        let p = matvec_plan(1, 4096, 448, 132);
        assert_eq!(
            p,
            MatvecPlan {
                mr: 1,
                tiles: 128,
                splits: 5,
                split_chunks: 3,
                smem: 4608,
            }
        );
    }

    #[test]
    fn kernel_names_list_the_matvec_variants() {
        let g = kernel_names("quant_gguf");
        assert!(g.contains(&"gguf_mv_q4_0_bf16_m16".to_string()));
        assert!(g.contains(&"gguf_mv_reduce".to_string()));
        let i = kernel_names("quant_int4");
        assert!(i.contains(&"int8_mv_f16_m1".to_string()));
        assert!(i.contains(&"int4_mv_reduce".to_string()));
        let f = kernel_names("quant_fp8");
        assert!(f.contains(&"fp8_mv_m16".to_string()));
        assert!(kernel_names("gemm").is_empty());
    }
}
