//! The paged KV cache: `write_kv` scatters new keys and values into their
//! slots; `copy_blocks` gathers source blocks and scatters them to the
//! destinations (every source read before any write).

use hal::{Backend, DType, KvCache, KvLayout, Result, WriteKvArgs};

use crate::device::{load, store, TpuDevice};
use crate::elementwise::{el_of, load_f32, vk};
use crate::hlo::{BResult, Builder, Cmp, El, ScatterDims, Ty, Val};

/// Convert f32 values to the cache's element type; FP8 caches store
/// `e4m3(x / scale)`.
pub(crate) fn to_cache(b: &mut Builder, x: &Val, e: El, scale: f32) -> BResult<Val> {
    if e == El::F8E4M3 {
        let s = b.splat(x.ty.clone(), scale as f64);
        let y = b.div(x, &s)?;
        // Saturate to ±448 as the HAL's FP8 conversion does (XLA's convert
        // would give NaN past the largest finite E4M3 value).
        let hi = b.splat(y.ty.clone(), 448.0);
        let lo = b.splat(y.ty.clone(), -448.0);
        let y = b.min(&y, &hi)?;
        let y = b.max(&y, &lo)?;
        Ok(b.convert(&y, e))
    } else {
        Ok(b.convert(x, e))
    }
}

/// Convert cache elements to f32, undoing the FP8 scale.
pub(crate) fn from_cache(b: &mut Builder, x: &Val, scale: f32) -> BResult<Val> {
    let f = b.convert(x, El::F32);
    if x.ty.el == El::F8E4M3 {
        let s = b.splat(f.ty.clone(), scale as f64);
        b.mul(&f, &s)
    } else {
        Ok(f)
    }
}

/// The physical array shape of the K (`key = true`) or V cache of `spec`:
/// NHD `[blocks, block_size, kv_heads, head_dim]`; vLLM's split-x K
/// `[blocks, kv_heads, head_dim / x, block_size, x]` and V
/// `[blocks, kv_heads, head_dim, block_size]`.
pub(crate) fn physical_dims(spec: &hal::KvCacheSpec, key: bool) -> Vec<usize> {
    let (nb, bs, h, d) = (
        spec.num_blocks,
        spec.block_size,
        spec.num_kv_heads,
        spec.head_dim,
    );
    match spec.layout {
        KvLayout::Nhd => vec![nb, bs, h, d],
        KvLayout::VllmSplitX { x } if key => vec![nb, h, d / x, bs, x],
        KvLayout::VllmSplitX { .. } => vec![nb, h, d, bs],
    }
}

pub(crate) fn write_kv(dev: &TpuDevice, args: WriteKvArgs<'_>) -> Result<()> {
    let t = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "write_kv";
    let s = args.cache.spec;
    let ie = el_of(dev, op, args.key.dtype)?;
    let ce = el_of(dev, op, s.dtype)?;
    let (ks, vs) = (args.cache.k_scale, args.cache.v_scale);
    let key = format!(
        "write_kv|{}|{}|{}|{:?}|{}|{}",
        vk(args.key.dtype, &args.key.layout),
        vk(args.value.dtype, &args.value.layout),
        vk(args.slot_mapping.dtype, &args.slot_mapping.layout),
        s,
        ks.to_bits(),
        vs.to_bits()
    );
    let (kl, vl, sl) = (
        args.key.layout.clone(),
        args.value.layout.clone(),
        args.slot_mapping.layout.clone(),
    );
    let slots = s.num_slots();
    let row = s.num_kv_heads * s.head_dim;
    let cache = args.cache;
    dev.run(
        op,
        key,
        &[args.key.buffer, args.value.buffer, args.slot_mapping.buffer],
        &mut [&mut cache.key, &mut cache.value],
        |b, ins, outs| {
            let slot = load(b, &ins[2], El::I64, sl.offset(), sl.shape())?;
            // Padding slots (< 0) go past the end, where scatter skips them.
            let zero = b.splat(slot.ty.clone(), 0.0);
            let past = b.splat(slot.ty.clone(), slots as f64);
            let neg = b.compare(&slot, &zero, Cmp::Lt)?;
            let slot = b.select(&neg, &past, &slot)?;
            let mut res = Vec::new();
            if s.layout == KvLayout::Nhd {
                let idx = b.reshape(&slot, &[t, 1])?;
                for (i, (l, scale)) in [(&kl, ks), (&vl, vs)].into_iter().enumerate() {
                    let x = load_f32(b, &ins[i], ie, l)?;
                    let x = b.reshape(&x, &[t, row])?;
                    let x = to_cache(b, &x, ce, scale)?;
                    let c = load(b, &outs[i], ce, 0, &[slots, row])?;
                    let c = b.scatter(
                        &c,
                        &idx,
                        &x,
                        &ScatterDims {
                            update_window_dims: vec![1],
                            inserted_window_dims: vec![0],
                            scatter_dims_to_operand_dims: vec![0],
                            index_vector_dim: 1,
                        },
                    );
                    res.push(store(b, &outs[i], 0, &c)?);
                }
                return Ok(res);
            }
            // Split-x: index (block, offset) into dimensions 0 and 3 of both
            // caches; a padding slot's block is past the end.
            let bsv = b.splat(slot.ty.clone(), s.block_size as f64);
            let blk = b.div(&slot, &bsv)?;
            let base = b.mul(&blk, &bsv)?;
            let off = b.sub(&slot, &base)?;
            let blk = b.reshape(&blk, &[t, 1])?;
            let off = b.reshape(&off, &[t, 1])?;
            let idx = b.concatenate(&[&blk, &off], 1)?;
            let (h, d) = (s.num_kv_heads, s.head_dim);
            for (i, (l, scale)) in [(&kl, ks), (&vl, vs)].into_iter().enumerate() {
                let key_side = i == 0;
                let x = load_f32(b, &ins[i], ie, l)?;
                let x = to_cache(b, &x, ce, scale)?;
                let (x, window) = match s.layout {
                    KvLayout::VllmSplitX { x: xx } if key_side => {
                        (b.reshape(&x, &[t, h, d / xx, xx])?, vec![1, 2, 3])
                    }
                    _ => (x, vec![1, 2]),
                };
                let c = load(b, &outs[i], ce, 0, &physical_dims(&s, key_side))?;
                let c = b.scatter(
                    &c,
                    &idx,
                    &x,
                    &ScatterDims {
                        update_window_dims: window,
                        inserted_window_dims: vec![0, 3],
                        scatter_dims_to_operand_dims: vec![0, 3],
                        index_vector_dim: 1,
                    },
                );
                res.push(store(b, &outs[i], 0, &c)?);
            }
            Ok(res)
        },
    )
}

