//! Dense GEMM `out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N])`.
//!
//! * With hipBLAS loaded (see [`crate::blas`]): `hipblasGemmEx` with f32
//!   accumulation. Row-major `x` and `w` are the column-major `xᵀ` and `wᵀ`,
//!   so hipBLAS computes the column-major `outᵀ[N, M] = (wᵀ)ᵀ · xᵀ` with
//!   `transa = T`; the product lands in f32 (in `out` itself when it is f32
//!   and there is no bias, else in scratch) and the shared epilogue kernel
//!   adds the bias and converts to the output dtype.
//! * Otherwise, and for K = 0: this crate's LDS-tiled kernel
//!   (`kernels/gemm.hip`): 64 × 64 output tiles per workgroup of 256
//!   threads, f32 accumulation, the bias and the output dtype fused into the
//!   store; it needs nothing beyond the HIP runtime.

use hal::{Backend, DType, GemmArgs, HalError, Result};

use crate::blas::{Blas, Elem, GemmCall};
use crate::device::{Arg, HipDevice};
use crate::sources::{ELEMENTWISE, GEMM};

/// Output rows and columns per workgroup (`GT_BM`, `GT_BN`).
const TILE: usize = 64;

/// Threads per workgroup (`GT_THREADS`).
const THREADS: u32 = 256;

/// Largest grid y dimension.
const GRID_Y: usize = 65535;

/// Runtime dtype code of the bias (0 f32, 1 f16, 2 bf16).
pub(crate) fn dt_code(d: DType) -> i32 {
    match d {
        DType::F16 => 1,
        DType::BF16 => 2,
        _ => 0,
    }
}

/// Lower-case dtype suffix of kernel names.
pub(crate) fn suffix(d: DType) -> &'static str {
    match d {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F8E4M3 => "f8e4m3",
        _ => "f32",
    }
}

/// Every kernel name of `gemm.hip` this module may launch.
pub(crate) fn kernel_names() -> Vec<String> {
    let mut v = Vec::new();
    for x in ["f32", "f16", "bf16"] {
        for o in ["f32", "f16", "bf16"] {
            v.push(format!("gemm_tiled_{x}_{o}"));
        }
    }
    v
}

/// Run [`GemmArgs`].
pub(crate) fn gemm(dev: &HipDevice, args: GemmArgs<'_>) -> Result<()> {
    let op = "gemm";
    let (m, n, k) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    for (what, v) in [("m", m), ("n", n), ("k", k)] {
        if v > i32::MAX as usize {
            return Err(HalError::invalid(
                dev.name(),
                op,
                format!("{what} = {v} exceeds the kernel's 32-bit sizes"),
            ));
        }
    }
    if let (Ok(blas), true) = (&dev.blas, k > 0) {
        return gemm_blas(dev, blas, &args, (m, n, k));
    }
    if m.div_ceil(TILE) > GRID_Y {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!("m = {m} exceeds {} rows per call", GRID_Y * TILE),
        ));
    }
    let f = dev.function(
        &GEMM,
        &format!(
            "gemm_tiled_{}_{}",
            suffix(args.x.dtype),
            suffix(args.out.dtype)
        ),
    )?;
    let (bias, bias_dt) = match &args.bias {
        Some(b) => (dev.ptr(op, b)?, dt_code(b.dtype)),
        None => (0, 0),
    };
    dev.launch(
        op,
        &f,
        (n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1),
        (THREADS, 1, 1),
        0,
        &[
            Arg::Ptr(dev.ptr(op, &args.x)?),
            Arg::Ptr(dev.ptr(op, &args.w)?),
            Arg::Ptr(bias),
            Arg::I32(bias_dt),
            Arg::Ptr(dev.ptr_mut(op, &args.out)?),
            Arg::I32(m as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
        ],
    )
}

/// The hipBLAS path of [`gemm`]; `mnk` from the validated arguments.
fn gemm_blas(
    dev: &HipDevice,
    blas: &Blas,
    args: &GemmArgs<'_>,
    mnk: (usize, usize, usize),
) -> Result<()> {
    let op = "gemm";
    let (m, n, k) = mnk;
    let out = dev.ptr_mut(op, &args.out)?;
    let direct = args.out.dtype == DType::F32 && args.bias.is_none();
    let scratch = if direct {
        None
    } else {
        Some(dev.scratch(op, m * n * 4)?)
    };
    let acc = scratch.as_ref().map_or(out, |s| s.ptr());
    let elem = match args.x.dtype {
        DType::F16 => Elem::F16,
        DType::BF16 => Elem::BF16,
        _ => Elem::F32,
    };
    let call = GemmCall {
        m: n,
        n: m,
        k,
        a: dev.ptr(op, &args.w)?,
        a_t: true,
        lda: k,
        b: dev.ptr(op, &args.x)?,
        b_t: false,
        ldb: k,
        elem,
        c: acc,
        ldc: n,
    };
    // SAFETY: the views were validated against their buffers: w is [N, K],
    // x is [M, K] and the accumulator holds M · N f32.
    unsafe { blas.gemm(&call) }.map_err(|e| HalError::device(dev.name(), op, e))?;
    if let Some(s) = &scratch {
        let f = dev.function(
            &ELEMENTWISE,
            &format!("gemm_epilogue_{}", suffix(args.out.dtype)),
        )?;
        let (bias, bias_dt) = match &args.bias {
            Some(b) => (dev.ptr(op, b)?, dt_code(b.dtype)),
            None => (0, 0),
        };
        dev.launch(
            op,
            &f,
            (dev.stride_grid(m * n), 1, 1),
            (256, 1, 1),
            0,
            &[
                Arg::Ptr(s.ptr()),
                Arg::Ptr(bias),
                Arg::I32(bias_dt),
                Arg::Ptr(out),
                Arg::I64(m as i64),
                Arg::I64(n as i64),
            ],
        )?;
    }
    // The scratch is freed in stream order, after the kernels that use it.
    drop(scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_dtype_pair_has_a_kernel() {
        let names = super::kernel_names();
        assert_eq!(names.len(), 9);
        assert!(names.contains(&"gemm_tiled_bf16_f32".to_string()));
    }
}
