//! Writing quantised checkpoints: a Hugging Face directory (safetensors,
//! `config.json` with `quantization_config`, tokenizer files) for AWQ, GPTQ
//! and FP8, and a GGUF file for Q4_0 / Q8_0.

use std::collections::BTreeMap;
use std::path::Path;

use hal::QuantWeights;
use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype as StDtype;
use serde_json::{json, Value};

use super::host_model::{HostModel, Proj};
use super::QuantizeError;
use crate::model::llama::TensorNames;
use crate::model::Checkpoint;

/// The element type of the dense tensors written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseDtype {
    /// f16, as published quantised checkpoints keep embeddings.
    F16,
    /// f32.
    F32,
}

/// One tensor to write.
struct Entry {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn halfs(v: &[f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The tensors of one quantised linear layer under `base` (`…q_proj`).
fn quant_entries(base: &str, q: &QuantWeights, out: &mut BTreeMap<String, Entry>) {
    let mut put = |suffix: &str, dtype, shape: Vec<usize>, data| {
        out.insert(format!("{base}.{suffix}"), Entry { dtype, shape, data });
    };
    match q {
        QuantWeights::Awq {
            group_size,
            n,
            k,
            qweight,
            qzeros,
            scales,
        } => {
            let g = k / group_size;
            put("qweight", StDtype::I32, vec![*k, n / 8], i32_bytes(qweight));
            put("qzeros", StDtype::I32, vec![g, n / 8], i32_bytes(qzeros));
            put("scales", StDtype::F16, vec![g, *n], halfs(scales));
        }
        QuantWeights::Gptq {
            bits,
            group_size,
            n,
            k,
            qweight,
            qzeros,
            scales,
            g_idx,
        } => {
            let p = 32 / *bits as usize;
            let g = k.div_ceil(*group_size);
            put("qweight", StDtype::I32, vec![k / p, *n], i32_bytes(qweight));
            put("qzeros", StDtype::I32, vec![g, n / p], i32_bytes(qzeros));
            put("scales", StDtype::F16, vec![g, *n], halfs(scales));
            // AutoGPTQ always writes g_idx; the default one when not act-order.
            let default: Vec<i32> = (0..*k).map(|c| (c / group_size) as i32).collect();
            let g_idx = g_idx.as_deref().unwrap_or(&default);
            put("g_idx", StDtype::I32, vec![*k], i32_bytes(g_idx));
        }
        QuantWeights::Fp8 {
            n,
            k,
            weight,
            weight_scale,
            input_scale,
            ..
        } => {
            put("weight", StDtype::F8_E4M3, vec![*n, *k], weight.clone());
            let shape = if weight_scale.len() == 1 {
                vec![]
            } else {
                vec![*n]
            };
            put("weight_scale", StDtype::F32, shape, f32_bytes(weight_scale));
            if let Some(s) = input_scale {
                put("input_scale", StDtype::F32, vec![], f32_bytes(&[*s]));
            }
        }
        QuantWeights::Gguf { .. } => {}
    }
}

/// A Hugging Face `config.json` for `model`: the source's own when it is a
/// Hugging Face directory, else one built from the configuration.
fn config_json(checkpoint: &Checkpoint, model: &HostModel) -> Result<Value, QuantizeError> {
    let src = checkpoint.path.join("config.json");
    if checkpoint.path.is_dir() && src.exists() {
        let text = std::fs::read_to_string(&src).map_err(|e| QuantizeError::io(&src, e))?;
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| QuantizeError::Shape(format!("{}: {e}", src.display())))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("quantization_config");
        }
        return Ok(v);
    }
    let c = &model.config;
    let (arch, class) = match c.architecture.as_str() {
        "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
        "mistral" => ("mistral", "MistralForCausalLM"),
        _ => ("llama", "LlamaForCausalLM"),
    };
    let t = &checkpoint.tokenizer;
    let mut v = json!({
        "architectures": [class],
        "model_type": arch,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position,
        "tie_word_embeddings": model.lm_head.is_none(),
        "attention_bias": c.attention_bias,
        "hidden_act": "silu",
        "torch_dtype": "float16",
        "bos_token_id": t.bos_token_id(),
        "eos_token_id": t.eos_token_ids().first(),
    });
    if let (Some(o), Some(s)) = (v.as_object_mut(), c.rope_scaling) {
        o.insert(
            "rope_scaling".into(),
            json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position,
            }),
        );
    }
    if let (Some(o), Some(w)) = (v.as_object_mut(), c.sliding_window) {
        o.insert("sliding_window".into(), json!(w));
    }
    Ok(v)
}

