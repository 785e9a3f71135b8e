//! Paged and dense varlen attention (`kernels/attention_core.wgsl` with
//! `paged_attention.wgsl` / `flash_attention.wgsl`).
//!
//! One workgroup of 64 invocations per (query token, query head): the query
//! row sits in workgroup memory, keys are scored a tile of 64 at a time (one
//! key per invocation), and an online softmax rescales the running output,
//! whose head-dim elements are spread over the invocations (head_dim ≤ 256).
//! GQA maps query head `h` to KV head `h / (heads / kv_heads)`.
//!
//! Split-K: when the longest sequence spans several [`PARTITION`]-key
//! partitions and there are few (token, head) rows to spread over the
//! device, paged attention runs one workgroup per (row, partition), writing
//! partial (max, sum, row) records to a scratch buffer, and a second kernel
//! combines them.

use hal::{Backend, DType, FlashAttentionArgs, PagedAttentionArgs, Result};

use crate::launch::elem_offset;
use crate::shader::{ro, rw, Elem, KernelSpec};
use crate::WgpuDevice;

const WG: u32 = 64;

/// Keys per split-K partition.
const PARTITION: usize = 256;
/// Split only when there are fewer (token, head) rows than this.
const SPLIT_ROWS: usize = 512;

/// The attention core, `write_out` when the kernel writes normalised rows
/// (not split-K partials), and the kernel.
fn body(kernel: &str, writes_rows: bool) -> String {
    format!(
        "{}\n{}\n{}",
        include_str!("kernels/attention_core.wgsl"),
        if writes_rows {
            include_str!("kernels/attention_write.wgsl")
        } else {
            ""
        },
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
    let parts = args.meta.max_seq_len.div_ceil(PARTITION);
    let split = parts > 1 && t * h < SPLIT_ROWS;
    let bindings = vec![
        ro("q", qe),
        ro("kc", ce),
        ro("vc", ce),
        ro("qsl", Elem::Word),
        ro("sl", Elem::Word),
        ro("bt", Elem::Word),
        if split {
            rw("part", Elem::Word)
        } else {
            rw("out", qe)
        },
    ];
    let main = if split {
        include_str!("kernels/paged_split.wgsl")
    } else {
        include_str!("kernels/paged_main.wgsl")
    };
    let spec = KernelSpec {
        name: OP,
        body: body(
            &format!("{}\n{main}", include_str!("kernels/paged_attention.wgsl")),
            !split,
        ),
        bindings,
        workgroup: WG,
        variant: if split { "split" } else { "whole" }.into(),
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
        parts as u32,
        PARTITION as u32,
    ];
    let out = dev.buf(OP, args.out.buffer)?;
    let inputs = [
        dev.buf(OP, args.q.buffer)?,
        dev.buf(OP, &args.cache.key)?,
        dev.buf(OP, &args.cache.value)?,
        dev.buf(OP, args.meta.query_start_loc.buffer)?,
        dev.buf(OP, args.meta.seq_lens.buffer)?,
        dev.buf(OP, args.meta.block_tables.buffer)?,
    ];
    if !split {
        let mut bufs = inputs.to_vec();
        bufs.push(out);
        return dev.dispatch(OP, &spec, &bufs, &params, t * h);
    }
    let d = s.head_dim;
    let scratch = dev.scratch(OP, t * h * parts * (d + 2) * 4)?;
    let mut bufs = inputs.to_vec();
    bufs.push(&scratch);
    dev.dispatch(OP, &spec, &bufs, &params, t * h * parts)?;
    let reduce = KernelSpec {
        name: "attention_reduce",
        body: include_str!("kernels/attention_reduce.wgsl").to_string(),
        bindings: vec![ro("part", Elem::Word), rw("out", qe)],
        workgroup: WG,
        variant: String::new(),
    };
    let mut rp = [0u32; 12];
    rp[0] = (t * h) as u32;
    rp[1] = parts as u32;
    rp[3] = d as u32;
    rp[11] = params[11];
    dev.dispatch(OP, &reduce, &[&scratch, out], &rp, t * h)
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
        body: body(include_str!("kernels/flash_attention.wgsl"), true),
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
