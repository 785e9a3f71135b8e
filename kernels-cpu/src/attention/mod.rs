//! Attention on the CPU: paged attention against the KV cache ([`paged`])
//! and dense varlen flash attention ([`flash`]), both reduced to the same
//! work: each query token attends to a range of its sequence's keys, with
//! the `num_heads / num_kv_heads` query heads of a KV head processed
//! together ([`softmax`], micro-kernels in [`tile`], SIMD levels in
//! [`vector`]).
//!
//! Work items ([`Plan`]) are: one decode token over every KV head (decode
//! batches); one KV head over a block of consecutive tokens of a sequence
//! (prefill, mixed batches); or one (token, KV head, 512-key partition),
//! folded afterwards (split-K, when too few rows would leave threads idle on
//! long contexts). They run on the backend's rayon pool. Which items exist
//! and which thread runs them never changes a row's arithmetic (see
//! [`softmax`]), so results are batch-invariant.

mod flash;
mod paged;
pub(crate) mod softmax;
mod tile;
pub(crate) mod vector;

use hal::{DType, HalError, OpDesc, Result, Unsupported};
use rayon::prelude::*;

use crate::{convert, CpuBackend, Isa};
use softmax::{
    finish, fold, partitions, Block, Geometry, Kernels, KvRows, Scratch, State, PARTITION,
};
use vector::{Load, Scalar};

/// Which descriptions this module runs: everything the capabilities allow
/// (any head dim, any block size, NHD caches of every KV dtype).
pub(crate) fn supports(op: &OpDesc) -> std::result::Result<(), Unsupported> {
    match op {
        OpDesc::PagedAttention { .. } | OpDesc::FlashAttention { .. } => Ok(()),
        _ => Err(Unsupported::new(op.name(), "not an attention op")),
    }
}

impl hal::PagedAttention for CpuBackend {
    fn paged_attention(&self, args: hal::PagedAttentionArgs<'_>) -> Result<()> {
        paged::run(self, args)
    }
}

impl hal::FlashAttention for CpuBackend {
    fn flash_attention(&self, args: hal::FlashAttentionArgs<'_>) -> Result<()> {
        flash::run(self, args)
    }
}

/// An element type every SIMD level can load.
#[cfg(target_arch = "x86_64")]
pub(crate) trait AnyLoad: Load<Scalar> + Load<vector::Avx2> + Load<vector::Avx512> {}
#[cfg(target_arch = "x86_64")]
impl<E: Load<Scalar> + Load<vector::Avx2> + Load<vector::Avx512>> AnyLoad for E {}
/// An element type every SIMD level can load.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) trait AnyLoad: Load<Scalar> {}
#[cfg(not(target_arch = "x86_64"))]
impl<E: Load<Scalar>> AnyLoad for E {}

/// One query token's attention: keys `lo..hi` (positions within its
/// sequence) of sequence `seq`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueryRow {
    /// Row of `q` and `out`.
    pub token: usize,
    /// Index of the sequence's key source.
    pub seq: usize,
    /// First visible key.
    pub lo: usize,
    /// One past the last visible key (`lo ≥ hi`: none).
    pub hi: usize,
}

impl QueryRow {
    fn keys(&self) -> std::ops::Range<usize> {
        self.lo..self.hi.max(self.lo)
    }
}

/// One attention call, ready to run.
pub(crate) struct Call<'a> {
    /// Op name for errors.
    pub op: &'static str,
    /// Dtype of `q` and `out`.
    pub dtype: DType,
    /// Queries `[num_tokens, num_heads, head_dim]`, raw bytes.
    pub q: &'a [u8],
    /// KV heads.
    pub num_kv_heads: usize,
    /// Sizes and scales.
    pub geometry: Geometry,
    /// Every token that belongs to a sequence; the others get zero rows.
    pub rows: Vec<QueryRow>,
    /// All rows are single-token decodes: one work item per token covering
    /// every KV head reads each cache block front to back.
    pub decode: bool,
}

/// Run `call` on the CPU's SIMD level, writing `out` (`[num_tokens,
/// num_heads, head_dim]` bytes of `call.dtype`).
pub(crate) fn dispatch<E: AnyLoad, R: KvRows<E>>(
    cpu: &CpuBackend,
    call: &Call<'_>,
    sources: &[R],
    out: &mut [u8],
) -> Result<()> {
    match cpu.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => execute::<vector::Avx512, E, R>(cpu, call, sources, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => execute::<vector::Avx2, E, R>(cpu, call, sources, out),
        _ => execute::<Scalar, E, R>(cpu, call, sources, out),
    }
}

