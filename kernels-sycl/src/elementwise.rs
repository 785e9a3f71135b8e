//! RMS norm (+ residual), RoPE, SiLU-and-mul, add and embedding lookup
//! (`kernels/elementwise.cl`; GGUF tables through `kernels/quant_gguf.cl`).

use hal::{
    AddArgs, Backend, EmbeddingArgs, EmbeddingTable, Result, RmsNormArgs, RopeArgs, RopeStyle,
    SiluAndMulArgs,
};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::{ELEMENTWISE, QUANT_GGUF};

/// Work-items per row of `rms_norm` (a power of two, ≤ 256).
fn norm_group(hidden: usize) -> usize {
    hidden.next_power_of_two().clamp(16, 256)
}

/// `out = rms_norm(x (+ residual)) · weight`; one work-group per row.
pub(crate) fn rms_norm(d: &OpenClDevice, args: RmsNormArgs<'_>) -> Result<()> {
    let (t, h) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "rms_norm";
    let [x, x_off] = d.view(op, &args.x)?;
    let [r, r_off, has_r] = match &args.residual {
        Some(r) => {
            let [b, o] = d.view_mut(op, r)?;
            [b, o, Arg::I32(1)]
        }
        None => [Arg::Null, Arg::U64(0), Arg::I32(0)],
    };
    let [w, w_off] = d.view(op, &args.weight)?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let wg = norm_group(h);
    d.launch(
        op,
        &ELEMENTWISE,
        "rms_norm",
        [t * wg, 1, 1],
        [wg, 1, 1],
        &[
            x,
            x_off,
            r,
            r_off,
            has_r,
            w,
            w_off,
            Arg::I32(dtype_code(args.weight.dtype)),
            o,
            o_off,
            Arg::I32(dtype_code(args.x.dtype)),
            Arg::I32(h as i32),
            Arg::F32(args.eps),
            Arg::Local(wg * 4),
        ],
    )
}

/// RoPE in place on q and k; one work-item per rotated pair.
pub(crate) fn rope(d: &OpenClDevice, args: RopeArgs<'_>) -> Result<()> {
    let (t, hd, rot) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "rope";
    let nh = args.q.layout.shape()[1];
    let nkh = args.k.layout.shape()[1];
    let max_pos = args.cos_sin_cache.layout.shape()[0];
    let [p, p_off] = d.view(op, &args.positions)?;
    let [q, q_off] = d.view_mut(op, &args.q)?;
    let [k, k_off] = d.view_mut(op, &args.k)?;
    let [cs, cs_off] = d.view(op, &args.cos_sin_cache)?;
    d.launch(
        op,
        &ELEMENTWISE,
        "rope",
        [rot / 2, nh + nkh, t],
        [16, 1, 1],
        &[
            p,
            p_off,
            q,
            q_off,
            k,
            k_off,
            cs,
            cs_off,
            Arg::I32(dtype_code(args.q.dtype)),
            Arg::I32(nh as i32),
            Arg::I32(nkh as i32),
            Arg::I32(hd as i32),
            Arg::I32(rot as i32),
            Arg::I32(max_pos as i32),
            Arg::I32(matches!(args.style, RopeStyle::Neox) as i32),
        ],
    )
}

/// `out = silu(gate) · up`.
pub(crate) fn silu_and_mul(d: &OpenClDevice, args: SiluAndMulArgs<'_>) -> Result<()> {
    let (t, inter) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "silu_and_mul";
    let [x, x_off] = d.view(op, &args.x)?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    d.launch(
        op,
        &ELEMENTWISE,
        "silu_and_mul",
        [inter, t, 1],
        [64, 1, 1],
        &[
            x,
            x_off,
            o,
            o_off,
            Arg::I32(dtype_code(args.x.dtype)),
            Arg::I32(inter as i32),
        ],
    )
}

/// `out = a + b` (b possibly one broadcast row).
pub(crate) fn add(d: &OpenClDevice, args: AddArgs<'_>) -> Result<()> {
    let (rows, n) = args.validate(d.name())?;
    let desc = args.desc();
    d.supports(&desc).map_err(|u| d.refuse(u))?;
    let op = "add";
    let [a, a_off] = d.view(op, &args.a)?;
    let [b, b_off] = d.view(op, &args.b)?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let broadcast = matches!(
        desc,
        hal::OpDesc::Add {
            broadcast: true,
            ..
        }
    );
    d.launch(
        op,
        &ELEMENTWISE,
        "add",
        [n, rows, 1],
        [64, 1, 1],
        &[
            a,
            a_off,
            b,
            b_off,
            o,
            o_off,
            Arg::I32(dtype_code(args.a.dtype)),
            Arg::I32(n as i32),
            Arg::I32(broadcast as i32),
        ],
    )
}

/// `out[t] = table[ids[t]]`, dense or GGUF-packed.
pub(crate) fn embedding(d: &OpenClDevice, args: EmbeddingArgs<'_>) -> Result<()> {
    let (t, vocab, hidden) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "embedding";
    let [ids, ids_off] = d.view(op, &args.ids)?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let out_dt = Arg::I32(dtype_code(args.out.dtype));
    match &args.table {
        EmbeddingTable::Dense(tab) => {
            let [tb, tb_off] = d.view(op, tab)?;
            d.launch(
                op,
                &ELEMENTWISE,
                "embedding_dense",
                [hidden, t, 1],
                [64, 1, 1],
                &[
                    ids,
                    ids_off,
                    tb,
                    tb_off,
                    Arg::I32(dtype_code(tab.dtype)),
                    o,
                    o_off,
                    out_dt,
                    Arg::I32(vocab as i32),
                    Arg::I32(hidden as i32),
                ],
            )
        }
        EmbeddingTable::Quant(w) => {
            let (wq, ty) = crate::quant::gguf::parts(d, op, w)?;
            d.launch(
                op,
                &QUANT_GGUF,
                "gguf_embedding",
                [hidden / 32, t, 1],
                [16, 1, 1],
                &[
                    ids,
                    ids_off,
                    wq,
                    Arg::I32(ty),
                    o,
                    o_off,
                    out_dt,
                    Arg::I32(vocab as i32),
                    Arg::I32(hidden as i32),
                ],
            )
        }
    }
}
