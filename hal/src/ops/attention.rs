//! Attention: paged (against the KV cache) and dense varlen (FlashAttention-2 API).

use crate::check::{Check, ACTIVATIONS};
use crate::ops::kv_cache::check_cache;
use crate::{
    Backend, DType, HostTensor, KvCache, KvCacheSpec, OpDesc, Result, Tensor, View, ViewMut,
};

/// Scalar parameters shared by both attention ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    /// Multiplies `q · k` (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// A query at position `p` sees keys `j` with `p − j < window` only.
    pub sliding_window: Option<usize>,
    /// Logit soft-cap: scores become `cap · tanh(score / cap)` (after `scale`).
    pub softcap: Option<f32>,
}

impl AttentionParams {
    /// `scale = 1 / sqrt(head_dim)`, no window, no soft-cap.
    pub fn for_head_dim(head_dim: usize) -> Self {
        AttentionParams {
            scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window: None,
            softcap: None,
        }
    }
}

/// The ragged batch metadata every attention backend shares (vLLM layout),
/// as device tensors.
///
/// Sequence `b` has `q_b = query_start_loc[b+1] − query_start_loc[b]` new
/// tokens and `L_b = seq_lens[b]` tokens in the cache including them; its
/// query token `i` sits at position `L_b − q_b + i` and attends causally to
/// cache positions `0..=that`. Position `j` lives in physical block
/// `block_tables[b, j / block_size]` at offset `j % block_size`.
#[derive(Clone, Debug)]
pub struct AttentionMetadata<'a> {
    /// I32 `[batch + 1]`, starts at 0, non-decreasing.
    pub query_start_loc: View<'a>,
    /// I32 `[batch]`.
    pub seq_lens: View<'a>,
    /// I32 `[batch, max_blocks_per_seq]`.
    pub block_tables: View<'a>,
    /// `max_b q_b`.
    pub max_query_len: usize,
    /// `max_b L_b`.
    pub max_seq_len: usize,
}

/// Paged attention of ragged queries against the KV cache: decode (one
/// query token per sequence), chunked prefill and prefix-cache hits (several,
/// causal within the sequence) mixed in one call. GQA/MQA: query head `h`
/// reads KV head `h / (num_heads / num_kv_heads)`.
#[derive(Debug)]
pub struct PagedAttentionArgs<'a> {
    /// Queries `[num_tokens, num_heads, head_dim]`.
    pub q: View<'a>,
    /// The cache (already holding the new tokens' K and V).
    pub cache: &'a KvCache,
    /// Batch metadata.
    pub meta: AttentionMetadata<'a>,
    /// Scale, window, soft-cap.
    pub params: AttentionParams,
    /// Output `[num_tokens, num_heads, head_dim]`, dtype of `q`.
    pub out: ViewMut<'a>,
}

fn check_meta(c: &Check<'_>, meta: &AttentionMetadata<'_>, num_tokens: usize) -> Result<usize> {
    c.view("query_start_loc", &meta.query_start_loc, &[DType::I32])?;
    c.view("seq_lens", &meta.seq_lens, &[DType::I32])?;
    c.view("block_tables", &meta.block_tables, &[DType::I32])?;
    let b = c.rank("seq_lens", &meta.seq_lens, 1)?[0];
    c.shape("query_start_loc", &meta.query_start_loc, &[b + 1])?;
    let bt = c.rank("block_tables", &meta.block_tables, 2)?;
    c.ensure(bt[0] == b, || {
        format!("block_tables has {} rows, expected batch {b}", bt[0])
    })?;
    c.ensure(meta.max_query_len <= num_tokens, || {
        format!(
            "max_query_len {} exceeds num_tokens {num_tokens}",
            meta.max_query_len
        )
    })?;
    Ok(b)
}

