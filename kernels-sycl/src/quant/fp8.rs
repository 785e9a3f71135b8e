//! FP8 E4M3 W8A8: e4m3 weight bytes `[N, K]` as stored (part 0) and their
//! f32 scales `[1]` or `[N]` (part 1); scalars `[input_scale]` (static
//! activation scaling, else 0). Per call: activation scales (static, dynamic
//! per tensor or per token), activations cast to e4m3, then the GEMM.

use hal::{ActivationScale, PackedWeight, QuantGemmArgs, QuantSpec, QuantWeights, Result};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::QUANT_FP8;

/// Layout name of a packed FP8 weight.
pub(crate) const LAYOUT: &str = "fp8-rows";

/// Upload weight and scales.
pub(crate) fn pack(d: &OpenClDevice, w: &QuantWeights) -> Result<PackedWeight> {
    let op = "quant_gemm";
    let QuantWeights::Fp8 {
        n,
        k,
        weight,
        weight_scale,
        input_scale,
        ..
    } = w
    else {
        return Err(d.err(op, "not an FP8 weight"));
    };
    let scales: Vec<u8> = weight_scale.iter().flat_map(|s| s.to_le_bytes()).collect();
    Ok(PackedWeight {
        spec: w.spec(),
        n: *n,
        k: *k,
        layout: LAYOUT,
        parts: vec![d.upload_bytes(op, weight)?, d.upload_bytes(op, &scales)?],
        scalars: vec![input_scale.unwrap_or(0.0)],
    })
}

/// `out = e4m3(x / s) · Wᵀ · s (+ bias)`.
pub(crate) fn gemm(
    d: &OpenClDevice,
    args: &QuantGemmArgs<'_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let op = "quant_gemm";
    let w = args.w;
    let QuantSpec::Fp8 { activation, .. } = w.spec else {
        return Err(super::foreign_layout(d, w));
    };
    let ([wq, ws], [input_scale]) = (w.parts.as_slice(), w.scalars.as_slice()) else {
        return Err(super::foreign_layout(d, w));
    };
    if w.layout != LAYOUT {
        return Err(super::foreign_layout(d, w));
    }
    let per_channel = ws.len() == 4 * n && n != 1;
    let [x, x_off] = d.view(op, &args.x)?;
    let x_dt = Arg::I32(dtype_code(args.x.dtype));
    let scales = d.scratch(op, 4 * m)?;
    let xq = d.scratch(op, 4 * m * k)?;
    let mode = match activation {
        ActivationScale::Static => 0,
        ActivationScale::DynamicPerTensor => 1,
        ActivationScale::DynamicPerToken => 2,
    };
    if mode != 0 {
        d.launch(
            op,
            &QUANT_FP8,
            "fp8_row_amax",
            [m * 64, 1, 1],
            [64, 1, 1],
            &[
                x,
                x_off,
                x_dt,
                Arg::I32(k as i32),
                Arg::Mem(scales.mem()),
                Arg::Local(64 * 4),
            ],
        )?;
    }
    d.launch(
        op,
        &QUANT_FP8,
        "fp8_scales",
        [1, 1, 1],
        [1, 1, 1],
        &[
            Arg::Mem(scales.mem()),
            Arg::I32(m as i32),
            Arg::I32(mode),
            Arg::F32(*input_scale),
        ],
    )?;
    d.launch(
        op,
        &QUANT_FP8,
        "fp8_quantize",
        [k, m, 1],
        [64, 1, 1],
        &[
            x,
            x_off,
            x_dt,
            Arg::I32(k as i32),
            Arg::Mem(scales.mem()),
            Arg::Mem(xq.mem()),
        ],
    )?;
    let [b, b_off] = d.opt_view(op, args.bias.as_ref())?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let tpc = super::threads_per_column(d, k);
    d.launch(
        op,
        &QUANT_FP8,
        "fp8_gemm",
        super::grid(n, m, tpc),
        [super::GROUP, 1, 1],
        &[
            Arg::Mem(xq.mem()),
            d.buf(op, wq)?,
            d.buf(op, ws)?,
            Arg::I32(per_channel as i32),
            Arg::Mem(scales.mem()),
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
