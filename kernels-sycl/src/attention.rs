//! Paged attention (decode and ragged prefill in one launch, GQA, sliding
//! window, soft-cap, split-K over 512-token partitions for long contexts)
//! and dense varlen flash attention, on one kernel core
//! (`kernels/attention.cl`). A work-group serves up to 8 query heads that
//! share a KV head, so each K and V row is read once for all of them.

use hal::tensor::ViewInfo;
use hal::{Backend, FlashAttentionArgs, PagedAttentionArgs, Result};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::ATTENTION;

/// Work-items per (token, head) work-group (`ATT_WG`).
const GROUP: usize = 64;
/// Keys per split-K partition.
const PARTITION: usize = 512;
/// Query heads sharing one work-group (and one read of K and V), `ATT_MAXG`.
const MAX_HEADS_PER_GROUP: usize = 8;

/// Work-groups along dimension 1: per KV head, chunks of up to
/// [`MAX_HEADS_PER_GROUP`] of its query heads.
fn head_groups(nh: usize, nkh: usize) -> usize {
    nkh * (nh / nkh).div_ceil(MAX_HEADS_PER_GROUP)
}

/// Run [`PagedAttentionArgs`]. Sequences longer than one partition are
/// split: each (token, head, partition) keeps its own softmax state and a
/// second kernel combines them.
pub(crate) fn paged_attention(d: &OpenClDevice, args: PagedAttentionArgs<'_>) -> Result<()> {
    let (t, nh, batch) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "paged_attention";
    let s = args.cache.spec;
    let meta = &args.meta;
    let nparts = meta.max_seq_len.div_ceil(PARTITION).max(1);
    let split = nparts > 1;
    let (tmp_out, tmp_ml) = if split {
        (
            Some(d.scratch(op, 4 * t * nh * nparts * s.head_dim)?),
            Some(d.scratch(op, 8 * t * nh * nparts)?),
        )
    } else {
        (None, None)
    };
    let mem =
        |m: &Option<crate::device::Memory>| m.as_ref().map_or(Arg::Null, |m| Arg::Mem(m.mem()));
    let [q, q_off] = d.view(op, &args.q)?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let [qsl, qsl_off] = d.view(op, &meta.query_start_loc)?;
    let [lens, lens_off] = d.view(op, &meta.seq_lens)?;
    let [bt, bt_off] = d.view(op, &meta.block_tables)?;
    let max_blocks = meta.block_tables.shape()[1];
    let p = &args.params;
    let dt = Arg::I32(dtype_code(args.q.dtype));
    d.launch(
        op,
        &ATTENTION,
        "paged_attention",
        [t * GROUP, head_groups(nh, s.num_kv_heads), nparts],
        [GROUP, 1, 1],
        &[
            q,
            q_off,
            dt,
            o,
            o_off,
            d.buf(op, &args.cache.key)?,
            d.buf(op, &args.cache.value)?,
            Arg::I32(dtype_code(s.dtype)),
            Arg::F32(args.cache.k_scale),
            Arg::F32(args.cache.v_scale),
            qsl,
            qsl_off,
            lens,
            lens_off,
            bt,
            bt_off,
            Arg::I32(max_blocks as i32),
            Arg::I32(batch as i32),
            Arg::I32(nh as i32),
            Arg::I32(s.num_kv_heads as i32),
            Arg::I32(s.head_dim as i32),
            Arg::I32(s.block_size as i32),
            Arg::F32(p.scale),
            Arg::I32(p.sliding_window.unwrap_or(0) as i32),
            Arg::F32(p.softcap.unwrap_or(0.0)),
            Arg::I32(PARTITION as i32),
            Arg::I32(nparts as i32),
            mem(&tmp_out),
            mem(&tmp_ml),
        ],
    )?;
    if split {
        d.launch(
            op,
            &ATTENTION,
            "attention_reduce",
            [t * GROUP, nh, 1],
            [GROUP, 1, 1],
            &[
                mem(&tmp_out),
                mem(&tmp_ml),
                o,
                o_off,
                dt,
                Arg::I32(nh as i32),
                Arg::I32(s.head_dim as i32),
                Arg::I32(nparts as i32),
            ],
        )?;
    }
    Ok(())
}

/// Run [`FlashAttentionArgs`].
pub(crate) fn flash_attention(d: &OpenClDevice, args: FlashAttentionArgs<'_>) -> Result<()> {
    let (tq, _tk, batch) = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "flash_attention";
    let qs = args.q.shape();
    let (nh, hd) = (qs[1], qs[2]);
    let nkh = args.k.shape()[1];
    let [q, q_off] = d.view(op, &args.q)?;
    let [k, k_off] = d.view(op, &args.k)?;
    let [v, v_off] = d.view(op, &args.v)?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let [cq, cq_off] = d.view(op, &args.cu_seqlens_q)?;
    let [ck, ck_off] = d.view(op, &args.cu_seqlens_k)?;
    let p = &args.params;
    d.launch(
        op,
        &ATTENTION,
        "flash_attention",
        [tq * GROUP, head_groups(nh, nkh), 1],
        [GROUP, 1, 1],
        &[
            q,
            q_off,
            k,
            k_off,
            v,
            v_off,
            o,
            o_off,
            Arg::I32(dtype_code(args.q.dtype)),
            cq,
            cq_off,
            ck,
            ck_off,
            Arg::I32(batch as i32),
            Arg::I32(nh as i32),
            Arg::I32(nkh as i32),
            Arg::I32(hd as i32),
            Arg::I32(args.causal as i32),
            Arg::F32(p.scale),
            Arg::I32(p.sliding_window.unwrap_or(0) as i32),
            Arg::F32(p.softcap.unwrap_or(0.0)),
        ],
    )
}
