//! The hyper-parameters of a Llama-family model, read from GGUF metadata or
//! a Hugging Face `config.json`.

use hal::rope_table::Llama3Scaling;
use hal::RopeStyle;
use serde_json::Value;

use super::gguf::GgufFile;
use super::LoadError;

/// Llama-family hyper-parameters (Llama 2/3, SmolLM2, Mistral, Qwen2).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture name as the checkpoint gives it (`"llama"`, `"qwen2"`, …).
    pub architecture: String,
    /// Decoder layers.
    pub num_layers: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// KV heads (GQA when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding table).
    pub vocab_size: usize,
    /// RMS-norm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base θ.
    pub rope_theta: f64,
    /// Llama-3 RoPE frequency scaling, when the checkpoint asks for it.
    pub rope_scaling: Option<Llama3Scaling>,
    /// How RoPE pairs elements: GGUF stores Q/K rows permuted for adjacent
    /// pairs (GPT-J style), Hugging Face checkpoints use rotate-half (NeoX).
    pub rope_style: RopeStyle,
    /// Longest context the model was trained for (positions).
    pub max_position: usize,
    /// The output layer shares the embedding table.
    pub tie_word_embeddings: bool,
    /// Q, K and V projections carry a bias (Qwen2).
    pub attention_bias: bool,
    /// Mistral-style sliding-window attention, in tokens.
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    /// Check the numbers fit together; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        let positive = [
            ("num_layers", c.num_layers),
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_heads", c.num_heads),
            ("num_kv_heads", c.num_kv_heads),
            ("head_dim", c.head_dim),
            ("vocab_size", c.vocab_size),
            ("max_position", c.max_position),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !c.num_heads.is_multiple_of(c.num_kv_heads) {
            return Err(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                c.num_heads, c.num_kv_heads
            ));
        }
        if !c.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for RoPE", c.head_dim));
        }
        if !(c.rms_norm_eps.is_finite() && c.rms_norm_eps >= 0.0) {
            return Err(format!("rms_norm_eps {} is invalid", c.rms_norm_eps));
        }
        if !(c.rope_theta.is_finite() && c.rope_theta > 0.0) {
            return Err(format!("rope_theta {} is invalid", c.rope_theta));
        }
        if c.max_position > 1 << 24 {
            return Err(format!(
                "max_position {} is implausibly large",
                c.max_position
            ));
        }
        Ok(())
    }

    /// Read the configuration from a GGUF file's metadata
    /// (`{arch}.block_count`, `{arch}.embedding_length`, …).
    pub fn from_gguf(gguf: &GgufFile, vocab_rows: usize) -> Result<ModelConfig, LoadError> {
        let file = gguf.name().to_string();
        let arch = gguf
            .get_str("general.architecture")
            .ok_or_else(|| LoadError::metadata(&file, "general.architecture", "missing"))?
            .to_string();
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(LoadError::Unsupported {
                file,
                what: format!(
                    "architecture {arch:?} (supported: {})",
                    SUPPORTED_ARCHS.join(", ")
                ),
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let req_u = |k: &str| -> Result<usize, LoadError> {
            let name = key(k);
            gguf.get_u64(&name)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| LoadError::metadata(&file, &name, "missing or not an integer"))
        };
        let opt_u = |k: &str| gguf.get_u64(&key(k)).and_then(|v| usize::try_from(v).ok());
        let opt_f = |k: &str| gguf.get_f64(&key(k));
        let hidden_size = req_u("embedding_length")?;
        let num_heads = req_u("attention.head_count")?;
        let num_kv_heads = opt_u("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = opt_u("attention.key_length")
            .unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0));
        let rope_scaling = match gguf.get_str(&key("rope.scaling.type")) {
            Some("llama3") => Some(Llama3Scaling {
                factor: opt_f("rope.scaling.factor").unwrap_or(8.0),
                low_freq_factor: opt_f("rope.scaling.low_freq_factor").unwrap_or(1.0),
                high_freq_factor: opt_f("rope.scaling.high_freq_factor").unwrap_or(4.0),
                original_max_position: opt_f("rope.scaling.original_context_length")
                    .unwrap_or(8192.0),
            }),
            Some("none") | None => None,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    file,
                    what: format!("rope scaling type {other:?}"),
                })
            }
        };
        let vocab_size = opt_u("vocab_size").unwrap_or(vocab_rows);
        let cfg = ModelConfig {
            architecture: arch.clone(),
            num_layers: req_u("block_count")?,
            hidden_size,
            intermediate_size: req_u("feed_forward_length")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_theta: opt_f("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            // llama.cpp's converter permutes Q/K rows of Llama-style models
            // for adjacent-pair RoPE; Qwen2 is converted unpermuted (NeoX).
            rope_style: if arch == "qwen2" {
                RopeStyle::Neox
            } else {
                RopeStyle::Gptj
            },
            max_position: opt_u("context_length").unwrap_or(4096),
            tie_word_embeddings: gguf.tensor("output.weight").is_none(),
            attention_bias: gguf.tensor("blk.0.attn_q.bias").is_some(),
            sliding_window: opt_u("attention.sliding_window"),
        };
        cfg.validate()
            .map_err(|m| LoadError::metadata(&file, "model configuration", &m))?;
        Ok(cfg)
    }

    /// Read a Hugging Face `config.json`.
    pub fn from_hf_json(file: &str, v: &Value) -> Result<ModelConfig, LoadError> {
        let get_u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let req_u = |k: &str| {
            get_u(k).ok_or_else(|| LoadError::metadata(file, k, "missing or not an integer"))
        };
        let archs: Vec<&str> = v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let arch = match model_type {
            "llama" | "mistral" | "qwen2" => model_type.to_string(),
            _ if archs.iter().any(|a| HF_ARCHS.contains(a)) => "llama".to_string(),
            _ => {
                return Err(LoadError::Unsupported {
                    file: file.to_string(),
                    what: format!(
                        "model_type {model_type:?} / architectures {archs:?} (supported: llama, mistral, qwen2)"
                    ),
                })
            }
        };
        let hidden_size = req_u("hidden_size")?;
        let num_heads = req_u("num_attention_heads")?;
        let rope_scaling = match v.get("rope_scaling") {
            None | Some(Value::Null) => None,
            Some(s) => {
                let ty = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let f = |k: &str, d: f64| s.get(k).and_then(Value::as_f64).unwrap_or(d);
                match ty {
                    "llama3" => Some(Llama3Scaling {
                        factor: f("factor", 8.0),
                        low_freq_factor: f("low_freq_factor", 1.0),
                        high_freq_factor: f("high_freq_factor", 4.0),
                        original_max_position: f("original_max_position_embeddings", 8192.0),
                    }),
                    "default" => None,
                    other => {
                        return Err(LoadError::Unsupported {
                            file: file.to_string(),
                            what: format!("rope_scaling type {other:?}"),
                        })
                    }
                }
            }
        };
        let cfg = ModelConfig {
            architecture: arch.clone(),
            num_layers: req_u("num_hidden_layers")?,
            hidden_size,
            intermediate_size: req_u("intermediate_size")?,
            num_heads,
            num_kv_heads: get_u("num_key_value_heads").unwrap_or(num_heads),
            head_dim: get_u("head_dim").unwrap_or(hidden_size.checked_div(num_heads).unwrap_or(0)),
            vocab_size: req_u("vocab_size")?,
            rms_norm_eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6) as f32,
            rope_theta: v
                .get("rope_theta")
                .and_then(Value::as_f64)
                .unwrap_or(10_000.0),
            rope_scaling,
            rope_style: RopeStyle::Neox,
            max_position: get_u("max_position_embeddings").unwrap_or(4096),
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attention_bias: arch == "qwen2"
                || v.get("attention_bias")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            sliding_window: if v.get("use_sliding_window").and_then(Value::as_bool) == Some(false) {
                None
            } else {
                get_u("sliding_window")
            },
        };
        cfg.validate()
            .map_err(|m| LoadError::metadata(file, "model configuration", &m))?;
        Ok(cfg)
    }
}

