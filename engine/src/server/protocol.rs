//! Request bodies of the OpenAI-compatible API (with vLLM's extra sampling
//! fields), and their translation into [`SamplingParams`].
//!
//! Numbers are parsed wide (`i64`, `f64`) so that a negative or absurd value
//! gets a 400 naming the field rather than a generic type error. Unknown
//! fields are ignored, as OpenAI clients send fields such as `user`;
//! known fields Kiln cannot honour (`logit_bias`, `suffix`, `best_of > n`)
//! are refused.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::sampler::SamplingParams;

/// Most completions one request may ask for (`n`).
pub const MAX_N: i64 = 128;
/// Most top log-probabilities per token.
pub const MAX_LOGPROBS: i64 = 20;

/// A prompt: text, texts, token ids, or lists of token ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Tokens(Vec<i64>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<i64>>),
}

/// `stop`: a string or a list of strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` and empty `choices`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling fields shared by completions and chat completions.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SamplingFields {
    /// Tokens to generate.
    pub max_tokens: Option<i64>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Nucleus mass.
    pub top_p: Option<f64>,
    /// Top-k (vLLM extra).
    pub top_k: Option<i64>,
    /// Min-p (vLLM extra).
    pub min_p: Option<f64>,
    /// Completions per prompt.
    pub n: Option<i64>,
    /// Stop strings.
    pub stop: Option<StopSpec>,
    /// Stop token ids (vLLM extra).
    pub stop_token_ids: Option<Vec<i64>>,
    /// Seed.
    pub seed: Option<i64>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Repetition penalty (vLLM extra).
    pub repetition_penalty: Option<f64>,
    /// Ignore EOS (vLLM extra).
    pub ignore_eos: Option<bool>,
    /// Minimum tokens (vLLM extra).
    pub min_tokens: Option<i64>,
    /// Skip special tokens in the text (vLLM extra).
    pub skip_special_tokens: Option<bool>,
    /// Keep the stop string in the text (vLLM extra).
    pub include_stop_str_in_output: Option<bool>,
    /// Stream with SSE.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Not supported; refused when non-empty.
    pub logit_bias: Option<Map<String, Value>>,
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model id.
    pub model: Option<String>,
    /// The prompt(s).
    pub prompt: Option<Prompt>,
    /// Top log-probabilities per token (0–20).
    pub logprobs: Option<i64>,
    /// Prepend the prompt to the text.
    pub echo: Option<bool>,
    /// Not supported; refused when set.
    pub suffix: Option<String>,
    /// Accepted when equal to `n`.
    pub best_of: Option<i64>,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// Content of a chat message: text or text parts.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts; only `{"type": "text", "text": …}` is supported.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// Part type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Text of a text part.
    pub text: Option<String>,
}

/// A chat message.
#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool` or `developer`.
    pub role: String,
    /// Its content (may be null for assistant messages).
    pub content: Option<Content>,
    /// Optional speaker name.
    pub name: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    /// Model id.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Option<Vec<Message>>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Return log-probabilities.
    pub logprobs: Option<bool>,
    /// Top log-probabilities per token (needs `logprobs`).
    pub top_logprobs: Option<i64>,
    /// Add the assistant prompt (default true).
    pub add_generation_prompt: Option<bool>,
    /// Sampling.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// `POST /tokenize`.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenizeRequest {
    /// Model id.
    pub model: Option<String>,
    /// Text to tokenise.
    pub prompt: Option<String>,
    /// Or chat messages, rendered with the chat template first.
    pub messages: Option<Vec<Message>>,
    /// Add special tokens (BOS) as the model would (default true).
    pub add_special_tokens: Option<bool>,
    /// For `messages`: add the assistant prompt (default true).
    pub add_generation_prompt: Option<bool>,
}

/// `POST /detokenize`.
#[derive(Clone, Debug, Deserialize)]
pub struct DetokenizeRequest {
    /// Model id.
    pub model: Option<String>,
    /// Token ids.
    pub tokens: Vec<i64>,
}

/// Parse a JSON body into `T`, turning every failure into a 400.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!("the request body is not valid UTF-8: {e}"), None)
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
            None,
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        let msg = e.to_string();
        // serde names the field in backquotes for missing/unknown ones;
        // for type errors the message says what was expected.
        ApiError::bad_request(format!("invalid request: {msg}"), None)
    })
}

fn field_f32(v: Option<f64>, name: &'static str, default: f32) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x.abs() < 1e30 => Ok(x as f32),
        Some(x) => Err(ApiError::bad_request(
            format!("{name} must be a finite number, got {x}"),
            Some(name),
        )),
    }
}