/// How the rows are cut into work items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// One item per token covering every KV head (decode batches): each
    /// item reads its sequence's cache blocks front to back.
    Wide,
    /// One item per (KV head, block of consecutive tokens of a sequence),
    /// KV-head-major: the tokens of a block share every K / V load, and a
    /// thread keeps one head's keys in cache across a prefill.
    PerHead,
    /// One item per (token, KV head, partition), folded afterwards.
    SplitK,
}

fn plan(call: &Call<'_>, threads: usize) -> Plan {
    let items = call.rows.len() * call.num_kv_heads;
    let long = call.rows.iter().any(|r| r.keys().len() > PARTITION);
    if long && items < 4 * threads {
        Plan::SplitK
    } else if call.decode && call.rows.len() >= 4 * threads {
        Plan::Wide
    } else {
        Plan::PerHead
    }
}

/// Query tokens per [`Plan::PerHead`] block: about 16 query rows share each
/// K / V load.
fn block_tokens(group: usize) -> usize {
    16usize.div_ceil(group.max(1)).clamp(1, 16)
}

fn internal(op: &'static str, msg: &str) -> HalError {
    HalError::device("cpu", op, format!("internal error: {msg}"))
}

/// Convert the queries of `tokens` for KV heads `kv` into `dst`, rows in
/// [`Block`] order (padding left zero).
fn load_q(
    isa: Isa,
    call: &Call<'_>,
    tokens: &[usize],
    kv: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let g = &call.geometry;
    let es = call.dtype.bytes_for(1);
    let h = call.num_kv_heads * g.group;
    let mut rows = dst.chunks_exact_mut(g.dp);
    for k in kv {
        for &t in tokens {
            let src = &call.q[(t * h + k * g.group) * g.d * es..][..g.group * g.d * es];
            for (head, q) in src.chunks_exact(g.d * es).zip(rows.by_ref()) {
                convert::to_f32(isa, call.dtype, head, &mut q[..g.d]);
            }
        }
    }
}

/// One work item: tokens `rows` of `call.rows` (consecutive tokens of one
/// sequence), KV heads `kv`, and each token's output chunk.
struct Item<'o> {
    rows: std::ops::Range<usize>,
    kv: std::ops::Range<usize>,
    out: Vec<&'o mut [u8]>,
}

fn execute<S: Kernels, E: Load<S>, R: KvRows<E>>(
    cpu: &CpuBackend,
    call: &Call<'_>,
    sources: &[R],
    out: &mut [u8],
) -> Result<()> {
    let g = call.geometry;
    let hk = call.num_kv_heads;
    let plan = plan(call, cpu.threads());
    let kv_width = if plan == Plan::Wide { hk } else { 1 };
    let chunk = kv_width * g.group * g.d * call.dtype.bytes_for(1);
    if chunk == 0 {
        return Ok(());
    }
    let per_token = hk / kv_width;
    let mut slots: Vec<Option<&mut [u8]>> = out.chunks_mut(chunk).map(Some).collect();
    // Runs of consecutive tokens of one sequence, at most `n` long.
    let runs = |n: usize| {
        let mut v: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, r) in call.rows.iter().enumerate() {
            match v.last_mut() {
                Some(last)
                    if last.len() < n
                        && call.rows[last.end - 1].seq == r.seq
                        && call.rows[last.end - 1].token + 1 == r.token =>
                {
                    last.end = i + 1
                }
                _ => v.push(i..i + 1),
            }
        }
        v
    };
    let tokens = if plan == Plan::PerHead {
        block_tokens(g.group)
    } else {
        1
    };
    let blocks = runs(tokens);
    let mut items = Vec::with_capacity(blocks.len() * per_token);
    for kv in (0..hk).step_by(kv_width) {
        for b in &blocks {
            let mut out = Vec::with_capacity(b.len());
            for r in &call.rows[b.clone()] {
                let slot = slots
                    .get_mut(r.token * per_token + kv / kv_width)
                    .and_then(Option::take);
                out.push(slot.ok_or_else(|| internal(call.op, "a token is covered twice"))?);
            }
            items.push(Item {
                rows: b.clone(),
                kv: kv..kv + kv_width,
                out,
            });
        }
    }
    // Tokens outside every sequence: zeros, as the reference leaves them.
    for s in slots.into_iter().flatten() {
        s.fill(0);
    }
    let isa = cpu.isa();
    cpu.pool().install(|| {
        if plan == Plan::SplitK {
            return split_k::<S, E, R>(isa, call, sources, items);
        }
        items.into_par_iter().for_each_init(
            || (Scratch::new(kv_width, tokens, &g), Vec::new(), Vec::new()),
            |(s, toks, keys), item| {
                toks.clear();
                keys.clear();
                for r in &call.rows[item.rows.clone()] {
                    toks.push(r.token);
                    keys.push(r.keys());
                }
                load_q(isa, call, toks, item.kv.clone(), &mut s.q);
                let block = Block {
                    kv: item.kv.clone(),
                    keys,
                };
                let seq = call.rows[item.rows.start].seq;
                // SAFETY: the backend only runs levels its CPU supports
                // (`CpuBackend::with` checks), and the sources were
                // validated to hold every key of the rows' ranges.
                unsafe { S::rows::<E, R>(&sources[seq], &block, &g, s) };
                let n = item.kv.len() * keys.len() * g.group * g.d;
                finish(&s.row, &g, &mut s.out[..n]);
                let per = item.kv.len() * g.group * g.d;
                for (i, dst) in item.out.into_iter().enumerate() {
                    convert::from_f32(isa, call.dtype, &s.out[i * per..][..per], dst);
                }
            },
        );
        Ok(())
    })
}

