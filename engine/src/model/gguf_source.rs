//! Weights from a GGUF file (memory-mapped; tensors copied out one at a time).

use std::path::Path;
use std::sync::Arc;

use hal::{DType, GgufType, QuantWeights};

use super::gguf::{GgmlType, GgufFile};
use super::{Checkpoint, HostWeight, LoadError, ModelConfig, WeightSource};
use crate::tokenizer::Tokenizer;

/// A GGUF file as a [`WeightSource`].
pub struct GgufSource {
    file: Arc<GgufFile>,
    origin: String,
}

impl GgufSource {
    /// Wrap an opened file.
    pub fn new(file: Arc<GgufFile>) -> Self {
        let origin = file.name().to_string();
        GgufSource { file, origin }
    }
}

/// Open a GGUF checkpoint: configuration, tokenizer and tensors.
pub fn open(path: &Path) -> Result<Checkpoint, LoadError> {
    let file = GgufFile::open(path).map_err(|e| LoadError::Malformed {
        file: path.display().to_string(),
        msg: e.to_string(),
    })?;
    from_file(path, file)
}

/// Build a checkpoint from an already parsed file (also used for in-memory
/// synthetic models).
pub fn from_file(path: &Path, file: GgufFile) -> Result<Checkpoint, LoadError> {
    let vocab_rows = file
        .tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .and_then(|d| usize::try_from(d).ok())
        .ok_or_else(|| LoadError::tensor(file.name(), "token_embd.weight", "missing"))?;
    let config = ModelConfig::from_gguf(&file, vocab_rows)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    Ok(Checkpoint {
        path: path.to_path_buf(),
        config,
        tokenizer,
        source: Box::new(GgufSource::new(Arc::new(file))),
    })
}

impl WeightSource for GgufSource {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn contains(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn load(&self, name: &str) -> Result<Option<HostWeight>, LoadError> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let err = |msg: String| LoadError::tensor(&self.origin, name, msg);
        // GGUF dims are innermost first: [cols, rows, ...].
        let mut shape: Vec<usize> = info
            .dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).map_err(|_| err(format!("dimension {d} too large"))))
            .collect::<Result<_, _>>()?;
        if shape.is_empty() {
            shape.push(1);
        }
        let data = self.file.tensor_data(info).to_vec();
        let dense = |dtype: DType| {
            let numel: usize = shape.iter().product();
            if data.len() != dtype.bytes_for(numel) {
                return Err(err(format!(
                    "{} bytes for {numel} {dtype} elements",
                    data.len()
                )));
            }
            Ok(HostWeight::Dense {
                dtype,
                shape: shape.clone(),
                data: data.clone(),
            })
        };
        let quant = |ty: GgufType| {
            if shape.len() != 2 {
                return Err(err(format!(
                    "quantised tensors must be 2-D, got shape {shape:?}"
                )));
            }
            let q = QuantWeights::Gguf {
                ty,
                n: shape[0],
                k: shape[1],
                data: data.clone(),
            };
            q.validate().map_err(err)?;
            Ok(HostWeight::Quant(q))
        };
        let w = match info.ggml_type {
            GgmlType::F32 => dense(DType::F32)?,
            GgmlType::F16 => dense(DType::F16)?,
            GgmlType::BF16 => dense(DType::BF16)?,
            GgmlType::Q4_0 => quant(GgufType::Q4_0)?,
            GgmlType::Q4_1 => quant(GgufType::Q4_1)?,
            GgmlType::Q8_0 => quant(GgufType::Q8_0)?,
            other => {
                return Err(err(format!(
                    "GGML type {} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)",
                    other.name()
                )))
            }
        };
        Ok(Some(w))
    }
}
