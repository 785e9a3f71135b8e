//! The format-neutral view of a checkpoint's tensors.

use hal::{DType, QuantWeights};

use super::LoadError;

/// One weight as a checkpoint stores it, in host memory.
#[derive(Clone, Debug, PartialEq)]
pub enum HostWeight {
    /// A dense tensor, row-major, little-endian.
    Dense {
        /// F32, F16 or BF16.
        dtype: DType,
        /// Dimensions, outermost first (`[N, K]` for a linear layer).
        shape: Vec<usize>,
        /// `dtype.bytes_for(numel)` bytes.
        data: Vec<u8>,
    },
    /// A quantised linear weight in its published layout.
    Quant(QuantWeights),
}

impl HostWeight {
    /// `[rows, cols]` of a 2-D weight (`[N, K]`), or the length of a 1-D one as `[n]`.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            HostWeight::Dense { shape, .. } => shape.clone(),
            HostWeight::Quant(q) => vec![q.n(), q.k()],
        }
    }

    /// The elements of a dense weight as f32 (`None` for quantised ones).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let HostWeight::Dense { dtype, data, .. } = self else {
            return None;
        };
        match dtype {
            DType::F32 => Some(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            DType::F16 => Some(
                data.chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            DType::BF16 => Some(
                data.chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Concatenate weights along their first dimension (rows / output
    /// features), e.g. the gate and up projections into one GEMM. `None`
    /// when the formats differ or cannot be concatenated.
    pub fn concat_rows(parts: &[HostWeight]) -> Option<HostWeight> {
        let first = parts.first()?;
        match first {
            HostWeight::Dense { dtype, shape, .. } => {
                let cols: usize = shape.get(1..)?.iter().product();
                let mut rows = 0;
                let mut data = Vec::new();
                for p in parts {
                    let HostWeight::Dense {
                        dtype: d,
                        shape: s,
                        data: b,
                    } = p
                    else {
                        return None;
                    };
                    if d != dtype || s.len() != shape.len() || s.get(1..)? != shape.get(1..)? {
                        return None;
                    }
                    let _ = cols;
                    rows += s[0];
                    data.extend_from_slice(b);
                }
                let mut shape = shape.clone();
                shape[0] = rows;
                Some(HostWeight::Dense {
                    dtype: *dtype,
                    shape,
                    data,
                })
            }
            HostWeight::Quant(QuantWeights::Gguf { ty, k, .. }) => {
                let mut n_total = 0;
                let mut data = Vec::new();
                for p in parts {
                    let HostWeight::Quant(QuantWeights::Gguf {
                        ty: t,
                        n,
                        k: kk,
                        data: b,
                    }) = p
                    else {
                        return None;
                    };
                    if t != ty || kk != k {
                        return None;
                    }
                    n_total += n;
                    data.extend_from_slice(b);
                }
                Some(HostWeight::Quant(QuantWeights::Gguf {
                    ty: *ty,
                    n: n_total,
                    k: *k,
                    data,
                }))
            }
            HostWeight::Quant(q) => {
                let quants: Vec<&QuantWeights> = parts
                    .iter()
                    .map(|p| match p {
                        HostWeight::Quant(q) => Some(q),
                        HostWeight::Dense { .. } => None,
                    })
                    .collect::<Option<_>>()?;
                concat_quant(q, &quants).map(HostWeight::Quant)
            }
        }
    }
}

/// Row-major matrices `[rows, cols_i]` side by side: `[rows, Σ cols_i]`.
fn hcat<T: Copy>(rows: usize, parts: &[(&[T], usize)]) -> Option<Vec<T>> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
    for r in 0..rows {
        for &(m, cols) in parts {
            out.extend_from_slice(m.get(r * cols..(r + 1) * cols)?);
        }
    }
    Some(out)
}

/// AWQ, GPTQ and FP8 weights stacked along N (the gate and up projections
/// into one GEMM); `None` when their parameters differ so that one weight
/// cannot express both.
fn concat_quant(first: &QuantWeights, parts: &[&QuantWeights]) -> Option<QuantWeights> {
    let n: usize = parts.iter().map(|q| q.n()).sum();
    let k = first.k();
    let same_spec = |q: &QuantWeights| match (q, first) {
        // FP8 scale layouts may differ; the stacked weight reconciles them.
        (QuantWeights::Fp8 { activation: a, .. }, QuantWeights::Fp8 { activation: b, .. }) => {
            a == b
        }
        _ => q.spec() == first.spec(),
    };
    if parts.iter().any(|q| q.k() != k || !same_spec(q)) {
        return None;
    }
    match first {
        QuantWeights::Gguf { .. } => None,
        QuantWeights::Awq { group_size, .. } => {
            let groups = k / group_size;
            let (mut qw, mut qz, mut sc) = (Vec::new(), Vec::new(), Vec::new());
            for p in parts {
                let QuantWeights::Awq {
                    n,
                    qweight,
                    qzeros,
                    scales,
                    ..
                } = p
                else {
                    return None;
                };
                qw.push((qweight.as_slice(), n / 8));
                qz.push((qzeros.as_slice(), n / 8));
                sc.push((scales.as_slice(), *n));
            }
            Some(QuantWeights::Awq {
                group_size: *group_size,
                n,
                k,
                qweight: hcat(k, &qw)?,
                qzeros: hcat(groups, &qz)?,
                scales: hcat(groups, &sc)?,
            })
        }
        QuantWeights::Gptq {
            bits,
            group_size,
            g_idx,
            ..
        } => {
            let per = 32 / *bits as usize;
            let groups = k.div_ceil(*group_size);
            let (mut qw, mut qz, mut sc) = (Vec::new(), Vec::new(), Vec::new());
            for p in parts {
                let QuantWeights::Gptq {
                    n,
                    qweight,
                    qzeros,
                    scales,
                    g_idx: g,
                    ..
                } = p
                else {
                    return None;
                };
                // One g_idx serves every column of the stacked weight.
                if g != g_idx {
                    return None;
                }
                qw.push((qweight.as_slice(), *n));
                qz.push((qzeros.as_slice(), n / per));
                sc.push((scales.as_slice(), *n));
            }
            Some(QuantWeights::Gptq {
                bits: *bits,
                group_size: *group_size,
                n,
                k,
                qweight: hcat(k / per, &qw)?,
                qzeros: hcat(groups, &qz)?,
                scales: hcat(groups, &sc)?,
                g_idx: g_idx.clone(),
            })
        }
        QuantWeights::Fp8 { activation, .. } => {
            let mut weight = Vec::with_capacity(n * k);
            let mut per_part_scales = Vec::new();
            let mut input_scale: Option<f32> = None;
            for p in parts {
                let QuantWeights::Fp8 {
                    n,
                    weight: w,
                    weight_scale,
                    input_scale: s,
                    ..
                } = p
                else {
                    return None;
                };
                weight.extend_from_slice(w);
                per_part_scales.push((*n, weight_scale.as_slice()));
                // Static activation scales of a shared input: the largest
                // keeps every part's activations in range (as vLLM does).
                input_scale = match (input_scale, s) {
                    (Some(a), Some(b)) => Some(a.max(*b)),
                    (None, s) => *s,
                    (a, None) => a,
                };
            }
            let all_tensor = per_part_scales.iter().all(|(_, s)| s.len() == 1);
            let same = per_part_scales.windows(2).all(|w| w[0].1 == w[1].1);
            // Per-tensor scales that differ become per-channel: exact.
            let weight_scale = if all_tensor && same {
                per_part_scales.first()?.1.to_vec()
            } else {
                let mut v = Vec::with_capacity(n);
                for (rows, s) in per_part_scales {
                    if s.len() == 1 {
                        v.extend(std::iter::repeat_n(s[0], rows));
                    } else {
                        v.extend_from_slice(s);
                    }
                }
                v
            };
            Some(QuantWeights::Fp8 {
                n,
                k,
                weight,
                weight_scale,
                activation: *activation,
                input_scale,
            })
        }
    }
}

/// A checkpoint's tensors by name. Names are the checkpoint's own; the model
/// asks for them through [`super::llama::TensorNames`].
pub trait WeightSource: Send + Sync {
    /// The file or directory, for messages.
    fn origin(&self) -> &str;
    /// Whether a weight exists.
    fn contains(&self, name: &str) -> bool;
    /// Load one weight; `Ok(None)` when it does not exist.
    fn load(&self, name: &str) -> Result<Option<HostWeight>, LoadError>;
    /// Load a weight that must exist.
    fn require(&self, name: &str) -> Result<HostWeight, LoadError> {
        self.load(name)?
            .ok_or_else(|| LoadError::tensor(self.origin(), name, "missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::GgufType;

    #[test]
    fn dense_rows_concatenate() {
        let a = HostWeight::Dense {
            dtype: DType::F32,
            shape: vec![1, 2],
            data: [1f32, 2.].iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let b = HostWeight::Dense {
            dtype: DType::F32,
            shape: vec![2, 2],
            data: [3f32, 4., 5., 6.]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        };
        let c = HostWeight::concat_rows(&[a.clone(), b]).unwrap();
        assert_eq!(c.shape(), vec![3, 2]);
        assert_eq!(c.to_f32().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
        let wrong = HostWeight::Dense {
            dtype: DType::F32,
            shape: vec![1, 3],
            data: vec![0; 12],
        };
        assert!(HostWeight::concat_rows(&[a, wrong]).is_none());
    }

    #[test]
    fn gguf_rows_concatenate() {
        let q = |n: usize| {
            HostWeight::Quant(QuantWeights::Gguf {
                ty: GgufType::Q8_0,
                n,
                k: 32,
                data: vec![n as u8; n * 34],
            })
        };
        let c = HostWeight::concat_rows(&[q(2), q(3)]).unwrap();
        assert_eq!(c.shape(), vec![5, 32]);
    }
}