impl PagedAttentionArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(num_tokens, num_heads, batch)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize, usize)> {
        let c = Check::new(backend, "paged_attention");
        let s = self.cache.spec;
        check_cache(&c, self.cache)?;
        c.view("q", &self.q, ACTIVATIONS)?;
        c.view("out", &self.out, &[self.q.dtype])?;
        let (t, h) = match c.rank("q", &self.q, 3)? {
            [t, h, d] => {
                c.ensure(*d == s.head_dim, || {
                    format!("q head_dim {d} != cache head_dim {}", s.head_dim)
                })?;
                (*t, *h)
            }
            _ => unreachable!("rank checked"),
        };
        c.ensure(h > 0 && h % s.num_kv_heads == 0, || {
            format!(
                "num_heads {h} is not a multiple of num_kv_heads {}",
                s.num_kv_heads
            )
        })?;
        c.shape("out", &self.out, &[t, h, s.head_dim])?;
        let b = check_meta(&c, &self.meta, t)?;
        let max_blocks = self.meta.block_tables.layout.shape()[1];
        c.ensure(self.meta.max_seq_len <= max_blocks * s.block_size, || {
            format!(
                "max_seq_len {} exceeds block_tables capacity {} × {}",
                self.meta.max_seq_len, max_blocks, s.block_size
            )
        })?;
        Ok((t, h, b))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::PagedAttention {
            dtype: self.q.dtype,
            num_heads: self.q.layout.shape().get(1).copied().unwrap_or(0),
            cache: self.cache.spec,
            sliding_window: self.params.sliding_window.is_some(),
            softcap: self.params.softcap.is_some(),
        }
    }
}

/// Dense varlen attention with the FlashAttention-2 API (prefill without a
/// cache, and kernel benchmarks). Sequence `b`'s queries are rows
/// `cu_seqlens_q[b]..cu_seqlens_q[b+1]`, its keys rows
/// `cu_seqlens_k[b]..cu_seqlens_k[b+1]`. Causal masking is aligned to the
/// bottom-right: query `i` of `Lq` sees key `j` of `Lk` iff `j ≤ i + Lk − Lq`.
/// A query that sees no key (causal with `Lq > Lk`) gets a row of zeros.
#[derive(Debug)]
pub struct FlashAttentionArgs<'a> {
    /// Queries `[total_q, num_heads, head_dim]`.
    pub q: View<'a>,
    /// Keys `[total_k, num_kv_heads, head_dim]`.
    pub k: View<'a>,
    /// Values `[total_k, num_kv_heads, head_dim]`.
    pub v: View<'a>,
    /// I32 `[batch + 1]`.
    pub cu_seqlens_q: View<'a>,
    /// I32 `[batch + 1]`.
    pub cu_seqlens_k: View<'a>,
    /// Longest query sequence.
    pub max_seqlen_q: usize,
    /// Longest key sequence.
    pub max_seqlen_k: usize,
    /// Causal mask (bottom-right aligned).
    pub causal: bool,
    /// Scale, window, soft-cap.
    pub params: AttentionParams,
    /// Output `[total_q, num_heads, head_dim]`, dtype of `q`.
    pub out: ViewMut<'a>,
}

impl FlashAttentionArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(total_q, total_k, batch)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize, usize)> {
        let c = Check::new(backend, "flash_attention");
        c.view("q", &self.q, ACTIVATIONS)?;
        c.view("k", &self.k, &[self.q.dtype])?;
        c.view("v", &self.v, &[self.q.dtype])?;
        c.view("out", &self.out, &[self.q.dtype])?;
        c.view("cu_seqlens_q", &self.cu_seqlens_q, &[DType::I32])?;
        c.view("cu_seqlens_k", &self.cu_seqlens_k, &[DType::I32])?;
        let (tq, h, d) = match c.rank("q", &self.q, 3)? {
            [a, b, c] => (*a, *b, *c),
            _ => unreachable!("rank checked"),
        };
        let (tk, hk) = match c.rank("k", &self.k, 3)? {
            [a, b, _] => (*a, *b),
            _ => unreachable!("rank checked"),
        };
        c.shape("k", &self.k, &[tk, hk, d])?;
        c.shape("v", &self.v, &[tk, hk, d])?;
        c.shape("out", &self.out, &[tq, h, d])?;
        c.ensure(hk > 0 && h % hk == 0, || {
            format!("num_heads {h} is not a multiple of num_kv_heads {hk}")
        })?;
        let b = c.rank("cu_seqlens_q", &self.cu_seqlens_q, 1)?[0];
        c.ensure(b >= 1, || {
            "cu_seqlens_q must have at least one entry".into()
        })?;
        c.shape("cu_seqlens_k", &self.cu_seqlens_k, &[b])?;
        c.ensure(self.max_seqlen_q <= tq && self.max_seqlen_k <= tk, || {
            "max_seqlen_q / max_seqlen_k exceed the token counts".into()
        })?;
        Ok((tq, tk, b - 1))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        let q = self.q.layout.shape();
        OpDesc::FlashAttention {
            dtype: self.q.dtype,
            num_heads: q.get(1).copied().unwrap_or(0),
            num_kv_heads: self.k.layout.shape().get(1).copied().unwrap_or(0),
            head_dim: q.get(2).copied().unwrap_or(0),
            causal: self.causal,
            sliding_window: self.params.sliding_window.is_some(),
            softcap: self.params.softcap.is_some(),
        }
    }
}

