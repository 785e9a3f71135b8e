//! RMS norm, RoPE, SiLU-and-mul, embedding and add (the CUDA backend's
//! `elementwise.cu`, compiled for AMD through `kernels/hip_prelude.h`).

use hal::{
    AddArgs, Backend, DType, EmbeddingArgs, EmbeddingTable, Result, RmsNormArgs, RopeArgs,
    RopeStyle, SiluAndMulArgs,
};

use crate::device::{Arg, HipDevice};
use crate::gemm::{dt_code, suffix};
use crate::sources::ELEMENTWISE;

/// Threads of the one-block-per-row kernels for rows of `width` elements.
fn row_threads(width: usize) -> u32 {
    (width.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// Run [`RmsNormArgs`]: one block per row.
pub(crate) fn rms_norm(dev: &HipDevice, args: RmsNormArgs<'_>) -> Result<()> {
    let op = "rms_norm";
    let (t, h) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if t == 0 {
        return Ok(());
    }
    let w = if args.weight.dtype == DType::F32 {
        "f32"
    } else {
        suffix(args.weight.dtype)
    };
    let f = dev.function(
        &ELEMENTWISE,
        &format!("rms_norm_{}_w{w}", suffix(args.x.dtype)),
    )?;
    let residual = match &args.residual {
        Some(r) => dev.ptr_mut(op, r)?,
        None => 0,
    };
    dev.launch(
        op,
        &f,
        (t as u32, 1, 1),
        (row_threads(h).min(512), 1, 1),
        0,
        &[
            Arg::Ptr(dev.ptr(op, &args.x)?),
            Arg::Ptr(residual),
            Arg::Ptr(dev.ptr(op, &args.weight)?),
            Arg::Ptr(dev.ptr_mut(op, &args.out)?),
            Arg::I32(h as i32),
            Arg::F32(args.eps),
        ],
    )
}

/// Run [`RopeArgs`] in place: one block per token.
pub(crate) fn rope(dev: &HipDevice, args: RopeArgs<'_>) -> Result<()> {
    let op = "rope";
    let (t, d, rot) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if t == 0 {
        return Ok(());
    }
    let hq = args.q.layout.shape()[1];
    let hk = args.k.layout.shape()[1];
    let max_pos = args.cos_sin_cache.layout.shape()[0];
    let f = dev.function(&ELEMENTWISE, &format!("rope_{}", suffix(args.q.dtype)))?;
    dev.launch(
        op,
        &f,
        (t as u32, 1, 1),
        (row_threads((hq + hk) * rot / 2).min(256), 1, 1),
        0,
        &[
            Arg::Ptr(dev.ptr(op, &args.positions)?),
            Arg::Ptr(dev.ptr_mut(op, &args.q)?),
            Arg::Ptr(dev.ptr_mut(op, &args.k)?),
            Arg::Ptr(dev.ptr(op, &args.cos_sin_cache)?),
            Arg::I32(hq as i32),
            Arg::I32(hk as i32),
            Arg::I32(d as i32),
            Arg::I32(rot as i32),
            Arg::I32(max_pos.min(i32::MAX as usize) as i32),
            Arg::I32(i32::from(args.style == RopeStyle::Neox)),
        ],
    )
}

/// Run [`SiluAndMulArgs`].
pub(crate) fn silu_and_mul(dev: &HipDevice, args: SiluAndMulArgs<'_>) -> Result<()> {
    let op = "silu_and_mul";
    let (t, i) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if t * i == 0 {
        return Ok(());
    }
    let f = dev.function(
        &ELEMENTWISE,
        &format!("silu_and_mul_{}", suffix(args.x.dtype)),
    )?;
    dev.launch(
        op,
        &f,
        (dev.stride_grid(t * i), 1, 1),
        (256, 1, 1),
        0,
        &[
            Arg::Ptr(dev.ptr(op, &args.x)?),
            Arg::Ptr(dev.ptr_mut(op, &args.out)?),
            Arg::I64(t as i64),
            Arg::I64(i as i64),
        ],
    )
}

/// Run [`EmbeddingArgs`]: dense tables here, GGUF tables by the quant module.
pub(crate) fn embedding(dev: &HipDevice, args: EmbeddingArgs<'_>) -> Result<()> {
    let op = "embedding";
    let (t, v, h) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if t == 0 || h == 0 {
        return Ok(());
    }
    let ids = dev.ptr(op, &args.ids)?;
    let out = dev.ptr_mut(op, &args.out)?;
    match &args.table {
        EmbeddingTable::Quant(w) => {
            crate::quant::embedding_rows(dev, ids, t, w, out, args.out.dtype)
        }
        EmbeddingTable::Dense(table) => {
            let f = dev.function(
                &ELEMENTWISE,
                &format!("embedding_{}", suffix(args.out.dtype)),
            )?;
            dev.launch(
                op,
                &f,
                (t as u32, 1, 1),
                (row_threads(h).min(256), 1, 1),
                0,
                &[
                    Arg::Ptr(ids),
                    Arg::Ptr(dev.ptr(op, table)?),
                    Arg::I32(dt_code(table.dtype)),
                    Arg::Ptr(out),
                    Arg::I32(v.min(i32::MAX as usize) as i32),
                    Arg::I32(h as i32),
                ],
            )
        }
    }
}

/// Run [`AddArgs`].
pub(crate) fn add(dev: &HipDevice, args: AddArgs<'_>) -> Result<()> {
    let op = "add";
    let (r, n) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if r * n == 0 {
        return Ok(());
    }
    let f = dev.function(&ELEMENTWISE, &format!("add_{}", suffix(args.a.dtype)))?;
    dev.launch(
        op,
        &f,
        (dev.stride_grid(r * n), 1, 1),
        (256, 1, 1),
        0,
        &[
            Arg::Ptr(dev.ptr(op, &args.a)?),
            Arg::Ptr(dev.ptr(op, &args.b)?),
            Arg::Ptr(dev.ptr_mut(op, &args.out)?),
            Arg::I64(r as i64),
            Arg::I64(n as i64),
            Arg::I32(i32::from(args.b.layout.rank() == 1)),
        ],
    )
}

/// Every kernel this module launches.
pub(crate) fn kernel_names() -> Vec<String> {
    let mut v = Vec::new();
    for t in ["f32", "f16", "bf16"] {
        v.push(format!("rms_norm_{t}_wf32"));
        if t != "f32" {
            v.push(format!("rms_norm_{t}_w{t}"));
        }
        for k in ["rope", "silu_and_mul", "embedding", "add", "gemm_epilogue"] {
            v.push(format!("{k}_{t}"));
        }
    }
    v
}
