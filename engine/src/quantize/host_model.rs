//! A checkpoint's weights in host memory as f32, in Hugging Face order
//! (GGUF's Q/K row permutation undone), ready to be rewritten.

use std::collections::BTreeMap;

use hal::RopeStyle;

use crate::model::llama::{LinearSite, TensorNames};
use crate::model::{Checkpoint, HostWeight, ModelConfig};

use super::linalg::Mat;
use super::QuantizeError;

/// A linear layer of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proj {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl Proj {
    /// Every projection, in checkpoint order.
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The short name [`TensorNames::layer`] takes.
    pub fn what(self) -> &'static str {
        match self {
            Proj::Q => "q",
            Proj::K => "k",
            Proj::V => "v",
            Proj::O => "o",
            Proj::Gate => "gate",
            Proj::Up => "up",
            Proj::Down => "down",
        }
    }

    /// The input it reads.
    pub fn site(self) -> LinearSite {
        match self {
            Proj::Q | Proj::K | Proj::V => LinearSite::Qkv,
            Proj::O => LinearSite::O,
            Proj::Gate | Proj::Up => LinearSite::GateUp,
            Proj::Down => LinearSite::Down,
        }
    }

    /// Its Hugging Face tensor name without `.weight` in layer `i`.
    pub fn hf_base(self, i: usize) -> String {
        TensorNames::HuggingFace
            .layer(i, self.what(), "weight")
            .trim_end_matches(".weight")
            .to_string()
    }
}

/// Every weight of a Llama-family model, f32, Hugging Face layout.
#[derive(Clone, Debug)]
pub struct HostModel {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// `[vocab, hidden]`.
    pub embed: Mat,
    /// `[vocab, hidden]`, `None` when tied to the embedding.
    pub lm_head: Option<Mat>,
    /// Final norm `[hidden]`.
    pub norm: Vec<f32>,
    /// Per layer: the attention norm `[hidden]`.
    pub attn_norm: Vec<Vec<f32>>,
    /// Per layer: the MLP norm `[hidden]`.
    pub ffn_norm: Vec<Vec<f32>>,
    /// Linear weights `[N, K]` by (layer, projection).
    pub linears: BTreeMap<(usize, Proj), Mat>,
    /// Q/K/V biases (Qwen2) by (layer, projection).
    pub biases: BTreeMap<(usize, Proj), Vec<f32>>,
}

fn to_f32(name: &str, w: &HostWeight) -> Result<Vec<f32>, QuantizeError> {
    match w {
        HostWeight::Dense { .. } => w
            .to_f32()
            .ok_or_else(|| QuantizeError::Shape(format!("{name}: not a float tensor"))),
        HostWeight::Quant(q) => Ok(q.dequantize().into_iter().map(|v| v as f32).collect()),
    }
}

/// Undo llama.cpp's Q/K row permutation: within each head of `hd` rows,
/// GGUF row `2i + j` is Hugging Face row `j·hd/2 + i`.
fn unpermute_rows(data: &[f32], heads: usize, hd: usize, cols: usize) -> Vec<f32> {
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * hd + 2 * i + j) * cols;
                let dst = (h * hd + j * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

impl HostModel {
    /// Read (and dequantise) every weight of `checkpoint`.
    pub fn read(checkpoint: &Checkpoint) -> Result<HostModel, QuantizeError> {
        let c = checkpoint.config.clone();
        let source = checkpoint.source.as_ref();
        let names = TensorNames::detect(source);
        let load = |name: &str| -> Result<(Vec<f32>, Vec<usize>), QuantizeError> {
            let w = source.require(name)?;
            Ok((to_f32(name, &w)?, w.shape()))
        };
        let mat = |name: &str| -> Result<Mat, QuantizeError> {
            let (data, shape) = load(name)?;
            match shape[..] {
                [rows, cols] => Ok(Mat::new(rows, cols, data)),
                _ => Err(QuantizeError::Shape(format!(
                    "{name}: shape {shape:?} is not 2-D"
                ))),
            }
        };
        let permuted = c.rope_style == RopeStyle::Gptj;
        let hd = c.head_dim;
        let heads_of = |p: Proj| match p {
            Proj::Q => Some(c.num_heads),
            Proj::K => Some(c.num_kv_heads),
            _ => None,
        };
        let mut linears = BTreeMap::new();
        let mut biases = BTreeMap::new();
        let mut attn_norm = Vec::new();
        let mut ffn_norm = Vec::new();
        for i in 0..c.num_layers {
            attn_norm.push(load(&names.layer(i, "attn_norm", "weight"))?.0);
            ffn_norm.push(load(&names.layer(i, "ffn_norm", "weight"))?.0);
            for p in Proj::ALL {
                let mut m = mat(&names.layer(i, p.what(), "weight"))?;
                let heads = heads_of(p).filter(|_| permuted);
                if let Some(heads) = heads {
                    m.data = unpermute_rows(&m.data, heads, hd, m.cols);
                }
                linears.insert((i, p), m);
                let bname = names.layer(i, p.what(), "bias");
                if source.contains(&bname) {
                    let (mut b, _) = load(&bname)?;
                    if let Some(heads) = heads {
                        b = unpermute_rows(&b, heads, hd, 1);
                    }
                    biases.insert((i, p), b);
                }
            }
        }
        let lm_head = if source.contains(names.output()) {
            Some(mat(names.output())?)
        } else {
            None
        };
        let mut config = c.clone();
        config.rope_style = RopeStyle::Neox;
        config.tie_word_embeddings = lm_head.is_none();
        Ok(HostModel {
            embed: mat(names.embed())?,
            lm_head,
            norm: load(names.norm())?.0,
            attn_norm,
            ffn_norm,
            linears,
            biases,
            config,
        })
    }

    /// A linear weight.
    pub fn linear(&self, layer: usize, p: Proj) -> Result<&Mat, QuantizeError> {
        self.linears
            .get(&(layer, p))
            .ok_or_else(|| QuantizeError::Shape(format!("layer {layer}: no {p:?} projection")))
    }

    /// A linear weight, mutable.
    pub fn linear_mut(&mut self, layer: usize, p: Proj) -> Result<&mut Mat, QuantizeError> {
        self.linears
            .get_mut(&(layer, p))
            .ok_or_else(|| QuantizeError::Shape(format!("layer {layer}: no {p:?} projection")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // One head of 4 rows, 1 column: HF rows [a, b, c, d] (rotate-half
        // pairs (a, c) and (b, d)) are stored by llama.cpp as [a, c, b, d].
        let gguf = [1.0, 3.0, 2.0, 4.0];
        assert_eq!(unpermute_rows(&gguf, 1, 4, 1), vec![1.0, 2.0, 3.0, 4.0]);
    }
}
