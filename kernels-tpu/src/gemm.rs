//! Dense GEMM: `out[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N])` as one
//! `dot_general` with f32 operands and f32 accumulation.

use hal::{Backend, GemmArgs, Layout, Result};

use crate::device::TpuDevice;
use crate::elementwise::{el_of, load_f32, store_as, vk};
use crate::hlo::{BResult, Builder, El, Val};

/// `x · wᵀ (+ bias)` in f32: `x` `[M, K]`, `w` `[N, K]`, `bias` `[N]`.
pub(crate) fn matmul_t(b: &mut Builder, x: &Val, w: &Val, bias: Option<&Val>) -> BResult<Val> {
    let y = b.dot_general(x, w, (&[], &[]), (&[1], &[1]), El::F32)?;
    match bias {
        Some(bias) => {
            let bb = b.broadcast(bias, y.dims(), &[1])?;
            b.add(&y, &bb)
        }
        None => Ok(y),
    }
}

pub(crate) fn gemm(dev: &TpuDevice, args: GemmArgs<'_>) -> Result<()> {
    args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "gemm";
    let xe = el_of(dev, op, args.x.dtype)?;
    let oe = el_of(dev, op, args.out.dtype)?;
    let be = match &args.bias {
        Some(bv) => Some(el_of(dev, op, bv.dtype)?),
        None => None,
    };
    let key = format!(
        "gemm|{}|{}|{}|{}",
        vk(args.x.dtype, &args.x.layout),
        vk(args.w.dtype, &args.w.layout),
        args.bias
            .as_ref()
            .map(|v| vk(v.dtype, &v.layout))
            .unwrap_or_default(),
        vk(args.out.dtype, &args.out.layout)
    );
    let (xl, wl, ol) = (
        args.x.layout.clone(),
        args.w.layout.clone(),
        args.out.layout.clone(),
    );
    let bl: Option<Layout> = args.bias.as_ref().map(|v| v.layout.clone());
    let mut inputs = vec![args.x.buffer, args.w.buffer];
    if let Some(bv) = &args.bias {
        inputs.push(bv.buffer);
    }
    dev.run(op, key, &inputs, &mut [args.out.buffer], |b, ins, outs| {
        let x = load_f32(b, &ins[0], xe, &xl)?;
        let w = load_f32(b, &ins[1], xe, &wl)?;
        let bias = match (&bl, be) {
            (Some(l), Some(e)) => Some(load_f32(b, &ins[2], e, l)?),
            _ => None,
        };
        let y = matmul_t(b, &x, &w, bias.as_ref())?;
        Ok(vec![store_as(b, &outs[0], oe, &ol, &y)?])
    })
}
