//! KV-cache and attention cases: `write_kv`, paged attention (decode and
//! chunked prefill against an f16 cache) and dense flash attention (prefill).
//!
//! The cache uses 16-token blocks in the device's preferred physical layout;
//! physical blocks are a random permutation (block 0 stays reserved as the
//! engine's null block), like a long-running server's cache.

use hal::{
    AttentionBatch, AttentionParams, DType, Device, FlashAttentionArgs, KvCache, KvCacheSpec,
    KvLayout, OpDesc, PagedAttentionArgs, SeqSlice, WriteKvArgs,
};

use crate::case::{Cost, Family, Op, Runner};
use crate::data;
use crate::rng::Rng;
use crate::shapes::{short, ModelShape, Workload};

/// Tokens per KV block.
pub const BLOCK_SIZE: usize = 16;
/// KV-cache dtype of every case.
pub const CACHE_DTYPE: DType = DType::F16;

/// Keys attended, summed over the `query` new tokens at the end of a
/// `context`-token sequence (causal): `Σᵢ (context − query + i + 1)`.
pub fn attended_keys(query: usize, context: usize) -> u64 {
    let (q, l) = (query as u64, context as u64);
    q * (l - q) + q * (q + 1) / 2
}

/// FLOPs of causal attention for one sequence: `4 · heads · head_dim` per
/// (query, key) pair — `q·k` and `p·v` are each a multiply-add per element.
/// Softmax is not counted.
pub fn attention_flops(heads: usize, head_dim: usize, query: usize, context: usize) -> u64 {
    4 * (heads * head_dim) as u64 * attended_keys(query, context)
}

fn spec(model: &ModelShape, num_blocks: usize, layout: KvLayout) -> KvCacheSpec {
    KvCacheSpec {
        num_blocks,
        block_size: BLOCK_SIZE,
        num_kv_heads: model.num_kv_heads,
        head_dim: model.head_dim,
        dtype: CACHE_DTYPE,
        layout,
    }
}

/// The layout a case builds its cache in: the device's first choice.
fn preferred_layout(dev: &dyn Device) -> KvLayout {
    dev.capabilities()
        .kv_layouts
        .first()
        .copied()
        .unwrap_or(KvLayout::Nhd)
}

/// A cache of `num_blocks` blocks filled with random f16 values in [-1, 1).
fn filled_cache(dev: &dyn Device, model: &ModelShape, num_blocks: usize) -> hal::Result<KvCache> {
    let spec = spec(model, num_blocks, preferred_layout(dev));
    let mut cache = dev.alloc_kv_cache(&spec, 1.0, 1.0)?;
    let chunk = data::random_bytes(CACHE_DTYPE, data::TILE_BYTES / 2, 21);
    data::fill_tiled(dev, &mut cache.key, spec.bytes(), &chunk)?;
    let chunk = data::random_bytes(CACHE_DTYPE, data::TILE_BYTES / 2, 22);
    data::fill_tiled(dev, &mut cache.value, spec.bytes(), &chunk)?;
    Ok(cache)
}

/// Paged attention: decode (`batch` sequences, one query token each) or one
/// chunked-prefill sequence.
pub struct PagedCase {
    /// Model (heads, KV heads, head dim).
    pub model: ModelShape,
    /// [`Workload::Decode`] or [`Workload::ChunkedPrefill`].
    pub workload: Workload,
    /// Dtype of `q` and `out`.
    pub dtype: DType,
}

impl PagedCase {
    /// `(sequences, query tokens per sequence, context)`.
    fn dims(&self) -> (usize, usize, usize) {
        match self.workload {
            Workload::Decode { batch, context } => (batch, 1, context),
            Workload::ChunkedPrefill { query, context } => (1, query, context),
            Workload::Prefill { tokens } => (1, tokens, tokens),
        }
    }
}

impl Op for PagedCase {
    fn family(&self) -> Family {
        Family::PagedAttention
    }

    fn label(&self) -> String {
        format!(
            "{}q_{}kv/{}/{}",
            self.dtype,
            CACHE_DTYPE,
            self.model.name,
            self.workload.label()
        )
    }

    fn desc(&self, layout: KvLayout) -> OpDesc {
        OpDesc::PagedAttention {
            dtype: self.dtype,
            num_heads: self.model.num_heads,
            cache: spec(&self.model, 1, layout),
            sliding_window: false,
            softcap: false,
        }
    }

    /// FLOPs: [`attention_flops`] per sequence. Bytes: every sequence's K and
    /// V (`context · kv_heads · head_dim` f16 each), `q` and `out`, and the
    /// i32 metadata (`query_start_loc`, `seq_lens`, `block_tables`).
    fn cost(&self) -> Cost {
        let m = &self.model;
        let (b, q, l) = self.dims();
        let blocks = l.div_ceil(BLOCK_SIZE);
        Cost {
            flops: b as u64 * attention_flops(m.num_heads, m.head_dim, q, l),
            bytes: (self.resident_bytes()
                + 2 * self.dtype.bytes_for(b * q * m.num_heads * m.head_dim)
                + 4 * ((b + 1) + b + b * blocks)) as u64,
        }
    }

