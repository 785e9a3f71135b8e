//! Paged attention over the KV cache and dense varlen flash attention: the
//! CUDA backend's `paged_attention.cu` and the SIMT kernels of its
//! `flash_attention.cu`, over this crate's attention core
//! (`kernels/attention_core.h`, one LDS buffer per K/V tile).
//!
//! Both kernels give one workgroup ("CTA", 128 threads: two wavefronts on
//! CDNA, four on RDNA) a tile of query rows — query
//! tokens of one sequence × query heads of one KV head's group, at most
//! [`MAX_ROWS`] rows — and stream that KV head's keys and values through
//! shared memory in tiles of 32 with an f32 online softmax, so every K/V
//! element is read once per CTA. Paged attention splits contexts into
//! partitions of 64 to [`PARTITION`] keys when the batch alone does not fill
//! the GPU (vLLM v2 style, sized by [`partition_size`]): each partition
//! writes its max, sum and unnormalised output to scratch, and a reduce
//! kernel merges them.
//!
//! Grids are sized from shapes and `max_query_len` / `max_seq_len` only; the
//! metadata stays on the device and CTAs past a sequence's end exit early.

use hal::{
    AttentionParams, Backend, DType, FlashAttentionArgs, HalError, OpDesc, PagedAttentionArgs,
    Result, Unsupported,
};

use crate::device::{Arg, HipDevice, LDS_BYTES};
use crate::gemm::suffix;
use crate::sources::{FLASH_ATTENTION, PAGED_ATTENTION};

/// Query rows (token × head pairs) per CTA; `PA_MAXR` / `FA_MAXR` in the
/// kernels.
const MAX_ROWS: usize = 16;

/// Threads per CTA (`PA_THREADS`).
const THREADS: u32 = 128;

/// Keys per shared-memory tile (`PA_KT`).
const KEY_TILE: usize = 32;

/// Most keys per partition of the split-context path.
const PARTITION: usize = 512;

/// Fewest keys per partition (two key tiles).
const MIN_PARTITION: usize = 2 * KEY_TILE;

/// Keys per partition for `ctas` CTAs per partition on `sms` SMs and the
/// longest context `max_seq_len`: one partition (`max_seq_len` or more)
/// when the batch fills the GPU twice over, else partitions of
/// [`MIN_PARTITION`]..=[`PARTITION`] keys (multiples of two key tiles)
/// making about `2 · sms` CTAs, so a small decode batch is spread over
/// the whole GPU instead of walking its context on a few SMs.
fn partition_size(ctas: usize, sms: usize, max_seq_len: usize) -> usize {
    if ctas == 0 || ctas >= 2 * sms || max_seq_len <= MIN_PARTITION {
        return max_seq_len.max(1);
    }
    let want = (2 * sms).div_ceil(ctas);
    max_seq_len
        .div_ceil(want)
        .next_multiple_of(MIN_PARTITION)
        .clamp(MIN_PARTITION, PARTITION)
}

/// Largest scratch (bytes) the split path may use; above it one CTA walks
/// the whole context instead.
const MAX_SPLIT_SCRATCH: usize = 256 << 20;

/// Head dims the kernels are instantiated for.
const HEAD_DIMS: [usize; 5] = [64, 80, 96, 128, 256];

/// Every kernel name of source `source` (`"paged_attention"` or
/// `"flash_attention"`) that this module may launch.
pub(crate) fn kernel_names(source: &str) -> Vec<String> {
    let mut v = Vec::new();
    match source {
        "paged_attention" => {
            let pairs = [
                ("f32", "f32"),
                ("f32", "f16"),
                ("f32", "bf16"),
                ("f32", "f8e4m3"),
                ("f16", "f16"),
                ("f16", "f8e4m3"),
                ("bf16", "bf16"),
                ("bf16", "f8e4m3"),
            ];
            for d in HEAD_DIMS {
                for (q, c) in pairs {
                    v.push(format!("paged_attention_{q}_{c}_hd{d}"));
                }
                for q in ["f32", "f16", "bf16"] {
                    v.push(format!("paged_attention_reduce_{q}_hd{d}"));
                }
            }
        }
        "flash_attention" => {
            for d in HEAD_DIMS {
                for t in ["f32", "f16", "bf16"] {
                    v.push(format!("flash_attention_{t}_hd{d}"));
                }
            }
        }
        _ => {}
    }
    v
}

