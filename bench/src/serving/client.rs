//! One streaming request, timed chunk by chunk, and model discovery.
//!
//! A request is sent with `"stream": true` and
//! `"stream_options": {"include_usage": true}` and read as server-sent
//! events until `data: [DONE]`. Only chunks that carry generated text count
//! as tokens: a chat stream's first chunk (`delta: {"role": "assistant"}`)
//! and the final usage chunk (`choices: []`) do not.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::sse::{SseEvent, SseParser};
use super::{Endpoint, ServeBenchError};

/// Longest error message kept per failed request, in characters.
const MAX_ERROR_CHARS: usize = 300;

/// Where and how to send generation requests.
#[derive(Clone, Debug)]
pub struct Target {
    /// HTTP client (carries the `Authorization` header when a key is set).
    pub http: reqwest::Client,
    /// Base URL without a trailing `/` or `/v1`.
    pub base: String,
    /// Model name sent with every request.
    pub model: String,
    /// Which API to call.
    pub endpoint: Endpoint,
    /// `max_tokens` of every request (with `ignore_eos`).
    pub output_tokens: usize,
    /// Limit on one request, from send to `[DONE]`.
    pub timeout: Duration,
}

/// Timings and token counts of one successful request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestMetrics {
    /// Prompt tokens as the server counted them (`usage.prompt_tokens`),
    /// when it sent usage.
    pub prompt_tokens: Option<u64>,
    /// Generated tokens: `usage.completion_tokens` when sent, else the
    /// number of content chunks.
    pub output_tokens: u64,
    /// Send → first content chunk.
    pub ttft: Duration,
    /// Gaps between successive content chunks.
    pub itl: Vec<Duration>,
    /// Send → last content chunk (vLLM's end-to-end latency).
    pub e2e: Duration,
}

impl Target {
    /// URL of the generation endpoint.
    pub fn url(&self) -> String {
        format!("{}{}", self.base, self.endpoint.path())
    }

    /// JSON body of a request for `prompt`.
    pub fn body(&self, prompt: &str) -> Value {
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.output_tokens,
            "ignore_eos": true,
            "temperature": 0.0,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        match self.endpoint {
            Endpoint::Completions => body["prompt"] = json!(prompt),
            Endpoint::Chat => body["messages"] = json!([{ "role": "user", "content": prompt }]),
        }
        body
    }

    /// Sends one request for `prompt` and times its stream; `Err` holds why
    /// it failed (HTTP status, error event, broken or unfinished stream,
    /// timeout).
    pub async fn send(&self, prompt: &str) -> Result<RequestMetrics, String> {
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, self.stream(prompt, start)).await {
            Ok(result) => result.map_err(|e| truncate(&e)),
            Err(_) => Err(format!(
                "timed out after {:.1} s",
                self.timeout.as_secs_f64()
            )),
        }
    }

    async fn stream(&self, prompt: &str, start: Instant) -> Result<RequestMetrics, String> {
        let url = self.url();
        let response = self
            .http
            .post(&url)
            .json(&self.body(prompt))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            return Err(format!("HTTP {status}: {}", error_text(&body)));
        }
        let mut chunks = response.bytes_stream();
        let mut parser = SseParser::new();
        let mut state = StreamState::new(start);
        let mut events = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| format!("stream broke: {}", describe(&e)))?;
            let now = Instant::now();
            parser.push(&chunk, &mut events);
            for event in events.drain(..) {
                if state.on_event(&event, now)? {
                    return state.finish();
                }
            }
        }
        if let Some(event) = parser.finish() {
            state.on_event(&event, Instant::now())?;
        }
        state.finish()
    }
}

/// What a stream has shown so far.
#[derive(Debug)]
pub struct StreamState {
    start: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    itl: Vec<Duration>,
    content_chunks: u64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    done: bool,
}

impl StreamState {
    /// A stream whose request was sent at `start`.
    pub fn new(start: Instant) -> Self {
        StreamState {
            start,
            first: None,
            last: None,
            itl: Vec::new(),
            content_chunks: 0,
            prompt_tokens: None,
            completion_tokens: None,
            done: false,
        }
    }

    /// Takes one event received at `at`. `Ok(true)` on `[DONE]`; `Err` on
    /// an error event or a chunk that is not JSON.
    pub fn on_event(&mut self, event: &SseEvent, at: Instant) -> Result<bool, String> {
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        for chunk in chunks_of(&event.data)? {
            self.on_chunk(&chunk, at)?;
        }
        Ok(false)
    }

