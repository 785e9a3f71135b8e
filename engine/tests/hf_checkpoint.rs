//! Hugging Face directories load and compute the same model as GGUF.
//!
//! A synthetic GGUF model is rewritten as a Hugging Face directory
//! (`config.json`, `tokenizer.json`, `tokenizer_config.json`, sharded
//! BF16/F32 safetensors with an index), un-permuting Q and K rows the way
//! llama.cpp's converter permuted them. Both load, and give the same logits:
//! GGUF with adjacent-pair RoPE on permuted rows, Hugging Face with
//! rotate-half on the original rows. Also for Qwen2 (Q/K/V biases, no
//! permutation). And malformed checkpoints fail with the file and tensor
//! named.

mod common;

use std::collections::HashMap;
use std::path::Path;

use hal::{DType, QuantWeights};
use kiln::engine::{Engine, EngineConfig};
use kiln::kv::{CacheConfig, CacheDtype};
use kiln::model::gguf::{GgmlType, GgufFile, GgufWriter};
use kiln::model::synthetic::{build_gguf, SyntheticSpec};
use kiln::model::{gguf_source, Checkpoint, HostWeight, LoadOptions};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

fn engine(c: Checkpoint) -> Engine {
    Engine::new(
        c,
        common::cpu(),
        EngineConfig {
            cache: CacheConfig {
                memory_bytes: 16 << 20,
                dtype: CacheDtype::F32,
                ..CacheConfig::default()
            },
            load: LoadOptions {
                progress: false,
                ..LoadOptions::default()
            },
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

/// GGUF row `h·hd + 2i + j` holds HF row `h·hd + j·hd/2 + i`.
fn unpermute(rows: &[f32], n: usize, k: usize, heads: usize) -> Vec<f32> {
    let hd = n / heads;
    let mut out = vec![0f32; n * k];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let g = h * hd + 2 * i + j;
                let f = h * hd + j * hd / 2 + i;
                out[f * k..(f + 1) * k].copy_from_slice(&rows[g * k..(g + 1) * k]);
            }
        }
    }
    out
}

fn dense_f32(w: &HostWeight) -> Vec<f32> {
    match w {
        HostWeight::Dense { .. } => w.to_f32().unwrap(),
        HostWeight::Quant(q @ QuantWeights::Gguf { .. }) => {
            q.dequantize().into_iter().map(|x| x as f32).collect()
        }
        HostWeight::Quant(_) => unreachable!("synthetic models hold GGUF weights"),
    }
}