/// Limits of paged attention beyond the capability lists: the (query, cache)
/// dtype pairs that have kernels and the head dims.
pub(crate) fn supports_paged(op: &OpDesc) -> std::result::Result<(), Unsupported> {
    let OpDesc::PagedAttention { dtype, cache, .. } = *op else {
        return Ok(());
    };
    let pair_ok = matches!(
        (dtype, cache.dtype),
        (
            DType::F32,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3
        ) | (DType::F16, DType::F16 | DType::F8E4M3)
            | (DType::BF16, DType::BF16 | DType::F8E4M3)
    );
    if !pair_ok {
        return Err(Unsupported::new(
            "paged_attention",
            format!(
                "query dtype {dtype} with a {} cache is not supported (use a cache of the \
                 query dtype or F8E4M3, or F32 queries)",
                cache.dtype
            ),
        ));
    }
    if !HEAD_DIMS.contains(&cache.head_dim) {
        return Err(Unsupported::new(
            "paged_attention",
            format!("head_dim {} not in {HEAD_DIMS:?}", cache.head_dim),
        ));
    }
    if cache.block_size == 0 || cache.block_size > i32::MAX as usize {
        return Err(Unsupported::new(
            "paged_attention",
            format!("block_size {} not supported", cache.block_size),
        ));
    }
    fits_lds("paged_attention", cache.dtype, cache.head_dim)
}

/// Whether a workgroup's LDS tile ([`smem_bytes`]) for a cache element of
/// dtype `dt` and head dim `d` fits the 64 KiB of an AMD workgroup: all
/// but f32 elements at head dim 256 do.
fn fits_lds(op: &'static str, dt: DType, d: usize) -> std::result::Result<(), Unsupported> {
    let bytes = smem_bytes(dt.bytes_for(1), d);
    if bytes > LDS_BYTES {
        return Err(Unsupported::new(
            op,
            format!(
                "{dt} K/V at head_dim {d} needs {bytes} bytes of LDS per workgroup, more than                  the {LDS_BYTES} an AMD GPU gives (use F16 or BF16)"
            ),
        ));
    }
    Ok(())
}

/// Limits of flash attention beyond the capability lists: the head dims.
pub(crate) fn supports_flash(op: &OpDesc) -> std::result::Result<(), Unsupported> {
    let OpDesc::FlashAttention {
        head_dim, dtype, ..
    } = *op
    else {
        return Ok(());
    };
    if !HEAD_DIMS.contains(&head_dim) {
        return Err(Unsupported::new(
            "flash_attention",
            format!("head_dim {head_dim} not in {HEAD_DIMS:?}"),
        ));
    }
    fits_lds("flash_attention", dtype, head_dim)
}

/// Dynamic LDS (bytes) of one workgroup: `PaSmem<CT, D, MAXR>::BYTES` of
/// `kernels/attention_core.h` for a cache element of `elem` bytes and head
/// dim `d`.
fn smem_bytes(elem: usize, d: usize) -> usize {
    let row = d * elem;
    let krow = if (row / 16).is_multiple_of(2) {
        row + 16
    } else {
        row
    };
    MAX_ROWS * d * 4 // queries, f32
        + KEY_TILE * krow // K tile
        + KEY_TILE * row // V tile
        + MAX_ROWS * KEY_TILE * 4 // probabilities
        + 7 * MAX_ROWS * 4 // per-row statistics and ranges
}

/// `(tokens, heads)` per CTA and head tiles per KV head for a group of
/// `group` query heads and queries of up to `max_q` tokens.
fn row_tiling(group: usize, max_q: usize) -> (usize, usize, usize) {
    let hpc = group.clamp(1, MAX_ROWS);
    let head_tiles = group.div_ceil(hpc);
    let tpt = (MAX_ROWS / hpc).clamp(1, max_q.max(1));
    (tpt, hpc, head_tiles)
}

