//! Every op: validate, capture the buffers, queue a command that runs the
//! reference oracle at `synchronize`.

use std::sync::Arc;

use hal::reference::{self, HostKvCache, Table};
use hal::tensor::ViewInfo;
use hal::{
    AddArgs, Backend, DType, DeviceBuffer, Elementwise, EmbeddingArgs, EmbeddingTable,
    FlashAttention, FlashAttentionArgs, Gemm, GemmArgs, HalError, KvCache, KvCacheOps,
    PackedWeight, PagedAttention, PagedAttentionArgs, QuantGemm, QuantGemmArgs, QuantWeights,
    Result, RmsNormArgs, RopeArgs, SiluAndMulArgs, WriteKvArgs,
};

use crate::memory::{Input, Output, Region};
use crate::{LoopbackBackend, PlantedFault};

/// A packed weight's device-side form: private, so only this crate can read it.
struct PackedHost(Arc<QuantWeights>);

impl LoopbackBackend {
    fn input(
        &self,
        op: &'static str,
        v: &(impl ViewInfo + ?Sized),
        buf: &DeviceBuffer,
    ) -> Result<Input> {
        let mem = self.memory(op, buf)?;
        Ok(Input {
            region: Region::new(mem.clone(), v.byte_offset(), v.byte_len()),
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
        })
    }

    fn view_in(&self, op: &'static str, v: &hal::View<'_>) -> Result<Input> {
        self.input(op, v, v.buffer)
    }

    fn view_out(&self, op: &'static str, v: &hal::ViewMut<'_>) -> Result<Output> {
        Ok(Output::new(self.input(op, v, v.buffer)?))
    }

    fn cache_buffers(&self, op: &'static str, cache: &KvCache) -> Result<(Region, Region)> {
        let n = cache.spec.bytes();
        Ok((
            Region::new(self.memory(op, &cache.key)?.clone(), 0, n),
            Region::new(self.memory(op, &cache.value)?.clone(), 0, n),
        ))
    }

    fn packed(&self, op: &'static str, w: &PackedWeight) -> Result<Arc<QuantWeights>> {
        let part = w
            .parts
            .first()
            .ok_or_else(|| HalError::invalid(&self.name, op, "packed weight has no parts"))?;
        part.handle::<PackedHost>(self.id)
            .map(|p| p.0.clone())
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{:?}", part.owner()),
            })
    }

    fn check(&self, desc: &hal::OpDesc) -> Result<()> {
        self.supports(desc).map_err(|u| self.refuse(u))
    }
}

impl Gemm for LoopbackBackend {
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let (x, w) = (
            self.view_in("gemm", &args.x)?,
            self.view_in("gemm", &args.w)?,
        );
        let bias = args
            .bias
            .as_ref()
            .map(|b| self.view_in("gemm", b))
            .transpose()?;
        let out = self.view_out("gemm", &args.out)?;
        self.enqueue(Box::new(move || {
            let y = reference::gemm(
                &x.read(),
                &w.read(),
                bias.map(|b| b.read()).as_ref(),
                out.0.dtype,
            );
            out.write(&y);
            Ok(())
        }))
    }
}

/// Reorder each word's nibbles so that reading them in AWQ order yields the
/// natural order: the planted "wrong nibble order" bug.
fn natural_nibble_order(words: &[i32]) -> Vec<i32> {
    words
        .iter()
        .map(|&w| {
            let w = w as u32;
            let mut out = 0u32;
            for j in 0..8 {
                let nib = (w >> (4 * j)) & 0xF;
                out |= nib << (4 * hal::quant::awq::INVERSE_ORDER[j]);
            }
            out as i32
        })
        .collect()
}

impl QuantGemm for LoopbackBackend {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        w.validate()
            .map_err(|m| HalError::invalid(&self.name, "pack", m))?;
        let mut host = w.clone();
        if self.fault == Some(PlantedFault::AwqNaturalNibbleOrder) {
            if let QuantWeights::Awq {
                qweight, qzeros, ..
            } = &mut host
            {
                *qweight = natural_nibble_order(qweight);
                *qzeros = natural_nibble_order(qzeros);
            }
        }
        let scalars = match w {
            QuantWeights::Fp8 {
                input_scale: Some(s),
                ..
            } => vec![*s],
            _ => Vec::new(),
        };
        Ok(PackedWeight {
            spec: w.spec(),
            n: w.n(),
            k: w.k(),
            layout: "checkpoint",
            parts: vec![DeviceBuffer::new(
                self.id,
                w.storage_bytes(),
                PackedHost(Arc::new(host)),
            )],
            scalars,
        })
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let w = self.packed("quant_gemm", args.w)?;
        let x = self.view_in("quant_gemm", &args.x)?;
        let bias = args
            .bias
            .as_ref()
            .map(|b| self.view_in("quant_gemm", b))
            .transpose()?;
        let out = self.view_out("quant_gemm", &args.out)?;
        let precision = args.precision;
        self.enqueue(Box::new(move || {
            let y = reference::quant_gemm(
                &x.read(),
                &w,
                bias.map(|b| b.read()).as_ref(),
                precision,
                out.0.dtype,
            );
            out.write(&y);
            Ok(())
        }))
    }
}

