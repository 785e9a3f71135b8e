//! The small ops around the big ones: RMS norm (± fused residual), RoPE,
//! SiLU-and-mul, embedding lookup (f16 and Q8_0 tables) and add. All are
//! memory-bound; their FLOP counts are nominal (documented per op).

use hal::quant::gguf;
use hal::{
    AddArgs, DType, Device, EmbeddingArgs, EmbeddingTable, GgufType, KvLayout, OpDesc, QuantSpec,
    QuantWeights, RmsNormArgs, RopeArgs, RopeStyle, SiluAndMulArgs, TableFormat,
};

use crate::case::{Cost, Family, Op, Runner};
use crate::data;
use crate::rng::Rng;
use crate::shapes::{ModelShape, Workload};

fn label(dtype: DType, model: &ModelShape, workload: &Workload) -> String {
    format!("{dtype}/{}/{}", model.name, workload.tokens_label())
}

/// `out = rms_norm(x (+ residual)) · weight` over `[tokens, hidden]`, f32 weight.
pub struct RmsNormCase {
    /// Model (hidden size).
    pub model: ModelShape,
    /// Token count.
    pub workload: Workload,
    /// Dtype of `x`, `out` and `residual`.
    pub dtype: DType,
    /// Fused residual add (`residual` read and written in place).
    pub residual: bool,
}

impl Op for RmsNormCase {
    fn family(&self) -> Family {
        Family::RmsNorm
    }

    fn label(&self) -> String {
        let r = if self.residual { "+residual" } else { "" };
        format!(
            "{}{r}/{}/{}",
            self.dtype,
            self.model.name,
            self.workload.tokens_label()
        )
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::RmsNorm {
            dtype: self.dtype,
            weight: DType::F32,
            hidden: self.model.hidden,
            residual: self.residual,
        }
    }

    /// FLOPs: 4 per element (square-accumulate, scale, weight), 5 with the
    /// residual add. Bytes: `x` read, `out` written, the f32 weight, and the
    /// residual read and written.
    fn cost(&self) -> Cost {
        let e = self.workload.num_tokens() * self.model.hidden;
        let streams = if self.residual { 4 } else { 2 };
        Cost {
            flops: (e * if self.residual { 5 } else { 4 }) as u64,
            bytes: (streams * self.dtype.bytes_for(e) + 4 * self.model.hidden) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let shape = [self.workload.num_tokens(), self.model.hidden];
        let n = shape[0] * shape[1];
        let values = Rng::new(41).signed_units(n);
        // `x` and `−x` alternate, so the residual stream stays bounded however
        // many times the fused add runs.
        let xs = [
            data::upload(dev, self.dtype, &shape, &data::encode(self.dtype, &values))?,
            data::upload(
                dev,
                self.dtype,
                &shape,
                &data::encode(self.dtype, &values.iter().map(|v| -v).collect::<Vec<_>>()),
            )?,
        ];
        let weight = data::random(dev, DType::F32, &[shape[1]], 42)?;
        let mut residual = if self.residual {
            Some(data::random(dev, self.dtype, &shape, 43)?)
        } else {
            None
        };
        let mut out = data::output(dev, self.dtype, &shape)?;
        let mut i = 0;
        Ok(Runner::new(move || {
            let x = &xs[i % 2];
            i += 1;
            dev.rms_norm(RmsNormArgs {
                x: x.view(),
                residual: residual.as_mut().map(|r| r.view_mut()),
                weight: weight.view(),
                eps: 1e-5,
                out: out.view_mut(),
            })?;
            dev.synchronize()
        }))
    }
}

/// Positions in the RoPE table (`[MAX_POSITION, head_dim]` f32).
pub const MAX_POSITION: usize = 4096;

/// NeoX RoPE over all of `head_dim`, in place on `q` and `k`.
pub struct RopeCase {
    /// Model (heads, KV heads, head dim).
    pub model: ModelShape,
    /// Token count.
    pub workload: Workload,
    /// Dtype of `q` and `k`.
    pub dtype: DType,
}

impl Op for RopeCase {
    fn family(&self) -> Family {
        Family::Rope
    }

    fn label(&self) -> String {
        label(self.dtype, &self.model, &self.workload)
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::Rope {
            dtype: self.dtype,
            head_dim: self.model.head_dim,
            rotary_dim: self.model.head_dim,
            style: RopeStyle::Neox,
        }
    }