    fn on_chunk(&mut self, chunk: &Value, at: Instant) -> Result<(), String> {
        if let Some(message) = error_of(chunk) {
            return Err(format!("error event: {message}"));
        }
        let has_content = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first())
            .is_some_and(has_text);
        if has_content {
            match self.last {
                None => self.first = Some(at),
                Some(last) => self.itl.push(at - last),
            }
            self.last = Some(at);
            self.content_chunks += 1;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            if let Some(n) = usage.get("completion_tokens").and_then(Value::as_u64) {
                self.completion_tokens = Some(n);
            }
            if let Some(n) = usage.get("prompt_tokens").and_then(Value::as_u64) {
                self.prompt_tokens = Some(n);
            }
        }
        Ok(())
    }

    /// The request's metrics, or why it failed: the stream must have ended
    /// with `[DONE]` and carried at least one content chunk.
    pub fn finish(self) -> Result<RequestMetrics, String> {
        if !self.done {
            return Err(format!(
                "stream ended without data: [DONE] after {} content chunks",
                self.content_chunks
            ));
        }
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return Err("stream finished without any generated text".into());
        };
        Ok(RequestMetrics {
            prompt_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens.unwrap_or(self.content_chunks),
            ttft: first - self.start,
            itl: self.itl,
            e2e: last - self.start,
        })
    }
}

/// The JSON chunks in one event's data: normally one value; a server that
/// puts several `data:` lines of whole chunks in one event gets one value
/// per line.
fn chunks_of(data: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str(data) {
        Ok(v) => Ok(vec![v]),
        Err(e) => {
            let lines: Option<Vec<Value>> = data
                .contains('\n')
                .then(|| data.lines().map(|l| serde_json::from_str(l).ok()).collect())
                .flatten();
            lines.ok_or_else(|| format!("chunk is not JSON ({e}): {data}"))
        }
    }
}

/// A choice's generated text is non-empty (completions `text`, chat
/// `delta.content`, or a reasoning model's `delta.reasoning_content` /
/// `delta.reasoning`).
fn has_text(choice: &Value) -> bool {
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    let delta = choice.get("delta");
    non_empty(choice.get("text"))
        || ["content", "reasoning_content", "reasoning"]
            .iter()
            .any(|k| non_empty(delta.and_then(|d| d.get(k))))
}

/// The message of an error chunk: `{"error": {"message": …}}`,
/// `{"error": "…"}`, or vLLM's older `{"object": "error", "message": …}`.
fn error_of(chunk: &Value) -> Option<String> {
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        return Some(match error.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_string),
        });
    }
    if chunk.get("object").and_then(Value::as_str) == Some("error") {
        let message = chunk.get("message").and_then(Value::as_str);
        return Some(message.unwrap_or("unknown error").to_string());
    }
    None
}

/// The useful part of an error response body: its error message when it is
/// OpenAI-style JSON, else the body itself.
pub fn error_text(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok();
    match parsed.as_ref().and_then(error_of) {
        Some(message) => message,
        None if body.trim().is_empty() => "(empty body)".into(),
        None => body.trim().to_string(),
    }
}

/// A reqwest error with its causes (reqwest's own message alone rarely says
/// what went wrong).
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The innermost cause of `error` (e.g. "Connection refused (os error
/// 111)"), or its timeout.
fn root_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters, on one line.
fn truncate(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// Asks `GET {base}/v1/models` for the served models, in the server's order.
pub async fn list_models(
    http: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> Result<Vec<String>, ServeBenchError> {
    let url = format!("{base}/v1/models");
    let failed = |reason: String| ServeBenchError::Models {
        url: url.clone(),
        reason,
    };
    let response = match http.get(&url).timeout(timeout).send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() || e.is_timeout() => {
            return Err(ServeBenchError::Unreachable {
                url,
                reason: root_cause(&e),
            })
        }
        Err(e) => return Err(failed(describe(&e))),
    };
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| failed(format!("reading the answer: {}", describe(&e))))?;
    if !status.is_success() {
        return Err(failed(format!(
            "HTTP {status}: {}",
            truncate(&error_text(&body))
        )));
    }
    let answer: Value =
        serde_json::from_str(&body).map_err(|e| failed(format!("the answer is not JSON ({e})")))?;
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| failed("the answer has no \"data\" list".into()))?;
    Ok(data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(str::to_string)
        .collect())
}

