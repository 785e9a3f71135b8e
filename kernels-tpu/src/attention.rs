//! Paged attention (queries against the KV cache through the block table)
//! and dense varlen flash attention, as masked softmax attention with
//! static shapes.
//!
//! Paged: each query token finds its sequence from `query_start_loc`
//! (`b(t) = #{b : qsl[b+1] ≤ t}`), gathers its sequence's blocks
//! (`[T, max_blocks · block_size, KVH, D]`), and masks keys past its
//! position (and outside the sliding window). Masked keys' values are
//! zeroed before the product so NaN in unused cache slots never leaks.
//! Softmax runs in f32 with the row maximum subtracted; a row with no
//! visible key is zero.

use hal::{Backend, FlashAttentionArgs, KvLayout, PagedAttentionArgs, Result};

use crate::device::{load, TpuDevice};
use crate::elementwise::{el_of, load_f32, mask_rows, store_as, take_rows, vk};
use crate::hlo::{BResult, Builder, Cmp, El, GatherDims, Reduce, Ty, Val};
use crate::kv_cache::{from_cache, physical_dims};

/// For each token `t < T`: the index of the sequence it belongs to given
/// the `[B + 1]` prefix sums `starts` (`B` for a token past the last).
fn seq_of_token(b: &mut Builder, starts: &Val, t: usize) -> BResult<Val> {
    let nb = starts.dims()[0] - 1;
    let hi = b.slice(starts, &[1], &[nb + 1])?;
    let hi = b.broadcast(&hi, &[t, nb], &[1])?;
    let tok = b.iota(Ty::new(&[t, nb], El::I32), 0)?;
    let le = b.compare(&hi, &tok, Cmp::Le)?;
    let ones = b.convert(&le, El::I32);
    b.reduce(&ones, &[1], Reduce::Sum)
}

/// `v[idx[t]]` for a vector `v` `[N]` (indices clamped).
fn take(b: &mut Builder, v: &Val, idx: &Val) -> BResult<Val> {
    let n = v.dims()[0];
    let col = b.reshape(v, &[n, 1])?;
    let r = take_rows(b, &col, idx)?;
    b.reshape(&r, &[idx.dims()[0]])
}

/// Scale, soft-cap and masked softmax of `s` (f32, keys last); `mask` is
/// already broadcast to `s`'s shape.
fn softmax(b: &mut Builder, s: &Val, mask: &Val, scale: f32, softcap: Option<f32>) -> BResult<Val> {
    let last = s.dims().len() - 1;
    let sc = b.splat(s.ty.clone(), scale as f64);
    let mut s = b.mul(s, &sc)?;
    if let Some(cap) = softcap {
        let c = b.splat(s.ty.clone(), cap as f64);
        let d = b.div(&s, &c)?;
        let th = b.tanh(&d);
        s = b.mul(&th, &c)?;
    }
    let ninf = b.splat(s.ty.clone(), f64::NEG_INFINITY);
    let s = b.select(mask, &s, &ninf)?;
    let m = b.reduce(&s, &[last], Reduce::Max)?;
    // A fully masked row has max −∞: subtract 0 instead (every weight is 0).
    let mninf = b.splat(m.ty.clone(), f64::NEG_INFINITY);
    let zero = b.splat(m.ty.clone(), 0.0);
    let empty = b.compare(&m, &mninf, Cmp::Eq)?;
    let m = b.select(&empty, &zero, &m)?;
    let keep: Vec<usize> = (0..last).collect();
    let mb = b.broadcast(&m, s.dims(), &keep)?;
    let d = b.sub(&s, &mb)?;
    let e = b.exp(&d);
    let sum = b.reduce(&e, &[last], Reduce::Sum)?;
    let one = b.splat(sum.ty.clone(), 1.0);
    let z = b.compare(&sum, &zero, Cmp::Eq)?;
    let den = b.select(&z, &one, &sum)?;
    let den = b.broadcast(&den, s.dims(), &keep)?;
    b.div(&e, &den)
}