    /// FLOPs: 6 per rotated pair. Bytes: `q` and `k` read and written, the
    /// i64 positions, and one f32 table row (`head_dim`) per token.
    fn cost(&self) -> Cost {
        let m = &self.model;
        let t = self.workload.num_tokens();
        let e = t * (m.num_heads + m.num_kv_heads) * m.head_dim;
        Cost {
            flops: 3 * e as u64,
            bytes: (2 * self.dtype.bytes_for(e) + 8 * t + 4 * t * m.head_dim) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let m = self.model;
        let t = self.workload.num_tokens();
        let mut rng = Rng::new(51);
        let positions: Vec<i64> = (0..t).map(|_| rng.below(MAX_POSITION) as i64).collect();
        let positions = data::i64s(dev, &[t], &positions)?;
        let table = hal::rope_table::cos_sin_table(m.head_dim, MAX_POSITION, 10000.0, None);
        let table = data::upload(
            dev,
            DType::F32,
            &[MAX_POSITION, m.head_dim],
            &data::encode(DType::F32, &table),
        )?;
        let mut q = data::random(dev, self.dtype, &[t, m.num_heads, m.head_dim], 52)?;
        let mut k = data::random(dev, self.dtype, &[t, m.num_kv_heads, m.head_dim], 53)?;
        Ok(Runner::new(move || {
            dev.rope(RopeArgs {
                positions: positions.view(),
                q: q.view_mut(),
                k: k.view_mut(),
                cos_sin_cache: table.view(),
                style: RopeStyle::Neox,
            })?;
            dev.synchronize()
        }))
    }
}

/// `out[t, :I] = silu(x[t, :I]) · x[t, I:]` with `I` the MLP intermediate size.
pub struct SiluAndMulCase {
    /// Model (intermediate size).
    pub model: ModelShape,
    /// Token count.
    pub workload: Workload,
    /// Dtype of `x` and `out`.
    pub dtype: DType,
}

impl Op for SiluAndMulCase {
    fn family(&self) -> Family {
        Family::SiluAndMul
    }

    fn label(&self) -> String {
        label(self.dtype, &self.model, &self.workload)
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::SiluAndMul { dtype: self.dtype }
    }

    /// FLOPs: 5 per output (negate, exp, add, divide, multiply). Bytes: `x`
    /// `[T, 2I]` read and `out` `[T, I]` written.
    fn cost(&self) -> Cost {
        let e = self.workload.num_tokens() * self.model.intermediate;
        Cost {
            flops: 5 * e as u64,
            bytes: 3 * self.dtype.bytes_for(e) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let (t, i) = (self.workload.num_tokens(), self.model.intermediate);
        let x = data::random(dev, self.dtype, &[t, 2 * i], 61)?;
        let mut out = data::output(dev, self.dtype, &[t, i])?;
        Ok(Runner::new(move || {
            dev.silu_and_mul(SiluAndMulArgs {
                x: x.view(),
                out: out.view_mut(),
            })?;
            dev.synchronize()
        }))
    }
}

/// `out = a + b` over `[tokens, hidden]` (no broadcast).
pub struct AddCase {
    /// Model (hidden size).
    pub model: ModelShape,
    /// Token count.
    pub workload: Workload,
    /// Dtype of all operands.
    pub dtype: DType,
}

impl Op for AddCase {
    fn family(&self) -> Family {
        Family::Add
    }

    fn label(&self) -> String {
        label(self.dtype, &self.model, &self.workload)
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::Add {
            dtype: self.dtype,
            broadcast: false,
        }
    }

    /// FLOPs: 1 per element. Bytes: `a` and `b` read, `out` written.
    fn cost(&self) -> Cost {
        let e = self.workload.num_tokens() * self.model.hidden;
        Cost {
            flops: e as u64,
            bytes: 3 * self.dtype.bytes_for(e) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let shape = [self.workload.num_tokens(), self.model.hidden];
        let a = data::random(dev, self.dtype, &shape, 71)?;
        let b = data::random(dev, self.dtype, &shape, 72)?;
        let mut out = data::output(dev, self.dtype, &shape)?;
        Ok(Runner::new(move || {
            dev.add(AddArgs {
                a: a.view(),
                b: b.view(),
                out: out.view_mut(),
            })?;
            dev.synchronize()
        }))
    }
}

/// How an embedding table is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// Dense f16 `[vocab, hidden]`.
    F16,
    /// GGUF Q8_0 blocks (the default model's tied embeddings).
    Q8_0,
}

impl TableKind {
    /// Name in case names.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::F16 => "f16",
            TableKind::Q8_0 => "q8_0",
        }
    }

    /// Bytes of one row of `hidden` elements.
    pub fn row_bytes(self, hidden: usize) -> usize {
        match self {
            TableKind::F16 => 2 * hidden,
            TableKind::Q8_0 => GgufType::Q8_0.row_bytes(hidden),
        }
    }
}

/// Rows of random data an embedding table tiles (see [`crate::data`]).
const TABLE_TILE_ROWS: usize = 256;

/// `out[t] = table[ids[t]]` with random ids, f32 output.
pub struct EmbeddingCase {
    /// Model (vocab, hidden).
    pub model: ModelShape,
    /// Token count.
    pub workload: Workload,
    /// Table storage.
    pub table: TableKind,
}

impl Op for EmbeddingCase {
    fn family(&self) -> Family {
        Family::Embedding
    }

