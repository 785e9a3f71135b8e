//! GGUF Q4_0 / Q4_1 / Q8_0: the checkpoint's blocks are the device layout
//! (18 / 20 / 34 bytes per 32 weights, rows of K / 32 blocks).

use hal::{GgufType, PackedWeight, QuantGemmArgs, QuantSpec, QuantWeights, Result};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::QUANT_GGUF;

/// Layout name of a packed GGUF weight.
pub(crate) const LAYOUT: &str = "gguf-blocks";

/// The kernels' block-type code.
fn type_code(ty: GgufType) -> i32 {
    match ty {
        GgufType::Q4_0 => 0,
        GgufType::Q4_1 => 1,
        GgufType::Q8_0 => 2,
    }
}

/// Upload the blocks as they are.
pub(crate) fn pack(d: &OpenClDevice, w: &QuantWeights) -> Result<PackedWeight> {
    let QuantWeights::Gguf { data, n, k, .. } = w else {
        return Err(d.err("quant_gemm", "not a GGUF weight"));
    };
    Ok(PackedWeight {
        spec: w.spec(),
        n: *n,
        k: *k,
        layout: LAYOUT,
        parts: vec![d.upload_bytes("quant_gemm", data)?],
        scalars: Vec::new(),
    })
}

/// The block buffer and type code of a packed GGUF weight.
pub(crate) fn parts(d: &OpenClDevice, op: &'static str, w: &PackedWeight) -> Result<(Arg, i32)> {
    match (w.spec, w.parts.first()) {
        (QuantSpec::Gguf(ty), Some(buf)) if w.layout == LAYOUT => {
            Ok((d.buf(op, buf)?, type_code(ty)))
        }
        _ => Err(super::foreign_layout(d, w)),
    }
}

/// `out = x · Wᵀ (+ bias)` on GGUF blocks.
pub(crate) fn gemm(
    d: &OpenClDevice,
    args: &QuantGemmArgs<'_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let op = "quant_gemm";
    let (wq, ty) = parts(d, op, args.w)?;
    let [x, x_off] = d.view(op, &args.x)?;
    let [b, b_off] = d.opt_view(op, args.bias.as_ref())?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let tpc = super::threads_per_column(d, k);
    d.launch(
        op,
        &QUANT_GGUF,
        "gguf_gemm",
        super::grid(n, m, tpc),
        [super::GROUP, 1, 1],
        &[
            x,
            x_off,
            Arg::I32(dtype_code(args.x.dtype)),
            wq,
            Arg::I32(ty),
            b,
            b_off,
            Arg::I32(args.bias.as_ref().map_or(0, |b| dtype_code(b.dtype))),
            Arg::I32(args.bias.is_some() as i32),
            o,
            o_off,
            Arg::I32(dtype_code(args.out.dtype)),
            Arg::I32(m as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
            Arg::I32(tpc as i32),
        ],
    )
}
