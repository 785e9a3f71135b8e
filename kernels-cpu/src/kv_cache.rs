//! KV-cache writes (`write_kv`, vLLM's `reshape_and_cache`) and
//! `copy_blocks` on the NHD layout `[num_blocks, block_size, num_kv_heads,
//! head_dim]`, where one slot's `[num_kv_heads, head_dim]` elements are
//! contiguous.
//!
//! * `write_kv` converts each token's K and V row to the cache dtype (F32,
//!   F16, BF16 round to nearest even; FP8 stores `e4m3(x / scale)` computed
//!   in f32, exactly as the reference). Negative slots are padding and are
//!   skipped; a slot past the cache is an error raised before anything is
//!   written. When two tokens name the same slot the later one wins.
//! * `copy_blocks` copies whole blocks as bytes; every source is read
//!   before any destination is written (a snapshot of the sources), so
//!   cycles and chains behave as one simultaneous copy.

use hal::ops::kv_cache::{copy_blocks_desc, validate_copy_blocks};
use hal::{Backend, DType, HalError, KvCache, KvLayout, OpDesc, Result, Unsupported, WriteKvArgs};
use rayon::prelude::*;

use crate::attention::vector::e4m3_encode;
use crate::{convert, CpuBackend};

/// Which descriptions this module runs: NHD caches of every KV dtype the
/// capabilities list, from every activation dtype.
pub(crate) fn supports(op: &OpDesc) -> std::result::Result<(), Unsupported> {
    let cache = match op {
        OpDesc::WriteKv { cache, .. } | OpDesc::CopyBlocks { cache } => cache,
        _ => return Err(Unsupported::new(op.name(), "not a KV-cache op")),
    };
    if cache.layout == KvLayout::Nhd {
        Ok(())
    } else {
        Err(Unsupported::new(
            op.name(),
            format!(
                "KV layout {:?} not supported; the CPU uses Nhd",
                cache.layout
            ),
        ))
    }
}

/// Tokens per parallel task of `write_kv`.
const TOKENS_PER_TASK: usize = 16;

