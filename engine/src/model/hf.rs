//! Hugging Face model directories: `config.json`, `tokenizer.json`,
//! `tokenizer_config.json` and `*.safetensors` (single or sharded through
//! `model.safetensors.index.json`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use hal::DType;
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype as StDtype, SafeTensors};

use super::hf_quant::{HfQuant, QuantizedSource};
use super::{Checkpoint, HostWeight, LoadError, ModelConfig, WeightSource};
use crate::tokenizer::Tokenizer;

struct Shard {
    name: String,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// The safetensors shards of a directory as a [`WeightSource`].
pub struct SafetensorsSource {
    origin: String,
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

/// Open a Hugging Face model directory.
pub fn open(dir: &Path) -> Result<Checkpoint, LoadError> {
    let config_path = dir.join("config.json");
    let config_file = config_path.display().to_string();
    let text = std::fs::read_to_string(&config_path).map_err(|source| LoadError::Io {
        file: config_file.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| LoadError::Malformed {
            file: config_file.clone(),
            msg: format!("invalid JSON: {e}"),
        })?;
    let quant = match json.get("quantization_config") {
        Some(q) if !q.is_null() => Some(HfQuant::parse(&config_file, q)?),
        _ => None,
    };
    let config = ModelConfig::from_hf_json(&config_file, &json)?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let source = SafetensorsSource::open(dir)?;
    let source: Box<dyn WeightSource> = match quant {
        Some(q) => Box::new(QuantizedSource::new(source, q)),
        None => Box::new(source),
    };
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        config,
        tokenizer,
        source,
    })
}

/// One tensor of a shard as stored: its dtype, shape and bytes.
#[derive(Debug)]
pub struct RawTensor<'a> {
    /// The shard file, for messages.
    pub file: &'a str,
    /// Stored element type.
    pub dtype: StDtype,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub bytes: &'a [u8],
}

impl SafetensorsSource {
    /// Map every shard of `dir` (from the index when there is one, else
    /// every `*.safetensors` file).
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let origin = dir.display().to_string();
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let file = index_path.display().to_string();
            let text = std::fs::read_to_string(&index_path).map_err(|source| LoadError::Io {
                file: file.clone(),
                source,
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| LoadError::Malformed {
                    file: file.clone(),
                    msg: format!("invalid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| LoadError::metadata(&file, "weight_map", "missing"))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            for n in &names {
                if n.contains('/') || n.contains("..") {
                    return Err(LoadError::metadata(
                        &file,
                        "weight_map",
                        &format!("shard name {n:?} leaves the directory"),
                    ));
                }
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
                file: origin.clone(),
                source,
            })?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            v.sort();
            v
        };
        if files.is_empty() {
            return Err(LoadError::Malformed {
                file: origin,
                msg: "no *.safetensors files".into(),
            });
        }
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let name = path.display().to_string();
            let f = File::open(&path).map_err(|source| LoadError::Io {
                file: name.clone(),
                source,
            })?;
            // SAFETY: the file is opened read-only and only read through this
            // map; a file truncated underneath us is the operator's error and
            // is the usual caveat of memory-mapped model loading.
            let mmap = unsafe { Mmap::map(&f) }.map_err(|source| LoadError::Io {
                file: name.clone(),
                source,
            })?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&mmap).map_err(|e| LoadError::Malformed {
                    file: name.clone(),
                    msg: format!("invalid safetensors header: {e}"),
                })?;
            for tensor in metadata.tensors().keys() {
                index.insert(tensor.clone(), shards.len());
            }
            shards.push(Shard {
                name,
                mmap,
                header_len,
                metadata,
            });
        }
        Ok(SafetensorsSource {
            origin,
            shards,
            index,
        })
    }
}

impl SafetensorsSource {
    /// A tensor as stored (any dtype); `Ok(None)` when it does not exist.
    pub fn raw(&self, name: &str) -> Result<Option<RawTensor<'_>>, LoadError> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let shard = &self.shards[i];
        let err = |msg: String| LoadError::tensor(&shard.name, name, msg);
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| err("listed but not found".into()))?;
        let (start, end) = info.data_offsets;
        let base = 8 + shard.header_len;
        let bytes = shard
            .mmap
            .get(base + start..base + end)
            .ok_or_else(|| err(format!("data {start}..{end} lies outside the file")))?;
        let numel: usize = info.shape.iter().product();
        if bytes.len() * 8 != numel * info.dtype.bitsize() {
            return Err(err(format!(
                "{} bytes for {:?} {:?}",
                bytes.len(),
                info.dtype,
                info.shape
            )));
        }
        Ok(Some(RawTensor {
            file: &shard.name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes,
        }))
    }
}

impl WeightSource for SafetensorsSource {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn load(&self, name: &str) -> Result<Option<HostWeight>, LoadError> {
        let Some(t) = self.raw(name)? else {
            return Ok(None);
        };
        let dtype = match t.dtype {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            other => {
                return Err(LoadError::tensor(
                    t.file,
                    name,
                    format!("dtype {other:?} is not supported here (F32, F16, BF16)"),
                ))
            }
        };
        Ok(Some(HostWeight::Dense {
            dtype,
            shape: t.shape,
            data: t.bytes.to_vec(),
        }))
    }
}
