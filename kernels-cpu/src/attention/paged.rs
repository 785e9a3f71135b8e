//! Paged attention: ragged queries (decode and chunked prefill mixed)
//! against the NHD KV cache `[num_blocks, block_size, num_kv_heads,
//! head_dim]`.
//!
//! The metadata is checked before anything is read through it: every block
//! id a sequence uses lies inside the cache, `seq_len ≥ query_len`, and
//! `seq_len` fits the block table. Keys are read only at positions
//! `< seq_len`, so slots past a sequence's end are never touched.

use half::{bf16, f16};
use std::ops::Range;

use hal::{DType, HalError, KvCacheSpec, PagedAttentionArgs, Result};

use super::softmax::{Geometry, KvRows};
use super::vector::{E4m3, KvElem};
use super::{dispatch, AnyLoad, Call, QueryRow};
use crate::CpuBackend;

const OP: &str = "paged_attention";

/// One sequence's keys and values in the cache.
struct PagedRows<'a, E> {
    key: &'a [E],
    value: &'a [E],
    /// The sequence's row of `block_tables` (validated entries only).
    table: &'a [i32],
    block_size: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl<E: KvElem> KvRows<E> for PagedRows<'_, E> {
    #[inline(always)]
    fn gather<'s>(
        &'s self,
        h: usize,
        js: Range<usize>,
        keys: &mut [&'s [E]],
        values: &mut [&'s [E]],
    ) {
        let (bs, d) = (self.block_size, self.head_dim);
        let stride = self.num_kv_heads * d;
        let (mut j, mut i) = (js.start, 0);
        // Block by block: one table lookup per block, then `stride` apart.
        while j < js.end {
            let (block, off) = (self.table[j / bs] as usize, j % bs);
            let n = (bs - off).min(js.end - j);
            let base = (block * bs + off) * stride + h * d;
            let span = base..base + (n - 1) * stride + d;
            let (k, v) = (&self.key[span.clone()], &self.value[span]);
            for (kr, vr) in k.chunks(stride).zip(v.chunks(stride)) {
                keys[i] = &kr[..d];
                values[i] = &vr[..d];
                i += 1;
            }
            j += n;
        }
    }
}

fn invalid(msg: String) -> HalError {
    HalError::invalid("cpu", OP, msg)
}

/// The query rows of a batch, after checking the metadata against the
/// cache. Returns the rows and whether every sequence decodes one token.
#[allow(clippy::too_many_arguments)]
fn query_rows(
    query_start_loc: &[i32],
    seq_lens: &[i32],
    block_tables: &[i32],
    max_blocks: usize,
    spec: &KvCacheSpec,
    num_tokens: usize,
    window: Option<usize>,
) -> Result<(Vec<QueryRow>, bool)> {
    let mut rows = Vec::with_capacity(num_tokens);
    let mut decode = true;
    let first = query_start_loc.first().copied().unwrap_or(0);
    if first < 0 {
        return Err(invalid(format!("query_start_loc[0] = {first} is negative")));
    }
    for (b, &len) in seq_lens.iter().enumerate() {
        let (q0, q1) = (query_start_loc[b], query_start_loc[b + 1]);
        if q1 < q0 || q1 as usize > num_tokens {
            return Err(invalid(format!(
                "query_start_loc must not decrease and stay within num_tokens {num_tokens}: \
                 sequence {b} spans {q0}..{q1}"
            )));
        }
        let (q0, q1) = (q0 as usize, q1 as usize);
        let qlen = q1 - q0;
        if len < 0 || (len as usize) < qlen {
            return Err(invalid(format!(
                "sequence {b}: seq_len {len} is smaller than its query_len {qlen} \
                 (seq_len counts the cached tokens including the new ones)"
            )));
        }
        let len = len as usize;
        let blocks = len.div_ceil(spec.block_size);
        if blocks > max_blocks {
            return Err(invalid(format!(
                "sequence {b}: seq_len {len} needs {blocks} blocks of {} but block_tables \
                 has {max_blocks} columns",
                spec.block_size
            )));
        }
        let table = &block_tables[b * max_blocks..][..blocks];
        if let Some(bad) = table
            .iter()
            .find(|&&blk| blk < 0 || blk as usize >= spec.num_blocks)
        {
            return Err(invalid(format!(
                "sequence {b}: block id {bad} lies outside the cache's 0..{} blocks",
                spec.num_blocks
            )));
        }
        decode &= qlen <= 1;
        for (i, token) in (q0..q1).enumerate() {
            let p = len - qlen + i;
            let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
            rows.push(QueryRow {
                token,
                seq: b,
                lo,
                hi: p + 1,
            });
        }
    }
    Ok((rows, decode))
}