/// Kernel parameters from [`AttentionParams`]: `(softcap, window)`, with
/// 0.0 for no soft-cap and −1 for no window.
fn mask_params(dev: &HipDevice, op: &'static str, p: &AttentionParams) -> Result<(f32, i32)> {
    let softcap = match p.softcap {
        None => 0.0,
        Some(c) if c.is_finite() && c > 0.0 => c,
        Some(c) => {
            return Err(HalError::invalid(
                dev.name(),
                op,
                format!("softcap must be positive and finite, got {c}"),
            ))
        }
    };
    let window = match p.sliding_window {
        None => -1,
        Some(w) => i32::try_from(w).unwrap_or(i32::MAX),
    };
    Ok((softcap, window))
}

/// A grid dimension as `u32`, or an error when it exceeds `limit`.
fn grid_dim(dev: &HipDevice, op: &'static str, what: &str, n: usize, limit: u32) -> Result<u32> {
    match u32::try_from(n) {
        Ok(v) if v <= limit => Ok(v),
        _ => Err(dev.refuse(Unsupported::new(
            op,
            format!("{what} {n} exceeds the grid limit {limit}"),
        ))),
    }
}

/// An `i32` kernel argument, or an error when `n` does not fit.
fn as_i32(dev: &HipDevice, op: &'static str, what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        dev.refuse(Unsupported::new(
            op,
            format!("{what} {n} exceeds the kernel's 32-bit range"),
        ))
    })
}

/// Run [`PagedAttentionArgs`].
///
/// Grid `(batch · qtiles, num_kv_heads · head_tiles, partitions)`, 128
/// threads. Per CTA: K and V of its KV head over its partition (each byte
/// once), `2 · rows · keys · head_dim` FLOPs each for `Q·Kᵀ` and `P·V`. A
/// decode step therefore reads `Σ_b L_b · num_kv_heads · head_dim · 2 ·
/// sizeof(cache)` bytes of KV once per head tile.
pub(crate) fn paged_attention(dev: &HipDevice, args: PagedAttentionArgs<'_>) -> Result<()> {
    let op = "paged_attention";
    let (t, h, b) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if t == 0 || b == 0 {
        return Ok(());
    }
    let s = args.cache.spec;
    let d = s.head_dim;
    let hkv = s.num_kv_heads;
    let group = h / hkv;
    let fp8 = s.dtype == DType::F8E4M3;
    let (k_scale, v_scale) = if fp8 {
        (args.cache.k_scale, args.cache.v_scale)
    } else {
        (1.0, 1.0)
    };
    let (softcap, window) = mask_params(dev, op, &args.params)?;
    let meta = &args.meta;
    let max_q = meta.max_query_len;
    if max_q == 0 || meta.max_seq_len == 0 {
        return Ok(());
    }
    let bt_stride = meta.block_tables.layout.shape()[1];

    let (tpt, hpc, head_tiles) = row_tiling(group, max_q);
    let qtiles = max_q.div_ceil(tpt);
    let gx = grid_dim(dev, op, "batch × query tiles", b * qtiles, i32::MAX as u32)?;
    let gy = grid_dim(dev, op, "KV heads × head tiles", hkv * head_tiles, 65535)?;

    // Split the context when the batch alone leaves compute units idle.
    // Sized by the block tables' capacity rather than this call's
    // `max_seq_len`, so the launch shape depends only on the cache
    // (partitions past a sequence's end exit at once).
    let capacity = bt_stride * s.block_size;
    let ctas = b * qtiles * hkv * head_tiles;
    let part_size = partition_size(ctas, dev.num_sms() as usize, capacity);
    let full_parts = capacity.div_ceil(part_size);
    let split_bytes = t * h * full_parts * (d + 2) * 4;
    let split = full_parts > 1 && split_bytes <= MAX_SPLIT_SCRATCH && full_parts <= 65535;
    let (parts, part_size) = if split {
        (full_parts, part_size)
    } else {
        (1, i32::MAX as usize)
    };

    let smem = smem_bytes(s.dtype.bytes_for(1), d);
    let qn = suffix(args.q.dtype);
    let f = dev.function_with_smem(
        op,
        &PAGED_ATTENTION,
        &format!("paged_attention_{qn}_{}_hd{d}", suffix(s.dtype)),
        smem as u32,
    )?;

    let q = dev.ptr(op, &args.q)?;
    let out = dev.ptr_mut(op, &args.out)?;
    let qsl = dev.ptr(op, &meta.query_start_loc)?;
    let lens = dev.ptr(op, &meta.seq_lens)?;
    let tables = dev.ptr(op, &meta.block_tables)?;
    let scratch = if split {
        Some(dev.scratch(op, split_bytes)?)
    } else {
        None
    };
    let (tmp_o, tmp_ml) = match &scratch {
        Some(sc) => (sc.ptr(), sc.ptr() + (t * h * parts * d * 4) as u64),
        None => (0, 0),
    };
    dev.launch(
        op,
        &f,
        (gx, gy, parts as u32),
        (THREADS, 1, 1),
        smem as u32,
        &[
            Arg::Ptr(q),
            Arg::Ptr(out),
            Arg::Ptr(dev.buffer_ptr(op, &args.cache.key)?),
            Arg::Ptr(dev.buffer_ptr(op, &args.cache.value)?),
            Arg::Ptr(qsl),
            Arg::Ptr(lens),
            Arg::Ptr(tables),
            Arg::I32(as_i32(dev, op, "block table stride", bt_stride)?),
            Arg::I32(as_i32(dev, op, "num_heads", h)?),
            Arg::I32(as_i32(dev, op, "num_kv_heads", hkv)?),
            Arg::I32(as_i32(dev, op, "block_size", s.block_size)?),
            Arg::I32(tpt as i32),
            Arg::I32(hpc as i32),
            Arg::I32(head_tiles as i32),
            Arg::I32(qtiles as i32),
            Arg::I32(part_size as i32),
            Arg::I32(parts as i32),
            Arg::F32(args.params.scale * k_scale),
            Arg::F32(v_scale),
            Arg::F32(softcap),
            Arg::I32(window),
            Arg::Ptr(tmp_o),
            Arg::Ptr(tmp_ml),
        ],
    )?;
    if split {
        let r = dev.function(
            &PAGED_ATTENTION,
            &format!("paged_attention_reduce_{qn}_hd{d}"),
        )?;
        dev.launch(
            op,
            &r,
            (
                grid_dim(dev, op, "num_tokens", t, i32::MAX as u32)?,
                grid_dim(dev, op, "num_heads", h, 65535)?,
                1,
            ),
            (THREADS, 1, 1),
            0,
            &[
                Arg::Ptr(out),
                Arg::Ptr(tmp_o),
                Arg::Ptr(tmp_ml),
                Arg::Ptr(qsl),
                Arg::Ptr(lens),
                Arg::I32(as_i32(dev, op, "batch", b)?),
                Arg::I32(h as i32),
                Arg::I32(part_size as i32),
                Arg::I32(parts as i32),
            ],
        )?;
    }
    // The scratch is freed in stream order, after the kernels that use it.
    drop(scratch);
    Ok(())
}

