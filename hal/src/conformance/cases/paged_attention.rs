//! Paged attention against the KV cache, as vLLM's kernel tests do it.
//!
//! Every case: a cache poisoned with NaN except the slots its sequences
//! own (so reading past a sequence's end, or through a padded block-table
//! entry, which points at the reserved block 0, shows up as NaN); physical
//! blocks drawn from a shuffled pool; a batch mixing decode (query length 1)
//! with fresh prefill and chunked prefill after a prefix hit, sequence
//! lengths ending mid-block and on block ends. The grid covers head dims
//! {64, 80, 96, 128, 256}, block sizes {16, 32}, GQA ratios {1, 3, 4, 8},
//! cache dtypes F32 / F16 / BF16 / F8E4M3 (scales ≠ 1), query dtypes F32 /
//! F16 / BF16, sliding window, soft-cap, contexts past 512 tokens (split-K
//! partitions) and a cache of 8192 blocks used only at its highest ids.
//! Each case runs once per KV layout the backend declares for its cache dtype.

use super::kv_cache::{
    assign_blocks, block_pool, blocks_needed, build_batch, for_each_layout, high_pool, mixed_batch,
    poisoned, upload_cache,
};
use super::lowp::{attend_row, expect_attention, widened};
use super::{case, dt, op_failed, random, refused, CaseResult};
use crate::conformance::{Case, Harness, Outcome, Rng};
use crate::reference::{self, HostKvCache};
use crate::{
    AttentionBatch, AttentionParams, DType, HostTensor, KvCache, KvCacheSpec, KvLayout, OpDesc,
    PagedAttentionArgs,
};

use DType::{BF16, F16, F32, F8E4M3};

// ---------------------------------------------------------------------------
// Helpers shared with the batch-invariance cases.

/// A host cache holding random K and V for every token of some sequences.
pub(super) struct FilledCache {
    /// Poisoned everywhere but the sequences' slots.
    pub host: HostKvCache,
    /// Each sequence's physical blocks, in order.
    pub blocks: Vec<Vec<u32>>,
}

/// Write random keys and values (unit normal, before FP8 scaling) for
/// sequences of `lens` tokens into a poisoned cache, on blocks taken from
/// `pool` in order.
pub(super) fn fill_cache(
    rng: &mut Rng,
    spec: KvCacheSpec,
    k_scale: f32,
    v_scale: f32,
    lens: &[usize],
    pool: &[u32],
) -> Result<FilledCache, String> {
    let whole: Vec<(usize, usize)> = lens.iter().map(|&l| (l, l)).collect();
    let blocks = assign_blocks(&whole, spec.block_size, pool);
    let batch = build_batch(&whole, &blocks, spec.block_size)?;
    let shape = [batch.num_tokens(), spec.num_kv_heads, spec.head_dim];
    let key = random(rng, F32, &shape, 1.0);
    let value = random(rng, F32, &shape, 1.0);
    let mut host = poisoned(spec, k_scale, v_scale);
    reference::write_kv(&key, &value, &batch.slot_mapping, &mut host);
    Ok(FilledCache { host, blocks })
}

/// Run paged attention for `q` (`[num_tokens, num_heads, head_dim]`) and
/// `batch` against the device cache; the output, read back.
pub(super) fn run_paged(
    h: &Harness<'_>,
    cache: &KvCache,
    q: &HostTensor,
    batch: &AttentionBatch,
    params: AttentionParams,
) -> Result<HostTensor, String> {
    batch
        .validate(&cache.spec)
        .map_err(|e| format!("case built bad metadata: {e}"))?;
    let qd = h.upload(q)?;
    let meta = batch
        .to_device(h.device)
        .map_err(|e| format!("upload metadata: {e}"))?;
    let mut out = h.output(q.dtype, &q.shape)?;
    let args = PagedAttentionArgs {
        q: qd.view(),
        cache,
        meta: meta.metadata(),
        params,
        out: out.view_mut(),
    };
    h.device
        .paged_attention(args)
        .map_err(|e| op_failed("paged_attention", e))?;
    h.read(&out)
}

/// The reference output for `q` and `batch` on `cache`.
pub(super) fn reference_paged(
    q: &HostTensor,
    cache: &HostKvCache,
    batch: &AttentionBatch,
    params: &AttentionParams,
) -> HostTensor {
    reference::paged_attention(
        q,
        cache,
        &batch.query_start_loc,
        &batch.seq_lens,
        &batch.block_tables,
        batch.max_blocks_per_seq,
        params,
    )
}