/// The model to benchmark: `requested` when given (the server must still be
/// reachable; a missing `/v1/models` is tolerated), else the first model
/// the server lists.
pub async fn resolve_model(
    http: &reqwest::Client,
    base: &str,
    requested: Option<&str>,
    timeout: Duration,
) -> Result<String, ServeBenchError> {
    let listed = list_models(http, base, timeout).await;
    match (requested, listed) {
        (_, Err(e @ ServeBenchError::Unreachable { .. })) => Err(e),
        (Some(model), _) => Ok(model.to_string()),
        (None, Err(e)) => Err(e),
        (None, Ok(models)) => models
            .into_iter()
            .next()
            .ok_or_else(|| ServeBenchError::NoModels {
                url: format!("{base}/v1/models"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `(ms after start, data)` events and finishes the stream.
    fn replay(events: &[(u64, &str)]) -> Result<RequestMetrics, String> {
        let start = Instant::now();
        let mut state = StreamState::new(start);
        for (t, data) in events {
            if state.on_event(&event(data), start + ms(*t))? {
                break;
            }
        }
        state.finish()
    }

    #[test]
    fn completion_stream_with_usage() {
        let m = replay(&[
            (10, r#"{"choices":[{"index":0,"text":"a"}]}"#),
            (15, r#"{"choices":[{"index":0,"text":"b"}]}"#),
            (
                22,
                r#"{"choices":[{"index":0,"text":"c","finish_reason":"length"}]}"#,
            ),
            (
                23,
                r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4}}"#,
            ),
            (24, "[DONE]"),
        ])
        .unwrap();
        assert_eq!(m.ttft, ms(10));
        assert_eq!(m.itl, vec![ms(5), ms(7)]);
        assert_eq!(m.e2e, ms(22));
        // Usage wins over the chunk count (a chunk may carry two tokens).
        assert_eq!(m.output_tokens, 4);
        assert_eq!(m.prompt_tokens, Some(7));
    }

    #[test]
    fn chat_role_chunk_is_not_the_first_token() {
        let m = replay(&[
            (
                3,
                r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            ),
            (9, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            (12, r#"{"choices":[{"delta":{"content":"!"}}]}"#),
            (13, r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#),
            (14, "[DONE]"),
        ])
        .unwrap();
        assert_eq!(m.ttft, ms(9));
        assert_eq!(m.itl, vec![ms(3)]);
        assert_eq!(m.e2e, ms(12));
        // No usage: the content chunks are counted.
        assert_eq!(m.output_tokens, 2);
        assert_eq!(m.prompt_tokens, None);
    }

    #[test]
    fn error_event_fails_the_request() {
        let e = replay(&[
            (1, r#"{"choices":[{"text":"a"}]}"#),
            (
                2,
                r#"{"error":{"message":"KV cache exhausted","type":"server_error"}}"#,
            ),
            (3, "[DONE]"),
        ])
        .unwrap_err();
        assert_eq!(e, "error event: KV cache exhausted");
        let e = replay(&[(1, r#"{"object":"error","message":"bad"}"#)]).unwrap_err();
        assert_eq!(e, "error event: bad");
    }

    #[test]
    fn missing_done_or_content_fails_the_request() {
        let e = replay(&[(1, r#"{"choices":[{"text":"a"}]}"#)]).unwrap_err();
        assert!(e.contains("without data: [DONE]"), "{e}");
        let e = replay(&[(1, r#"{"choices":[],"usage":{}}"#), (2, "[DONE]")]).unwrap_err();
        assert!(e.contains("without any generated text"), "{e}");
        let e = replay(&[(1, "not json")]).unwrap_err();
        assert!(e.starts_with("chunk is not JSON"), "{e}");
    }

    #[test]
    fn whole_chunks_on_separate_data_lines_of_one_event() {
        let m = replay(&[
            (
                4,
                "{\"choices\":[{\"text\":\"a\"}]}\n{\"choices\":[{\"text\":\"b\"}]}",
            ),
            (5, "[DONE]"),
        ])
        .unwrap();
        assert_eq!(m.output_tokens, 2);
        assert_eq!(m.itl, vec![ms(0)]);
    }

    #[test]
    fn request_bodies() {
        let target = Target {
            http: reqwest::Client::new(),
            base: "http://h:1".into(),
            model: "m".into(),
            endpoint: Endpoint::Chat,
            output_tokens: 5,
            timeout: ms(1),
        };
        assert_eq!(target.url(), "http://h:1/v1/chat/completions");
        let b = target.body("hello");
        assert_eq!(b["messages"][0]["content"], "hello");
        assert_eq!(b["max_tokens"], 5);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        let completions = Target {
            endpoint: Endpoint::Completions,
            ..target
        };
        assert_eq!(completions.url(), "http://h:1/v1/completions");
        assert_eq!(completions.body("hello")["prompt"], "hello");
    }

    #[test]
    fn error_bodies_and_truncation() {
        assert_eq!(
            error_text(r#"{"error":{"message":"unknown model","code":404}}"#),
            "unknown model"
        );
        assert_eq!(error_text("  plain text\n"), "plain text");
        assert_eq!(error_text(""), "(empty body)");
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        assert_eq!(truncate(&long).chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(truncate("a\n  b"), "a b");
    }
}