/// Paged attention.
pub trait PagedAttention: Backend {
    /// Run [`PagedAttentionArgs`]. Default: unsupported.
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("paged_attention"))
    }
}

/// Dense varlen flash attention.
pub trait FlashAttention: Backend {
    /// Run [`FlashAttentionArgs`]. Default: unsupported.
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("flash_attention"))
    }
}

/// The ragged batch metadata on the host, as the engine builds it each step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AttentionBatch {
    /// `[batch + 1]`.
    pub query_start_loc: Vec<i32>,
    /// `[batch]`.
    pub seq_lens: Vec<i32>,
    /// `[batch * max_blocks_per_seq]`, unused entries 0.
    pub block_tables: Vec<i32>,
    /// Columns of `block_tables`.
    pub max_blocks_per_seq: usize,
    /// `[num_tokens]`: cache slot of each new token.
    pub slot_mapping: Vec<i64>,
}

/// One sequence of a step, for [`AttentionBatch::build`].
#[derive(Clone, Debug)]
pub struct SeqSlice<'a> {
    /// New tokens this step.
    pub query_len: usize,
    /// Tokens in the cache after this step (≥ `query_len`).
    pub seq_len: usize,
    /// Physical blocks of the sequence, in order.
    pub blocks: &'a [u32],
}

