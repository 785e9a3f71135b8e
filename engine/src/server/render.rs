//! Response JSON: choices, log-probabilities and usage in OpenAI's shapes.

use serde_json::{json, Value};

use crate::engine::TokenLogprobs;
use crate::tokenizer::Tokenizer;

/// Text of one token as clients see it (lossy where a token is part of a
/// multi-byte character).
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// Legacy completions `logprobs` for some tokens; `offset` is the text
/// offset of the first (updated).
pub fn completion_logprobs(tok: &Tokenizer, lp: &[TokenLogprobs], offset: &mut usize) -> Value {
    let mut tokens = Vec::with_capacity(lp.len());
    let mut token_logprobs = Vec::with_capacity(lp.len());
    let mut top = Vec::with_capacity(lp.len());
    let mut offsets = Vec::with_capacity(lp.len());
    for t in lp {
        let text = token_text(tok, t.token);
        offsets.push(*offset);
        *offset += tok.token_bytes(t.token).len();
        tokens.push(Value::String(text));
        token_logprobs.push(json_f32(t.logprob));
        let mut m = serde_json::Map::new();
        for &(id, l) in &t.top {
            m.insert(token_text(tok, id), json_f32(l));
        }
        top.push(Value::Object(m));
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// Chat `logprobs.content` entries for some tokens.
pub fn chat_logprobs(tok: &Tokenizer, lp: &[TokenLogprobs]) -> Vec<Value> {
    lp.iter()
        .map(|t| {
            let text = token_text(tok, t.token);
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|&(id, l)| {
                    json!({
                        "token": token_text(tok, id),
                        "logprob": json_f32(l),
                        "bytes": tok.token_bytes(id),
                    })
                })
                .collect();
            json!({
                "token": text,
                "logprob": json_f32(t.logprob),
                "bytes": tok.token_bytes(t.token),
                "top_logprobs": top,
            })
        })
        .collect()
}

/// A finite f32 as JSON; -inf (impossible token) as a very negative number
/// since JSON has no infinities.
pub fn json_f32(x: f32) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x < 0.0 {
        json!(-9999.0)
    } else {
        Value::Null
    }
}

/// The `usage` object.
pub fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}
