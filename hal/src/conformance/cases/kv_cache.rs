//! KV-cache writes (`write_kv`, vLLM's `reshape_and_cache`) and
//! `copy_blocks`, plus the cache helpers the attention cases share.
//!
//! Every case runs once per physical layout the backend declares in
//! `capabilities().kv_layouts` (NHD, and vLLM's split-x where `x` elements
//! of the cache dtype make 16 bytes). The cache starts poisoned (every byte
//! 0xFF, NaN in every cache dtype); after the op the *whole* cache is
//! downloaded and compared with the reference's: written slots exactly
//! (FP8 allows one E4M3 step, for a kernel that multiplies by
//! `1 / scale`), every other slot — padding tokens' (negative) slots
//! included — untouched. Physical blocks come from a shuffled pool with
//! block 0 reserved; slot mappings come from mixed prefill + decode batches
//! whose sequences end mid-block; one case uses a cache of 8192 blocks and
//! only its highest block ids.

use super::{case, dt, op_failed, random, refused, sweep, CaseResult};
use crate::conformance::{harness::UNWRITTEN_BYTE, Case, Harness, Outcome, Rng};
use crate::reference::{self, HostKvCache};
use crate::{
    AttentionBatch, DType, HostTensor, KvCache, KvCacheSpec, KvLayout, OpDesc, SeqSlice,
    WriteKvArgs,
};

use DType::{BF16, F16, F32, F8E4M3};

// ---------------------------------------------------------------------------
// Helpers shared with the attention and batch-invariance cases.

/// Short name of a layout for messages.
pub(super) fn layout_name(l: KvLayout) -> String {
    match l {
        KvLayout::Nhd => "nhd".into(),
        KvLayout::VllmSplitX { x } => format!("split_x{x}"),
    }
}

/// Run `body` once per KV layout the backend declares that fits a cache
/// of `dtype` (see [`sweep`]): NHD always, vLLM's split-x layout when its
/// `x` elements make 16 bytes of `dtype`, as [`KvLayout`] defines it.
pub(super) fn for_each_layout(
    h: &Harness<'_>,
    dtype: DType,
    mut body: impl FnMut(KvLayout) -> CaseResult,
) -> CaseResult {
    let declared = &h.device.capabilities().kv_layouts;
    let layouts: Vec<KvLayout> = declared
        .iter()
        .copied()
        .filter(|l| match l {
            KvLayout::Nhd => true,
            KvLayout::VllmSplitX { x } => dtype.bytes_for(*x) == 16,
        })
        .collect();
    if layouts.is_empty() {
        return Ok(Outcome::Skip(format!(
            "no declared KV layout fits a {dtype} cache (declared: {declared:?})"
        )));
    }
    sweep(
        layouts,
        |&l| format!("layout {}", layout_name(l)),
        |&l| body(l),
    )
}

/// Physical block ids `1..num_blocks` in random order: block 0 is the
/// reserved null block and is never handed out (block-table padding points
/// at it, and it stays poisoned).
pub(super) fn block_pool(rng: &mut Rng, num_blocks: usize) -> Vec<u32> {
    rng.permutation(num_blocks - 1)
        .into_iter()
        .map(|b| b as u32 + 1)
        .collect()
}

/// `count` of the highest block ids of a `num_blocks` cache, shuffled: for
/// caches large enough that a 16-bit (or otherwise narrow) block index, or
/// an index product computed in too narrow a type, goes wrong.
pub(super) fn high_pool(rng: &mut Rng, num_blocks: usize, count: usize) -> Vec<u32> {
    rng.permutation(count)
        .into_iter()
        .map(|i| (num_blocks - 1 - i) as u32)
        .collect()
}

/// A host cache whose every byte is 0xFF: NaN in F32, F16, BF16 and E4M3,
/// so a kernel reading a slot nobody wrote produces NaN.
pub(super) fn poisoned(spec: KvCacheSpec, k_scale: f32, v_scale: f32) -> HostKvCache {
    let bytes = vec![UNWRITTEN_BYTE; spec.bytes()];
    HostKvCache::from_bytes(spec, bytes.clone(), bytes, k_scale, v_scale)
}

/// Allocate a cache on the device (`alloc_kv_cache`) holding `host`'s bytes.
pub(super) fn upload_cache(h: &Harness<'_>, host: &HostKvCache) -> Result<KvCache, String> {
    let mut cache = h
        .device
        .alloc_kv_cache(&host.spec, host.k_scale, host.v_scale)
        .map_err(|e| op_failed("alloc_kv_cache", e))?;
    h.device
        .upload(&mut cache.key, 0, &host.key.data)
        .map_err(|e| format!("upload K cache: {e}"))?;
    h.device
        .upload(&mut cache.value, 0, &host.value.data)
        .map_err(|e| format!("upload V cache: {e}"))?;
    Ok(cache)
}