impl AttentionBatch {
    /// Build metadata and slot mapping for `seqs` with `block_size`-token blocks.
    pub fn build(seqs: &[SeqSlice<'_>], block_size: usize) -> std::result::Result<Self, String> {
        let max_blocks_per_seq = seqs
            .iter()
            .map(|s| s.blocks.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut b = AttentionBatch {
            query_start_loc: vec![0],
            max_blocks_per_seq,
            ..Default::default()
        };
        for (i, s) in seqs.iter().enumerate() {
            if s.query_len > s.seq_len || s.seq_len > s.blocks.len() * block_size {
                return Err(format!(
                    "sequence {i}: query_len {} / seq_len {} do not fit {} blocks of {block_size}",
                    s.query_len,
                    s.seq_len,
                    s.blocks.len()
                ));
            }
            let last = *b.query_start_loc.last().unwrap_or(&0);
            b.query_start_loc.push(last + s.query_len as i32);
            b.seq_lens.push(s.seq_len as i32);
            let mut row = vec![0i32; max_blocks_per_seq];
            for (j, &blk) in s.blocks.iter().enumerate() {
                row[j] = blk as i32;
            }
            b.block_tables.extend(row);
            for pos in s.seq_len - s.query_len..s.seq_len {
                let blk = s.blocks[pos / block_size] as i64;
                b.slot_mapping
                    .push(blk * block_size as i64 + (pos % block_size) as i64);
            }
        }
        Ok(b)
    }

    /// Sequences in the batch.
    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    /// New tokens in the batch.
    pub fn num_tokens(&self) -> usize {
        self.query_start_loc.last().map_or(0, |&v| v as usize)
    }

    /// Longest query.
    pub fn max_query_len(&self) -> usize {
        self.query_start_loc
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }

    /// Longest sequence.
    pub fn max_seq_len(&self) -> usize {
        self.seq_lens.iter().map(|&v| v as usize).max().unwrap_or(0)
    }

    /// Check the metadata against a cache: the engine's once-per-step
    /// validation. Kernels trust what passes.
    pub fn validate(&self, spec: &KvCacheSpec) -> std::result::Result<(), String> {
        let b = self.seq_lens.len();
        if self.query_start_loc.len() != b + 1 || self.query_start_loc.first() != Some(&0) {
            return Err("query_start_loc must have batch + 1 entries starting at 0".into());
        }
        if self.block_tables.len() != b * self.max_blocks_per_seq {
            return Err("block_tables must be batch × max_blocks_per_seq".into());
        }
        for i in 0..b {
            let q = self.query_start_loc[i + 1] - self.query_start_loc[i];
            let l = self.seq_lens[i];
            if q < 0 || l < q {
                return Err(format!(
                    "sequence {i}: query_len {q} > seq_len {l} or negative"
                ));
            }
            let blocks = (l as usize).div_ceil(spec.block_size);
            if blocks > self.max_blocks_per_seq {
                return Err(format!("sequence {i}: seq_len {l} needs {blocks} blocks"));
            }
            for j in 0..blocks {
                let blk = self.block_tables[i * self.max_blocks_per_seq + j];
                if blk < 0 || blk as usize >= spec.num_blocks {
                    return Err(format!(
                        "sequence {i}: block {blk} outside 0..{}",
                        spec.num_blocks
                    ));
                }
            }
        }
        if self.slot_mapping.len() != self.num_tokens() {
            return Err("slot_mapping must have one entry per new token".into());
        }
        if let Some(bad) = self
            .slot_mapping
            .iter()
            .find(|&&s| s >= spec.num_slots() as i64)
        {
            return Err(format!(
                "slot {bad} outside the cache's {} slots",
                spec.num_slots()
            ));
        }
        Ok(())
    }

    /// Upload to a device.
    pub fn to_device<B: Backend + ?Sized>(&self, backend: &B) -> Result<DeviceAttentionBatch> {
        let b = self.num_seqs();
        Ok(DeviceAttentionBatch {
            query_start_loc: Tensor::from_host(
                backend,
                &HostTensor::from_i32(&[b + 1], &self.query_start_loc),
            )?,
            seq_lens: Tensor::from_host(backend, &HostTensor::from_i32(&[b], &self.seq_lens))?,
            block_tables: Tensor::from_host(
                backend,
                &HostTensor::from_i32(&[b, self.max_blocks_per_seq], &self.block_tables),
            )?,
            slot_mapping: Tensor::from_host(
                backend,
                &HostTensor::from_i64(&[self.slot_mapping.len()], &self.slot_mapping),
            )?,
            max_query_len: self.max_query_len(),
            max_seq_len: self.max_seq_len(),
        })
    }
}

/// [`AttentionBatch`] on a device.
#[derive(Debug)]
pub struct DeviceAttentionBatch {
    /// I32 `[batch + 1]`.
    pub query_start_loc: Tensor,
    /// I32 `[batch]`.
    pub seq_lens: Tensor,
    /// I32 `[batch, max_blocks_per_seq]`.
    pub block_tables: Tensor,
    /// I64 `[num_tokens]`.
    pub slot_mapping: Tensor,
    /// Longest query.
    pub max_query_len: usize,
    /// Longest sequence.
    pub max_seq_len: usize,
}

impl DeviceAttentionBatch {
    /// Refill from `host`, reusing the device buffers when they are large
    /// enough (and growing them, with headroom, when not), so a decode loop
    /// does not allocate metadata every step and keeps stable buffers for
    /// step capture.
    pub fn update<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        host: &AttentionBatch,
    ) -> Result<()> {
        let b = host.num_seqs();
        self.query_start_loc.refill(
            backend,
            DType::I32,
            &[b + 1],
            &i32_bytes(&host.query_start_loc),
        )?;
        self.seq_lens
            .refill(backend, DType::I32, &[b], &i32_bytes(&host.seq_lens))?;
        self.block_tables.refill(
            backend,
            DType::I32,
            &[b, host.max_blocks_per_seq],
            &i32_bytes(&host.block_tables),
        )?;
        let slots: Vec<u8> = host
            .slot_mapping
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        self.slot_mapping
            .refill(backend, DType::I64, &[host.slot_mapping.len()], &slots)?;
        self.max_query_len = host.max_query_len();
        self.max_seq_len = host.max_seq_len();
        Ok(())
    }

    /// Views for [`PagedAttentionArgs::meta`].
    pub fn metadata(&self) -> AttentionMetadata<'_> {
        AttentionMetadata {
            query_start_loc: self.query_start_loc.view(),
            seq_lens: self.seq_lens.view(),
            block_tables: self.block_tables.view(),
            max_query_len: self.max_query_len,
            max_seq_len: self.max_seq_len,
        }
    }
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