    fn has_cold_variant(&self) -> bool {
        matches!(self.workload, Workload::Decode { .. })
    }

    fn resident_bytes(&self) -> usize {
        let (b, _, l) = self.dims();
        2 * CACHE_DTYPE.bytes_for(b * l * self.model.kv_dim())
    }

    fn build<'d>(&self, dev: &'d dyn Device, copies: usize) -> hal::Result<Runner<'d>> {
        let m = self.model;
        let (b, q, l) = self.dims();
        let per_seq = l.div_ceil(BLOCK_SIZE);
        let num_blocks = 1 + copies * b * per_seq;
        let cache = filled_cache(dev, &m, num_blocks)?;
        let physical: Vec<u32> = Rng::new(23)
            .permutation(num_blocks - 1)
            .into_iter()
            .map(|p| p as u32 + 1)
            .collect();
        let batches = physical
            .chunks(b * per_seq)
            .map(|blocks| {
                let seqs: Vec<SeqSlice<'_>> = blocks
                    .chunks(per_seq)
                    .map(|blocks| SeqSlice {
                        query_len: q,
                        seq_len: l,
                        blocks,
                    })
                    .collect();
                let batch = AttentionBatch::build(&seqs, BLOCK_SIZE)
                    .map_err(|msg| hal::HalError::invalid(dev.name(), "bench batch", msg))?;
                batch.to_device(dev)
            })
            .collect::<hal::Result<Vec<_>>>()?;
        let shape = [b * q, m.num_heads, m.head_dim];
        let x = data::random(dev, self.dtype, &shape, 24)?;
        let mut out = data::output(dev, self.dtype, &shape)?;
        let params = AttentionParams::for_head_dim(m.head_dim);
        let mut i = 0;
        Ok(Runner::new(move || {
            let meta = batches[i % batches.len()].metadata();
            i += 1;
            dev.paged_attention(PagedAttentionArgs {
                q: x.view(),
                cache: &cache,
                meta,
                params,
                out: out.view_mut(),
            })?;
            dev.synchronize()
        }))
    }
}

/// `write_kv` of one step's new keys and values into an f16 cache.
pub struct WriteKvCase {
    /// Model (KV heads, head dim).
    pub model: ModelShape,
    /// Decode: one token in each of `batch` sequences' last block; prefill:
    /// `tokens` consecutive slots.
    pub workload: Workload,
    /// Dtype of the new keys and values.
    pub dtype: DType,
}

impl WriteKvCase {
    /// `(logical block, offset)` of each new token.
    fn logical_slots(&self) -> Vec<(usize, usize)> {
        match self.workload {
            Workload::Decode { batch, context } => (0..batch)
                .map(|b| (b, (context - 1) % BLOCK_SIZE))
                .collect(),
            w => (0..w.num_tokens())
                .map(|t| (t / BLOCK_SIZE, t % BLOCK_SIZE))
                .collect(),
        }
    }
}

impl Op for WriteKvCase {
    fn family(&self) -> Family {
        Family::WriteKv
    }

    fn label(&self) -> String {
        format!(
            "{}_to_{}kv/{}/{}",
            self.dtype,
            CACHE_DTYPE,
            self.model.name,
            self.workload.tokens_label()
        )
    }

    fn desc(&self, layout: KvLayout) -> OpDesc {
        OpDesc::WriteKv {
            input: self.dtype,
            cache: spec(&self.model, 1, layout),
        }
    }

    /// No FLOPs. Bytes: K and V read in the input dtype and written in f16
    /// (`tokens · kv_heads · head_dim` each), plus the i64 slot mapping.
    fn cost(&self) -> Cost {
        let t = self.workload.num_tokens();
        let e = t * self.model.kv_dim();
        Cost {
            flops: 0,
            bytes: (2 * (self.dtype.bytes_for(e) + CACHE_DTYPE.bytes_for(e)) + 8 * t) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let m = self.model;
        let logical = self.logical_slots();
        let blocks = logical.iter().map(|s| s.0 + 1).max().unwrap_or(1);
        let num_blocks = 1 + blocks;
        let mut cache = filled_cache(dev, &m, num_blocks)?;
        let physical = Rng::new(25).permutation(blocks);
        let slots: Vec<i64> = logical
            .iter()
            .map(|&(blk, off)| ((physical[blk] + 1) * BLOCK_SIZE + off) as i64)
            .collect();
        let t = slots.len();
        let slot_mapping = data::i64s(dev, &[t], &slots)?;
        let shape = [t, m.num_kv_heads, m.head_dim];
        let key = data::random(dev, self.dtype, &shape, 26)?;
        let value = data::random(dev, self.dtype, &shape, 27)?;
        Ok(Runner::new(move || {
            dev.write_kv(WriteKvArgs {
                key: key.view(),
                value: value.view(),
                slot_mapping: slot_mapping.view(),
                cache: &mut cache,
            })?;
            dev.synchronize()
        }))
    }
}

/// Dense causal flash attention over one prompt.
pub struct FlashCase {
    /// Model (heads, KV heads, head dim).
    pub model: ModelShape,
    /// Prompt length.
    pub seq_len: usize,
    /// Dtype of `q`, `k`, `v` and `out`.
    pub dtype: DType,
}

impl Op for FlashCase {
    fn family(&self) -> Family {
        Family::FlashAttention
    }

