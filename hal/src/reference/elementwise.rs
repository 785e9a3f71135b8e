//! RMS norm, RoPE, SiLU-and-mul, embedding, add.

use super::round_to;
use crate::{HostTensor, QuantWeights, RopeStyle};

/// RMS norm with optional fused residual (see [`crate::RmsNormArgs`]).
/// Updates `residual` in place and returns `out`.
pub fn rms_norm(
    x: &HostTensor,
    residual: Option<&mut HostTensor>,
    weight: &HostTensor,
    eps: f32,
) -> HostTensor {
    let (t, h) = (x.shape[0], x.shape[1]);
    let mut r = x.to_f64();
    if let Some(res) = residual {
        let rv = res.to_f64();
        let summed: Vec<f64> = r.iter().zip(&rv).map(|(a, b)| a + b).collect();
        *res = round_to(res.dtype, &res.shape, &summed);
        r = res.to_f64(); // normalise the stored (rounded) residual
    }
    let w = weight.to_f64();
    let mut out = vec![0f64; t * h];
    for i in 0..t {
        let row = &r[i * h..(i + 1) * h];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..h {
            out[i * h + j] = row[j] * inv * w[j];
        }
    }
    round_to(x.dtype, &x.shape, &out)
}

/// RoPE in place on `q` `[T, H, D]` and `k` `[T, Hkv, D]` (see
/// [`crate::RopeArgs`]). A position outside the table leaves its rows unchanged.
pub fn rope(
    positions: &[i64],
    q: &mut HostTensor,
    k: &mut HostTensor,
    cos_sin_cache: &HostTensor,
    style: RopeStyle,
) {
    let rot = cos_sin_cache.shape[1];
    let max_pos = cos_sin_cache.shape[0];
    let table = cos_sin_cache.to_f64();
    for x in [q, k] {
        let (heads, d) = (x.shape[1], x.shape[2]);
        let mut v = x.to_f64();
        for (t, &p) in positions.iter().enumerate() {
            if p < 0 || p as usize >= max_pos {
                continue;
            }
            let row = &table[p as usize * rot..(p as usize + 1) * rot];
            for hh in 0..heads {
                let base = (t * heads + hh) * d;
                for i in 0..rot / 2 {
                    let (a, b) = match style {
                        RopeStyle::Neox => (base + i, base + i + rot / 2),
                        RopeStyle::Gptj => (base + 2 * i, base + 2 * i + 1),
                    };
                    let (cos, sin) = (row[i], row[rot / 2 + i]);
                    let (xa, xb) = (v[a], v[b]);
                    v[a] = xa * cos - xb * sin;
                    v[b] = xb * cos + xa * sin;
                }
            }
        }
        *x = round_to(x.dtype, &x.shape, &v);
    }
}

/// `silu(x[:, :I]) · x[:, I:]`.
pub fn silu_and_mul(x: &HostTensor) -> HostTensor {
    let (t, w) = (x.shape[0], x.shape[1]);
    let i_dim = w / 2;
    let v = x.to_f64();
    let mut out = vec![0f64; t * i_dim];
    for r in 0..t {
        for j in 0..i_dim {
            let a = v[r * w + j];
            let b = v[r * w + i_dim + j];
            out[r * i_dim + j] = a / (1.0 + (-a).exp()) * b;
        }
    }
    round_to(x.dtype, &[t, i_dim], &out)
}

/// An embedding table on the host.
#[derive(Clone, Copy, Debug)]
pub enum Table<'a> {
    /// Dense `[vocab, hidden]`.
    Dense(&'a HostTensor),
    /// A quantised weight `[vocab, hidden]`.
    Quant(&'a QuantWeights),
}

/// `out[t] = table[ids[t]]`; ids outside the vocabulary give zero rows.
pub fn embedding(ids: &[i32], table: Table<'_>, out_dtype: crate::DType) -> HostTensor {
    let (vocab, hidden) = match table {
        Table::Dense(t) => (t.shape[0], t.shape[1]),
        Table::Quant(w) => (w.n(), w.k()),
    };
    let mut out = vec![0f64; ids.len() * hidden];
    for (t, &id) in ids.iter().enumerate() {
        if id < 0 || id as usize >= vocab {
            continue;
        }
        for j in 0..hidden {
            out[t * hidden + j] = match table {
                Table::Dense(tab) => tab.get(id as usize * hidden + j),
                Table::Quant(w) => w.weight(id as usize, j),
            };
        }
    }
    round_to(out_dtype, &[ids.len(), hidden], &out)
}

/// `a + b`, with `b` of rank 1 broadcast over rows.
pub fn add(a: &HostTensor, b: &HostTensor) -> HostTensor {
    let n = *a.shape.last().unwrap_or(&0);
    let av = a.to_f64();
    let bv = b.to_f64();
    let out: Vec<f64> = av
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x + if b.shape.len() == 1 {
                bv[i % n.max(1)]
            } else {
                bv[i]
            }
        })
        .collect();
    round_to(a.dtype, &a.shape, &out)
}
