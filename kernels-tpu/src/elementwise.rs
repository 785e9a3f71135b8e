//! RMS norm (with the fused residual add), RoPE, SiLU-and-mul, embedding
//! and add, each one StableHLO program computing in f32.

use hal::{
    AddArgs, Backend, DType, EmbeddingArgs, EmbeddingTable, Layout, Result, RmsNormArgs, RopeArgs,
    RopeStyle, SiluAndMulArgs,
};

use crate::device::{el, load, store, TpuDevice};
use crate::hlo::{BResult, Builder, Cmp, El, GatherDims, Reduce, Ty, Val};
use crate::quant::dequant_gguf_rows;

/// Cache-key fragment of a view: dtype, shape and element offset.
pub(crate) fn vk(dtype: DType, layout: &Layout) -> String {
    format!("{dtype:?}{:?}+{}", layout.shape(), layout.offset())
}

/// The compute element type of a HAL dtype, or an "unsupported" error.
pub(crate) fn el_of(dev: &TpuDevice, op: &'static str, d: DType) -> Result<El> {
    el(d).ok_or_else(|| {
        dev.refuse(hal::Unsupported::new(
            op,
            format!("dtype {d} has no StableHLO element type here"),
        ))
    })
}

/// Load a view and convert it to f32.
pub(crate) fn load_f32(b: &mut Builder, buf: &Val, e: El, layout: &Layout) -> BResult<Val> {
    let v = load(b, buf, e, layout.offset(), layout.shape())?;
    Ok(b.convert(&v, El::F32))
}

/// Convert `value` (f32) to `e` and store it over a view.
pub(crate) fn store_as(
    b: &mut Builder,
    buf: &Val,
    e: El,
    layout: &Layout,
    value: &Val,
) -> BResult<Val> {
    let v = b.convert(value, e);
    store(b, buf, layout.offset(), &v)
}

/// Rows `idx[t]` of `table` `[R, C]` → `[T, C]` (indices clamped into
/// range; callers mask rows whose index was outside).
pub(crate) fn take_rows(b: &mut Builder, table: &Val, idx: &Val) -> BResult<Val> {
    let (r, c) = match table.dims() {
        [r, c] => (*r, *c),
        other => {
            return Err(crate::hlo::BuildError(format!(
                "take_rows of a rank-{} table",
                other.len()
            )))
        }
    };
    let _ = r;
    let t = idx.dims()[0];
    Ok(b.gather(
        table,
        idx,
        &GatherDims {
            offset_dims: vec![1],
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: 1,
            slice_sizes: vec![1, c],
        },
        &[t, c],
    ))
}

/// `0 <= idx < n` as a predicate of `idx`'s shape.
pub(crate) fn in_range(b: &mut Builder, idx: &Val, n: usize) -> BResult<Val> {
    let zero = b.splat(idx.ty.clone(), 0.0);
    let hi = b.splat(idx.ty.clone(), n as f64);
    let ge = b.compare(idx, &zero, Cmp::Ge)?;
    let lt = b.compare(idx, &hi, Cmp::Lt)?;
    b.and(&ge, &lt)
}

/// `pred[t] ? x[t, …] : 0` for a per-row predicate.
pub(crate) fn mask_rows(b: &mut Builder, pred: &Val, x: &Val) -> BResult<Val> {
    let p = b.broadcast(pred, x.dims(), &[0])?;
    let z = b.splat(x.ty.clone(), 0.0);
    b.select(&p, x, &z)
}