/// `lo ≤ x` and `x ≤ hi` element-wise (i32).
fn between(b: &mut Builder, x: &Val, lo: &Val, hi: &Val) -> BResult<Val> {
    let a = b.compare(x, lo, Cmp::Ge)?;
    let c = b.compare(x, hi, Cmp::Le)?;
    b.and(&a, &c)
}

pub(crate) fn paged_attention(dev: &TpuDevice, args: PagedAttentionArgs<'_>) -> Result<()> {
    let (t, h, nbatch) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "paged_attention";
    let s = args.cache.spec;
    let qe = el_of(dev, op, args.q.dtype)?;
    let ce = el_of(dev, op, s.dtype)?;
    let mb = args.meta.block_tables.layout.shape()[1];
    let (kvh, d, bs) = (s.num_kv_heads, s.head_dim, s.block_size);
    let g = h / kvh;
    let sk = mb * bs;
    let p = args.params;
    let (ks, vs) = (args.cache.k_scale, args.cache.v_scale);
    let m = &args.meta;
    let key = format!(
        "paged_attention|{}|{}|{}|{}|{}|{:?}|{}|{:?}|{:?}|{}|{}",
        vk(args.q.dtype, &args.q.layout),
        vk(m.query_start_loc.dtype, &m.query_start_loc.layout),
        vk(m.seq_lens.dtype, &m.seq_lens.layout),
        vk(m.block_tables.dtype, &m.block_tables.layout),
        vk(args.out.dtype, &args.out.layout),
        s,
        p.scale.to_bits(),
        p.sliding_window,
        p.softcap.map(f32::to_bits),
        ks.to_bits(),
        vs.to_bits()
    );
    let (ql, qsl, sll, btl, ol) = (
        args.q.layout.clone(),
        m.query_start_loc.layout.clone(),
        m.seq_lens.layout.clone(),
        m.block_tables.layout.clone(),
        args.out.layout.clone(),
    );
    let _ = nbatch;
    dev.run(
        op,
        key,
        &[
            args.q.buffer,
            &args.cache.key,
            &args.cache.value,
            m.query_start_loc.buffer,
            m.seq_lens.buffer,
            m.block_tables.buffer,
        ],
        &mut [args.out.buffer],
        |b, ins, outs| {
            let q = load_f32(b, &ins[0], qe, &ql)?;
            let q = b.reshape(&q, &[t, kvh, g, d])?;
            let starts = load(b, &ins[3], El::I32, qsl.offset(), qsl.shape())?;
            let lens = load(b, &ins[4], El::I32, sll.offset(), sll.shape())?;
            let tables = load(b, &ins[5], El::I32, btl.offset(), btl.shape())?;
            let nb = lens.dims()[0];
            let seq = seq_of_token(b, &starts, t)?;
            let len_t = take(b, &lens, &seq)?;
            let one = b.splat(seq.ty.clone(), 1.0);
            let seq1 = b.add(&seq, &one)?;
            let end_t = take(b, &starts, &seq1)?;
            let tok = b.iota(Ty::new(&[t], El::I32), 0)?;
            // Position of token t: L_b − (end_b − t).
            let back = b.sub(&end_t, &tok)?;
            let pos = b.sub(&len_t, &back)?;
            let total = b.slice(&starts, &[nb], &[nb + 1])?;
            let total = b.broadcast(&total, &[t], &[0])?;
            let valid = b.compare(&tok, &total, Cmp::Lt)?;
            // Visible keys j: window start ≤ j ≤ pos.
            let j = b.iota(Ty::new(&[t, sk], El::I32), 1)?;
            let hi = b.broadcast(&pos, &[t, sk], &[0])?;
            let lo = match p.sliding_window {
                Some(w) => {
                    let wv = b.splat(pos.ty.clone(), w as f64 - 1.0);
                    let l = b.sub(&pos, &wv)?;
                    b.broadcast(&l, &[t, sk], &[0])?
                }
                None => b.splat(Ty::new(&[t, sk], El::I32), 0.0),
            };
            let vis = between(b, &j, &lo, &hi)?;
            let vb = b.broadcast(&valid, &[t, sk], &[0])?;
            let vis = b.and(&vis, &vb)?;
            // Blocks of each token's sequence.
            let rows = take_rows(b, &tables, &seq)?;
            let mut kv = Vec::new();
            for (i, scale) in [(1usize, ks), (2usize, vs)] {
                // Gather whole blocks in the physical layout, then order
                // each block as [block_size, kv_heads, head_dim].
                let dims = physical_dims(&s, i == 1);
                let c = load(b, &ins[i], ce, 0, &dims)?;
                let r = dims.len();
                let mut out_dims = vec![t, mb];
                out_dims.extend_from_slice(&dims[1..]);
                let mut slice_sizes = dims.clone();
                slice_sizes[0] = 1;
                let gathered = b.gather(
                    &c,
                    &rows,
                    &GatherDims {
                        offset_dims: (2..r + 1).collect(),
                        collapsed_slice_dims: vec![0],
                        start_index_map: vec![0],
                        index_vector_dim: 2,
                        slice_sizes,
                    },
                    &out_dims,
                );
                let gathered = match s.layout {
                    KvLayout::Nhd => gathered,
                    // K [T, MB, KVH, D/x, BS, x] → [T, MB, BS, KVH, D/x, x]
                    KvLayout::VllmSplitX { .. } if i == 1 => {
                        b.transpose(&gathered, &[0, 1, 4, 2, 3, 5])?
                    }
                    // V [T, MB, KVH, D, BS] → [T, MB, BS, KVH, D]
                    KvLayout::VllmSplitX { .. } => b.transpose(&gathered, &[0, 1, 4, 2, 3])?,
                };
                let gathered = b.reshape(&gathered, &[t, sk, kvh, d])?;
                let f = from_cache(b, &gathered, scale)?;
                let mv = b.broadcast(&vis, &[t, sk, kvh, d], &[0, 1])?;
                let z = b.splat(f.ty.clone(), 0.0);
                kv.push(b.select(&mv, &f, &z)?);
            }
            let scores = b.dot_general(&q, &kv[0], (&[0, 1], &[0, 2]), (&[3], &[3]), El::F32)?;
            let mask = b.broadcast(&vis, &[t, kvh, g, sk], &[0, 3])?;
            let probs = softmax(b, &scores, &mask, p.scale, p.softcap)?;
            let o = b.dot_general(&probs, &kv[1], (&[0, 1], &[0, 2]), (&[3], &[1]), El::F32)?;
            let o = b.reshape(&o, &[t, h, d])?;
            let o = mask_rows(b, &valid, &o)?;
            Ok(vec![store_as(b, &outs[0], qe, &ol, &o)?])
        },
    )
}

