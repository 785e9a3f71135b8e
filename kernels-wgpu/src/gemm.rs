//! Dense and quantised GEMM: one WGSL template (`kernels/gemm_*.wgsl`) whose
//! operand readers `x_at(m, k)` / `w_at(n, k)` are filled in per dtype and
//! weight format.
//!
//! Variants: `rows` (M ≤ 8: a workgroup of 64 computes 16 output features,
//! 4 invocations splitting K for each — the decode matvec) and `tiled` (16×16 output
//! tiles through workgroup memory). Accumulation is f32.

use hal::{Backend, GemmArgs, Precision, QuantGemmArgs, Result};

use crate::device::PARAM_WORDS;
use crate::launch::elem_offset;
use crate::quant;
use crate::shader::{ro, rw, Binding, Elem, KernelSpec};
use crate::WgpuDevice;

/// Largest M served by the `rows` variant.
const ROWS: usize = 8;
/// Output features per workgroup of the `rows` variant (`NPW` in the shader).
const ROWS_PER_GROUP: usize = 16;

const X_DENSE: &str = "fn x_at(m: u32, k: u32) -> f32 { return ld_x(pu(3u) + m * pu(2u) + k); }\n";

/// The FP8 W8A8 activation cast `e4m3(x / s) · s` with the row's scale.
const X_FP8_STATIC: &str = "fn x_at(m: u32, k: u32) -> f32 { let s = pf(29u); \
    return e4m3_to_f32(f32_to_e4m3(ld_x(pu(3u) + m * pu(2u) + k) / s)) * s; }\n";
const X_FP8_DYNAMIC: &str = "fn x_at(m: u32, k: u32) -> f32 { let s = bitcast<f32>(xs[m]); \
    return e4m3_to_f32(f32_to_e4m3(ld_x(pu(3u) + m * pu(2u) + k) / s)) * s; }\n";

/// Int8 activations: `clamp(round_half_away(x / d), ±127) · f16(d)` per block
/// of 32, with `(1/d, f16(d))` from `int8_act_scale.wgsl`.
const X_INT8: &str = "fn x_at(m: u32, k: u32) -> f32 { \
    let s = 2u * (m * ((pu(2u) + 31u) / 32u) + k / 32u); \
    let v = ld_x(pu(3u) + m * pu(2u) + k) * bitcast<f32>(xs[s]); \
    let t = trunc(v); var q = t; if (abs(v - t) >= 0.5) { q = t + sign(v); } \
    return clamp(q, -127.0, 127.0) * bitcast<f32>(xs[s + 1u]); }\n";

struct Launch<'a> {
    m: usize,
    n: usize,
    readers: String,
    variant: String,
    bindings: Vec<Binding>,
    buffers: Vec<&'a crate::buffer::WgpuBuffer>,
    params: Vec<u32>,
}

fn run(dev: &WgpuDevice, op: &'static str, l: Launch<'_>) -> Result<()> {
    let (template, wg, groups, tag) = if l.m <= ROWS {
        (
            include_str!("kernels/gemm_rows.wgsl"),
            64,
            l.n.div_ceil(ROWS_PER_GROUP),
            "rows",
        )
    } else {
        (
            include_str!("kernels/gemm_tiled.wgsl"),
            256,
            l.m.div_ceil(16) * l.n.div_ceil(16),
            "tiled",
        )
    };
    let spec = KernelSpec {
        name: op,
        body: format!("{}{}", l.readers, template),
        bindings: l.bindings,
        workgroup: wg,
        variant: format!("{tag}/{}", l.variant),
    };
    dev.dispatch(op, &spec, &l.buffers, &l.params, groups)
}