pub(crate) fn rms_norm(dev: &TpuDevice, args: RmsNormArgs<'_>) -> Result<()> {
    let (t, h) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "rms_norm";
    let xe = el_of(dev, op, args.x.dtype)?;
    let we = el_of(dev, op, args.weight.dtype)?;
    let eps = args.eps;
    let key = format!(
        "rms_norm|{}|{}|{}|{}|{}",
        vk(args.x.dtype, &args.x.layout),
        vk(args.weight.dtype, &args.weight.layout),
        vk(args.out.dtype, &args.out.layout),
        args.residual
            .as_ref()
            .map(|r| vk(r.dtype, &r.layout))
            .unwrap_or_default(),
        eps.to_bits()
    );
    let (xl, wl, ol) = (
        args.x.layout.clone(),
        args.weight.layout.clone(),
        args.out.layout.clone(),
    );
    let rl = args.residual.as_ref().map(|r| r.layout.clone());
    let mut outs = vec![args.out.buffer];
    if let Some(r) = args.residual {
        outs.push(r.buffer);
    }
    dev.run(
        op,
        key,
        &[args.x.buffer, args.weight.buffer],
        &mut outs,
        |b, ins, outs| {
            let mut r = load_f32(b, &ins[0], xe, &xl)?;
            let mut results = Vec::new();
            let mut res_new = None;
            if let Some(rl) = &rl {
                let old = load_f32(b, &outs[1], xe, rl)?;
                let sum = b.add(&r, &old)?;
                // The stored residual is rounded to its dtype; normalise that.
                let rounded = b.convert(&sum, xe);
                r = b.convert(&rounded, El::F32);
                res_new = Some(store(b, &outs[1], rl.offset(), &rounded)?);
            }
            let w = load_f32(b, &ins[1], we, &wl)?;
            let sq = b.mul(&r, &r)?;
            let ss = b.reduce(&sq, &[1], Reduce::Sum)?;
            let inv_h = b.splat(Ty::new(&[t], El::F32), 1.0 / h as f64);
            let ms = b.mul(&ss, &inv_h)?;
            let e = b.splat(Ty::new(&[t], El::F32), eps as f64);
            let ms = b.add(&ms, &e)?;
            let inv = b.rsqrt(&ms);
            let inv = b.broadcast(&inv, &[t, h], &[0])?;
            let wb = b.broadcast(&w, &[t, h], &[1])?;
            let y = b.mul(&r, &inv)?;
            let y = b.mul(&y, &wb)?;
            results.push(store_as(b, &outs[0], xe, &ol, &y)?);
            if let Some(rn) = res_new {
                results.push(rn);
            }
            Ok(results)
        },
    )
}

/// Rotate one of `q` / `k` (`x` f32 `[T, H, D]`) by `cos`, `sin`
/// (`[T, rot/2]`), keeping rows where `valid` is false.
fn rotate(
    b: &mut Builder,
    x: &Val,
    cos: &Val,
    sin: &Val,
    valid: &Val,
    rot: usize,
    style: RopeStyle,
) -> BResult<Val> {
    let (t, h, d) = (x.dims()[0], x.dims()[1], x.dims()[2]);
    let half = rot / 2;
    let (a, bb) = match style {
        RopeStyle::Neox => (
            b.slice(x, &[0, 0, 0], &[t, h, half])?,
            b.slice(x, &[0, 0, half], &[t, h, rot])?,
        ),
        RopeStyle::Gptj => {
            let head = b.slice(x, &[0, 0, 0], &[t, h, rot])?;
            let pairs = b.reshape(&head, &[t, h, half, 2])?;
            let a = b.slice(&pairs, &[0, 0, 0, 0], &[t, h, half, 1])?;
            let c = b.slice(&pairs, &[0, 0, 0, 1], &[t, h, half, 2])?;
            (b.reshape(&a, &[t, h, half])?, b.reshape(&c, &[t, h, half])?)
        }
    };
    let cb = b.broadcast(cos, &[t, h, half], &[0, 2])?;
    let sb = b.broadcast(sin, &[t, h, half], &[0, 2])?;
    let ac = b.mul(&a, &cb)?;
    let bs = b.mul(&bb, &sb)?;
    let na = b.sub(&ac, &bs)?;
    let bc = b.mul(&bb, &cb)?;
    let as_ = b.mul(&a, &sb)?;
    let nb = b.add(&bc, &as_)?;
    let rotated = match style {
        RopeStyle::Neox => b.concatenate(&[&na, &nb], 2)?,
        RopeStyle::Gptj => {
            let na = b.reshape(&na, &[t, h, half, 1])?;
            let nb = b.reshape(&nb, &[t, h, half, 1])?;
            let c = b.concatenate(&[&na, &nb], 3)?;
            b.reshape(&c, &[t, h, rot])?
        }
    };
    let full = if rot < d {
        let rest = b.slice(x, &[0, 0, rot], &[t, h, d])?;
        b.concatenate(&[&rotated, &rest], 2)?
    } else {
        rotated
    };
    let p = b.broadcast(valid, &[t, h, d], &[0])?;
    b.select(&p, &full, x)
}

