//! KV cache in host memory, `write_kv` and `copy_blocks`.

use crate::fp8::f32_to_e4m3;
use crate::{DType, HostTensor, KvCacheSpec};

/// A KV cache in host memory, in the spec's *physical* layout, so its bytes
/// are exactly what a device holds.
#[derive(Clone, Debug, PartialEq)]
pub struct HostKvCache {
    /// Shape, dtype, layout.
    pub spec: KvCacheSpec,
    /// K, `spec.elements()` elements of `spec.dtype`, physical order.
    pub key: HostTensor,
    /// V, likewise.
    pub value: HostTensor,
    /// FP8 key scale.
    pub k_scale: f32,
    /// FP8 value scale.
    pub v_scale: f32,
}

impl HostKvCache {
    /// A zero-filled cache.
    pub fn zeros(spec: KvCacheSpec, k_scale: f32, v_scale: f32) -> Self {
        let t = HostTensor::zeros(spec.dtype, &[spec.elements()]);
        HostKvCache {
            spec,
            key: t.clone(),
            value: t,
            k_scale,
            v_scale,
        }
    }

    /// A cache whose every slot holds NaN, so a kernel that reads a slot no
    /// sequence wrote produces NaN.
    pub fn poisoned(spec: KvCacheSpec, k_scale: f32, v_scale: f32) -> Self {
        let mut c = HostKvCache::zeros(spec, k_scale, v_scale);
        for i in 0..spec.elements() {
            c.key.set(i, f64::NAN);
            c.value.set(i, f64::NAN);
        }
        c
    }

    /// From raw physical bytes (e.g. downloaded from a device).
    pub fn from_bytes(
        spec: KvCacheSpec,
        key: Vec<u8>,
        value: Vec<u8>,
        k_scale: f32,
        v_scale: f32,
    ) -> Self {
        let wrap = |data| HostTensor {
            dtype: spec.dtype,
            shape: vec![spec.elements()],
            data,
        };
        HostKvCache {
            spec,
            key: wrap(key),
            value: wrap(value),
            k_scale,
            v_scale,
        }
    }

    fn scale(&self, is_key: bool) -> f64 {
        match (self.spec.dtype, is_key) {
            (DType::F8E4M3, true) => self.k_scale as f64,
            (DType::F8E4M3, false) => self.v_scale as f64,
            _ => 1.0,
        }
    }

    /// Logical key element (scaled back for FP8).
    pub fn key_at(&self, block: usize, offset: usize, head: usize, d: usize) -> f64 {
        self.key.get(self.spec.key_index(block, offset, head, d)) * self.scale(true)
    }

    /// Logical value element (scaled back for FP8).
    pub fn value_at(&self, block: usize, offset: usize, head: usize, d: usize) -> f64 {
        self.value
            .get(self.spec.value_index(block, offset, head, d))
            * self.scale(false)
    }

    /// Store `x` as the cache stores it: FP8 holds `e4m3(x / scale)` computed
    /// in f32; other dtypes round `x` directly.
    fn store(&mut self, is_key: bool, idx: usize, x: f64) {
        let t = if is_key {
            &mut self.key
        } else {
            &mut self.value
        };
        if t.dtype == DType::F8E4M3 {
            let s = if is_key { self.k_scale } else { self.v_scale };
            t.data[idx] = f32_to_e4m3(x as f32 / s);
        } else {
            t.set(idx, x);
        }
    }
}

/// Write token `t`'s key and value (`[T, Hkv, D]`) to slot `slot_mapping[t]`;
/// negative slots are skipped.
pub fn write_kv(
    key: &HostTensor,
    value: &HostTensor,
    slot_mapping: &[i64],
    cache: &mut HostKvCache,
) {
    let s = cache.spec;
    let (h, d) = (s.num_kv_heads, s.head_dim);
    for (t, &slot) in slot_mapping.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        let (block, off) = (slot as usize / s.block_size, slot as usize % s.block_size);
        for hh in 0..h {
            for dd in 0..d {
                let src = (t * h + hh) * d + dd;
                cache.store(true, s.key_index(block, off, hh, dd), key.get(src));
                cache.store(false, s.value_index(block, off, hh, dd), value.get(src));
            }
        }
    }
}

/// Copy whole blocks `src → dst`; all sources are read before any write.
pub fn copy_blocks(cache: &mut HostKvCache, pairs: &[(u32, u32)]) {
    let s = cache.spec;
    let before = cache.clone();
    for &(src, dst) in pairs {
        for off in 0..s.block_size {
            for h in 0..s.num_kv_heads {
                for d in 0..s.head_dim {
                    let (ks, kd) = (
                        s.key_index(src as usize, off, h, d),
                        s.key_index(dst as usize, off, h, d),
                    );
                    let (vs, vd) = (
                        s.value_index(src as usize, off, h, d),
                        s.value_index(dst as usize, off, h, d),
                    );
                    copy_element(&before.key, ks, &mut cache.key, kd);
                    copy_element(&before.value, vs, &mut cache.value, vd);
                }
            }
        }
    }
}

/// Copy one element's bytes exactly (FP8 NaN payloads included).
fn copy_element(src: &HostTensor, si: usize, dst: &mut HostTensor, di: usize) {
    let w = src.dtype.bytes_for(1);
    dst.data[di * w..(di + 1) * w].copy_from_slice(&src.data[si * w..(si + 1) * w]);
}