/// The completion budget and the sampling parameters of a request, with
/// `n` separately. `max_tokens_default` is used when the request gives none
/// (the room left in the context, as vLLM does).
pub fn sampling_params(
    f: &SamplingFields,
    max_tokens: Option<i64>,
    max_tokens_param: &'static str,
    logprobs: Option<i64>,
    logprobs_param: &'static str,
) -> Result<(SamplingParams, usize, Option<usize>), ApiError> {
    let bad = |m: String, p: &'static str| ApiError::bad_request(m, Some(p));
    if f.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(bad("logit_bias is not supported".into(), "logit_bias"));
    }
    let n = f.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(bad(
            format!("n must be between 1 and {MAX_N}, got {n}"),
            "n",
        ));
    }
    let max_tokens = match max_tokens {
        None => None,
        Some(m) if (1..=1 << 24).contains(&m) => Some(m as usize),
        Some(m) => {
            return Err(bad(
                format!("{max_tokens_param} must be at least 1, got {m}"),
                max_tokens_param,
            ))
        }
    };
    let logprobs = match logprobs {
        None => None,
        Some(l) if (0..=MAX_LOGPROBS).contains(&l) => Some(l as usize),
        Some(l) => {
            return Err(bad(
                format!("{logprobs_param} must be between 0 and {MAX_LOGPROBS}, got {l}"),
                logprobs_param,
            ))
        }
    };
    let temperature = field_f32(f.temperature, "temperature", 1.0)?;
    if temperature < 0.0 {
        return Err(bad(
            format!("temperature must be non-negative, got {temperature}"),
            "temperature",
        ));
    }
    let top_k = match f.top_k {
        None => 0,
        Some(k) if k == -1 || (0..=1 << 30).contains(&k) => k as i32,
        Some(k) => {
            return Err(bad(
                format!("top_k must be -1 (disabled) or positive, got {k}"),
                "top_k",
            ))
        }
    };
    let min_tokens = match f.min_tokens {
        None => 0,
        Some(m) if (0..=1 << 24).contains(&m) => m as usize,
        Some(m) => {
            return Err(bad(
                format!("min_tokens must be non-negative, got {m}"),
                "min_tokens",
            ))
        }
    };
    let stop = match &f.stop {
        None => Vec::new(),
        Some(StopSpec::One(s)) => vec![s.clone()],
        Some(StopSpec::Many(v)) => v.clone(),
    };
    if stop.len() > 16 {
        return Err(bad(
            format!("at most 16 stop strings, got {}", stop.len()),
            "stop",
        ));
    }
    let mut stop_token_ids = Vec::new();
    for &t in f.stop_token_ids.iter().flatten() {
        let t = u32::try_from(t).map_err(|_| {
            bad(
                format!("stop_token_ids: {t} is not a token id"),
                "stop_token_ids",
            )
        })?;
        stop_token_ids.push(t);
    }
    let seed = f.seed.map(|s| s as u64);
    let params = SamplingParams {
        n: 1,
        temperature,
        top_p: field_f32(f.top_p, "top_p", 1.0)?,
        top_k,
        min_p: field_f32(f.min_p, "min_p", 0.0)?,
        presence_penalty: field_f32(f.presence_penalty, "presence_penalty", 0.0)?,
        frequency_penalty: field_f32(f.frequency_penalty, "frequency_penalty", 0.0)?,
        repetition_penalty: field_f32(f.repetition_penalty, "repetition_penalty", 1.0)?,
        seed,
        max_tokens: max_tokens.unwrap_or(16),
        min_tokens,
        stop,
        stop_token_ids,
        ignore_eos: f.ignore_eos.unwrap_or(false),
        logprobs,
        skip_special_tokens: f.skip_special_tokens.unwrap_or(true),
        include_stop_str_in_output: f.include_stop_str_in_output.unwrap_or(false),
    };
    Ok((params, n as usize, max_tokens))
}

/// Whether the request streams, and whether it wants a usage chunk;
/// `stream_options` without `stream` is an error (as in OpenAI's API).
pub fn stream_flags(f: &SamplingFields) -> Result<(bool, bool), ApiError> {
    let stream = f.stream.unwrap_or(false);
    if !stream && f.stream_options.is_some() {
        return Err(ApiError::bad_request(
            "stream_options is only allowed when stream is true",
            Some("stream_options"),
        ));
    }
    let usage = f
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok((stream, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_of_every_shape_parse() {
        for body in [
            r#"{"prompt": "hi"}"#,
            r#"{"prompt": ["a", "b"]}"#,
            r#"{"prompt": [1, 2, 3]}"#,
            r#"{"prompt": [[1, 2], [3]]}"#,
        ] {
            let r: CompletionRequest = parse_body(body.as_bytes()).unwrap();
            assert!(r.prompt.is_some(), "{body}");
        }
    }

    #[test]
    fn bad_bodies_are_400s() {
        for body in [
            &b"{not json"[..],
            b"[1,2]",
            b"\xff\xfe",
            br#"{"prompt": 5}"#,
            br#"{"max_tokens": "x"}"#,
        ] {
            let e = parse_body::<CompletionRequest>(body).unwrap_err();
            assert_eq!(
                e.status.as_u16(),
                400,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn sampling_fields_are_checked_with_their_names() {
        let f = |json: &str| -> SamplingFields { serde_json::from_str(json).unwrap() };
        let e = sampling_params(
            &f(r#"{"temperature": -1}"#),
            None,
            "max_tokens",
            None,
            "logprobs",
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e =
            sampling_params(&f(r#"{"n": 0}"#), None, "max_tokens", None, "logprobs").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = sampling_params(&f("{}"), Some(-5), "max_tokens", None, "logprobs").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e =
            sampling_params(&f("{}"), None, "max_tokens", Some(21), "top_logprobs").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        let (p, n, m) = sampling_params(
            &f(r#"{"n": 3, "stop": "x", "seed": 7, "top_k": 5}"#),
            Some(10),
            "max_tokens",
            Some(2),
            "logprobs",
        )
        .unwrap();
        assert_eq!((n, m, p.max_tokens, p.top_k), (3, Some(10), 10, 5));
        assert_eq!(p.stop, vec!["x".to_string()]);
        assert_eq!(p.logprobs, Some(2));
        assert!(stream_flags(&f(r#"{"stream_options": {"include_usage": true}}"#)).is_err());
        assert_eq!(
            stream_flags(&f(
                r#"{"stream": true, "stream_options": {"include_usage": true}}"#
            ))
            .unwrap(),
            (true, true)
        );
    }
}