/// Run [`PagedAttentionArgs`] on the CPU.
pub(super) fn run(cpu: &CpuBackend, args: PagedAttentionArgs<'_>) -> Result<()> {
    let (num_tokens, num_heads, _) = args.validate("cpu")?;
    cpu.check(&args.desc())?;
    let access = cpu.access();
    let spec = args.cache.spec;
    let query_start_loc: &[i32] = access.read(OP, &args.meta.query_start_loc)?;
    let seq_lens: &[i32] = access.read(OP, &args.meta.seq_lens)?;
    let block_tables: &[i32] = access.read(OP, &args.meta.block_tables)?;
    let max_blocks = args.meta.block_tables.layout.shape()[1];
    let (rows, decode) = query_rows(
        query_start_loc,
        seq_lens,
        block_tables,
        max_blocks,
        &spec,
        num_tokens,
        args.params.sliding_window,
    )?;
    let fp8 = spec.dtype == DType::F8E4M3;
    let d = spec.head_dim;
    let call = Call {
        op: OP,
        dtype: args.q.dtype,
        q: access.read_bytes(OP, &args.q)?,
        num_kv_heads: spec.num_kv_heads,
        geometry: Geometry {
            group: num_heads / spec.num_kv_heads,
            d,
            dp: Geometry::padded(d),
            score_scale: args.params.scale * if fp8 { args.cache.k_scale } else { 1.0 },
            softcap: args.params.softcap,
            v_scale: if fp8 { args.cache.v_scale } else { 1.0 },
        },
        rows,
        decode,
    };
    let key = &access.buffer_bytes(OP, &args.cache.key)?[..spec.bytes()];
    let value = &access.buffer_bytes(OP, &args.cache.value)?[..spec.bytes()];
    let out: &mut [u8] = access.write(OP, args.out)?;
    let tables = Tables {
        block_tables,
        max_blocks,
        spec,
        num_seqs: seq_lens.len(),
    };
    match spec.dtype {
        DType::F32 => run_typed::<f32>(cpu, &call, &tables, key, value, out),
        DType::F16 => run_typed::<f16>(cpu, &call, &tables, key, value, out),
        DType::BF16 => run_typed::<bf16>(cpu, &call, &tables, key, value, out),
        DType::F8E4M3 => run_typed::<E4m3>(cpu, &call, &tables, key, value, out),
        other => Err(invalid(format!("KV cache dtype {other} is not supported"))),
    }
}

/// The block tables and the cache they index.
struct Tables<'a> {
    block_tables: &'a [i32],
    max_blocks: usize,
    spec: KvCacheSpec,
    num_seqs: usize,
}

fn run_typed<E: AnyLoad>(
    cpu: &CpuBackend,
    call: &Call<'_>,
    t: &Tables<'_>,
    key: &[u8],
    value: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let cast = |b| {
        bytemuck::try_cast_slice::<u8, E>(b)
            .map_err(|e| invalid(format!("misaligned KV cache: {e:?}")))
    };
    let (key, value) = (cast(key)?, cast(value)?);
    let sources: Vec<PagedRows<'_, E>> = (0..t.num_seqs)
        .map(|b| PagedRows {
            key,
            value,
            table: &t.block_tables[b * t.max_blocks..][..t.max_blocks],
            block_size: t.spec.block_size,
            num_kv_heads: t.spec.num_kv_heads,
            head_dim: t.spec.head_dim,
        })
        .collect();
    dispatch::<E, PagedRows<'_, E>>(cpu, call, &sources, out)
}
