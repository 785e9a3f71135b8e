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
            HostWeight::Quant(_) => None,
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
