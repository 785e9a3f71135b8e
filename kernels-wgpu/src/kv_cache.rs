//! `write_kv` (`kernels/write_kv.wgsl`) and `copy_blocks` (buffer copies
//! through a scratch buffer, so every source is read before any destination
//! is written).

use hal::ops::kv_cache::validate_copy_blocks;
use hal::{Backend, DType, HalError, KvCache, Result, WriteKvArgs};

use crate::launch::{elem_offset, groups_for, word_offset};
use crate::shader::{ro, rw, Elem, KernelSpec};
use crate::WgpuDevice;

const WG: u32 = 256;

/// [`WriteKvArgs`]: one invocation per (token, KV head, element).
pub(crate) fn write_kv(dev: &WgpuDevice, args: WriteKvArgs<'_>) -> Result<()> {
    const OP: &str = "write_kv";
    let t = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let s = args.cache.spec;
    let ie = Elem::of(args.key.dtype);
    let ce = Elem::of(s.dtype);
    let spec = KernelSpec {
        name: OP,
        body: include_str!("kernels/write_kv.wgsl").to_string(),
        bindings: vec![
            ro("key", ie),
            ro("value", ie),
            ro("slots", Elem::Word),
            rw("kc", ce),
            rw("vc", ce),
        ],
        workgroup: WG,
        variant: String::new(),
    };
    let (ks, vs) = if s.dtype == DType::F8E4M3 {
        (args.cache.k_scale, args.cache.v_scale)
    } else {
        (1.0, 1.0)
    };
    let params = [
        t as u32,
        s.num_kv_heads as u32,
        s.head_dim as u32,
        elem_offset(dev, OP, &args.key)?,
        elem_offset(dev, OP, &args.value)?,
        word_offset(dev, OP, &args.slot_mapping)?,
        ks.to_bits(),
        vs.to_bits(),
        s.num_slots() as u32,
    ];
    let key = dev.buf(OP, args.key.buffer)?;
    let value = dev.buf(OP, args.value.buffer)?;
    let slots = dev.buf(OP, args.slot_mapping.buffer)?;
    let kc = dev.buf(OP, &args.cache.key)?;
    let vc = dev.buf(OP, &args.cache.value)?;
    let n = t * s.num_kv_heads * s.head_dim;
    dev.dispatch(
        OP,
        &spec,
        &[key, value, slots, kc, vc],
        &params,
        groups_for(n, WG),
    )
}

/// Copy whole blocks `src → dst` in K and V.
pub(crate) fn copy_blocks(
    dev: &WgpuDevice,
    cache: &mut KvCache,
    pairs: &[(u32, u32)],
) -> Result<()> {
    const OP: &str = "copy_blocks";
    validate_copy_blocks(dev.name(), cache, pairs)?;
    dev.check(&hal::ops::kv_cache::copy_blocks_desc(cache))?;
    if pairs.is_empty() {
        return Ok(());
    }
    let s = cache.spec;
    let block = s
        .dtype
        .bytes_for(s.block_size * s.num_kv_heads * s.head_dim) as u64;
    if !block.is_multiple_of(4) {
        return Err(HalError::invalid(
            dev.name(),
            OP,
            format!("a block of {block} bytes is not a whole number of words"),
        ));
    }
    let scratch = dev.scratch(OP, 2 * pairs.len() * block as usize)?;
    for (which, buf) in [&cache.key, &cache.value].into_iter().enumerate() {
        let b = dev.buf(OP, buf)?;
        let base = (which * pairs.len()) as u64 * block;
        for (i, &(src, _)) in pairs.iter().enumerate() {
            dev.copy(
                b,
                src as u64 * block,
                &scratch,
                base + i as u64 * block,
                block,
            )?;
        }
    }
    for (which, buf) in [&cache.key, &cache.value].into_iter().enumerate() {
        let b = dev.buf(OP, buf)?;
        let base = (which * pairs.len()) as u64 * block;
        for (i, &(_, dst)) in pairs.iter().enumerate() {
            dev.copy(
                &scratch,
                base + i as u64 * block,
                b,
                dst as u64 * block,
                block,
            )?;
        }
    }
    Ok(())
}
