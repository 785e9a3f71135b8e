//! Seeded synthetic Llama models, built in memory as GGUF files: the same
//! code path as a real checkpoint (GGUF parser, tokenizer from metadata,
//! quantised weights packed by the backend), with no download. Used by the
//! tests and to check a backend on a machine that cannot fetch the default
//! model (`kiln generate --model synthetic:smollm2-135m`).
//!
//! The tokenizer is byte-level BPE with no merges: every byte is one token,
//! plus `<|im_start|>` (1), `<|im_end|>` (2, EOS) and filler tokens up to
//! the vocabulary size.

use hal::quant::gguf::quantize_row;
use hal::GgufType;

use super::gguf::{GgmlType, GgufError, GgufValue, GgufWriter};

/// Shapes and formats of a synthetic model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Decoder layers.
    pub layers: usize,
    /// Model width (multiple of 32).
    pub hidden: usize,
    /// MLP width (multiple of 32).
    pub intermediate: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Vocabulary (at least 259).
    pub vocab: usize,
    /// Context length.
    pub context: usize,
    /// Format of the linear layers (the tied embedding is Q8_0).
    pub linear: GgmlType,
    /// Seed of the weights.
    pub seed: u64,
    /// Qwen2 flavour: Q/K/V biases and unpermuted (NeoX) RoPE.
    pub qwen2: bool,
}

impl SyntheticSpec {
    /// SmolLM2-135M's shapes and formats (Q4_1 linears, Q8_0 tied embedding).
    pub fn smollm2_135m() -> Self {
        SyntheticSpec {
            layers: 30,
            hidden: 576,
            intermediate: 1536,
            heads: 9,
            kv_heads: 3,
            vocab: 49152,
            context: 8192,
            linear: GgmlType::Q4_1,
            seed: 135,
            qwen2: false,
        }
    }

    /// A tiny model for fast tests (2 layers, width 64, GQA 4:2).
    pub fn tiny() -> Self {
        SyntheticSpec {
            layers: 2,
            hidden: 64,
            intermediate: 128,
            heads: 4,
            kv_heads: 2,
            vocab: 320,
            context: 512,
            linear: GgmlType::Q8_0,
            seed: 7,
            qwen2: false,
        }
    }

    /// Parse `smollm2-135m`, `tiny` or `tiny-qwen2`, optionally followed by `:q4_0`,
    /// `:q4_1`, `:q8_0` or `:f32` for the linear layers.
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut parts = name.split(':');
        let mut spec = match parts.next().unwrap_or("") {
            "smollm2-135m" => Self::smollm2_135m(),
            "tiny" => Self::tiny(),
            "tiny-qwen2" => SyntheticSpec {
                qwen2: true,
                ..Self::tiny()
            },
            other => {
                return Err(format!(
                    "unknown synthetic model {other:?} (expected smollm2-135m, tiny or tiny-qwen2)"
                ))
            }
        };
        if let Some(fmt) = parts.next() {
            spec.linear = match fmt {
                "q4_0" => GgmlType::Q4_0,
                "q4_1" => GgmlType::Q4_1,
                "q8_0" => GgmlType::Q8_0,
                "f32" => GgmlType::F32,
                other => return Err(format!("unknown weight format {other:?}")),
            };
        }
        Ok(spec)
    }
}

/// The HAL's seeded SplitMix64, with a uniform draw in f32.
struct Rng(hal::conformance::Rng);

impl Rng {
    /// Uniform in `[-a, a)`.
    fn uniform(&mut self, a: f32) -> f32 {
        self.0.uniform(-f64::from(a), f64::from(a)) as f32
    }
}