pub(crate) fn alloc_kv_cache(
    dev: &TpuDevice,
    spec: &hal::KvCacheSpec,
    k_scale: f32,
    v_scale: f32,
) -> Result<KvCache> {
    let op = "alloc_kv_cache";
    spec.validate()
        .map_err(|m| hal::HalError::invalid(dev.name(), op, m))?;
    let e = el_of(dev, op, spec.dtype)?;
    Ok(KvCache {
        spec: *spec,
        key: dev.alloc_typed(op, Ty::new(&physical_dims(spec, true), e))?,
        value: dev.alloc_typed(op, Ty::new(&physical_dims(spec, false), e))?,
        k_scale,
        v_scale,
    })
}

pub(crate) fn copy_blocks(
    dev: &TpuDevice,
    cache: &mut KvCache,
    pairs: &[(u32, u32)],
) -> Result<()> {
    hal::ops::kv_cache::validate_copy_blocks(dev.name(), cache, pairs)?;
    dev.check(&hal::ops::kv_cache::copy_blocks_desc(cache))?;
    if pairs.is_empty() {
        return Ok(());
    }
    let op = "copy_blocks";
    let s = cache.spec;
    let block_elems = s.elements() / s.num_blocks;
    let ce = el_of(dev, op, s.dtype)?;
    let mut ids = Vec::with_capacity(pairs.len() * 8);
    for &(src, _) in pairs {
        ids.extend_from_slice(&(src as i32).to_le_bytes());
    }
    for &(_, dst) in pairs {
        ids.extend_from_slice(&(dst as i32).to_le_bytes());
    }
    let mut idx = dev.alloc_impl(ids.len())?;
    dev.upload_impl(&mut idx, 0, &ids)?;
    let p = pairs.len();
    let nb = s.num_blocks;
    let key = format!("copy_blocks|{nb}x{block_elems}|{ce:?}|{p}|{:?}", DType::I32);
    dev.run(
        op,
        key,
        &[&idx],
        &mut [&mut cache.key, &mut cache.value],
        |b, ins, outs| {
            let all = load(b, &ins[0], El::I32, 0, &[2 * p])?;
            let src = b.slice(&all, &[0], &[p])?;
            let dst = b.slice(&all, &[p], &[2 * p])?;
            let dst = b.reshape(&dst, &[p, 1])?;
            let mut res = Vec::new();
            for o in outs {
                let c = load(b, o, ce, 0, &[nb, block_elems])?;
                let blocks = crate::elementwise::take_rows(b, &c, &src)?;
                let c = b.scatter(
                    &c,
                    &dst,
                    &blocks,
                    &ScatterDims {
                        update_window_dims: vec![1],
                        inserted_window_dims: vec![0],
                        scatter_dims_to_operand_dims: vec![0],
                        index_vector_dim: 1,
                    },
                );
                res.push(store(b, o, 0, &c)?);
            }
            Ok(res)
        },
    )
}