pub(crate) fn rope(dev: &TpuDevice, args: RopeArgs<'_>) -> Result<()> {
    let (_t, _d, rot) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "rope";
    let e = el_of(dev, op, args.q.dtype)?;
    let max_pos = args.cos_sin_cache.layout.shape()[0];
    let style = args.style;
    let key = format!(
        "rope|{}|{}|{}|{}|{style:?}",
        vk(args.positions.dtype, &args.positions.layout),
        vk(args.q.dtype, &args.q.layout),
        vk(args.k.dtype, &args.k.layout),
        vk(args.cos_sin_cache.dtype, &args.cos_sin_cache.layout),
    );
    let (pl, ql, kl, cl) = (
        args.positions.layout.clone(),
        args.q.layout.clone(),
        args.k.layout.clone(),
        args.cos_sin_cache.layout.clone(),
    );
    dev.run(
        op,
        key,
        &[args.positions.buffer, args.cos_sin_cache.buffer],
        &mut [args.q.buffer, args.k.buffer],
        |b, ins, outs| {
            let pos = load(b, &ins[0], El::I64, pl.offset(), pl.shape())?;
            let table = load(b, &ins[1], El::F32, cl.offset(), cl.shape())?;
            let valid = in_range(b, &pos, max_pos)?;
            let rows = take_rows(b, &table, &pos)?;
            let t = pos.dims()[0];
            let cos = b.slice(&rows, &[0, 0], &[t, rot / 2])?;
            let sin = b.slice(&rows, &[0, rot / 2], &[t, rot])?;
            let mut res = Vec::new();
            for (i, l) in [&ql, &kl].into_iter().enumerate() {
                let x = load_f32(b, &outs[i], e, l)?;
                let y = rotate(b, &x, &cos, &sin, &valid, rot, style)?;
                res.push(store_as(b, &outs[i], e, l, &y)?);
            }
            Ok(res)
        },
    )
}

pub(crate) fn silu_and_mul(dev: &TpuDevice, args: SiluAndMulArgs<'_>) -> Result<()> {
    let (t, i) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "silu_and_mul";
    let e = el_of(dev, op, args.x.dtype)?;
    let key = format!(
        "silu|{}|{}",
        vk(args.x.dtype, &args.x.layout),
        vk(args.out.dtype, &args.out.layout)
    );
    let (xl, ol) = (args.x.layout.clone(), args.out.layout.clone());
    dev.run(
        op,
        key,
        &[args.x.buffer],
        &mut [args.out.buffer],
        |b, ins, outs| {
            let x = load_f32(b, &ins[0], e, &xl)?;
            let a = b.slice(&x, &[0, 0], &[t, i])?;
            let g = b.slice(&x, &[0, i], &[t, 2 * i])?;
            let na = b.neg(&a);
            let ex = b.exp(&na);
            let one = b.splat(a.ty.clone(), 1.0);
            let den = b.add(&one, &ex)?;
            let s = b.div(&a, &den)?;
            let y = b.mul(&s, &g)?;
            Ok(vec![store_as(b, &outs[0], e, &ol, &y)?])
        },
    )
}