/// Split-K: every (token, KV head, partition) in parallel, then each row's
/// partitions folded in order — the same fold [`Kernels::rows`] does.
fn split_k<S: Kernels, E: Load<S>, R: KvRows<E>>(
    isa: Isa,
    call: &Call<'_>,
    sources: &[R],
    items: Vec<Item<'_>>,
) -> Result<()> {
    let g = call.geometry;
    let n = g.group;
    let stride = n * (g.dp + 2);
    // (row, KV head, partition index), and where each item's run starts.
    let mut parts = Vec::new();
    let mut first = Vec::with_capacity(items.len() + 1);
    for it in &items {
        first.push(parts.len());
        let r = call.rows[it.rows.start];
        let ks = r.keys();
        let k0 = ks.start / PARTITION;
        parts.extend((0..partitions(ks).count()).map(|k| (r, it.kv.start, k0 + k)));
    }
    first.push(parts.len());
    let mut states = vec![0f32; parts.len() * stride];
    parts
        .par_iter()
        .zip(states.par_chunks_mut(stride))
        .for_each_init(
            || Scratch::new(1, 1, &g),
            |s, (&(r, kv, k), dst)| {
                load_q(isa, call, &[r.token], kv..kv + 1, &mut s.q);
                let keys = [r.keys()];
                let block = Block {
                    kv: kv..kv + 1,
                    keys: &keys,
                };
                // SAFETY: as in `execute`.
                unsafe { S::partition::<E, R>(&sources[r.seq], &block, k, &g, s) };
                let (m, rest) = dst.split_at_mut(n);
                let (l, acc) = rest.split_at_mut(n);
                m.copy_from_slice(&s.part.m[..n]);
                l.copy_from_slice(&s.part.l[..n]);
                acc.copy_from_slice(&s.part.acc[..n * g.dp]);
            },
        );
    let states = &states;
    items.into_par_iter().enumerate().for_each_init(
        || (State::default(), State::default(), vec![0f32; n * g.d]),
        |(row, part, out), (i, item)| {
            let load = |st: &mut State, k: usize| {
                let src = &states[k * stride..][..stride];
                st.m.clear();
                st.m.extend_from_slice(&src[..n]);
                st.l.clear();
                st.l.extend_from_slice(&src[n..2 * n]);
                st.acc.clear();
                st.acc.extend_from_slice(&src[2 * n..]);
            };
            let range = first[i]..first[i + 1];
            if range.is_empty() {
                out.fill(0.0);
            } else {
                load(row, range.start);
                for k in range.start + 1..range.end {
                    load(part, k);
                    fold(row, part, 0..n, g.dp);
                }
                finish(row, &g, out);
            }
            for dst in item.out {
                convert::from_f32(isa, call.dtype, out, dst);
            }
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests;