/// Write `spec`'s GGUF model as a Hugging Face directory in `dir`.
fn write_hf(spec: &SyntheticSpec, gguf: &Checkpoint, dir: &Path) {
    let c = &gguf.config;
    let src = gguf.source.as_ref();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, values: Vec<f32>, bf16: bool| {
        let (bytes, dt) = if bf16 {
            (
                values
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
                Dtype::BF16,
            )
        } else {
            (
                values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F32,
            )
        };
        tensors.push((name, shape, bytes, dt));
    };
    let h = c.hidden_size;
    let embed = dense_f32(&src.require("token_embd.weight").unwrap());
    put(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, h],
        embed,
        false,
    );
    put(
        "model.norm.weight".into(),
        vec![h],
        dense_f32(&src.require("output_norm.weight").unwrap()),
        false,
    );
    for l in 0..c.num_layers {
        let get = |n: &str| dense_f32(&src.require(&format!("blk.{l}.{n}")).unwrap());
        let hf = |n: &str| format!("model.layers.{l}.{n}");
        let q_rows = c.num_heads * c.head_dim;
        let kv_rows = c.num_kv_heads * c.head_dim;
        let (q, k) = if spec.qwen2 {
            (get("attn_q.weight"), get("attn_k.weight"))
        } else {
            (
                unpermute(&get("attn_q.weight"), q_rows, h, c.num_heads),
                unpermute(&get("attn_k.weight"), kv_rows, h, c.num_kv_heads),
            )
        };
        put(
            hf("input_layernorm.weight"),
            vec![h],
            get("attn_norm.weight"),
            false,
        );
        put(hf("self_attn.q_proj.weight"), vec![q_rows, h], q, false);
        put(hf("self_attn.k_proj.weight"), vec![kv_rows, h], k, false);
        put(
            hf("self_attn.v_proj.weight"),
            vec![kv_rows, h],
            get("attn_v.weight"),
            false,
        );
        if spec.qwen2 {
            put(
                hf("self_attn.q_proj.bias"),
                vec![q_rows],
                get("attn_q.bias"),
                false,
            );
            put(
                hf("self_attn.k_proj.bias"),
                vec![kv_rows],
                get("attn_k.bias"),
                false,
            );
            put(
                hf("self_attn.v_proj.bias"),
                vec![kv_rows],
                get("attn_v.bias"),
                false,
            );
        }
        put(
            hf("self_attn.o_proj.weight"),
            vec![h, q_rows],
            get("attn_output.weight"),
            false,
        );
        put(
            hf("post_attention_layernorm.weight"),
            vec![h],
            get("ffn_norm.weight"),
            false,
        );
        let i = c.intermediate_size;
        put(
            hf("mlp.gate_proj.weight"),
            vec![i, h],
            get("ffn_gate.weight"),
            false,
        );
        put(
            hf("mlp.up_proj.weight"),
            vec![i, h],
            get("ffn_up.weight"),
            false,
        );
        put(
            hf("mlp.down_proj.weight"),
            vec![h, i],
            get("ffn_down.weight"),
            false,
        );
    }
    // Two shards and an index.
    let mid = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&tensors[..mid], &tensors[mid..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, TensorView<'_>)> = part
            .iter()
            .map(|(n, s, b, d)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        for (n, _) in &views {
            weight_map.insert(n.clone(), json!(file));
        }
        let bytes = safetensors::serialize(views, None).unwrap();
        std::fs::write(dir.join(&file), bytes).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let arch = if spec.qwen2 { "qwen2" } else { "llama" };
    std::fs::write(
        dir.join("config.json"),
        json!({
            "architectures": [if spec.qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
            "model_type": arch,
            "hidden_size": h,
            "intermediate_size": c.intermediate_size,
            "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads,
            "num_hidden_layers": c.num_layers,
            "vocab_size": c.vocab_size,
            "rms_norm_eps": c.rms_norm_eps,
            "rope_theta": c.rope_theta,
            "max_position_embeddings": c.max_position,
            "tie_word_embeddings": true,
        })
        .to_string(),
    )
    .unwrap();
    gguf.tokenizer
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({
            "chat_template": gguf.tokenizer.chat_template(),
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "add_bos_token": false,
        })
        .to_string(),
    )
    .unwrap();
}

fn check_equivalent(spec: SyntheticSpec) {
    let bytes = build_gguf(&spec).unwrap();
    let gguf = gguf_source::from_file(
        Path::new("synthetic.gguf"),
        GgufFile::from_bytes("synthetic.gguf", bytes).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_hf(&spec, &gguf, dir.path());
    let hf = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(hf.config.architecture, gguf.config.architecture);
    assert_eq!(hf.config.attention_bias, spec.qwen2);

    let text = "Hello, world! 12345";
    let ids = gguf.tokenizer.encode(text, true).unwrap();
    assert_eq!(hf.tokenizer.encode(text, true).unwrap(), ids);
    let rows: Vec<usize> = (0..ids.len()).collect();
    let a = engine(gguf).score(&ids, &rows, usize::MAX).unwrap();
    let b = engine(hf).score(&ids, &rows, 3).unwrap();
    let mut worst = 0f32;
    let mut max = 0f32;
    for (ra, rb) in a.iter().zip(&b) {
        for (x, y) in ra.iter().zip(rb) {
            worst = worst.max((x - y).abs());
            max = max.max(x.abs());
        }
    }
    eprintln!(
        "{}: max |Δlogit| {worst:.2e} (max |logit| {max:.2})",
        spec_name(&spec)
    );
    assert!(
        worst <= 1e-4 * max.max(1.0),
        "GGUF and HF disagree by {worst}"
    );
}

fn spec_name(s: &SyntheticSpec) -> &'static str {
    if s.qwen2 {
        "qwen2"
    } else {
        "llama"
    }
}

#[test]
fn hugging_face_directory_equals_gguf_llama() {
    check_equivalent(SyntheticSpec {
        linear: GgmlType::F32,
        ..SyntheticSpec::tiny()
    });
}

#[test]
fn hugging_face_directory_equals_gguf_qwen2() {
    check_equivalent(SyntheticSpec {
        linear: GgmlType::F32,
        ..SyntheticSpec::parse("tiny-qwen2").unwrap()
    });
}

#[test]
fn malformed_checkpoints_name_the_file_and_tensor() {
    // A GGUF missing one tensor.
    let spec = SyntheticSpec::tiny();
    let good = GgufFile::from_bytes("m.gguf", build_gguf(&spec).unwrap()).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in good.metadata() {
        if k != "general.alignment" {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
    }
    for t in good.tensors() {
        if t.name != "blk.1.ffn_up.weight" {
            w.add_tensor(
                t.name.clone(),
                &t.dims,
                t.ggml_type,
                good.tensor_data(t).to_vec(),
            )
            .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    let c = Checkpoint::open(&path).unwrap();
    let e = Engine::new(c, common::cpu(), EngineConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.gguf") && e.contains("blk.1.ffn_up.weight"),
        "{e}"
    );

    // A truncated file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(e.contains("broken.gguf"), "{e}");

    // Not a checkpoint at all, and a missing path.
    std::fs::write(&path, b"hello").unwrap();
    assert!(Checkpoint::open(&path)
        .unwrap_err()
        .to_string()
        .contains("broken.gguf"));
    let e = Checkpoint::open(&dir.path().join("nope.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.gguf"), "{e}");

    // An HF directory whose config lacks a field.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("hidden_size"),
        "{e}"
    );

    let _ = (DType::F32, HashMap::<u8, u8>::new());
}