/// The naive same-precision computation of the whole batch (see
/// [`attend_row`]), for FlashAttention's rule.
pub(super) fn naive_paged(
    q: &HostTensor,
    cache: &HostKvCache,
    batch: &AttentionBatch,
    params: &AttentionParams,
) -> Vec<f64> {
    let (h, d) = (q.shape[1], q.shape[2]);
    let s = cache.spec;
    let group = h / s.num_kv_heads;
    let qv = q.to_f64();
    let mut out = vec![0f64; qv.len()];
    for b in 0..batch.num_seqs() {
        let (q0, q1) = (
            batch.query_start_loc[b] as usize,
            batch.query_start_loc[b + 1] as usize,
        );
        let len = batch.seq_lens[b] as usize;
        let table = &batch.block_tables[b * batch.max_blocks_per_seq..][..batch.max_blocks_per_seq];
        for (i, t) in (q0..q1).enumerate() {
            let p = len - (q1 - q0) + i;
            let lo = params
                .sliding_window
                .map_or(0, |w| (p + 1).saturating_sub(w));
            for hh in 0..h {
                let kvh = hh / group;
                let (mut keys, mut values) = (Vec::new(), Vec::new());
                for j in lo..=p {
                    let (blk, off) = (table[j / s.block_size] as usize, j % s.block_size);
                    for dd in 0..d {
                        keys.push(cache.key_at(blk, off, kvh, dd));
                        values.push(cache.value_at(blk, off, kvh, dd));
                    }
                }
                let row = (t * h + hh) * d;
                let o = attend_row(q.dtype, &qv[row..row + d], &keys, &values, params);
                out[row..row + d].copy_from_slice(&o);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The cases.

/// One paged-attention case.
#[derive(Clone, Debug)]
struct PagedCase {
    name: String,
    /// Dtype of `q` and `out`.
    dtype: DType,
    /// Dtype of the cache.
    cache: DType,
    head_dim: usize,
    block_size: usize,
    num_kv_heads: usize,
    /// Query heads per KV head.
    group: usize,
    k_scale: f32,
    v_scale: f32,
    /// `(query_len, seq_len)` per sequence.
    seqs: Vec<(usize, usize)>,
    window: Option<usize>,
    softcap: Option<f32>,
    /// Standard deviation of `q` (scores have about this spread).
    q_std: f64,
    /// `Some(n)`: an `n`-block cache used only at its highest ids.
    large: Option<usize>,
    seed: u64,
}

/// A case with the defaults: the mixed batch, no window or soft-cap, unit
/// FP8 scales unless the cache is FP8.
#[allow(clippy::too_many_arguments)]
fn base(
    dtype: DType,
    cache: DType,
    head_dim: usize,
    block_size: usize,
    num_kv_heads: usize,
    group: usize,
    suffix: &str,
    seed: u64,
) -> PagedCase {
    let (k_scale, v_scale) = if cache == F8E4M3 {
        (0.5, 2.0)
    } else {
        (1.0, 1.0)
    };
    let cache_name = if cache == dtype {
        String::new()
    } else {
        format!("_{}_cache", dt(cache))
    };
    PagedCase {
        name: format!(
            "{}{cache_name}_hd{head_dim}_bs{block_size}_gqa{group}_{suffix}",
            dt(dtype)
        ),
        dtype,
        cache,
        head_dim,
        block_size,
        num_kv_heads,
        group,
        k_scale,
        v_scale,
        seqs: mixed_batch(block_size),
        window: None,
        softcap: None,
        q_std: 1.5,
        large: None,
        seed,
    }
}

fn paged_cases() -> Vec<PagedCase> {
    let mut v = Vec::new();
    let mut seed = 0x9a6e_0000u64;
    let mut next = || {
        seed += 1;
        seed
    };
    let m = "mixed_permuted";
    // The grid: head dims × block sizes × GQA × dtypes, mixed batches.
    v.push(base(F32, F32, 64, 16, 2, 1, m, next()));
    v.push(base(F16, F16, 80, 16, 2, 3, m, next()));
    v.push(base(BF16, BF16, 96, 32, 1, 4, m, next()));
    v.push(base(F16, F16, 128, 16, 2, 4, m, next()));
    v.push(base(F32, F32, 128, 32, 1, 8, m, next()));
    v.push(base(BF16, BF16, 256, 16, 2, 1, m, next()));
    v.push(base(F32, F16, 256, 32, 1, 3, m, next()));
    v.push(base(F32, BF16, 80, 32, 2, 4, m, next()));
    v.push(base(F16, F8E4M3, 128, 16, 2, 4, m, next()));
    let mut c = base(BF16, F8E4M3, 64, 32, 1, 8, m, next());
    (c.k_scale, c.v_scale) = (0.25, 1.5);
    v.push(c);
    let mut c = base(F32, F8E4M3, 96, 16, 2, 1, m, next());
    (c.k_scale, c.v_scale) = (2.0, 0.5);
    v.push(c);
    // Sliding window and soft-cap.
    let mut c = base(F32, F32, 64, 16, 1, 4, "window20_mixed", next());
    c.window = Some(20);
    v.push(c);
    let mut c = base(F16, F16, 128, 32, 2, 1, "window37_mixed", next());
    c.window = Some(37);
    v.push(c);
    let mut c = base(F32, F32, 128, 16, 2, 4, "softcap5_mixed", next());
    (c.softcap, c.q_std) = (Some(5.0), 4.0);
    v.push(c);
    let mut c = base(BF16, BF16, 64, 16, 1, 8, "window24_softcap8_mixed", next());
    (c.window, c.softcap, c.q_std) = (Some(24), Some(8.0), 4.0);
    v.push(c);
    // Pure decode and pure prefill batches.
    let mut c = base(F16, F16, 128, 16, 2, 4, "decode_only", next());
    c.seqs = vec![(1, 37), (1, 16), (1, 1), (1, 100), (1, 33)];
    v.push(c);
    let mut c = base(F32, F32, 64, 32, 2, 1, "prefill_only", next());
    c.seqs = vec![(45, 45), (16, 16), (3, 3)];
    v.push(c);
    // Long contexts: several 512-token partitions, few heads.
    let mut c = base(F32, F32, 128, 16, 1, 4, "long_context", next());
    c.seqs = vec![(1, 700), (3, 1100), (1, 513), (8, 1030), (1, 2049)];
    v.push(c);
    let mut c = base(F16, F8E4M3, 64, 32, 1, 8, "long_context", next());
    c.seqs = vec![(1, 1300), (3, 600)];
    v.push(c);
    // A large cache used only at its highest block ids.
    let mut c = base(F16, F16, 64, 16, 1, 2, "8192_blocks_high_ids", next());
    (c.seqs, c.large) = (vec![(1, 100), (9, 200), (1, 17)], Some(8192));
    v.push(c);
    v
}

fn run(h: &Harness<'_>, c: &PagedCase, layout: KvLayout) -> CaseResult {
    let bs = c.block_size;
    let needed = blocks_needed(&c.seqs, bs);
    let num_blocks = c.large.unwrap_or(needed + 7);
    let spec = KvCacheSpec {
        num_blocks,
        block_size: bs,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        dtype: c.cache,
        layout,
    };
    if let Err(m) = spec.validate() {
        return Ok(Outcome::Skip(m));
    }
    let num_heads = c.num_kv_heads * c.group;
    let params = AttentionParams {
        scale: 1.0 / (c.head_dim as f32).sqrt(),
        sliding_window: c.window,
        softcap: c.softcap,
    };
    let desc = OpDesc::PagedAttention {
        dtype: c.dtype,
        num_heads,
        cache: spec,
        sliding_window: c.window.is_some(),
        softcap: c.softcap.is_some(),
    };
    if let Some(skip) = refused(h, &desc) {
        return Ok(skip);
    }
    let mut rng = Rng::new(c.seed);
    let pool = match c.large {
        Some(n) => high_pool(&mut rng, n, needed + 4),
        None => block_pool(&mut rng, num_blocks),
    };
    let lens: Vec<usize> = c.seqs.iter().map(|&(_, l)| l).collect();
    let filled = fill_cache(&mut rng, spec, c.k_scale, c.v_scale, &lens, &pool)?;
    let batch = build_batch(&c.seqs, &filled.blocks, bs)?;
    let q = random(
        &mut rng,
        c.dtype,
        &[batch.num_tokens(), num_heads, c.head_dim],
        c.q_std,
    );
    let cache = upload_cache(h, &filled.host)?;
    let got = run_paged(h, &cache, &q, &batch, params)?;
    let want = reference_paged(&q, &filled.host, &batch, &params);
    expect_attention(&got, &want, || {
        (
            reference_paged(&widened(&q), &filled.host, &batch, &params).to_f64(),
            naive_paged(&q, &filled.host, &batch, &params),
        )
    })?;
    Ok(Outcome::Pass)
}

/// The paged-attention cases.
pub(super) fn cases() -> Vec<Case> {
    paged_cases()
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            case(name, move |h| {
                for_each_layout(h, c.cache, |l| run(h, &c, l))
            })
        })
        .collect()
}
