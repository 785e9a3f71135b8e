//! KV-cache writes (`kernels/kv_cache.cl`) and block copies (queue copies).
//! The cache is NHD `[num_blocks, block_size, num_kv_heads, head_dim]` in
//! f32, f16, bf16 or FP8 E4M3 (stored as `e4m3(x / scale)`).

use hal::{Backend, KvCache, Result, WriteKvArgs};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::KV_CACHE;

/// Run [`WriteKvArgs`].
pub(crate) fn write_kv(d: &OpenClDevice, args: WriteKvArgs<'_>) -> Result<()> {
    let t = args.validate(d.name())?;
    d.supports(&args.desc()).map_err(|u| d.refuse(u))?;
    let op = "write_kv";
    let s = args.cache.spec;
    let row = s.num_kv_heads * s.head_dim;
    let [k, k_off] = d.view(op, &args.key)?;
    let [v, v_off] = d.view(op, &args.value)?;
    let [sl, sl_off] = d.view(op, &args.slot_mapping)?;
    let kc = d.buf(op, &args.cache.key)?;
    let vc = d.buf(op, &args.cache.value)?;
    d.launch(
        op,
        &KV_CACHE,
        "write_kv",
        [row, t, 1],
        [64, 1, 1],
        &[
            k,
            k_off,
            v,
            v_off,
            Arg::I32(dtype_code(args.key.dtype)),
            sl,
            sl_off,
            kc,
            vc,
            Arg::I32(dtype_code(s.dtype)),
            Arg::F32(args.cache.k_scale),
            Arg::F32(args.cache.v_scale),
            Arg::I32(row as i32),
        ],
    )
}

/// Copy whole blocks `src → dst` in K and V, all sources read before any
/// destination is written (through a scratch buffer).
pub(crate) fn copy_blocks(
    d: &OpenClDevice,
    cache: &mut KvCache,
    pairs: &[(u32, u32)],
) -> Result<()> {
    let op = "copy_blocks";
    hal::ops::kv_cache::validate_copy_blocks(d.name(), cache, pairs)?;
    d.supports(&hal::ops::kv_cache::copy_blocks_desc(cache))
        .map_err(|u| d.refuse(u))?;
    if pairs.is_empty() {
        return Ok(());
    }
    let s = cache.spec;
    let block = s
        .dtype
        .bytes_for(s.block_size * s.num_kv_heads * s.head_dim);
    for buf in [&mut cache.key, &mut cache.value] {
        let mut tmp = d.scratch(op, block * pairs.len())?;
        let mem = d.memory_mut(op, buf)?;
        for (i, &(src, _)) in pairs.iter().enumerate() {
            d.copy(op, mem, src as usize * block, &mut tmp, i * block, block)?;
        }
        for (i, &(_, dst)) in pairs.iter().enumerate() {
            d.copy(op, &tmp, i * block, mem, dst as usize * block, block)?;
        }
    }
    Ok(())
}
