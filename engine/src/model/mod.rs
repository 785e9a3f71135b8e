//! Models: where weights come from (GGUF files, Hugging Face directories),
//! the Llama-family configuration, and the forward pass over HAL ops.
//!
//! Loading is split in two so new checkpoint formats stay small additions:
//! a [`WeightSource`] turns a file's tensors into [`HostWeight`]s (dense
//! bytes or a [`hal::QuantWeights`] in its published layout), and
//! [`llama::LlamaModel::load`] places them on a device, packing quantised
//! weights with the backend's own `pack`.

pub mod config;
pub mod fetch;
pub mod gguf;
pub mod gguf_source;
pub mod hf;
pub mod hf_quant;
pub mod llama;
pub mod source;
pub mod synthetic;

use std::path::{Path, PathBuf};

pub use config::ModelConfig;
pub use llama::{LlamaModel, LoadOptions};
pub use source::{HostWeight, WeightSource};

use crate::tokenizer::Tokenizer;

/// Why a model could not be loaded. Every message names the file, and the
/// tensor or metadata key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid checkpoint.
    #[error("{file}: {msg}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// A metadata value is missing or wrong.
    #[error("{file}: metadata {key}: {msg}")]
    Metadata {
        /// The file.
        file: String,
        /// The key.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// A tensor is missing or has the wrong shape or type.
    #[error("{file}: tensor {tensor}: {msg}")]
    Tensor {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// The checkpoint uses something Kiln does not support.
    #[error("{file}: unsupported {what}")]
    Unsupported {
        /// The file.
        file: String,
        /// What.
        what: String,
    },
    /// The device cannot run this model.
    #[error("{0}")]
    Device(#[from] hal::HalError),
    /// The tokenizer could not be built.
    #[error("{0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}

impl LoadError {
    /// A metadata error.
    pub fn metadata(file: &str, key: &str, msg: &str) -> Self {
        LoadError::Metadata {
            file: file.to_string(),
            key: key.to_string(),
            msg: msg.to_string(),
        }
    }

    /// A tensor error.
    pub fn tensor(file: &str, tensor: &str, msg: impl Into<String>) -> Self {
        LoadError::Tensor {
            file: file.to_string(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }
}

/// A checkpoint opened from disk, ready to be placed on a device.
pub struct Checkpoint {
    /// Where it came from (a `.gguf` file or a directory).
    pub path: PathBuf,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// The tensors.
    pub source: Box<dyn WeightSource>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Open a `.gguf` file or a Hugging Face model directory, or build a
    /// synthetic model from a name such as `synthetic:smollm2-135m` (see
    /// [`synthetic`]).
    pub fn open(path: &Path) -> Result<Checkpoint, LoadError> {
        let file = path.display().to_string();
        if let Some(name) = file.strip_prefix("synthetic:") {
            return Self::synthetic(name);
        }
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
            file: file.clone(),
            source,
        })?;
        if meta.is_dir() {
            hf::open(path)
        } else {
            gguf_source::open(path)
        }
    }

    /// Build a synthetic model (e.g. `smollm2-135m`, `tiny:q4_0`).
    pub fn synthetic(name: &str) -> Result<Checkpoint, LoadError> {
        let origin = format!("synthetic:{name}");
        let spec = synthetic::SyntheticSpec::parse(name).map_err(|msg| LoadError::Malformed {
            file: origin.clone(),
            msg,
        })?;
        let bad = |e: gguf::GgufError| LoadError::Malformed {
            file: origin.clone(),
            msg: e.to_string(),
        };
        let bytes = synthetic::build_gguf(&spec).map_err(bad)?;
        let file = gguf::GgufFile::from_bytes(&origin, bytes).map_err(bad)?;
        gguf_source::from_file(Path::new(&origin), file)
    }

    /// A short name for the model (file stem or directory name).
    pub fn name(&self) -> String {
        let p = if self.path.is_dir() {
            self.path.file_name()
        } else {
            self.path.file_stem()
        };
        p.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}
