//! Paged KV cache: spec, physical layouts and the device-side cache.

use crate::{DType, DeviceBuffer};

/// Physical layout of a KV cache.
///
/// The logical layout is always `[num_blocks, block_size, num_kv_heads,
/// head_dim]` (NHD); a backend states which physical layouts it can use in
/// [`crate::Capabilities::kv_layouts`], and the engine picks the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvLayout {
    /// K and V both `[num_blocks, block_size, num_kv_heads, head_dim]`.
    Nhd,
    /// vLLM's paged-attention layout: K `[num_blocks, num_kv_heads,
    /// head_dim / x, block_size, x]`, V `[num_blocks, num_kv_heads,
    /// head_dim, block_size]`; `x` elements make 16 bytes.
    VllmSplitX {
        /// Elements per innermost K chunk (16 bytes / element size).
        x: usize,
    },
}

/// Dtypes a KV cache may hold.
pub const KV_CACHE_DTYPES: &[DType] = &[DType::F32, DType::F16, DType::BF16, DType::F8E4M3];

/// Shape, dtype and layout of a paged KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvCacheSpec {
    /// Physical blocks (block 0 may be reserved by the engine as a null block).
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// KV heads.
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Element type: F32, F16, BF16 or F8E4M3 (scaled, see [`KvCache`]).
    pub dtype: DType,
    /// Physical layout.
    pub layout: KvLayout,
}

impl KvCacheSpec {
    /// Elements in one of the two caches (K or V).
    pub fn elements(&self) -> usize {
        self.num_blocks * self.block_size * self.num_kv_heads * self.head_dim
    }

    /// Bytes of one of the two caches.
    pub fn bytes(&self) -> usize {
        self.dtype.bytes_for(self.elements())
    }

    /// Bytes one token occupies in K plus V, over all KV heads.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.dtype.bytes_for(self.num_kv_heads * self.head_dim)
    }

    /// Total slots (`num_blocks * block_size`).
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Physical element index of K for logical `(block, offset, head, d)`.
    pub fn key_index(&self, block: usize, offset: usize, head: usize, d: usize) -> usize {
        match self.layout {
            KvLayout::Nhd => self.nhd_index(block, offset, head, d),
            KvLayout::VllmSplitX { x } => {
                ((((block * self.num_kv_heads + head) * (self.head_dim / x) + d / x)
                    * self.block_size
                    + offset)
                    * x)
                    + d % x
            }
        }
    }

    /// Physical element index of V for logical `(block, offset, head, d)`.
    pub fn value_index(&self, block: usize, offset: usize, head: usize, d: usize) -> usize {
        match self.layout {
            KvLayout::Nhd => self.nhd_index(block, offset, head, d),
            KvLayout::VllmSplitX { .. } => {
                ((block * self.num_kv_heads + head) * self.head_dim + d) * self.block_size + offset
            }
        }
    }

    fn nhd_index(&self, block: usize, offset: usize, head: usize, d: usize) -> usize {
        ((block * self.block_size + offset) * self.num_kv_heads + head) * self.head_dim + d
    }

    /// Check the spec is self-consistent; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !KV_CACHE_DTYPES.contains(&self.dtype) {
            return Err(format!(
                "KV cache dtype {} is not one of f32, f16, bf16, f8e4m3",
                self.dtype
            ));
        }
        if self.num_blocks == 0
            || self.block_size == 0
            || self.num_kv_heads == 0
            || self.head_dim == 0
        {
            return Err(format!("KV cache dimensions must be non-zero: {self:?}"));
        }
        if let KvLayout::VllmSplitX { x } = self.layout {
            if x == 0 || !self.head_dim.is_multiple_of(x) {
                return Err(format!(
                    "head_dim {} is not a multiple of x = {x}",
                    self.head_dim
                ));
            }
        }
        Ok(())
    }
}

/// A paged KV cache on a device.
///
/// FP8 caches store `e4m3(k / k_scale)` and `e4m3(v / v_scale)` (per-tensor
/// scales, as vLLM does); other dtypes ignore the scales.
#[derive(Debug)]
pub struct KvCache {
    /// Shape, dtype and layout.
    pub spec: KvCacheSpec,
    /// K cache, `spec.bytes()` bytes in `spec.layout`.
    pub key: DeviceBuffer,
    /// V cache, `spec.bytes()` bytes in `spec.layout`.
    pub value: DeviceBuffer,
    /// Scale of the stored keys (FP8 only).
    pub k_scale: f32,
    /// Scale of the stored values (FP8 only).
    pub v_scale: f32,
}
