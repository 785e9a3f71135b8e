//! RMS norm, RoPE, SiLU-and-mul, embedding and add (`kernels/*.wgsl`).

use hal::{
    AddArgs, Backend, EmbeddingArgs, EmbeddingTable, Result, RmsNormArgs, RopeArgs, RopeStyle,
    SiluAndMulArgs,
};

use crate::launch::{elem_offset, groups_for, word_offset};
use crate::quant;
use crate::shader::{ro, rw, Elem, KernelSpec};
use crate::WgpuDevice;

/// Invocations per workgroup of the one-element-per-invocation kernels.
const WG: u32 = 256;

fn spec(
    name: &'static str,
    body: &str,
    bindings: Vec<crate::shader::Binding>,
    wg: u32,
) -> KernelSpec {
    KernelSpec {
        name,
        body: body.to_string(),
        bindings,
        workgroup: wg,
        variant: String::new(),
    }
}

/// [`RmsNormArgs`]: one workgroup of 128 per row.
pub(crate) fn rms_norm(dev: &WgpuDevice, args: RmsNormArgs<'_>) -> Result<()> {
    const OP: &str = "rms_norm";
    let (t, h) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let e = Elem::of(args.x.dtype);
    let k = spec(
        OP,
        include_str!("kernels/rms_norm.wgsl"),
        vec![
            ro("x", e),
            ro("w", Elem::of(args.weight.dtype)),
            rw("out", e),
            rw("res", e),
        ],
        128,
    );
    let x = dev.buf(OP, args.x.buffer)?;
    let w = dev.buf(OP, args.weight.buffer)?;
    let (res, res_off) = match &args.residual {
        Some(r) => (dev.buf(OP, r.buffer)?, elem_offset(dev, OP, &r.as_view())?),
        None => (&dev.dummy_rw, 0),
    };
    let params = [
        t as u32,
        h as u32,
        args.eps.to_bits(),
        elem_offset(dev, OP, &args.x)?,
        elem_offset(dev, OP, &args.weight)?,
        elem_offset(dev, OP, &args.out.as_view())?,
        res_off,
        args.residual.is_some() as u32,
    ];
    let out = dev.buf(OP, args.out.buffer)?;
    dev.dispatch(OP, &k, &[x, w, out, res], &params, t)
}

/// [`RopeArgs`]: one invocation per (token, head, rotated pair).
pub(crate) fn rope(dev: &WgpuDevice, args: RopeArgs<'_>) -> Result<()> {
    const OP: &str = "rope";
    let (t, d, rot) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let e = Elem::of(args.q.dtype);
    let k = spec(
        OP,
        include_str!("kernels/rope.wgsl"),
        vec![
            ro("pos", Elem::Word),
            ro("cs", Elem::F32),
            rw("q", e),
            rw("k", e),
        ],
        WG,
    );
    let hq = args.q.layout.shape()[1];
    let hk = args.k.layout.shape()[1];
    let params = [
        t as u32,
        hq as u32,
        hk as u32,
        d as u32,
        rot as u32,
        matches!(args.style, RopeStyle::Gptj) as u32,
        elem_offset(dev, OP, &args.q.as_view())?,
        elem_offset(dev, OP, &args.k.as_view())?,
        word_offset(dev, OP, &args.positions)?,
        args.cos_sin_cache.layout.shape()[0] as u32,
        elem_offset(dev, OP, &args.cos_sin_cache)?,
    ];
    let pos = dev.buf(OP, args.positions.buffer)?;
    let cs = dev.buf(OP, args.cos_sin_cache.buffer)?;
    let q = dev.buf(OP, args.q.buffer)?;
    let kb = dev.buf(OP, args.k.buffer)?;
    let n = t * (hq + hk) * (rot / 2);
    dev.dispatch(OP, &k, &[pos, cs, q, kb], &params, groups_for(n, WG))
}