/// A cache captured for a queued command: read it, let the command change
/// it, write it back.
struct CapturedCache {
    key: Output,
    value: Output,
    spec: hal::KvCacheSpec,
    k_scale: f32,
    v_scale: f32,
}

impl CapturedCache {
    fn read(&self) -> HostKvCache {
        HostKvCache::from_bytes(
            self.spec,
            self.key.0.region.read_bytes(),
            self.value.0.region.read_bytes(),
            self.k_scale,
            self.v_scale,
        )
    }

    fn write(self, c: &HostKvCache) {
        self.key.0.region.write_bytes(&c.key.data);
        self.value.0.region.write_bytes(&c.value.data);
    }
}

impl LoopbackBackend {
    fn capture_cache(&self, op: &'static str, cache: &KvCache) -> Result<CapturedCache> {
        let (k, v) = self.cache_buffers(op, cache)?;
        let wrap = |region| {
            Output::new(Input {
                region,
                dtype: DType::U8,
                shape: vec![cache.spec.bytes()],
            })
        };
        Ok(CapturedCache {
            key: wrap(k),
            value: wrap(v),
            spec: cache.spec,
            k_scale: cache.k_scale,
            v_scale: cache.v_scale,
        })
    }
}

impl KvCacheOps for LoopbackBackend {
    fn write_kv(&self, args: WriteKvArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let key = self.view_in("write_kv", &args.key)?;
        let value = self.view_in("write_kv", &args.value)?;
        let slots = self.view_in("write_kv", &args.slot_mapping)?;
        let cache = self.capture_cache("write_kv", args.cache)?;
        self.enqueue(Box::new(move || {
            let slot_mapping = slots.read_i64();
            let num_slots = cache.spec.num_slots() as i64;
            if let Some(bad) = slot_mapping.iter().find(|&&s| s >= num_slots) {
                return Err(format!(
                    "write_kv: slot {bad} outside the cache's {num_slots} slots"
                ));
            }
            let mut host = cache.read();
            reference::write_kv(&key.read(), &value.read(), &slot_mapping, &mut host);
            cache.write(&host);
            Ok(())
        }))
    }

    fn copy_blocks(&self, cache: &mut KvCache, pairs: &[(u32, u32)]) -> Result<()> {
        hal::ops::kv_cache::validate_copy_blocks(&self.name, cache, pairs)?;
        self.check(&hal::ops::kv_cache::copy_blocks_desc(cache))?;
        let captured = self.capture_cache("copy_blocks", cache)?;
        let pairs = pairs.to_vec();
        self.enqueue(Box::new(move || {
            let mut host = captured.read();
            reference::copy_blocks(&mut host, &pairs);
            captured.write(&host);
            Ok(())
        }))
    }
}

impl PagedAttention for LoopbackBackend {
    fn paged_attention(&self, args: PagedAttentionArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let op = "paged_attention";
        let q = self.view_in(op, &args.q)?;
        let qsl = self.view_in(op, &args.meta.query_start_loc)?;
        let lens = self.view_in(op, &args.meta.seq_lens)?;
        let tables = self.view_in(op, &args.meta.block_tables)?;
        let max_blocks = args.meta.block_tables.layout.shape()[1];
        let (kr, vr) = self.cache_buffers(op, args.cache)?;
        let (spec, k_scale, v_scale) = (args.cache.spec, args.cache.k_scale, args.cache.v_scale);
        let params = args.params;
        let out = self.view_out(op, &args.out)?;
        let fault = self.fault;
        self.enqueue(Box::new(move || {
            let query_start_loc = qsl.read_i32();
            let mut seq_lens = lens.read_i32();
            let mut block_tables = tables.read_i32();
            check_metadata(
                &query_start_loc,
                &seq_lens,
                &block_tables,
                max_blocks,
                &spec,
            )?;
            match fault {
                Some(PlantedFault::ReadPastSeqLen) => seq_lens.iter_mut().for_each(|l| *l += 1),
                Some(PlantedFault::BlockTableOffByOne) => {
                    for row in block_tables.chunks_mut(max_blocks) {
                        row.rotate_left(1);
                    }
                }
                _ => {}
            }
            let cache =
                HostKvCache::from_bytes(spec, kr.read_bytes(), vr.read_bytes(), k_scale, v_scale);
            let y = reference::paged_attention(
                &q.read(),
                &cache,
                &query_start_loc,
                &seq_lens,
                &block_tables,
                max_blocks,
                &params,
            );
            out.write(&y);
            Ok(())
        }))
    }
}