    fn label(&self) -> String {
        format!(
            "{}_to_f32/{}/{}",
            self.table.name(),
            self.model.name,
            self.workload.tokens_label()
        )
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::Embedding {
            table: match self.table {
                TableKind::F16 => TableFormat::Dense(DType::F16),
                TableKind::Q8_0 => TableFormat::Quant(QuantSpec::Gguf(GgufType::Q8_0)),
            },
            output: DType::F32,
        }
    }

    /// FLOPs: 1 per element for Q8_0 (the scale multiply), 0 for f16.
    /// Bytes: one table row per token, the i32 ids, the f32 output.
    fn cost(&self) -> Cost {
        let (t, h) = (self.workload.num_tokens(), self.model.hidden);
        Cost {
            flops: match self.table {
                TableKind::F16 => 0,
                TableKind::Q8_0 => (t * h) as u64,
            },
            bytes: (t * self.table.row_bytes(h) + 4 * t + 4 * t * h) as u64,
        }
    }

    fn build<'d>(&self, dev: &'d dyn Device, _copies: usize) -> hal::Result<Runner<'d>> {
        let (t, v, h) = (
            self.workload.num_tokens(),
            self.model.vocab,
            self.model.hidden,
        );
        let mut rng = Rng::new(81);
        let ids: Vec<i32> = (0..t).map(|_| rng.below(v) as i32).collect();
        let ids = data::i32s(dev, &[t], &ids)?;
        let tile_rows = TABLE_TILE_ROWS.min(v);
        let tile: Vec<u8> = match self.table {
            TableKind::F16 => data::random_bytes(DType::F16, tile_rows * h, 82),
            TableKind::Q8_0 => (0..tile_rows)
                .flat_map(|_| gguf::quantize_row(GgufType::Q8_0, &rng.signed_units(h)))
                .collect(),
        };
        let table_bytes = data::tile(&tile, v * self.table.row_bytes(h));
        let mut out = data::output(dev, DType::F32, &[t, h])?;
        match self.table {
            TableKind::F16 => {
                let table = data::upload(dev, DType::F16, &[v, h], &table_bytes)?;
                drop(table_bytes);
                Ok(Runner::new(move || {
                    dev.embedding(EmbeddingArgs {
                        ids: ids.view(),
                        table: EmbeddingTable::Dense(table.view()),
                        out: out.view_mut(),
                    })?;
                    dev.synchronize()
                }))
            }
            TableKind::Q8_0 => {
                let packed = dev.pack(&QuantWeights::Gguf {
                    ty: GgufType::Q8_0,
                    n: v,
                    k: h,
                    data: table_bytes,
                })?;
                Ok(Runner::new(move || {
                    dev.embedding(EmbeddingArgs {
                        ids: ids.view(),
                        table: EmbeddingTable::Quant(&packed),
                        out: out.view_mut(),
                    })?;
                    dev.synchronize()
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::SMOLLM2_135M;

    #[test]
    fn elementwise_costs() {
        let w = Workload::Decode {
            batch: 32,
            context: 512,
        };
        let m = SMOLLM2_135M;
        let e = 32 * 576;
        let rms = RmsNormCase {
            model: m,
            workload: w,
            dtype: DType::F32,
            residual: true,
        };
        assert_eq!(rms.cost().bytes, (4 * 4 * e + 4 * 576) as u64);
        assert_eq!(rms.label(), "f32+residual/smollm2-135m/decode_b32");
        let add = AddCase {
            model: m,
            workload: w,
            dtype: DType::F16,
        };
        assert_eq!(add.cost().bytes, (3 * 2 * e) as u64);
        let silu = SiluAndMulCase {
            model: m,
            workload: w,
            dtype: DType::F32,
        };
        assert_eq!(silu.cost().bytes, (3 * 4 * 32 * 1536) as u64);
        let rope = RopeCase {
            model: m,
            workload: w,
            dtype: DType::F32,
        };
        let re = 32 * 12 * 64;
        assert_eq!(rope.cost().flops, (3 * re) as u64);
        assert_eq!(
            rope.cost().bytes,
            (2 * 4 * re + 8 * 32 + 4 * 32 * 64) as u64
        );
        let emb = EmbeddingCase {
            model: m,
            workload: w,
            table: TableKind::Q8_0,
        };
        assert_eq!(
            emb.cost().bytes,
            (32 * (576 / 32 * 34) + 4 * 32 + 4 * e) as u64
        );
    }
}