/// GPT-2's byte-to-character map of byte-level BPE.
pub fn byte_to_char(b: u8) -> char {
    let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable {
        char::from(b)
    } else {
        // The n-th non-printable byte maps to U+0100 + n.
        let n = (0..b)
            .filter(|&x| !((33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174))
            .count() as u32;
        char::from_u32(256 + n).unwrap_or('?')
    }
}

/// Add a seeded `[n, k]` weight of type `ty`, uniform in `[-scale, scale)`.
fn matrix(
    w: &mut GgufWriter,
    rng: &mut Rng,
    name: String,
    n: usize,
    k: usize,
    ty: GgmlType,
    scale: f32,
) -> Result<(), GgufError> {
    let mut data = Vec::new();
    let mut row = vec![0f32; k];
    for _ in 0..n {
        for x in row.iter_mut() {
            *x = rng.uniform(scale);
        }
        match ty {
            GgmlType::F32 => data.extend(row.iter().flat_map(|x| x.to_le_bytes())),
            GgmlType::Q4_0 => data.extend(quantize_row(GgufType::Q4_0, &row)),
            GgmlType::Q4_1 => data.extend(quantize_row(GgufType::Q4_1, &row)),
            _ => data.extend(quantize_row(GgufType::Q8_0, &row)),
        }
    }
    w.add_tensor(name, &[k as u64, n as u64], ty, data)?;
    Ok(())
}

/// Build the GGUF bytes of a synthetic model.
pub fn build_gguf(spec: &SyntheticSpec) -> Result<Vec<u8>, GgufError> {
    let s = spec;
    let hd = s.hidden / s.heads.max(1);
    let mut w = GgufWriter::new();
    let arch = if s.qwen2 { "qwen2" } else { "llama" };
    w.add_metadata("general.architecture", arch)?;
    w.add_metadata("general.name", "synthetic")?;
    let u32v = |x: usize| GgufValue::U32(x as u32);
    w.add_metadata(format!("{arch}.block_count"), u32v(s.layers))?;
    w.add_metadata(format!("{arch}.context_length"), u32v(s.context))?;
    w.add_metadata(format!("{arch}.embedding_length"), u32v(s.hidden))?;
    w.add_metadata(format!("{arch}.feed_forward_length"), u32v(s.intermediate))?;
    w.add_metadata(format!("{arch}.attention.head_count"), u32v(s.heads))?;
    w.add_metadata(format!("{arch}.attention.head_count_kv"), u32v(s.kv_heads))?;
    w.add_metadata(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        GgufValue::F32(1e-5),
    )?;
    w.add_metadata(format!("{arch}.rope.freq_base"), GgufValue::F32(100_000.0))?;

    // Tokenizer: specials 0..3, then the 256 bytes, then fillers.
    let mut tokens: Vec<GgufValue> = Vec::with_capacity(s.vocab);
    let mut types: Vec<GgufValue> = Vec::with_capacity(s.vocab);
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(GgufValue::String(special.into()));
        types.push(GgufValue::I32(3));
    }
    for b in 0..=255u8 {
        tokens.push(GgufValue::String(byte_to_char(b).to_string()));
        types.push(GgufValue::I32(1));
    }
    let mut i = 0;
    while tokens.len() < s.vocab {
        tokens.push(GgufValue::String(format!("<|filler_{i}|>")));
        types.push(GgufValue::I32(4));
        i += 1;
    }
    w.add_metadata("tokenizer.ggml.model", "gpt2")?;
    w.add_metadata("tokenizer.ggml.pre", "smollm")?;
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(tokens))?;
    w.add_metadata("tokenizer.ggml.token_type", GgufValue::Array(types))?;
    w.add_metadata("tokenizer.ggml.merges", GgufValue::Array(Vec::new()))?;
    w.add_metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(1))?;
    w.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(2))?;
    w.add_metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(false))?;
    w.add_metadata(
        "tokenizer.chat_template",
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    )?;

    let mut rng = Rng(hal::conformance::Rng::new(s.seed));
    let norm = |w: &mut GgufWriter, name: String, n: usize| -> Result<(), GgufError> {
        let data = (0..n)
            .flat_map(|i| (1.0f32 + 0.01 * (i % 7) as f32).to_le_bytes())
            .collect();
        w.add_tensor(name, &[n as u64], GgmlType::F32, data)?;
        Ok(())
    };
    // Scales keep activations O(1) through the layers.
    let a = |k: usize| 1.7 / (k as f32).sqrt();
    matrix(
        &mut w,
        &mut rng,
        "token_embd.weight".into(),
        s.vocab,
        s.hidden,
        GgmlType::Q8_0,
        1.0,
    )?;
    for l in 0..s.layers {
        let (h, i, q, kv) = (s.hidden, s.intermediate, s.heads * hd, s.kv_heads * hd);
        norm(&mut w, format!("blk.{l}.attn_norm.weight"), h)?;
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.attn_q.weight"),
            q,
            h,
            s.linear,
            a(h),
        )?;
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.attn_k.weight"),
            kv,
            h,
            s.linear,
            a(h),
        )?;
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.attn_v.weight"),
            kv,
            h,
            s.linear,
            a(h),
        )?;
        if s.qwen2 {
            for (name, n) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                let data = (0..n)
                    .flat_map(|_| rng.uniform(0.5).to_le_bytes())
                    .collect();
                w.add_tensor(
                    format!("blk.{l}.{name}.bias"),
                    &[n as u64],
                    GgmlType::F32,
                    data,
                )?;
            }
        }
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.attn_output.weight"),
            h,
            q,
            s.linear,
            a(q),
        )?;
        norm(&mut w, format!("blk.{l}.ffn_norm.weight"), h)?;
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.ffn_gate.weight"),
            i,
            h,
            s.linear,
            a(h),
        )?;
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.ffn_up.weight"),
            i,
            h,
            s.linear,
            a(h),
        )?;
        matrix(
            &mut w,
            &mut rng,
            format!("blk.{l}.ffn_down.weight"),
            h,
            i,
            s.linear,
            a(i),
        )?;
    }
    norm(&mut w, "output_norm.weight".into(), s.hidden)?;
    w.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_onto_printable_chars() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(!c.is_whitespace() && !c.is_control(), "byte {b} → {c:?}");
            assert!(seen.insert(c));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
    }

    #[test]
    fn specs_parse() {
        assert_eq!(SyntheticSpec::parse("tiny").unwrap(), SyntheticSpec::tiny());
        assert_eq!(
            SyntheticSpec::parse("smollm2-135m:q4_0").unwrap().linear,
            GgmlType::Q4_0
        );
        assert!(SyntheticSpec::parse("huge").is_err());
        assert!(SyntheticSpec::parse("tiny:q2_k").is_err());
    }
}