/// Run [`FlashAttentionArgs`].
///
/// Every dtype runs the SIMT kernel (f32 arithmetic; MFMA / WMMA tiles are
/// not written yet): grid `(batch · qtiles, num_kv_heads · head_tiles)`,
/// 128 threads. Per CTA: the
/// K and V rows its query tile sees (each byte once), `4 · rows · keys ·
/// head_dim` FLOPs.
pub(crate) fn flash_attention(dev: &HipDevice, args: FlashAttentionArgs<'_>) -> Result<()> {
    let op = "flash_attention";
    let (tq, _tk, b) = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if tq == 0 || b == 0 || args.max_seqlen_q == 0 {
        return Ok(());
    }
    let qs = args.q.layout.shape();
    let (h, d) = (qs[1], qs[2]);
    let hkv = args.k.layout.shape()[1];
    let group = h / hkv;
    let (softcap, window) = mask_params(dev, op, &args.params)?;

    let k = dev.ptr(op, &args.k)?;
    let v = dev.ptr(op, &args.v)?;
    if k % 16 != 0 || v % 16 != 0 {
        return Err(HalError::invalid(
            dev.name(),
            op,
            "k and v must start 16-byte aligned",
        ));
    }
    let q = dev.ptr(op, &args.q)?;
    let (tpt, hpc, head_tiles) = row_tiling(group, args.max_seqlen_q);
    let qtiles = args.max_seqlen_q.div_ceil(tpt);
    let gx = grid_dim(dev, op, "batch × query tiles", b * qtiles, i32::MAX as u32)?;
    let gy = grid_dim(dev, op, "KV heads × head tiles", hkv * head_tiles, 65535)?;
    let smem = smem_bytes(args.q.dtype.bytes_for(1), d);
    let f = dev.function_with_smem(
        op,
        &FLASH_ATTENTION,
        &format!("flash_attention_{}_hd{d}", suffix(args.q.dtype)),
        smem as u32,
    )?;
    dev.launch(
        op,
        &f,
        (gx, gy, 1),
        (THREADS, 1, 1),
        smem as u32,
        &[
            Arg::Ptr(q),
            Arg::Ptr(k),
            Arg::Ptr(v),
            Arg::Ptr(dev.ptr_mut(op, &args.out)?),
            Arg::Ptr(dev.ptr(op, &args.cu_seqlens_q)?),
            Arg::Ptr(dev.ptr(op, &args.cu_seqlens_k)?),
            Arg::I32(as_i32(dev, op, "num_heads", h)?),
            Arg::I32(as_i32(dev, op, "num_kv_heads", hkv)?),
            Arg::I32(tpt as i32),
            Arg::I32(hpc as i32),
            Arg::I32(head_tiles as i32),
            Arg::I32(qtiles as i32),
            Arg::I32(i32::from(args.causal)),
            Arg::F32(args.params.scale),
            Arg::F32(softcap),
            Arg::I32(window),
        ],
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn partitions_spread_small_batches_over_the_gpu() {
        // A full GPU: one partition.
        assert_eq!(partition_size(264, 132, 2048), 2048);
        // One sequence, 8 KV heads, 512 keys: 64-key partitions.
        assert_eq!(partition_size(8, 132, 512), 64);
        // Never above PARTITION, always a multiple of two key tiles.
        for (ctas, len) in [(1, 100_000), (3, 700), (100, 2049), (200, 65)] {
            let p = partition_size(ctas, 132, len);
            assert!(
                (MIN_PARTITION..=PARTITION).contains(&p),
                "{ctas} {len}: {p}"
            );
            assert!(p.is_multiple_of(MIN_PARTITION), "{ctas} {len}: {p}");
        }
        // Short contexts are not split.
        assert_eq!(partition_size(1, 132, 64), 64);
        assert_eq!(partition_size(0, 132, 0), 1);
    }

    use super::*;

    #[test]
    fn lds_fits_every_supported_tile() {
        // Only f32 elements at head dim 256 exceed an AMD workgroup's 64 KiB.
        for d in HEAD_DIMS {
            for dt in [DType::F16, DType::BF16, DType::F8E4M3] {
                assert!(fits_lds("flash_attention", dt, d).is_ok(), "{dt} {d}");
            }
            assert_eq!(fits_lds("flash_attention", DType::F32, d).is_ok(), d < 256);
        }
        assert_eq!(smem_bytes(2, 128), 8192 + 32 * 272 + 32 * 256 + 2048 + 448);
    }

    #[test]
    fn kernel_names_cover_both_sources() {
        let paged = kernel_names("paged_attention");
        let flash = kernel_names("flash_attention");
        assert!(paged.contains(&"paged_attention_bf16_f8e4m3_hd128".to_string()));
        assert!(paged.contains(&"paged_attention_reduce_f16_hd64".to_string()));
        assert!(flash.contains(&"flash_attention_f32_hd80".to_string()));
        assert!(flash.contains(&"flash_attention_bf16_hd256".to_string()));
        assert!(!flash.iter().any(|n| n.contains("mma")));
        assert!(kernel_names("gemm").is_empty());
    }

    #[test]
    fn row_tiles_cover_the_group() {
        for group in [1, 3, 4, 8, 16, 24, 32] {
            for max_q in [1, 2, 7, 100] {
                let (tpt, hpc, tiles) = row_tiling(group, max_q);
                assert!(tpt * hpc <= MAX_ROWS);
                assert!(hpc * tiles >= group);
                assert!(tpt <= max_q.max(1));
            }
        }
    }
}