/// [`GemmArgs`].
pub(crate) fn gemm(dev: &WgpuDevice, args: GemmArgs<'_>) -> Result<()> {
    const OP: &str = "gemm";
    let (m, n, k) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let xe = Elem::of(args.x.dtype);
    let (bias, bias_e, bias_off) = match &args.bias {
        Some(b) => (
            dev.buf(OP, b.buffer)?,
            Elem::of(b.dtype),
            elem_offset(dev, OP, b)?,
        ),
        None => (&dev.dummy_ro, Elem::F32, 0),
    };
    let params = vec![
        m as u32,
        n as u32,
        k as u32,
        elem_offset(dev, OP, &args.x)?,
        elem_offset(dev, OP, &args.out.as_view())?,
        bias_off,
        args.bias.is_some() as u32,
        elem_offset(dev, OP, &args.w)?,
    ];
    let out_e = Elem::of(args.out.dtype);
    let x = dev.buf(OP, args.x.buffer)?;
    let w = dev.buf(OP, args.w.buffer)?;
    let out = dev.buf(OP, args.out.buffer)?;
    run(
        dev,
        OP,
        Launch {
            m,
            n,
            readers: format!(
                "{X_DENSE}fn w_at(n: u32, k: u32) -> f32 {{ return ld_w(pu(7u) + n * pu(2u) + k); }}\n"
            ),
            variant: "dense".into(),
            bindings: vec![ro("x", xe), ro("w", xe), rw("out", out_e), ro("bias", bias_e)],
            buffers: vec![x, w, out, bias],
            params,
        },
    )
}

/// [`QuantGemmArgs`]: the weight stays packed and is decoded in the shader.
pub(crate) fn quant_gemm(dev: &WgpuDevice, args: QuantGemmArgs<'_>) -> Result<()> {
    const OP: &str = "quant_gemm";
    let (m, n, k) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let (decoder, parts) = quant::decoder(dev, OP, args.w)?;
    let xe = Elem::of(args.x.dtype);
    let (bias, bias_e, bias_off) = match &args.bias {
        Some(b) => (
            dev.buf(OP, b.buffer)?,
            Elem::of(b.dtype),
            elem_offset(dev, OP, b)?,
        ),
        None => (&dev.dummy_ro, Elem::F32, 0),
    };
    let x_off = elem_offset(dev, OP, &args.x)?;
    let mut params = vec![0u32; PARAM_WORDS];
    params[..7].copy_from_slice(&[
        m as u32,
        n as u32,
        k as u32,
        x_off,
        elem_offset(dev, OP, &args.out.as_view())?,
        bias_off,
        args.bias.is_some() as u32,
    ]);
    quant::set_params(&mut params, args.w);
    params[29] = args.w.scalars.first().copied().unwrap_or(1.0).to_bits();
    let x = dev.buf(OP, args.x.buffer)?;
    let out = dev.buf(OP, args.out.buffer)?;
    let mut mode = quant::fp8_mode(&args.w.spec);
    if mode == 0 && args.precision == Precision::Int8Activations {
        mode = 4;
    }
    let scratch;
    let mut bindings = vec![
        ro("x", xe),
        rw("out", Elem::of(args.out.dtype)),
        ro("bias", bias_e),
    ];
    let mut buffers = vec![x, out, bias];
    let x_reader = match mode {
        0 => X_DENSE,
        1 => X_FP8_STATIC,
        4 => {
            let blocks = k.div_ceil(32);
            scratch = dev.scratch(OP, m * blocks * 8)?;
            let spec = KernelSpec {
                name: "int8_act_scale",
                body: include_str!("kernels/int8_act_scale.wgsl").to_string(),
                bindings: vec![ro("x", xe), rw("xs", Elem::Word)],
                workgroup: 64,
                variant: String::new(),
            };
            dev.dispatch(
                OP,
                &spec,
                &[x, &scratch],
                &[m as u32, k as u32, x_off],
                (m * blocks).div_ceil(64),
            )?;
            bindings.push(ro("xs", Elem::Word));
            buffers.push(&scratch);
            X_INT8
        }
        _ => {
            scratch = dev.scratch(OP, m * 4)?;
            let spec = KernelSpec {
                name: "fp8_act_scale",
                body: include_str!("kernels/fp8_act_scale.wgsl").to_string(),
                bindings: vec![ro("x", xe), rw("xs", Elem::Word)],
                workgroup: 256,
                variant: String::new(),
            };
            let groups = if mode == 3 { 1 } else { m };
            dev.dispatch(
                OP,
                &spec,
                &[x, &scratch],
                &[m as u32, k as u32, x_off, (mode == 3) as u32],
                groups,
            )?;
            bindings.push(ro("xs", Elem::Word));
            buffers.push(&scratch);
            X_FP8_DYNAMIC
        }
    };
    bindings.extend(decoder.bindings.iter().copied());
    buffers.extend(parts);
    run(
        dev,
        OP,
        Launch {
            m,
            n,
            readers: format!("{x_reader}{}", decoder.source),
            variant: format!("{}/a{mode}", decoder.variant),
            bindings,
            buffers,
            params,
        },
    )
}
