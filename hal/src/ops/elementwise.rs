//! The small ops around the big ones: RMS norm, RoPE, SiLU-and-mul,
//! embedding lookup, add.

use crate::check::{Check, ACTIVATIONS};
use crate::tensor::ViewInfo;
use crate::{Backend, DType, OpDesc, PackedWeight, QuantSpec, Result, TableFormat, View, ViewMut};

/// RMS norm with an optional fused residual add (vLLM's `fused_add_rms_norm`).
///
/// Without `residual`: `out = x / sqrt(mean(x²) + eps) · weight`.
/// With `residual`: `r = x + residual` is rounded to the residual's dtype
/// and stored back into `residual`, then `out = r / sqrt(mean(r²) + eps) · weight`.
#[derive(Debug)]
pub struct RmsNormArgs<'a> {
    /// Input `[num_tokens, hidden]`.
    pub x: View<'a>,
    /// Residual stream `[num_tokens, hidden]`, same dtype as `x`; updated in place.
    pub residual: Option<ViewMut<'a>>,
    /// Weight `[hidden]` (F32 or the dtype of `x`).
    pub weight: View<'a>,
    /// Added to the mean square.
    pub eps: f32,
    /// Output `[num_tokens, hidden]`, dtype of `x`.
    pub out: ViewMut<'a>,
}

impl RmsNormArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(num_tokens, hidden)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize)> {
        let c = Check::new(backend, "rms_norm");
        c.view("x", &self.x, ACTIVATIONS)?;
        c.view("weight", &self.weight, &[DType::F32, self.x.dtype])?;
        c.view("out", &self.out, &[self.x.dtype])?;
        let (t, h) = match c.rank("x", &self.x, 2)? {
            [t, h] => (*t, *h),
            _ => unreachable!("rank checked"),
        };
        c.shape("weight", &self.weight, &[h])?;
        c.shape("out", &self.out, &[t, h])?;
        if let Some(r) = &self.residual {
            c.view("residual", r, &[self.x.dtype])?;
            c.shape("residual", r, &[t, h])?;
        }
        c.ensure(self.eps.is_finite() && self.eps >= 0.0, || {
            format!("eps {} must be finite and ≥ 0", self.eps)
        })?;
        Ok((t, h))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::RmsNorm {
            dtype: self.x.dtype,
            weight: self.weight.dtype,
            hidden: self.x.layout.shape().get(1).copied().unwrap_or(0),
            residual: self.residual.is_some(),
        }
    }
}

/// Which elements RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Rotate-half (GPT-NeoX, HF Llama): pairs `(i, i + rotary_dim/2)`.
    Neox,
    /// Adjacent pairs (GPT-J, llama.cpp's GGUF Q/K order): `(2i, 2i + 1)`.
    Gptj,
}

/// Rotary position embedding, in place on `q` and `k`.
///
/// `cos_sin_cache[p]` holds `rotary_dim / 2` cosines then `rotary_dim / 2`
/// sines for position `p` (vLLM's layout; the engine computes it, including
/// any rope scaling). Pair `i` of a head at position `p` becomes
/// `(a·cos − b·sin, b·cos + a·sin)`. Elements `rotary_dim..head_dim` are left
/// unchanged, and so are the rows of a token whose position lies outside
/// `0..max_position` (the engine never sends one; kernels must not read past
/// the table).
#[derive(Debug)]
pub struct RopeArgs<'a> {
    /// I64 `[num_tokens]`.
    pub positions: View<'a>,
    /// Queries `[num_tokens, num_heads, head_dim]`.
    pub q: ViewMut<'a>,
    /// Keys `[num_tokens, num_kv_heads, head_dim]`, same dtype as `q`.
    pub k: ViewMut<'a>,
    /// F32 `[max_position, rotary_dim]`.
    pub cos_sin_cache: View<'a>,
    /// Pairing.
    pub style: RopeStyle,
}

impl RopeArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(num_tokens, head_dim, rotary_dim)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize, usize)> {
        let c = Check::new(backend, "rope");
        c.view("positions", &self.positions, &[DType::I64])?;
        c.view("q", &self.q, ACTIVATIONS)?;
        c.view("k", &self.k, &[self.q.dtype])?;
        c.view("cos_sin_cache", &self.cos_sin_cache, &[DType::F32])?;
        let t = c.rank("positions", &self.positions, 1)?[0];
        let d = c.rank("q", &self.q, 3)?[2];
        c.ensure(self.q.shape()[0] == t, || {
            "q and positions disagree on num_tokens".into()
        })?;
        let kh = c.rank("k", &self.k, 3)?[1];
        c.shape("k", &self.k, &[t, kh, d])?;
        let rot = c.rank("cos_sin_cache", &self.cos_sin_cache, 2)?[1];
        c.ensure(rot > 0 && rot % 2 == 0 && rot <= d, || {
            format!("rotary_dim {rot} must be even and ≤ head_dim {d}")
        })?;
        Ok((t, d, rot))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::Rope {
            dtype: self.q.dtype,
            head_dim: self.q.shape().get(2).copied().unwrap_or(0),
            rotary_dim: self
                .cos_sin_cache
                .layout
                .shape()
                .get(1)
                .copied()
                .unwrap_or(0),
            style: self.style,
        }
    }
}

