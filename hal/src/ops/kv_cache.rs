//! KV-cache writes and block copies.

use crate::check::{Check, ACTIVATIONS};
use crate::{Backend, DType, KvCache, KvCacheSpec, OpDesc, Result, View};

/// Write new keys and values into the paged cache (vLLM's `reshape_and_cache`).
///
/// Token `t` goes to slot `slot_mapping[t]` = `block * block_size + offset`;
/// a negative slot is padding and is skipped. FP8 caches store
/// `e4m3(k / k_scale)`.
#[derive(Debug)]
pub struct WriteKvArgs<'a> {
    /// New keys `[num_tokens, num_kv_heads, head_dim]`.
    pub key: View<'a>,
    /// New values `[num_tokens, num_kv_heads, head_dim]`.
    pub value: View<'a>,
    /// I64 `[num_tokens]`.
    pub slot_mapping: View<'a>,
    /// The cache written.
    pub cache: &'a mut KvCache,
}

impl WriteKvArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `num_tokens`.
    pub fn validate(&self, backend: &str) -> Result<usize> {
        let c = Check::new(backend, "write_kv");
        let s = self.cache.spec;
        check_cache(&c, self.cache)?;
        c.view("key", &self.key, ACTIVATIONS)?;
        c.view("value", &self.value, &[self.key.dtype])?;
        c.view("slot_mapping", &self.slot_mapping, &[DType::I64])?;
        let t = c.rank("key", &self.key, 3)?[0];
        c.shape("key", &self.key, &[t, s.num_kv_heads, s.head_dim])?;
        c.shape("value", &self.value, &[t, s.num_kv_heads, s.head_dim])?;
        c.shape("slot_mapping", &self.slot_mapping, &[t])?;
        Ok(t)
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::WriteKv {
            input: self.key.dtype,
            cache: self.cache.spec,
        }
    }
}

/// The cache's buffers are large enough for its spec.
pub(crate) fn check_cache(c: &Check<'_>, cache: &KvCache) -> Result<()> {
    cache.spec.validate().map_err(|m| c.err(m))?;
    let need = cache.spec.bytes();
    c.ensure(cache.key.len() >= need && cache.value.len() >= need, || {
        format!(
            "cache buffers hold {} / {} bytes, spec needs {need}",
            cache.key.len(),
            cache.value.len()
        )
    })
}

/// Validate a `copy_blocks` request against a cache.
pub fn validate_copy_blocks(backend: &str, cache: &KvCache, pairs: &[(u32, u32)]) -> Result<()> {
    let c = Check::new(backend, "copy_blocks");
    check_cache(&c, cache)?;
    let nb = cache.spec.num_blocks;
    for &(src, dst) in pairs {
        c.ensure((src as usize) < nb && (dst as usize) < nb, || {
            format!("block pair ({src}, {dst}) outside 0..{nb}")
        })?;
    }
    Ok(())
}

/// KV-cache operations.
pub trait KvCacheOps: Backend {
    /// Allocate a cache for `spec`. Contents are unspecified until written.
    fn alloc_kv_cache(&self, spec: &KvCacheSpec, k_scale: f32, v_scale: f32) -> Result<KvCache> {
        spec.validate()
            .map_err(|m| crate::HalError::invalid(self.name(), "alloc_kv_cache", m))?;
        Ok(KvCache {
            spec: *spec,
            key: self.alloc(spec.bytes())?,
            value: self.alloc(spec.bytes())?,
            k_scale,
            v_scale,
        })
    }

    /// Run [`WriteKvArgs`]. Default: unsupported.
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("write_kv"))
    }

    /// Copy whole blocks `src → dst` (K and V) for each pair, e.g. for
    /// copy-on-write of a shared prefix block. Pairs are applied as if all
    /// sources were read before any destination is written. Default:
    /// unsupported.
    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        let _ = (cache, pairs);
        Err(self.not_implemented("copy_blocks"))
    }
}

/// The [`OpDesc`] of a `copy_blocks` call.
pub fn copy_blocks_desc(cache: &KvCache) -> OpDesc {
    OpDesc::CopyBlocks { cache: cache.spec }
}