impl hal::KvCacheOps for CpuBackend {
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        const OP: &str = "write_kv";
        let t = args.validate(self.name())?;
        self.check(&args.desc())?;
        let access = self.access();
        let spec = args.cache.spec;
        let slots: &[i64] = access.read(OP, &args.slot_mapping)?;
        let num_slots = spec.num_slots();
        if let Some(bad) = slots.iter().find(|&&s| s >= num_slots as i64) {
            return Err(HalError::invalid(
                self.name(),
                OP,
                format!("slot {bad} lies outside the cache's {num_slots} slots (num_blocks × block_size)"),
            ));
        }
        let row = spec.num_kv_heads * spec.head_dim;
        let (in_dtype, cache_dtype) = (args.key.dtype, spec.dtype);
        let (in_bytes, cache_bytes) = (in_dtype.bytes_for(row), cache_dtype.bytes_for(row));
        let key_in = access.read_bytes(OP, &args.key)?;
        let value_in = access.read_bytes(OP, &args.value)?;
        let (k_scale, v_scale) = (args.cache.k_scale, args.cache.v_scale);
        let kc = &mut access.buffer_bytes_mut(OP, &mut args.cache.key)?[..spec.bytes()];
        let vc = &mut access.buffer_bytes_mut(OP, &mut args.cache.value)?[..spec.bytes()];
        // Each written slot once, by the last token naming it, in slot order
        // so the cache can be split into disjoint rows.
        let mut order: Vec<(usize, usize)> = slots
            .iter()
            .enumerate()
            .filter(|(_, &s)| s >= 0)
            .map(|(tok, &s)| (s as usize, tok))
            .collect();
        order.sort_unstable();
        order.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        let mut jobs = Vec::with_capacity(order.len());
        let (mut krest, mut vrest, mut base) = (kc, vc, 0usize);
        for &(slot, tok) in &order {
            let skip = (slot - base) * cache_bytes;
            let (_, k) = std::mem::take(&mut krest).split_at_mut(skip);
            let (_, v) = std::mem::take(&mut vrest).split_at_mut(skip);
            let (krow, k) = k.split_at_mut(cache_bytes);
            let (vrow, v) = v.split_at_mut(cache_bytes);
            (krest, vrest, base) = (k, v, slot + 1);
            jobs.push((tok, krow, vrow));
        }
        debug_assert!(t >= jobs.len());
        let isa = self.isa();
        let store = |src: &[u8], dst: &mut [u8], scale: f32, tmp: &mut Vec<f32>| {
            if in_dtype == cache_dtype {
                dst.copy_from_slice(src);
                return;
            }
            tmp.resize(row, 0.0);
            convert::to_f32(isa, in_dtype, src, tmp);
            if cache_dtype == DType::F8E4M3 {
                for (d, &x) in dst.iter_mut().zip(tmp.iter()) {
                    *d = e4m3_encode(x / scale);
                }
            } else {
                convert::from_f32(isa, cache_dtype, tmp, dst);
            }
        };
        self.pool().install(|| {
            jobs.par_chunks_mut(TOKENS_PER_TASK)
                .for_each_init(Vec::new, |tmp, chunk| {
                    for (tok, krow, vrow) in chunk.iter_mut() {
                        store(&key_in[*tok * in_bytes..][..in_bytes], krow, k_scale, tmp);
                        store(&value_in[*tok * in_bytes..][..in_bytes], vrow, v_scale, tmp);
                    }
                })
        });
        Ok(())
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        const OP: &str = "copy_blocks";
        validate_copy_blocks(self.name(), cache, pairs)?;
        self.check(&copy_blocks_desc(cache))?;
        let spec = cache.spec;
        let block = spec
            .dtype
            .bytes_for(spec.block_size * spec.num_kv_heads * spec.head_dim);
        let access = self.access();
        for buf in [&mut cache.key, &mut cache.value] {
            let bytes = &mut access.buffer_bytes_mut(OP, buf)?[..spec.bytes()];
            // Snapshot every source first: a block may be both a source and
            // a destination.
            let mut sources = Vec::with_capacity(pairs.len() * block);
            for &(src, _) in pairs {
                sources.extend_from_slice(&bytes[src as usize * block..][..block]);
            }
            for (i, &(_, dst)) in pairs.iter().enumerate() {
                bytes[dst as usize * block..][..block]
                    .copy_from_slice(&sources[i * block..][..block]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hal::reference::{self, HostKvCache};
    use hal::{Backend, DType, HostTensor, KvCacheOps, KvCacheSpec, KvLayout, Tensor, WriteKvArgs};

    use crate::{CpuBackend, Isa};

    fn spec(dtype: DType) -> KvCacheSpec {
        KvCacheSpec {
            num_blocks: 4,
            block_size: 4,
            num_kv_heads: 2,
            head_dim: 24,
            dtype,
            layout: KvLayout::Nhd,
        }
    }

    /// Write `slots` through the device and the reference; both caches.
    fn write(isa: Isa, dtype: DType, slots: &[i64]) -> (hal::Result<()>, Vec<u8>, Vec<u8>) {
        let cpu = CpuBackend::with(isa, 2).expect("cpu");
        let s = spec(dtype);
        let mut cache = cpu.alloc_kv_cache(&s, 0.5, 2.0).expect("cache");
        let poison = vec![0xFFu8; s.bytes()];
        cpu.upload(&mut cache.key, 0, &poison).expect("upload");
        cpu.upload(&mut cache.value, 0, &poison).expect("upload");
        let shape = [slots.len(), 2, 24];
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 300.0).collect();
        let k = HostTensor::from_f32(DType::F32, &shape, &vals);
        let v = HostTensor::from_f32(
            DType::F32,
            &shape,
            &vals.iter().map(|x| -x / 7.0).collect::<Vec<_>>(),
        );
        let (kd, vd) = (
            Tensor::from_host(&cpu, &k).expect("k"),
            Tensor::from_host(&cpu, &v).expect("v"),
        );
        let sd =
            Tensor::from_host(&cpu, &HostTensor::from_i64(&[slots.len()], slots)).expect("slots");
        let r = cpu.write_kv(WriteKvArgs {
            key: kd.view(),
            value: vd.view(),
            slot_mapping: sd.view(),
            cache: &mut cache,
        });
        let (mut kb, mut vb) = (vec![0u8; s.bytes()], vec![0u8; s.bytes()]);
        cpu.download(&cache.key, 0, &mut kb).expect("download");
        cpu.download(&cache.value, 0, &mut vb).expect("download");
        let mut want = HostKvCache::from_bytes(s, poison.clone(), poison, 0.5, 2.0);
        if r.is_ok() {
            reference::write_kv(&k, &v, slots, &mut want);
        }
        assert_eq!(kb, want.key.data, "{isa} {dtype} K");
        assert_eq!(vb, want.value.data, "{isa} {dtype} V");
        (r, kb, vb)
    }

    #[test]
    fn later_token_wins_and_padding_is_skipped() {
        for isa in Isa::available() {
            for dtype in [DType::F32, DType::F16, DType::F8E4M3] {
                let (r, ..) = write(isa, dtype, &[3, -1, 7, 3, 15, 0, 7]);
                assert!(r.is_ok());
            }
        }
    }

    #[test]
    fn slot_past_the_cache_is_an_error_and_writes_nothing() {
        let (r, k, v) = write(Isa::Scalar, DType::F16, &[1, 2, 16]);
        assert!(r.is_err());
        assert!(k.iter().chain(&v).all(|&b| b == 0xFF));
    }
}