pub(crate) fn flash_attention(dev: &TpuDevice, args: FlashAttentionArgs<'_>) -> Result<()> {
    let (tq, tk, _batch) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "flash_attention";
    let e = el_of(dev, op, args.q.dtype)?;
    let qs = args.q.layout.shape();
    let (h, d) = (qs[1], qs[2]);
    let hk = args.k.layout.shape()[1];
    let g = h / hk;
    let p = args.params;
    let causal = args.causal;
    let key = format!(
        "flash_attention|{}|{}|{}|{}|{}|{}|{causal}|{}|{:?}|{:?}",
        vk(args.q.dtype, &args.q.layout),
        vk(args.k.dtype, &args.k.layout),
        vk(args.v.dtype, &args.v.layout),
        vk(args.cu_seqlens_q.dtype, &args.cu_seqlens_q.layout),
        vk(args.cu_seqlens_k.dtype, &args.cu_seqlens_k.layout),
        vk(args.out.dtype, &args.out.layout),
        p.scale.to_bits(),
        p.sliding_window,
        p.softcap.map(f32::to_bits),
    );
    let (ql, kl, vl, cql, ckl, ol) = (
        args.q.layout.clone(),
        args.k.layout.clone(),
        args.v.layout.clone(),
        args.cu_seqlens_q.layout.clone(),
        args.cu_seqlens_k.layout.clone(),
        args.out.layout.clone(),
    );
    dev.run(
        op,
        key,
        &[
            args.q.buffer,
            args.k.buffer,
            args.v.buffer,
            args.cu_seqlens_q.buffer,
            args.cu_seqlens_k.buffer,
        ],
        &mut [args.out.buffer],
        |b, ins, outs| {
            let q = load_f32(b, &ins[0], e, &ql)?;
            let q = b.reshape(&q, &[tq, hk, g, d])?;
            let k = load_f32(b, &ins[1], e, &kl)?;
            let v = load_f32(b, &ins[2], e, &vl)?;
            let cq = load(b, &ins[3], El::I32, cql.offset(), cql.shape())?;
            let ck = load(b, &ins[4], El::I32, ckl.offset(), ckl.shape())?;
            let nb = cq.dims()[0] - 1;
            let seq = seq_of_token(b, &cq, tq)?;
            let one = b.splat(seq.ty.clone(), 1.0);
            let seq1 = b.add(&seq, &one)?;
            let q1 = take(b, &cq, &seq1)?;
            let k0 = take(b, &ck, &seq)?;
            let k1 = take(b, &ck, &seq1)?;
            let tok = b.iota(Ty::new(&[tq], El::I32), 0)?;
            let total = b.slice(&cq, &[nb], &[nb + 1])?;
            let total = b.broadcast(&total, &[tq], &[0])?;
            let valid = b.compare(&tok, &total, Cmp::Lt)?;
            // aligned = (t − q0) + (k1 − k0) − (q1 − q0) = t + k1 − k0 − q1.
            let a1 = b.add(&tok, &k1)?;
            let a2 = b.sub(&a1, &k0)?;
            let aligned = b.sub(&a2, &q1)?;
            // rel = j − k0 for every key j; visible iff 0 ≤ rel < lk, …
            let j = b.iota(Ty::new(&[tq, tk], El::I32), 1)?;
            let k0b = b.broadcast(&k0, &[tq, tk], &[0])?;
            let rel = b.sub(&j, &k0b)?;
            let lk = b.sub(&k1, &k0)?;
            let onev = b.splat(lk.ty.clone(), 1.0);
            let lk1 = b.sub(&lk, &onev)?;
            let zero = b.splat(Ty::new(&[tq, tk], El::I32), 0.0);
            let lk1b = b.broadcast(&lk1, &[tq, tk], &[0])?;
            let mut vis = between(b, &rel, &zero, &lk1b)?;
            let alb = b.broadcast(&aligned, &[tq, tk], &[0])?;
            if causal {
                let c = b.compare(&rel, &alb, Cmp::Le)?;
                vis = b.and(&vis, &c)?;
            }
            if let Some(w) = p.sliding_window {
                // rel ≥ aligned + 1 − w; without causality only when aligned ≥ 0.
                let wv = b.splat(alb.ty.clone(), w as f64 - 1.0);
                let lo = b.sub(&alb, &wv)?;
                let mut c = b.compare(&rel, &lo, Cmp::Ge)?;
                if !causal {
                    let neg = b.compare(&alb, &zero, Cmp::Lt)?;
                    let t_ = b.splat(neg.ty.clone(), 1.0);
                    let either = b.select(&neg, &t_, &c)?;
                    c = either;
                }
                vis = b.and(&vis, &c)?;
            }
            let vb = b.broadcast(&valid, &[tq, tk], &[0])?;
            let vis = b.and(&vis, &vb)?;
            // scores [Hk, Tq, G, Tk]
            let scores = b.dot_general(&q, &k, (&[1], &[1]), (&[3], &[2]), El::F32)?;
            let mask = b.broadcast(&vis, &[hk, tq, g, tk], &[1, 3])?;
            let probs = softmax(b, &scores, &mask, p.scale, p.softcap)?;
            // [Hk, Tq, G, D]
            let o = b.dot_general(&probs, &v, (&[0], &[1]), (&[3], &[0]), El::F32)?;
            let o = b.transpose(&o, &[1, 0, 2, 3])?;
            let o = b.reshape(&o, &[tq, h, d])?;
            let o = mask_rows(b, &valid, &o)?;
            Ok(vec![store_as(b, &outs[0], e, &ol, &o)?])
        },
    )
}