const SUPPORTED_ARCHS: &[&str] = &["llama", "mistral", "qwen2"];
const HF_ARCHS: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_of_a_qwen2_model() {
        let v: Value = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14,
            "num_hidden_layers": 24, "num_key_value_heads": 2, "vocab_size": 151936,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
            "tie_word_embeddings": true, "use_sliding_window": false, "sliding_window": 32768
        });
        let c = ModelConfig::from_hf_json("config.json", &v).unwrap();
        assert_eq!(c.head_dim, 64);
        assert!(c.attention_bias && c.tie_word_embeddings);
        assert_eq!(c.sliding_window, None);
        assert_eq!(c.rope_style, RopeStyle::Neox);
    }

    #[test]
    fn hf_config_errors_name_the_key() {
        let v: Value = serde_json::json!({"model_type": "llama", "hidden_size": 64});
        let e = ModelConfig::from_hf_json("config.json", &v)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config.json") && e.contains("num_attention_heads"),
            "{e}"
        );
        let v: Value = serde_json::json!({"model_type": "gpt2"});
        let e = ModelConfig::from_hf_json("config.json", &v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt2"), "{e}");
    }

    #[test]
    fn llama3_rope_scaling_is_read() {
        let v: Value = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
            "vocab_size": 100, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
        });
        let c = ModelConfig::from_hf_json("config.json", &v).unwrap();
        assert_eq!(c.rope_scaling.unwrap().factor, 32.0);
    }
}
