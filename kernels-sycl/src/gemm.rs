//! Dense GEMM `out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias)` (`kernels/gemm.cl`):
//! 64 × 64 output tiles through local memory, or, for a few rows (decode),
//! 64 columns × 4 rows per work-group with x's rows in local memory. Both
//! accumulate each output in the same order, so the choice never changes a
//! row's bits.

use hal::{Backend, GemmArgs, Result};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::GEMM;

/// Up to this many rows run on the skinny kernel.
const SKINNY_ROWS: usize = 16;

/// Run [`GemmArgs`].
pub(crate) fn gemm(d: &OpenClDevice, args: GemmArgs<'_>) -> Result<()> {
    let (m, n, k) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "gemm";
    let [x, x_off] = d.view(op, &args.x)?;
    let [w, w_off] = d.view(op, &args.w)?;
    let [b, b_off] = d.opt_view(op, args.bias.as_ref())?;
    let bias_dt = args.bias.as_ref().map_or(0, |b| dtype_code(b.dtype));
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let (func, global, local) = if m <= SKINNY_ROWS {
        ("gemm_skinny", [n, m.div_ceil(4), 1], [64, 1, 1])
    } else {
        (
            "gemm",
            [n.div_ceil(64) * 16, m.div_ceil(64) * 16, 1],
            [16, 16, 1],
        )
    };
    d.launch(
        op,
        &GEMM,
        func,
        global,
        local,
        &[
            x,
            x_off,
            w,
            w_off,
            Arg::I32(dtype_code(args.x.dtype)),
            b,
            b_off,
            Arg::I32(bias_dt),
            Arg::I32(args.bias.is_some() as i32),
            o,
            o_off,
            Arg::I32(dtype_code(args.out.dtype)),
            Arg::I32(m as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
        ],
    )
}