/// [`SiluAndMulArgs`]: one invocation per output element.
pub(crate) fn silu_and_mul(dev: &WgpuDevice, args: SiluAndMulArgs<'_>) -> Result<()> {
    const OP: &str = "silu_and_mul";
    let (t, i) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let e = Elem::of(args.x.dtype);
    let k = spec(
        OP,
        include_str!("kernels/silu_and_mul.wgsl"),
        vec![ro("x", e), rw("out", e)],
        WG,
    );
    let params = [
        t as u32,
        i as u32,
        elem_offset(dev, OP, &args.x)?,
        elem_offset(dev, OP, &args.out.as_view())?,
    ];
    let x = dev.buf(OP, args.x.buffer)?;
    let out = dev.buf(OP, args.out.buffer)?;
    dev.dispatch(OP, &k, &[x, out], &params, groups_for(t * i, WG))
}

/// [`AddArgs`]: one invocation per element.
pub(crate) fn add(dev: &WgpuDevice, args: AddArgs<'_>) -> Result<()> {
    const OP: &str = "add";
    let (r, n) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let e = Elem::of(args.a.dtype);
    let k = spec(
        OP,
        include_str!("kernels/add.wgsl"),
        vec![ro("a", e), ro("b", e), rw("out", e)],
        WG,
    );
    let params = [
        r as u32,
        n as u32,
        elem_offset(dev, OP, &args.a)?,
        elem_offset(dev, OP, &args.b)?,
        elem_offset(dev, OP, &args.out.as_view())?,
        (args.b.layout.rank() == 1) as u32,
    ];
    let a = dev.buf(OP, args.a.buffer)?;
    let b = dev.buf(OP, args.b.buffer)?;
    let out = dev.buf(OP, args.out.buffer)?;
    dev.dispatch(OP, &k, &[a, b, out], &params, groups_for(r * n, WG))
}

/// [`EmbeddingArgs`]: one invocation per output element; GGUF tables are
/// dequantised in the shader.
pub(crate) fn embedding(dev: &WgpuDevice, args: EmbeddingArgs<'_>) -> Result<()> {
    const OP: &str = "embedding";
    let (t, v, h) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let oe = Elem::of(args.out.dtype);
    let ids = dev.buf(OP, args.ids.buffer)?;
    let out = dev.buf(OP, args.out.buffer)?;
    let mut params = vec![
        t as u32,
        h as u32,
        v as u32,
        elem_offset(dev, OP, &args.ids)?,
        0,
        elem_offset(dev, OP, &args.out.as_view())?,
    ];
    match &args.table {
        EmbeddingTable::Dense(tab) => {
            params[4] = elem_offset(dev, OP, tab)?;
            let body = format!(
                "fn table_at(r: u32, c: u32) -> f32 {{ return ld_tab(pu(4u) + r * pu(1u) + c); }}\n{}",
                include_str!("kernels/embedding.wgsl")
            );
            let mut k = spec(
                OP,
                &body,
                vec![
                    ro("ids", Elem::Word),
                    ro("tab", Elem::of(tab.dtype)),
                    rw("out", oe),
                ],
                WG,
            );
            k.variant = "dense".into();
            let tb = dev.buf(OP, tab.buffer)?;
            dev.dispatch(OP, &k, &[ids, tb, out], &params, groups_for(t * h, WG))
        }
        EmbeddingTable::Quant(w) => {
            let (decoder, parts) = quant::decoder(dev, OP, w)?;
            params.resize(crate::device::PARAM_WORDS, 0);
            quant::set_params(&mut params, w);
            let body = format!(
                "{}\nfn table_at(r: u32, c: u32) -> f32 {{ return w_at(r, c); }}\n{}",
                decoder.source,
                include_str!("kernels/embedding.wgsl")
            );
            let mut bindings = vec![ro("ids", Elem::Word), rw("out", oe)];
            bindings.extend(decoder.bindings.iter().copied());
            let mut k = spec(OP, &body, bindings, WG);
            k.variant = decoder.variant.clone();
            let mut bufs = vec![ids, out];
            bufs.extend(parts);
            dev.dispatch(OP, &k, &bufs, &params, groups_for(t * h, WG))
        }
    }
}