pub(crate) fn embedding(dev: &TpuDevice, args: EmbeddingArgs<'_>) -> Result<()> {
    let (_t, vocab, hidden) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "embedding";
    let oe = el_of(dev, op, args.out.dtype)?;
    let (il, ol) = (args.ids.layout.clone(), args.out.layout.clone());
    match args.table {
        EmbeddingTable::Dense(tab) => {
            let te = el_of(dev, op, tab.dtype)?;
            let tl = tab.layout.clone();
            let key = format!(
                "embedding|{}|{}|{}",
                vk(args.ids.dtype, &il),
                vk(tab.dtype, &tl),
                vk(args.out.dtype, &ol)
            );
            dev.run(
                op,
                key,
                &[args.ids.buffer, tab.buffer],
                &mut [args.out.buffer],
                |b, ins, outs| {
                    let ids = load(b, &ins[0], El::I32, il.offset(), il.shape())?;
                    let table = load(b, &ins[1], te, tl.offset(), tl.shape())?;
                    let rows = take_rows(b, &table, &ids)?;
                    let rows = b.convert(&rows, El::F32);
                    let ok = in_range(b, &ids, vocab)?;
                    let y = mask_rows(b, &ok, &rows)?;
                    Ok(vec![store_as(b, &outs[0], oe, &ol, &y)?])
                },
            )
        }
        EmbeddingTable::Quant(w) => {
            let ty = match w.spec {
                hal::QuantSpec::Gguf(ty) => ty,
                other => {
                    return Err(dev.refuse(hal::Unsupported::new(
                        op,
                        format!("quantised table {other:?} is not a GGUF format"),
                    )))
                }
            };
            let data = crate::quant::part(dev, op, w, 0)?;
            let row_bytes = ty.row_bytes(hidden);
            let key = format!(
                "embedding|{}|{ty:?}|{vocab}x{hidden}|{}",
                vk(args.ids.dtype, &il),
                vk(args.out.dtype, &ol)
            );
            dev.run(
                op,
                key,
                &[args.ids.buffer, data],
                &mut [args.out.buffer],
                |b, ins, outs| {
                    let ids = load(b, &ins[0], El::I32, il.offset(), il.shape())?;
                    let table = load(b, &ins[1], El::U8, 0, &[vocab, row_bytes])?;
                    let rows = take_rows(b, &table, &ids)?;
                    let vals = dequant_gguf_rows(b, &rows, ty, hidden)?;
                    let ok = in_range(b, &ids, vocab)?;
                    let y = mask_rows(b, &ok, &vals)?;
                    Ok(vec![store_as(b, &outs[0], oe, &ol, &y)?])
                },
            )
        }
    }
}

pub(crate) fn add(dev: &TpuDevice, args: AddArgs<'_>) -> Result<()> {
    let (r, n) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "add";
    let e = el_of(dev, op, args.a.dtype)?;
    let key = format!(
        "add|{}|{}|{}",
        vk(args.a.dtype, &args.a.layout),
        vk(args.b.dtype, &args.b.layout),
        vk(args.out.dtype, &args.out.layout)
    );
    let (al, bl, ol) = (
        args.a.layout.clone(),
        args.b.layout.clone(),
        args.out.layout.clone(),
    );
    dev.run(
        op,
        key,
        &[args.a.buffer, args.b.buffer],
        &mut [args.out.buffer],
        |b, ins, outs| {
            let x = load_f32(b, &ins[0], e, &al)?;
            let mut y = load_f32(b, &ins[1], e, &bl)?;
            if bl.rank() == 1 {
                y = b.broadcast(&y, &[r, n], &[1])?;
            }
            let s = b.add(&x, &y)?;
            Ok(vec![store_as(b, &outs[0], e, &ol, &s)?])
        },
    )
}