/// Write `model` with its linear layers replaced by `quantised` (keyed by
/// layer and projection) as a Hugging Face directory `out`, with
/// `quantization_config` in `config.json` (none when it is null) and dense
/// tensors in `dense_dtype`. Returns the bytes written.
pub fn write_hf(
    out: &Path,
    checkpoint: &Checkpoint,
    model: &HostModel,
    quantised: &BTreeMap<(usize, Proj), QuantWeights>,
    quantization_config: Value,
    dense_dtype: DenseDtype,
) -> Result<u64, QuantizeError> {
    std::fs::create_dir_all(out).map_err(|e| QuantizeError::io(out, e))?;
    let names = TensorNames::HuggingFace;
    let mut t: BTreeMap<String, Entry> = BTreeMap::new();
    let dense = |m: &[f32], shape: Vec<usize>| match dense_dtype {
        DenseDtype::F16 => Entry {
            dtype: StDtype::F16,
            shape,
            data: f16_bytes(m),
        },
        DenseDtype::F32 => Entry {
            dtype: StDtype::F32,
            shape,
            data: f32_bytes(m),
        },
    };
    let norm = |m: &[f32]| Entry {
        dtype: StDtype::F32,
        shape: vec![m.len()],
        data: f32_bytes(m),
    };
    t.insert(
        names.embed().into(),
        dense(&model.embed.data, vec![model.embed.rows, model.embed.cols]),
    );
    if let Some(h) = &model.lm_head {
        t.insert(names.output().into(), dense(&h.data, vec![h.rows, h.cols]));
    }
    t.insert(names.norm().into(), norm(&model.norm));
    for i in 0..model.config.num_layers {
        t.insert(
            names.layer(i, "attn_norm", "weight"),
            norm(&model.attn_norm[i]),
        );
        t.insert(
            names.layer(i, "ffn_norm", "weight"),
            norm(&model.ffn_norm[i]),
        );
        for p in Proj::ALL {
            let base = p.hf_base(i);
            match quantised.get(&(i, p)) {
                Some(q) => quant_entries(&base, q, &mut t),
                None => {
                    let m = model.linear(i, p)?;
                    t.insert(
                        format!("{base}.weight"),
                        dense(&m.data, vec![m.rows, m.cols]),
                    );
                }
            }
            if let Some(b) = model.biases.get(&(i, p)) {
                t.insert(format!("{base}.bias"), dense(b, vec![b.len()]));
            }
        }
    }
    let views = t
        .iter()
        .map(|(name, e)| {
            TensorView::new(e.dtype, e.shape.clone(), &e.data)
                .map(|v| (name.clone(), v))
                .map_err(|err| QuantizeError::Shape(format!("{name}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let st_path = out.join("model.safetensors");
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), &st_path)
        .map_err(|e| QuantizeError::Shape(format!("{}: {e}", st_path.display())))?;

    let mut config = config_json(checkpoint, model)?;
    if let Some(o) = config.as_object_mut() {
        if !quantization_config.is_null() {
            o.insert("quantization_config".into(), quantization_config);
        }
        let dtype = match dense_dtype {
            DenseDtype::F16 => "float16",
            DenseDtype::F32 => "float32",
        };
        o.insert("torch_dtype".into(), json!(dtype));
    }
    let cfg_path = out.join("config.json");
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&cfg_path, text).map_err(|e| QuantizeError::io(&cfg_path, e))?;

    // Tokenizer: copy a Hugging Face source's files, else write them.
    let src = &checkpoint.path;
    if src.is_dir() && src.join("tokenizer.json").exists() {
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
            "chat_template.jinja",
        ] {
            let from = src.join(f);
            if from.exists() {
                std::fs::copy(&from, out.join(f)).map_err(|e| QuantizeError::io(&from, e))?;
            }
        }
    } else {
        checkpoint
            .tokenizer
            .write_hf_files(out)
            .map_err(|e| QuantizeError::Shape(e.to_string()))?;
    }
    let bytes = std::fs::metadata(&st_path)
        .map_err(|e| QuantizeError::io(&st_path, e))?
        .len();
    Ok(bytes)
}