/// `out = silu(x[:, :I]) · x[:, I:]` with `silu(a) = a / (1 + e^−a)`.
#[derive(Debug)]
pub struct SiluAndMulArgs<'a> {
    /// Gate and up projections `[num_tokens, 2 · I]`.
    pub x: View<'a>,
    /// Output `[num_tokens, I]`, dtype of `x`.
    pub out: ViewMut<'a>,
}

impl SiluAndMulArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(num_tokens, I)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize)> {
        let c = Check::new(backend, "silu_and_mul");
        c.view("x", &self.x, ACTIVATIONS)?;
        c.view("out", &self.out, &[self.x.dtype])?;
        let (t, two_i) = match c.rank("x", &self.x, 2)? {
            [t, w] => (*t, *w),
            _ => unreachable!("rank checked"),
        };
        c.ensure(two_i % 2 == 0, || format!("x width {two_i} is odd"))?;
        c.shape("out", &self.out, &[t, two_i / 2])?;
        Ok((t, two_i / 2))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::SiluAndMul {
            dtype: self.x.dtype,
        }
    }
}

/// An embedding table.
#[derive(Clone, Debug)]
pub enum EmbeddingTable<'a> {
    /// Dense `[vocab, hidden]`, any float dtype.
    Dense(View<'a>),
    /// A packed GGUF weight `[vocab, hidden]` (Q8_0, Q4_0, Q4_1), shared with
    /// a tied output layer.
    Quant(&'a PackedWeight),
}

/// `out[t] = table[ids[t]]`, dequantised. An id outside `0..vocab` gives a
/// row of zeros (the engine rejects such ids before they get here; kernels
/// must still never read out of bounds).
#[derive(Debug)]
pub struct EmbeddingArgs<'a> {
    /// I32 `[num_tokens]`.
    pub ids: View<'a>,
    /// The table.
    pub table: EmbeddingTable<'a>,
    /// Output `[num_tokens, hidden]`.
    pub out: ViewMut<'a>,
}

impl EmbeddingArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(num_tokens, vocab, hidden)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize, usize)> {
        let c = Check::new(backend, "embedding");
        c.view("ids", &self.ids, &[DType::I32])?;
        c.view("out", &self.out, ACTIVATIONS)?;
        let t = c.rank("ids", &self.ids, 1)?[0];
        let (v, h) = match &self.table {
            EmbeddingTable::Dense(tab) => {
                c.view("table", tab, &[DType::F32, DType::F16, DType::BF16])?;
                match c.rank("table", tab, 2)? {
                    [v, h] => (*v, *h),
                    _ => unreachable!("rank checked"),
                }
            }
            EmbeddingTable::Quant(w) => {
                c.ensure(matches!(w.spec, QuantSpec::Gguf(_)), || {
                    format!(
                        "quantised embedding tables must be GGUF blocks, got {:?}",
                        w.spec
                    )
                })?;
                (w.n, w.k)
            }
        };
        c.shape("out", &self.out, &[t, h])?;
        Ok((t, v, h))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::Embedding {
            table: match &self.table {
                EmbeddingTable::Dense(v) => TableFormat::Dense(v.dtype),
                EmbeddingTable::Quant(w) => TableFormat::Quant(w.spec),
            },
            output: self.out.dtype,
        }
    }
}

/// `out = a + b`; `b` is `[rows, n]` like `a`, or one row `[n]` broadcast.
#[derive(Debug)]
pub struct AddArgs<'a> {
    /// `[rows, n]`.
    pub a: View<'a>,
    /// `[rows, n]` or `[n]`, dtype of `a`.
    pub b: View<'a>,
    /// `[rows, n]`, dtype of `a`.
    pub out: ViewMut<'a>,
}

impl AddArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(rows, n)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize)> {
        let c = Check::new(backend, "add");
        c.view("a", &self.a, ACTIVATIONS)?;
        c.view("b", &self.b, &[self.a.dtype])?;
        c.view("out", &self.out, &[self.a.dtype])?;
        let (r, n) = match c.rank("a", &self.a, 2)? {
            [r, n] => (*r, *n),
            _ => unreachable!("rank checked"),
        };
        if self.b.layout.rank() == 1 {
            c.shape("b", &self.b, &[n])?;
        } else {
            c.shape("b", &self.b, &[r, n])?;
        }
        c.shape("out", &self.out, &[r, n])?;
        Ok((r, n))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::Add {
            dtype: self.a.dtype,
            broadcast: self.b.layout.rank() == 1,
        }
    }
}

/// RMS norm, RoPE, SiLU-and-mul, embedding, add.
pub trait Elementwise: Backend {
    /// Run [`RmsNormArgs`]. Default: unsupported.
    fn rms_norm(&self, args: RmsNormArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("rms_norm"))
    }

    /// Run [`RopeArgs`]. Default: unsupported.
    fn rope(&self, args: RopeArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("rope"))
    }

    /// Run [`SiluAndMulArgs`]. Default: unsupported.
    fn silu_and_mul(&self, args: SiluAndMulArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("silu_and_mul"))
    }

    /// Run [`EmbeddingArgs`]. Default: unsupported.
    fn embedding(&self, args: EmbeddingArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("embedding"))
    }

    /// Run [`AddArgs`]. Default: unsupported.
    fn add(&self, args: AddArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("add"))
    }
}