/// The metadata a kernel trusts, checked before the oracle indexes with it.
fn check_metadata(
    qsl: &[i32],
    seq_lens: &[i32],
    block_tables: &[i32],
    max_blocks: usize,
    spec: &hal::KvCacheSpec,
) -> std::result::Result<(), String> {
    for (b, &len) in seq_lens.iter().enumerate() {
        let q = qsl[b + 1] - qsl[b];
        if q < 0 || len < q {
            return Err(format!(
                "paged_attention: sequence {b} has query_len {q} > seq_len {len}"
            ));
        }
        let blocks = (len as usize).div_ceil(spec.block_size);
        if blocks > max_blocks {
            return Err(format!(
                "paged_attention: sequence {b} needs {blocks} blocks, table has {max_blocks}"
            ));
        }
        if let Some(bad) = block_tables[b * max_blocks..b * max_blocks + blocks]
            .iter()
            .find(|&&blk| blk < 0 || blk as usize >= spec.num_blocks)
        {
            return Err(format!(
                "paged_attention: sequence {b} uses block {bad} outside 0..{}",
                spec.num_blocks
            ));
        }
    }
    Ok(())
}

impl FlashAttention for LoopbackBackend {
    fn flash_attention(&self, args: FlashAttentionArgs<'_>) -> Result<()> {
        let (tq, tk, _) = args.validate(&self.name)?;
        self.check(&args.desc())?;
        let op = "flash_attention";
        let (q, k, v) = (
            self.view_in(op, &args.q)?,
            self.view_in(op, &args.k)?,
            self.view_in(op, &args.v)?,
        );
        let (cq, ck) = (
            self.view_in(op, &args.cu_seqlens_q)?,
            self.view_in(op, &args.cu_seqlens_k)?,
        );
        let (causal, params) = (args.causal, args.params);
        let out = self.view_out(op, &args.out)?;
        self.enqueue(Box::new(move || {
            let (cu_q, cu_k) = (cq.read_i32(), ck.read_i32());
            for (cu, total, name) in [(&cu_q, tq, "cu_seqlens_q"), (&cu_k, tk, "cu_seqlens_k")] {
                let ok = cu.first() == Some(&0)
                    && cu.windows(2).all(|w| w[0] <= w[1])
                    && cu.last().is_some_and(|&l| l as usize <= total);
                if !ok {
                    return Err(format!("flash_attention: {name} must start at 0, not decrease and stay within {total}"));
                }
            }
            let y = reference::flash_attention(&q.read(), &k.read(), &v.read(), &cu_q, &cu_k, causal, &params);
            out.write(&y);
            Ok(())
        }))
    }
}

impl Elementwise for LoopbackBackend {
    fn rms_norm(&self, args: RmsNormArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let op = "rms_norm";
        let (x, w) = (self.view_in(op, &args.x)?, self.view_in(op, &args.weight)?);
        let residual = args
            .residual
            .as_ref()
            .map(|r| self.view_out(op, r))
            .transpose()?;
        let out = self.view_out(op, &args.out)?;
        let eps = args.eps;
        self.enqueue(Box::new(move || {
            match residual {
                Some(r) => {
                    let mut res = r.read();
                    let y = reference::rms_norm(&x.read(), Some(&mut res), &w.read(), eps);
                    r.write(&res);
                    out.write(&y);
                }
                None => out.write(&reference::rms_norm(&x.read(), None, &w.read(), eps)),
            }
            Ok(())
        }))
    }

    fn rope(&self, args: RopeArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let op = "rope";
        let pos = self.view_in(op, &args.positions)?;
        let table = self.view_in(op, &args.cos_sin_cache)?;
        let (q, k) = (self.view_out(op, &args.q)?, self.view_out(op, &args.k)?);
        let style = args.style;
        self.enqueue(Box::new(move || {
            let (mut qh, mut kh) = (q.read(), k.read());
            reference::rope(&pos.read_i64(), &mut qh, &mut kh, &table.read(), style);
            q.write(&qh);
            k.write(&kh);
            Ok(())
        }))
    }

    fn silu_and_mul(&self, args: SiluAndMulArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let x = self.view_in("silu_and_mul", &args.x)?;
        let out = self.view_out("silu_and_mul", &args.out)?;
        self.enqueue(Box::new(move || {
            out.write(&reference::silu_and_mul(&x.read()));
            Ok(())
        }))
    }

    fn embedding(&self, args: EmbeddingArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let op = "embedding";
        let ids = self.view_in(op, &args.ids)?;
        enum T {
            Dense(Input),
            Quant(Arc<QuantWeights>),
        }
        let table = match &args.table {
            EmbeddingTable::Dense(v) => T::Dense(self.view_in(op, v)?),
            EmbeddingTable::Quant(w) => T::Quant(self.packed(op, w)?),
        };
        let out = self.view_out(op, &args.out)?;
        self.enqueue(Box::new(move || {
            let ids = ids.read_i32();
            let y = match &table {
                T::Dense(t) => reference::embedding(&ids, Table::Dense(&t.read()), out.0.dtype),
                T::Quant(w) => reference::embedding(&ids, Table::Quant(w), out.0.dtype),
            };
            out.write(&y);
            Ok(())
        }))
    }

    fn add(&self, args: AddArgs<'_>) -> Result<()> {
        args.validate(&self.name)?;
        self.check(&args.desc())?;
        let (a, b) = (self.view_in("add", &args.a)?, self.view_in("add", &args.b)?);
        let out = self.view_out("add", &args.out)?;
        self.enqueue(Box::new(move || {
            out.write(&reference::add(&a.read(), &b.read()));
            Ok(())
        }))
    }
}
