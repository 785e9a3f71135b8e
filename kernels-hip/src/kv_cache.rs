//! `write_kv` and `copy_blocks` for the NHD cache layout (the CUDA backend's
//! `kv_cache.cu`, compiled for AMD through `kernels/hip_prelude.h`).

use hal::{Backend, DType, HalError, KvCache, Result, WriteKvArgs};

use crate::device::{Arg, HipDevice};
use crate::gemm::suffix;
use crate::sources::KV_CACHE;

/// Run [`WriteKvArgs`]: one block per token, its K and V rows copied (and
/// converted, FP8-scaled) into the slot's rows.
pub(crate) fn write_kv(dev: &HipDevice, args: WriteKvArgs<'_>) -> Result<()> {
    let op = "write_kv";
    let t = args.validate(dev.name())?;
    dev.supports(&args.desc()).map_err(|u| dev.refuse(u))?;
    if t == 0 {
        return Ok(());
    }
    let s = args.cache.spec;
    let row = s.num_kv_heads * s.head_dim;
    let fp8 = s.dtype == DType::F8E4M3;
    if fp8 && !(args.cache.k_scale > 0.0 && args.cache.v_scale > 0.0) {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!(
                "FP8 cache scales must be positive, got k_scale {} and v_scale {}",
                args.cache.k_scale, args.cache.v_scale
            ),
        ));
    }
    let f = dev.function(
        &KV_CACHE,
        &format!("write_kv_{}_{}", suffix(args.key.dtype), suffix(s.dtype)),
    )?;
    let threads = (row.div_ceil(32) * 32).clamp(32, 256) as u32;
    dev.launch(
        op,
        &f,
        (t as u32, 1, 1),
        (threads, 1, 1),
        0,
        &[
            Arg::Ptr(dev.ptr(op, &args.key)?),
            Arg::Ptr(dev.ptr(op, &args.value)?),
            Arg::Ptr(dev.ptr(op, &args.slot_mapping)?),
            Arg::Ptr(dev.buffer_ptr(op, &args.cache.key)?),
            Arg::Ptr(dev.buffer_ptr(op, &args.cache.value)?),
            Arg::I32(row as i32),
            Arg::F32(args.cache.k_scale),
            Arg::F32(args.cache.v_scale),
            Arg::I32(i32::from(fp8)),
        ],
    )
}

/// Copy whole blocks; every source is staged before any destination is
/// written, so overlapping pairs behave as the HAL defines.
pub(crate) fn copy_blocks(
    dev: &HipDevice,
    cache: &mut KvCache,
    pairs: &[(u32, u32)],
) -> Result<()> {
    let op = "copy_blocks";
    hal::ops::kv_cache::validate_copy_blocks(dev.name(), cache, pairs)?;
    dev.supports(&hal::ops::kv_cache::copy_blocks_desc(cache))
        .map_err(|u| dev.refuse(u))?;
    if pairs.is_empty() {
        return Ok(());
    }
    let s = cache.spec;
    let block = s
        .dtype
        .bytes_for(s.block_size * s.num_kv_heads * s.head_dim);
    let k = dev.buffer_ptr(op, &cache.key)?;
    let v = dev.buffer_ptr(op, &cache.value)?;
    let staging = dev.scratch(op, 2 * block * pairs.len())?;
    let at = |base: u64, blk: u32| base + blk as u64 * block as u64;
    for (i, &(src, _)) in pairs.iter().enumerate() {
        let slot = staging.ptr() + (2 * i * block) as u64;
        dev.copy_device(op, slot, at(k, src), block)?;
        dev.copy_device(op, slot + block as u64, at(v, src), block)?;
    }
    for (i, &(_, dst)) in pairs.iter().enumerate() {
        let slot = staging.ptr() + (2 * i * block) as u64;
        dev.copy_device(op, at(k, dst), slot, block)?;
        dev.copy_device(op, at(v, dst), slot + block as u64, block)?;
    }
    Ok(())
}

/// Every kernel this module launches.
pub(crate) fn kernel_names() -> Vec<String> {
    let mut v = Vec::new();
    for i in ["f32", "f16", "bf16"] {
        for c in ["f32", "f16", "bf16", "f8e4m3"] {
            v.push(format!("write_kv_{i}_{c}"));
        }
    }
    v
}
