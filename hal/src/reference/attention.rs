//! Paged and dense attention, softmax in f64.

use super::round_to;
use super::HostKvCache;
use crate::{AttentionParams, HostTensor};

/// Softmax-weighted sum for one query row. `keys` lists the visible key
/// indices; `score(j)` gives `q·k_j` and `value(j, d)` the value element.
fn attend(
    keys: impl Iterator<Item = usize> + Clone,
    head_dim: usize,
    params: &AttentionParams,
    score: impl Fn(usize) -> f64,
    value: impl Fn(usize, usize) -> f64,
    out: &mut [f64],
) {
    let scale = params.scale as f64;
    let scores: Vec<(usize, f64)> = keys
        .map(|j| {
            let mut s = score(j) * scale;
            if let Some(cap) = params.softcap {
                let cap = cap as f64;
                s = cap * (s / cap).tanh();
            }
            (j, s)
        })
        .collect();
    out.iter_mut().for_each(|o| *o = 0.0);
    if scores.is_empty() {
        return;
    }
    let max = scores
        .iter()
        .map(|(_, s)| *s)
        .fold(f64::NEG_INFINITY, f64::max);
    // A NaN score poisons the row, as it would in any kernel.
    let max = if scores.iter().any(|(_, s)| s.is_nan()) {
        f64::NAN
    } else {
        max
    };
    let weights: Vec<f64> = scores.iter().map(|(_, s)| (s - max).exp()).collect();
    let sum: f64 = weights.iter().sum();
    for ((j, _), w) in scores.iter().zip(&weights) {
        for (d, o) in out.iter_mut().enumerate().take(head_dim) {
            *o += w / sum * value(*j, d);
        }
    }
}

/// First key position visible from position `p` under a sliding window.
fn window_start(p: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

/// Paged attention (see [`crate::PagedAttentionArgs`]). `q` is
/// `[T, H, D]`; `block_tables` is `[batch, max_blocks_per_seq]` row-major.
pub fn paged_attention(
    q: &HostTensor,
    cache: &HostKvCache,
    query_start_loc: &[i32],
    seq_lens: &[i32],
    block_tables: &[i32],
    max_blocks_per_seq: usize,
    params: &AttentionParams,
) -> HostTensor {
    let (t_total, h, d) = (q.shape[0], q.shape[1], q.shape[2]);
    let s = cache.spec;
    let group = h / s.num_kv_heads;
    let bs = s.block_size;
    let qv = q.to_f64();
    let mut out = vec![0f64; t_total * h * d];
    for b in 0..seq_lens.len() {
        let (q0, q1) = (query_start_loc[b] as usize, query_start_loc[b + 1] as usize);
        let len = seq_lens[b] as usize;
        let table = &block_tables[b * max_blocks_per_seq..(b + 1) * max_blocks_per_seq];
        let loc = |j: usize| (table[j / bs] as usize, j % bs);
        for (i, t) in (q0..q1).enumerate() {
            let p = len - (q1 - q0) + i;
            for hh in 0..h {
                let kvh = hh / group;
                let qrow = &qv[(t * h + hh) * d..(t * h + hh + 1) * d];
                let score = |j: usize| {
                    let (blk, off) = loc(j);
                    (0..d)
                        .map(|dd| qrow[dd] * cache.key_at(blk, off, kvh, dd))
                        .sum::<f64>()
                };
                let value = |j: usize, dd: usize| {
                    let (blk, off) = loc(j);
                    cache.value_at(blk, off, kvh, dd)
                };
                let o = &mut out[(t * h + hh) * d..(t * h + hh + 1) * d];
                attend(
                    window_start(p, params.sliding_window)..=p,
                    d,
                    params,
                    score,
                    value,
                    o,
                );
            }
        }
    }
    round_to(q.dtype, &q.shape, &out)
}

/// Dense varlen attention (see [`crate::FlashAttentionArgs`]): `q`
/// `[Tq, H, D]`, `k`/`v` `[Tk, Hkv, D]`. A query that sees no key (causal
/// with `Lq > Lk`) gets a zero row.
pub fn flash_attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    cu_seqlens_q: &[i32],
    cu_seqlens_k: &[i32],
    causal: bool,
    params: &AttentionParams,
) -> HostTensor {
    let (tq, h, d) = (q.shape[0], q.shape[1], q.shape[2]);
    let hk = k.shape[1];
    let group = h / hk;
    let (qv, kv, vv) = (q.to_f64(), k.to_f64(), v.to_f64());
    let mut out = vec![0f64; tq * h * d];
    for b in 0..cu_seqlens_q.len().saturating_sub(1) {
        let (q0, q1) = (cu_seqlens_q[b] as usize, cu_seqlens_q[b + 1] as usize);
        let (k0, k1) = (cu_seqlens_k[b] as usize, cu_seqlens_k[b + 1] as usize);
        let (lq, lk) = (q1 - q0, k1 - k0);
        for i in 0..lq {
            // Bottom-right aligned position of query i among the keys.
            let aligned = i as isize + lk as isize - lq as isize;
            let (lo, hi) = if causal {
                if aligned < 0 {
                    (1, 0) // empty
                } else {
                    let p = aligned as usize;
                    (window_start(p, params.sliding_window), p.min(lk - 1))
                }
            } else {
                let lo = match (params.sliding_window, aligned) {
                    (Some(_), a) if a >= 0 => window_start(a as usize, params.sliding_window),
                    _ => 0,
                };
                (lo, lk.saturating_sub(1))
            };
            for hh in 0..h {
                let kvh = hh / group;
                let t = q0 + i;
                let qrow = &qv[(t * h + hh) * d..(t * h + hh + 1) * d];
                let score = |j: usize| {
                    let kr = &kv[((k0 + j) * hk + kvh) * d..((k0 + j) * hk + kvh + 1) * d];
                    qrow.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>()
                };
                let value = |j: usize, dd: usize| vv[((k0 + j) * hk + kvh) * d + dd];
                let o = &mut out[(t * h + hh) * d..(t * h + hh + 1) * d];
                let keys = (lo..=hi).filter(|_| lk > 0 && lo <= hi);
                attend(keys, d, params, score, value, o);
            }
        }
    }
    round_to(q.dtype, &q.shape, &out)
}