    fn label(&self) -> String {
        format!(
            "{}/{}/prefill_{}",
            self.dtype,
            self.model.name,
            short(self.seq_len)
        )
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::FlashAttention {
            dtype: self.dtype,
            num_heads: self.model.num_heads,
            num_kv_heads: self.model.num_kv_heads,
            head_dim: self.model.head_dim,
            causal: true,
            sliding_window: false,
            softcap: false,
        }
    }

    /// FLOPs: [`attention_flops`] with `query = context = seq_len`. Bytes:
    /// `q` and `out` (`L · heads · head_dim`), `k` and `v`
    /// (`L · kv_heads · head_dim`), and two i32 `cu_seqlens` of 2 entries.
    fn cost(&self) -> Cost {
        let (m, l) = (&self.model, self.seq_len);
        let elems = 2 * l * m.num_heads * m.head_dim + 2 * l * m.kv_dim();
        Cost {
            flops: attention_flops(m.num_heads, m.head_dim, l, l),
            bytes: (self.dtype.bytes_for(elems) + 16) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let (m, l) = (self.model, self.seq_len);
        let q_shape = [l, m.num_heads, m.head_dim];
        let kv_shape = [l, m.num_kv_heads, m.head_dim];
        let q = data::random(dev, self.dtype, &q_shape, 31)?;
        let k = data::random(dev, self.dtype, &kv_shape, 32)?;
        let v = data::random(dev, self.dtype, &kv_shape, 33)?;
        let cu = data::i32s(dev, &[2], &[0, l as i32])?;
        let mut out = data::output(dev, self.dtype, &q_shape)?;
        let params = AttentionParams::for_head_dim(m.head_dim);
        Ok(Runner::new(move || {
            dev.flash_attention(FlashAttentionArgs {
                q: q.view(),
                k: k.view(),
                v: v.view(),
                cu_seqlens_q: cu.view(),
                cu_seqlens_k: cu.view(),
                max_seqlen_q: l,
                max_seqlen_k: l,
                causal: true,
                params,
                out: out.view_mut(),
            })?;
            dev.synchronize()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{LLAMA3_8B, SMOLLM2_135M};

    #[test]
    fn attended_keys_by_hand() {
        assert_eq!(attended_keys(1, 2048), 2048);
        // 3 new tokens at positions 2, 3, 4 of a 5-token sequence: 3 + 4 + 5.
        assert_eq!(attended_keys(3, 5), 12);
        assert_eq!(attended_keys(4, 4), 10);
    }

    #[test]
    fn paged_decode_cost() {
        let c = PagedCase {
            model: LLAMA3_8B,
            workload: Workload::Decode {
                batch: 8,
                context: 2048,
            },
            dtype: DType::F32,
        };
        let cost = c.cost();
        assert_eq!(cost.flops, 8 * 4 * 32 * 128 * 2048);
        let kv = 8 * 2048 * 8 * 128 * 2 * 2;
        let qo = 2 * 8 * 32 * 128 * 4;
        let meta = 4 * (9 + 8 + 8 * 128);
        assert_eq!(cost.bytes, (kv + qo + meta) as u64);
        assert_eq!(c.label(), "f32q_f16kv/llama3-8b/decode_b8_ctx2k");
    }

    #[test]
    fn flash_and_write_kv_cost() {
        let f = FlashCase {
            model: SMOLLM2_135M,
            seq_len: 512,
            dtype: DType::F16,
        };
        assert_eq!(f.cost().flops, 4 * 9 * 64 * (512 * 513 / 2));
        assert_eq!(
            f.cost().bytes,
            (2 * (2 * 512 * 9 * 64 + 2 * 512 * 3 * 64) + 16) as u64
        );
        let w = WriteKvCase {
            model: SMOLLM2_135M,
            workload: Workload::Decode {
                batch: 32,
                context: 512,
            },
            dtype: DType::F32,
        };
        assert_eq!(w.cost().bytes, (2 * 32 * 192 * (4 + 2) + 8 * 32) as u64);
        assert_eq!(w.logical_slots()[0], (0, 15));
    }
}