/// Synchronize and download a whole device cache.
fn download_cache(h: &Harness<'_>, cache: &KvCache) -> Result<HostKvCache, String> {
    h.sync()?;
    let n = cache.spec.bytes();
    let (mut k, mut v) = (vec![0u8; n], vec![0u8; n]);
    h.device
        .download(&cache.key, 0, &mut k)
        .map_err(|e| format!("download K cache: {e}"))?;
    h.device
        .download(&cache.value, 0, &mut v)
        .map_err(|e| format!("download V cache: {e}"))?;
    Ok(HostKvCache::from_bytes(
        cache.spec,
        k,
        v,
        cache.k_scale,
        cache.v_scale,
    ))
}

/// An E4M3 code as a signed ordinal: adjacent representable values differ
/// by one, ±0 are both 0.
fn e4m3_ordinal(b: u8) -> i32 {
    let mag = (b & 0x7F) as i32;
    if b & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// The whole cache equals the reference's: bit-exact, except that an FP8
/// element written by both may differ by one E4M3 step. The message gives
/// the first difference as logical `(block, offset, head, d)`.
fn compare_caches(got: &HostKvCache, want: &HostKvCache) -> Result<(), String> {
    if got.key.data == want.key.data && got.value.data == want.value.data {
        return Ok(());
    }
    let s = want.spec;
    let size = s.dtype.bytes_for(1);
    let fp8 = s.dtype == F8E4M3;
    for (name, is_key) in [("K", true), ("V", false)] {
        let (g, w) = if is_key {
            (&got.key, &want.key)
        } else {
            (&got.value, &want.value)
        };
        if g.data == w.data {
            continue;
        }
        for block in 0..s.num_blocks {
            for off in 0..s.block_size {
                for head in 0..s.num_kv_heads {
                    for d in 0..s.head_dim {
                        let i = if is_key {
                            s.key_index(block, off, head, d)
                        } else {
                            s.value_index(block, off, head, d)
                        };
                        let (gb, wb) = (&g.data[i * size..][..size], &w.data[i * size..][..size]);
                        if gb == wb {
                            continue;
                        }
                        let near = fp8
                            && !g.get(i).is_nan()
                            && !w.get(i).is_nan()
                            && (e4m3_ordinal(gb[0]) - e4m3_ordinal(wb[0])).abs() <= 1;
                        if !near {
                            return Err(format!(
                                "{name} cache differs at block {block}, offset {off}, head {head}, \
                                 d {d}: got {} (bytes {gb:02x?}), reference {} (bytes {wb:02x?}){}",
                                g.get(i),
                                w.get(i),
                                if w.get(i).is_nan() {
                                    " — a slot that must not be written"
                                } else {
                                    ""
                                }
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// write_kv

/// One `write_kv` case.
#[derive(Clone, Debug)]
struct WriteCase {
    name: String,
    input: DType,
    cache: DType,
    head_dim: usize,
    block_size: usize,
    num_kv_heads: usize,
    k_scale: f32,
    v_scale: f32,
    /// `(query_len, seq_len)` of each sequence: the new tokens are written.
    seqs: Vec<(usize, usize)>,
    /// Padding tokens (slot −1) mixed into the batch.
    padding: usize,
    /// `Some(n)`: a cache of `n` blocks whose sequences use only the highest ids.
    large: Option<usize>,
    seed: u64,
}

/// A mixed prefill + decode batch for `block_size`-token blocks: decodes
/// with context ending mid-block and exactly at a block end, a fresh
/// prefill, a chunked prefill after a prefix hit, and a sequence's first
/// token. Entries are `(query_len, seq_len)`.
pub(super) fn mixed_batch(bs: usize) -> Vec<(usize, usize)> {
    vec![
        (1, 2 * bs + 5),
        (bs + 3, bs + 3),
        (7, 3 * bs + 2),
        (1, bs),
        (bs, 2 * bs),
        (1, 1),
    ]
}

/// Blocks a batch of sequences needs.
pub(super) fn blocks_needed(seqs: &[(usize, usize)], bs: usize) -> usize {
    seqs.iter().map(|&(_, l)| l.div_ceil(bs)).sum()
}

/// Give each sequence its blocks from `pool`, in order.
pub(super) fn assign_blocks(seqs: &[(usize, usize)], bs: usize, pool: &[u32]) -> Vec<Vec<u32>> {
    let mut next = 0;
    seqs.iter()
        .map(|&(_, l)| {
            let n = l.div_ceil(bs);
            next += n;
            pool[next - n..next].to_vec()
        })
        .collect()
}

/// Metadata for `seqs` on `blocks`, as the engine would build it.
pub(super) fn build_batch(
    seqs: &[(usize, usize)],
    blocks: &[Vec<u32>],
    bs: usize,
) -> Result<AttentionBatch, String> {
    let slices: Vec<SeqSlice<'_>> = seqs
        .iter()
        .zip(blocks)
        .map(|(&(query_len, seq_len), b)| SeqSlice {
            query_len,
            seq_len,
            blocks: b,
        })
        .collect();
    AttentionBatch::build(&slices, bs).map_err(|e| format!("case built a bad batch: {e}"))
}

fn write_cases() -> Vec<WriteCase> {
    #[rustfmt::skip]
    let grid: &[(DType, DType, usize, usize, usize, f32, f32)] = &[
        // input, cache, head_dim, block_size, kv_heads, k_scale, v_scale
        (F32, F32, 64, 16, 2, 1.0, 1.0),
        (F16, F16, 80, 16, 1, 1.0, 1.0),
        (BF16, BF16, 96, 32, 4, 1.0, 1.0),
        (F32, F16, 128, 32, 2, 1.0, 1.0),
        (F32, BF16, 256, 16, 1, 1.0, 1.0),
        (F16, F32, 96, 16, 3, 1.0, 1.0),
        (F16, F8E4M3, 128, 16, 2, 0.5, 2.0),
        (BF16, F8E4M3, 64, 32, 8, 0.25, 1.5),
        (F32, F8E4M3, 80, 16, 1, 2.0, 0.5),
    ];
    let mut out: Vec<WriteCase> = grid
        .iter()
        .enumerate()
        .map(|(i, &(input, cache, hd, bs, kv, ks, vs))| WriteCase {
            name: format!(
                "write_{}_to_{}_hd{hd}_bs{bs}_kv{kv}_mixed_padded{}",
                dt(input),
                dt(cache),
                if cache == F8E4M3 { "_scaled" } else { "" }
            ),
            input,
            cache,
            head_dim: hd,
            block_size: bs,
            num_kv_heads: kv,
            k_scale: ks,
            v_scale: vs,
            seqs: mixed_batch(bs),
            padding: 3,
            large: None,
            seed: 0x3c_0000 + i as u64,
        })
        .collect();
    out.push(WriteCase {
        name: "write_f16_hd64_bs16_8192_blocks_high_ids".into(),
        input: F16,
        cache: F16,
        head_dim: 64,
        block_size: 16,
        num_kv_heads: 1,
        k_scale: 1.0,
        v_scale: 1.0,
        seqs: vec![(1, 100), (40, 200), (1, 17)],
        padding: 2,
        large: Some(8192),
        seed: 0x3c_1000,
    });
    out
}

fn run_write(h: &Harness<'_>, c: &WriteCase, layout: KvLayout) -> CaseResult {
    let bs = c.block_size;
    let needed = blocks_needed(&c.seqs, bs);
    let num_blocks = c.large.unwrap_or(needed + 9);
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
    let desc = OpDesc::WriteKv {
        input: c.input,
        cache: spec,
    };
    if let Some(skip) = refused(h, &desc) {
        return Ok(skip);
    }
    let mut rng = Rng::new(c.seed);
    let pool = match c.large {
        Some(n) => high_pool(&mut rng, n, needed + 8),
        None => block_pool(&mut rng, num_blocks),
    };
    let blocks = assign_blocks(&c.seqs, bs, &pool);
    let mut slots = build_batch(&c.seqs, &blocks, bs)?.slot_mapping;
    for _ in 0..c.padding {
        let at = rng.below(slots.len() + 1);
        slots.insert(at, -1);
    }
    let t = slots.len();
    let shape = [t, c.num_kv_heads, c.head_dim];
    let key = random(&mut rng, c.input, &shape, 1.0);
    let value = random(&mut rng, c.input, &shape, 1.0);
    let slot_mapping = HostTensor::from_i64(&[t], &slots);

    let mut want = poisoned(spec, c.k_scale, c.v_scale);
    let mut cache = upload_cache(h, &want)?;
    let (kd, vd, sd) = (h.upload(&key)?, h.upload(&value)?, h.upload(&slot_mapping)?);
    let args = WriteKvArgs {
        key: kd.view(),
        value: vd.view(),
        slot_mapping: sd.view(),
        cache: &mut cache,
    };
    if args.desc() != desc {
        return Err(format!("args.desc() {:?} != {desc:?}", args.desc()));
    }
    h.device
        .write_kv(args)
        .map_err(|e| op_failed("write_kv", e))?;
    let got = download_cache(h, &cache)?;
    reference::write_kv(&key, &value, &slots, &mut want);
    compare_caches(&got, &want)?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// copy_blocks

/// One `copy_blocks` case: a cache full of random values, then block pairs.
#[derive(Clone, Debug)]
struct CopyCase {
    name: String,
    cache: DType,
    head_dim: usize,
    block_size: usize,
    num_kv_heads: usize,
    /// `None`: random disjoint pairs; `Some`: these pairs.
    pairs: Option<Vec<(u32, u32)>>,
    seed: u64,
}

fn copy_cases() -> Vec<CopyCase> {
    let grid: &[(DType, usize, usize, usize)] = &[
        (F32, 64, 16, 2),
        (F16, 128, 32, 1),
        (BF16, 80, 16, 4),
        (F8E4M3, 96, 32, 2),
    ];
    let mut out: Vec<CopyCase> = grid
        .iter()
        .enumerate()
        .map(|(i, &(cache, hd, bs, kv))| CopyCase {
            name: format!("copy_{}_hd{hd}_bs{bs}_kv{kv}", dt(cache)),
            cache,
            head_dim: hd,
            block_size: bs,
            num_kv_heads: kv,
            pairs: None,
            seed: 0xc0_0000 + i as u64,
        })
        .collect();
    // A cycle (3 → 5 → 7 → 3) and a fan-out (2 → 9, 2 → 10): every source
    // is read before any destination is written.
    out.push(CopyCase {
        name: "copy_f16_hd64_bs16_kv2_cycle_and_fan_out".into(),
        cache: F16,
        head_dim: 64,
        block_size: 16,
        num_kv_heads: 2,
        pairs: Some(vec![(3, 5), (5, 7), (7, 3), (2, 9), (2, 10)]),
        seed: 0xc0_1000,
    });
    out
}

fn run_copy(h: &Harness<'_>, c: &CopyCase, layout: KvLayout) -> CaseResult {
    let spec = KvCacheSpec {
        num_blocks: 24,
        block_size: c.block_size,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        dtype: c.cache,
        layout,
    };
    if let Err(m) = spec.validate() {
        return Ok(Outcome::Skip(m));
    }
    if let Some(skip) = refused(h, &OpDesc::CopyBlocks { cache: spec }) {
        return Ok(skip);
    }
    let mut rng = Rng::new(c.seed);
    let pairs = c.pairs.clone().unwrap_or_else(|| {
        let p = block_pool(&mut rng, spec.num_blocks);
        (0..6).map(|i| (p[i], p[6 + i])).collect()
    });
    let (ks, vs) = if c.cache == F8E4M3 {
        (0.5, 2.0)
    } else {
        (1.0, 1.0)
    };
    let mut want = HostKvCache {
        spec,
        key: random(&mut rng, c.cache, &[spec.elements()], 1.0),
        value: random(&mut rng, c.cache, &[spec.elements()], 1.0),
        k_scale: ks,
        v_scale: vs,
    };
    let mut cache = upload_cache(h, &want)?;
    if crate::ops::kv_cache::copy_blocks_desc(&cache) != (OpDesc::CopyBlocks { cache: spec }) {
        return Err("copy_blocks_desc disagrees with the cache spec".into());
    }
    h.device
        .copy_blocks(&mut cache, &pairs)
        .map_err(|e| op_failed("copy_blocks", e))?;
    let got = download_cache(h, &cache)?;
    reference::copy_blocks(&mut want, &pairs);
    // Copies are bit-exact for every dtype: `compare_caches` locates the
    // first difference, and FP8's one-step tolerance does not apply.
    compare_caches(&got, &want)?;
    if got.key.data != want.key.data || got.value.data != want.value.data {
        return Err("FP8 cache bytes differ by one step after a copy (must be exact)".into());
    }
    Ok(Outcome::Pass)
}

/// The KV-cache cases: `write_kv` then `copy_blocks`.
pub(super) fn cases() -> Vec<Case> {
    let mut out: Vec<Case> = write_cases()
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            case(name, move |h| {
                for_each_layout(h, c.cache, |l| run_write(h, &c, l))
            })
        })
        .collect();
    out.extend(copy_cases().into_iter().map(|c| {
        let name = c.name.clone();
        case(name, move |h| {
            for_each_layout(h, c.cache, |l| run_copy(h, &c, l))
        })
    }));
    out
}
