//! Paged and dense varlen attention (`kernels/attention_core.wgsl` with
//! `paged_attention.wgsl` / `flash_attention.wgsl`).
//!
//! One workgroup of 64 invocations per (query token, query head): the query
//! row sits in workgroup memory, keys are scored a tile of 64 at a time (one
//! key per invocation), and an online softmax rescales the running output,
//! whose head-dim elements are spread over the invocations (head_dim ≤ 256).
//! GQA maps query head `h` to KV head `h / (heads / kv_heads)`.

use hal::{Backend, DType, FlashAttentionArgs, PagedAttentionArgs, Result};

use crate::launch::elem_offset;
use crate::shader::{ro, rw, Elem, KernelSpec};
use crate::WgpuDevice;

const WG: u32 = 64;

fn body(kernel: &str) -> String {
    format!(
        "{}\n{}",
        include_str!("kernels/attention_core.wgsl"),
        kernel
    )
}

/// [`PagedAttentionArgs`].
pub(crate) fn paged_attention(dev: &WgpuDevice, args: PagedAttentionArgs<'_>) -> Result<()> {
    const OP: &str = "paged_attention";
    let (t, h, b) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let s = args.cache.spec;
    let qe = Elem::of(args.q.dtype);
    let ce = Elem::of(s.dtype);
    let spec = KernelSpec {
        name: OP,
        body: body(include_str!("kernels/paged_attention.wgsl")),
        bindings: vec![
            ro("q", qe),
            ro("kc", ce),
            ro("vc", ce),
            ro("qsl", Elem::Word),
            ro("sl", Elem::Word),
            ro("bt", Elem::Word),
            rw("out", qe),
        ],
        workgroup: WG,
        variant: String::new(),
    };
    let (ks, vs) = if s.dtype == DType::F8E4M3 {
        (args.cache.k_scale, args.cache.v_scale)
    } else {
        (1.0, 1.0)
    };
    let p = &args.params;
    let params = [
        t as u32,
        h as u32,
        s.num_kv_heads as u32,
        s.head_dim as u32,
        b as u32,
        s.block_size as u32,
        args.meta.block_tables.layout.shape()[1] as u32,
        p.scale.to_bits(),
        p.sliding_window.unwrap_or(0).min(u32::MAX as usize) as u32,
        p.softcap.unwrap_or(0.0).to_bits(),
        elem_offset(dev, OP, &args.q)?,
        elem_offset(dev, OP, &args.out.as_view())?,
        elem_offset(dev, OP, &args.meta.query_start_loc)?,
        elem_offset(dev, OP, &args.meta.seq_lens)?,
        elem_offset(dev, OP, &args.meta.block_tables)?,
        ks.to_bits(),
        vs.to_bits(),
    ];
    let bufs = [
        dev.buf(OP, args.q.buffer)?,
        dev.buf(OP, &args.cache.key)?,
        dev.buf(OP, &args.cache.value)?,
        dev.buf(OP, args.meta.query_start_loc.buffer)?,
        dev.buf(OP, args.meta.seq_lens.buffer)?,
        dev.buf(OP, args.meta.block_tables.buffer)?,
        dev.buf(OP, args.out.buffer)?,
    ];
    dev.dispatch(OP, &spec, &bufs, &params, t * h)
}

/// [`FlashAttentionArgs`].
pub(crate) fn flash_attention(dev: &WgpuDevice, args: FlashAttentionArgs<'_>) -> Result<()> {
    const OP: &str = "flash_attention";
    let (tq, _tk, b) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let qs = args.q.layout.shape();
    let (h, d) = (qs[1], qs[2]);
    let hk = args.k.layout.shape()[1];
    let e = Elem::of(args.q.dtype);
    let spec = KernelSpec {
        name: OP,
        body: body(include_str!("kernels/flash_attention.wgsl")),
        bindings: vec![
            ro("q", e),
            ro("k", e),
            ro("v", e),
            ro("cuq", Elem::Word),
            ro("cuk", Elem::Word),
            rw("out", e),
        ],
        workgroup: WG,
        variant: String::new(),
    };
    let p = &args.params;
    let params = [
        tq as u32,
        h as u32,
        hk as u32,
        d as u32,
        b as u32,
        args.causal as u32,
        0,
        p.scale.to_bits(),
        p.sliding_window.unwrap_or(0).min(i32::MAX as usize) as u32,
        p.softcap.unwrap_or(0.0).to_bits(),
        elem_offset(dev, OP, &args.q)?,
        elem_offset(dev, OP, &args.out.as_view())?,
        elem_offset(dev, OP, &args.cu_seqlens_q)?,
        elem_offset(dev, OP, &args.cu_seqlens_k)?,
        elem_offset(dev, OP, &args.k)?,
        elem_offset(dev, OP, &args.v)?,
    ];
    let bufs = [
        dev.buf(OP, args.q.buffer)?,
        dev.buf(OP, args.k.buffer)?,
        dev.buf(OP, args.v.buffer)?,
        dev.buf(OP, args.cu_seqlens_q.buffer)?,
        dev.buf(OP, args.cu_seqlens_k.buffer)?,
        dev.buf(OP, args.out.buffer)?,
    ];
    dev.dispatch(OP, &spec, &bufs, &params, tq * h)
}
