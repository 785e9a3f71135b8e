//! The endpoints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc as tmpsc;

use super::core::{Command, Event};
use super::error::ApiError;
use super::protocol::{
    self, ChatRequest, CompletionRequest, Content, DetokenizeRequest, Message, Prompt,
    TokenizeRequest,
};
use super::render;
use super::AppState;
use crate::chat::ChatMessage;
use crate::engine::{Finish, RequestError, RequestOutput};
use crate::kv::RequestId;
use crate::sampler::SamplingParams;
use crate::scheduler::RejectReason;

type Shared = Arc<AppState>;

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        let mut e = ApiError::bad_request(r.body_text(), None);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            e.status = status;
            e.message =
                "the request body is larger than the server's limit (--max-body-bytes)".into();
        }
        e
    })
}

fn check_model(state: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != &state.model_id => Err(ApiError::model_not_found(m)),
        _ => Ok(()),
    }
}

fn check_accepting(state: &AppState) -> Result<(), ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        state.metrics.rejected_overload.inc();
        return Err(ApiError::unavailable("the server is shutting down", 5));
    }
    if state.core.state.broken.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "the engine has failed; restart the server",
            30,
        ));
    }
    if state.core.state.waiting.load(Ordering::SeqCst) >= state.max_waiting {
        state.metrics.rejected_overload.inc();
        return Err(ApiError::unavailable(
            format!(
                "the waiting queue is full ({} requests); retry later",
                state.max_waiting
            ),
            1,
        ));
    }
    Ok(())
}

fn request_error(e: RequestError, max_tokens_param: &str) -> ApiError {
    match e {
        RequestError::Param(p) => ApiError::bad_request(p.message, Some(p.param)),
        RequestError::Rejected(r @ RejectReason::TooLong { .. }) => {
            ApiError::bad_request(r.to_string(), Some(max_tokens_param))
        }
        RequestError::Rejected(r @ RejectReason::EmptyPrompt) => {
            ApiError::bad_request(r.to_string(), Some("prompt"))
        }
        RequestError::Rejected(r) => ApiError::bad_request(r.to_string(), None),
        e @ RequestError::TokenOutOfVocab { .. } => {
            ApiError::bad_request(e.to_string(), Some("prompt"))
        }
    }
}

/// One engine request behind a choice.
struct Submitted {
    rx: tmpsc::UnboundedReceiver<Event>,
    /// Engine id → choice index.
    choices: HashMap<RequestId, usize>,
    prompt_tokens: usize,
}

/// Add every (prompt, choice) pair to the engine; on any refusal abort the
/// ones already added.
async fn submit(
    state: &AppState,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    n: usize,
    explicit_max: bool,
    max_tokens_param: &str,
) -> Result<Submitted, ApiError> {
    let (tx, rx) = tmpsc::unbounded_channel();
    let mut choices = HashMap::new();
    let mut prompt_tokens = 0;
    for (pi, prompt) in prompts.iter().enumerate() {
        prompt_tokens += prompt.len();
        let mut p = params.clone();
        if !explicit_max {
            // vLLM's default: whatever room the context leaves.
            p.max_tokens = state.max_model_len.saturating_sub(prompt.len()).max(1);
        }
        for i in 0..n {
            let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
            let sent = state.core.send(Command::Add {
                prompt: prompt.clone(),
                params: p.for_choice(i),
                events: tx.clone(),
                reply: reply_tx,
            });
            let reply = if sent { reply_rx.await.ok() } else { None };
            match reply {
                Some(Ok(id)) => {
                    choices.insert(id, pi * n + i);
                }
                Some(Err(e)) => {
                    for &id in choices.keys() {
                        state.core.send(Command::Cancel(id));
                    }
                    return Err(request_error(e, max_tokens_param));
                }
                None => {
                    for &id in choices.keys() {
                        state.core.send(Command::Cancel(id));
                    }
                    return Err(ApiError::unavailable("the engine has stopped", 5));
                }
            }
        }
    }
    Ok(Submitted {
        rx,
        choices,
        prompt_tokens,
    })
}

#[derive(Default)]
struct ChoiceState {
    text: String,
    tokens: usize,
    cached: usize,
    logprobs: Vec<crate::engine::TokenLogprobs>,
    finish: Option<Finish>,
    role_sent: bool,
    echoed: bool,
    text_offset: usize,
}

fn finish_reason(f: &Option<Finish>) -> Value {
    match f {
        Some(f) => json!(f.reason.as_str()),
        None => Value::Null,
    }
}

/// Drain a request's events until every choice finished.
async fn collect(mut sub: Submitted, total: usize) -> Result<Vec<ChoiceState>, ApiError> {
    let mut states: Vec<ChoiceState> = (0..total).map(|_| ChoiceState::default()).collect();
    let mut done = 0;
    while done < total {
        match sub.rx.recv().await {
            Some(Event::Output(o)) => {
                let Some(&i) = sub.choices.get(&o.id) else {
                    continue;
                };
                let c = &mut states[i];
                c.text.push_str(&o.text);
                c.tokens = o.completion_tokens;
                c.cached = o.cached_tokens;
                c.logprobs.extend(o.logprobs);
                if let Some(f) = o.finish {
                    if let Some(err) = &f.error {
                        return Err(ApiError::internal(err.clone()));
                    }
                    c.finish = Some(f);
                    done += 1;
                }
            }
            Some(Event::Failed(e)) => return Err(ApiError::internal(e)),
            None => return Err(ApiError::internal("the engine stopped")),
        }
    }
    Ok(states)
}

/// Aborts every choice of a request when dropped before it finished (the
/// client went away).
struct AbortGuard {
    state: Shared,
    ids: Vec<RequestId>,
    armed: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            for &id in &self.ids {
                self.state.core.send(Command::Abort(id));
            }
        }
    }
}

fn new_id(state: &AppState, prefix: &str) -> String {
    format!(
        "{prefix}-{:x}{:08x}",
        state.started_nanos,
        state.next_id.fetch_add(1, Ordering::SeqCst)
    )
}

fn prompts_of(
    state: &AppState,
    p: Option<Prompt>,
) -> Result<(Vec<Vec<u32>>, Vec<String>), ApiError> {
    let bad = |m: String| ApiError::bad_request(m, Some("prompt"));
    let tok = &state.tokenizer;
    let from_ids = |ids: Vec<i64>| -> Result<Vec<u32>, ApiError> {
        ids.into_iter()
            .enumerate()
            .map(|(i, t)| {
                u32::try_from(t)
                    .ok()
                    .filter(|&t| (t as usize) < state.vocab)
                    .ok_or_else(|| {
                        bad(format!(
                            "token id {t} at position {i} is out of vocabulary (size {})",
                            state.vocab
                        ))
                    })
            })
            .collect()
    };
    let encode = |s: &str| {
        tok.encode(s, true)
            .map_err(|e| bad(format!("could not tokenise the prompt: {e}")))
    };
    let (ids, texts): (Vec<Vec<u32>>, Vec<String>) = match p {
        None => return Err(bad("prompt is required".into())),
        Some(Prompt::Text(s)) => (vec![encode(&s)?], vec![s]),
        Some(Prompt::Texts(v)) => {
            let mut ids = Vec::new();
            for s in &v {
                ids.push(encode(s)?);
            }
            (ids, v)
        }
        Some(Prompt::Tokens(t)) => {
            let ids = from_ids(t)?;
            let text = tok.decode(&ids, false).unwrap_or_default();
            (vec![ids], vec![text])
        }
        Some(Prompt::TokenLists(v)) => {
            let mut ids = Vec::new();
            let mut texts = Vec::new();
            for t in v {
                let i = from_ids(t)?;
                texts.push(tok.decode(&i, false).unwrap_or_default());
                ids.push(i);
            }
            (ids, texts)
        }
    };
    if ids.is_empty() {
        return Err(bad("prompt must not be an empty list".into()));
    }
    if ids.iter().any(Vec::is_empty) {
        return Err(bad("the prompt is empty".into()));
    }
    Ok((ids, texts))
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match completions_inner(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn completions_inner(
    state: Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = protocol::parse_body(&body_bytes(body)?)?;
    check_model(&state, &req.model)?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "suffix is not supported",
            Some("suffix"),
        ));
    }
    let (params, n, explicit_max) = protocol::sampling_params(
        &req.sampling,
        req.sampling.max_tokens,
        "max_tokens",
        req.logprobs,
        "logprobs",
    )?;
    if let Some(b) = req.best_of {
        if b != n as i64 {
            return Err(ApiError::bad_request(
                "best_of must equal n (it is not supported otherwise)",
                Some("best_of"),
            ));
        }
    }
    let (stream, include_usage) = protocol::stream_flags(&req.sampling)?;
    let (prompts, texts) = prompts_of(&state, req.prompt)?;
    check_accepting(&state)?;
    let echo = req.echo.unwrap_or(false);
    let id = new_id(&state, "cmpl");
    let created = unix_now();
    let t0 = Instant::now();
    // Completions default to 16 tokens (OpenAI's and vLLM's default);
    // chat defaults to the room left in the context.
    let mut params = params;
    if explicit_max.is_none() {
        params.max_tokens = 16;
    }
    let sub = submit(&state, &prompts, &params, n, true, "max_tokens").await?;
    let total = prompts.len() * n;
    tracing::info!(request_id = %id, prompts = prompts.len(), n, prompt_tokens = sub.prompt_tokens, stream, "completion request");
    let guard = AbortGuard {
        state: Arc::clone(&state),
        ids: sub.choices.keys().copied().collect(),
        armed: true,
    };
    let want_logprobs = params.logprobs.is_some();
    if stream {
        let ctx = StreamCtx {
            state: Arc::clone(&state),
            id,
            created,
            chat: false,
            echo_texts: if echo { texts } else { Vec::new() },
            n,
            want_logprobs,
            include_usage,
            total,
        };
        return Ok(sse_response(ctx, sub, guard));
    }
    let prompt_tokens = sub.prompt_tokens;
    let states = collect(sub, total).await;
    let mut guard = guard;
    guard.armed = false;
    let states = states?;
    let mut choices = Vec::with_capacity(total);
    let mut completion_tokens = 0;
    let mut cached = 0;
    for (i, mut c) in states.into_iter().enumerate() {
        completion_tokens += c.tokens;
        if i % n == 0 {
            cached += c.cached;
        }
        let mut text = String::new();
        if echo {
            text.push_str(&texts[i / n]);
            c.text_offset = text.len();
        }
        text.push_str(&c.text);
        let logprobs = if want_logprobs {
            render::completion_logprobs(&state.tokenizer, &c.logprobs, &mut c.text_offset)
        } else {
            Value::Null
        };
        choices.push(json!({
            "index": i,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(&c.finish),
            "stop_reason": stop_reason(&c.finish),
        }));
    }
    tracing::info!(request_id = %id, completion_tokens, latency_ms = t0.elapsed().as_millis() as u64, "completion done");
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": state.model_id,
        "choices": choices,
        "usage": render::usage(prompt_tokens, completion_tokens, cached),
    }))
    .into_response())
}

fn stop_reason(f: &Option<Finish>) -> Value {
    use crate::stop::StopReason;
    match f.as_ref().and_then(|f| f.stop_reason.as_ref()) {
        Some(StopReason::StopToken(t)) => json!(t),
        Some(StopReason::StopString(s)) => json!(s),
        _ => Value::Null,
    }
}

fn message_text(m: &Message, i: usize) -> Result<String, ApiError> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => {
            let mut s = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ApiError::bad_request(
                        format!("messages[{i}]: content part type {:?} is not supported (only \"text\")", p.kind),
                        Some("messages"),
                    ));
                }
                s.push_str(p.text.as_deref().unwrap_or(""));
            }
            Ok(s)
        }
    }
}

fn render_chat(
    state: &AppState,
    messages: &Option<Vec<Message>>,
    add_generation_prompt: bool,
) -> Result<String, ApiError> {
    let msgs = messages
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("messages is required", Some("messages")))?;
    if msgs.is_empty() {
        return Err(ApiError::bad_request(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let mut out = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        if !["system", "user", "assistant", "tool", "developer"].contains(&m.role.as_str()) {
            return Err(ApiError::bad_request(
                format!("messages[{i}]: unknown role {:?} (expected system, user, assistant, tool or developer)", m.role),
                Some("messages"),
            ));
        }
        let _ = &m.name;
        out.push(ChatMessage {
            role: m.role.clone(),
            content: message_text(m, i)?,
        });
    }
    let template = state.template.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "this model has no chat template; use /v1/completions",
            Some("messages"),
        )
    })?;
    template
        .render(&out, add_generation_prompt)
        .map_err(|e| ApiError::bad_request(format!("chat template: {e}"), Some("messages")))
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat_inner(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(
    state: Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = protocol::parse_body(&body_bytes(body)?)?;
    check_model(&state, &req.model)?;
    let (max, max_param) = match (req.max_completion_tokens, req.sampling.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let want_logprobs = req.logprobs.unwrap_or(false);
    if req.top_logprobs.is_some() && !want_logprobs {
        return Err(ApiError::bad_request(
            "top_logprobs requires logprobs to be true",
            Some("top_logprobs"),
        ));
    }
    let top = if want_logprobs {
        Some(req.top_logprobs.unwrap_or(0))
    } else {
        None
    };
    let (params, n, explicit_max) =
        protocol::sampling_params(&req.sampling, max, max_param, top, "top_logprobs")?;
    let (stream, include_usage) = protocol::stream_flags(&req.sampling)?;
    let text = render_chat(
        &state,
        &req.messages,
        req.add_generation_prompt.unwrap_or(true),
    )?;
    let ids = state.tokenizer.encode(&text, false).map_err(|e| {
        ApiError::bad_request(
            format!("could not tokenise the messages: {e}"),
            Some("messages"),
        )
    })?;
    check_accepting(&state)?;
    let id = new_id(&state, "chatcmpl");
    let created = unix_now();
    let t0 = Instant::now();
    let sub = submit(
        &state,
        std::slice::from_ref(&ids),
        &params,
        n,
        explicit_max.is_some(),
        max_param,
    )
    .await?;
    tracing::info!(request_id = %id, n, prompt_tokens = sub.prompt_tokens, stream, "chat request");
    let guard = AbortGuard {
        state: Arc::clone(&state),
        ids: sub.choices.keys().copied().collect(),
        armed: true,
    };
    if stream {
        let ctx = StreamCtx {
            state: Arc::clone(&state),
            id,
            created,
            chat: true,
            echo_texts: Vec::new(),
            n,
            want_logprobs,
            include_usage,
            total: n,
        };
        return Ok(sse_response(ctx, sub, guard));
    }
    let prompt_tokens = sub.prompt_tokens;
    let states = collect(sub, n).await;
    let mut guard = guard;
    guard.armed = false;
    let states = states?;
    let mut completion_tokens = 0;
    let mut cached = 0;
    let mut choices = Vec::with_capacity(n);
    for (i, c) in states.into_iter().enumerate() {
        completion_tokens += c.tokens;
        if i == 0 {
            cached = c.cached;
        }
        let logprobs = if want_logprobs {
            json!({"content": render::chat_logprobs(&state.tokenizer, &c.logprobs)})
        } else {
            Value::Null
        };
        choices.push(json!({
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": logprobs,
            "finish_reason": finish_reason(&c.finish),
            "stop_reason": stop_reason(&c.finish),
        }));
    }
    tracing::info!(request_id = %id, completion_tokens, latency_ms = t0.elapsed().as_millis() as u64, "chat done");
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": state.model_id,
        "choices": choices,
        "usage": render::usage(prompt_tokens, completion_tokens, cached),
    }))
    .into_response())
}

struct StreamCtx {
    state: Shared,
    id: String,
    created: u64,
    chat: bool,
    echo_texts: Vec<String>,
    n: usize,
    want_logprobs: bool,
    include_usage: bool,
    total: usize,
}

impl StreamCtx {
    fn chunk(&self, choice: Value) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.state.model_id,
            "choices": [choice],
        })
    }

    /// The chunks for one engine output.
    fn render(&self, index: usize, c: &mut ChoiceState, o: &RequestOutput) -> Vec<Value> {
        let mut out = Vec::new();
        let tok = &self.state.tokenizer;
        if self.chat {
            if !c.role_sent {
                c.role_sent = true;
                out.push(self.chunk(json!({
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": Value::Null,
                    "finish_reason": Value::Null,
                })));
            }
            if o.tokens.is_empty() && o.finish.is_none() {
                return out;
            }
            let logprobs = if self.want_logprobs && !o.logprobs.is_empty() {
                json!({"content": render::chat_logprobs(tok, &o.logprobs)})
            } else {
                Value::Null
            };
            let delta = if o.text.is_empty() && o.tokens.is_empty() {
                json!({})
            } else {
                json!({"content": o.text})
            };
            out.push(self.chunk(json!({
                "index": index,
                "delta": delta,
                "logprobs": logprobs,
                "finish_reason": finish_reason(&o.finish),
                "stop_reason": stop_reason(&o.finish),
            })));
        } else {
            let mut text = String::new();
            if !c.echoed {
                c.echoed = true;
                if let Some(p) = self.echo_texts.get(index / self.n.max(1)) {
                    text.push_str(p);
                    c.text_offset = p.len();
                }
            }
            text.push_str(&o.text);
            if text.is_empty() && o.tokens.is_empty() && o.finish.is_none() {
                return out;
            }
            let logprobs = if self.want_logprobs && !o.logprobs.is_empty() {
                render::completion_logprobs(tok, &o.logprobs, &mut c.text_offset)
            } else {
                Value::Null
            };
            out.push(self.chunk(json!({
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish_reason(&o.finish),
                "stop_reason": stop_reason(&o.finish),
            })));
        }
        out
    }
}

fn sse_data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn sse_response(ctx: StreamCtx, sub: Submitted, guard: AbortGuard) -> Response {
    let states: Vec<ChoiceState> = (0..ctx.total).map(|_| ChoiceState::default()).collect();
    let init = (ctx, sub, guard, states, 0usize, false);
    let events = stream::unfold(init, |(ctx, mut sub, mut guard, mut states, mut done, finished)| async move {
        if finished {
            return None;
        }
        let mut batch: Vec<SseEvent> = Vec::new();
        if done < ctx.total {
            match sub.rx.recv().await {
                Some(Event::Output(o)) => {
                    if let Some(&i) = sub.choices.get(&o.id) {
                        if let Some(err) = o.finish.as_ref().and_then(|f| f.error.clone()) {
                            batch.push(sse_data(&ApiError::internal(err).body()));
                            batch.push(SseEvent::default().data("[DONE]"));
                            guard.armed = true;
                            return Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), (ctx, sub, guard, states, done, true)));
                        }
                        let c = &mut states[i];
                        c.tokens = o.completion_tokens;
                        c.cached = o.cached_tokens;
                        for v in ctx.render(i, c, &o) {
                            batch.push(sse_data(&v));
                        }
                        if o.finish.is_some() {
                            c.finish = o.finish.clone();
                            done += 1;
                        }
                    }
                }
                Some(Event::Failed(e)) => {
                    batch.push(sse_data(&ApiError::internal(e).body()));
                    batch.push(SseEvent::default().data("[DONE]"));
                    return Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), (ctx, sub, guard, states, done, true)));
                }
                None => {
                    batch.push(sse_data(&ApiError::internal("the engine stopped").body()));
                    batch.push(SseEvent::default().data("[DONE]"));
                    return Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), (ctx, sub, guard, states, done, true)));
                }
            }
        }
        let mut end = false;
        if done >= ctx.total {
            guard.armed = false;
            if ctx.include_usage {
                let completion: usize = states.iter().map(|c| c.tokens).sum();
                let cached: usize = states.iter().step_by(ctx.n.max(1)).map(|c| c.cached).sum();
                batch.push(sse_data(&json!({
                    "id": ctx.id,
                    "object": if ctx.chat { "chat.completion.chunk" } else { "text_completion" },
                    "created": ctx.created,
                    "model": ctx.state.model_id,
                    "choices": [],
                    "usage": render::usage(sub.prompt_tokens, completion, cached),
                })));
            }
            batch.push(SseEvent::default().data("[DONE]"));
            tracing::info!(request_id = %ctx.id, completion_tokens = states.iter().map(|c| c.tokens).sum::<usize>(), "stream done");
            end = true;
        }
        Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), (ctx, sub, guard, states, done, end)))
    })
    .flatten();
    Sse::new(events).into_response()
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Shared>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": state.started_unix,
            "owned_by": "kiln",
            "root": state.model_id,
            "max_model_len": state.max_model_len,
        }],
    }))
}

/// `GET /health`: 200 while serving, 503 while shutting down or broken.
pub async fn health(State(state): State<Shared>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return ApiError::unavailable("shutting down", 5).into_response();
    }
    if state.core.state.broken.load(Ordering::SeqCst) {
        return ApiError::unavailable("the engine has failed", 30).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `POST /tokenize`.
pub async fn tokenize(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = || -> Result<Value, ApiError> {
        let req: TokenizeRequest = protocol::parse_body(&body_bytes(body)?)?;
        check_model(&state, &req.model)?;
        let tokens = match (&req.prompt, &req.messages) {
            (Some(p), None) => state
                .tokenizer
                .encode(p, req.add_special_tokens.unwrap_or(true))
                .map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?,
            (None, Some(_)) => {
                let text = render_chat(
                    &state,
                    &req.messages,
                    req.add_generation_prompt.unwrap_or(true),
                )?;
                state
                    .tokenizer
                    .encode(&text, false)
                    .map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of prompt or messages",
                    Some("prompt"),
                ))
            }
        };
        Ok(json!({"tokens": tokens, "count": tokens.len(), "max_model_len": state.max_model_len}))
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /detokenize`.
pub async fn detokenize(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = || -> Result<Value, ApiError> {
        let req: DetokenizeRequest = protocol::parse_body(&body_bytes(body)?)?;
        check_model(&state, &req.model)?;
        let mut ids = Vec::with_capacity(req.tokens.len());
        for (i, &t) in req.tokens.iter().enumerate() {
            let id = u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < state.vocab)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        format!(
                            "token id {t} at position {i} is out of vocabulary (size {})",
                            state.vocab
                        ),
                        Some("tokens"),
                    )
                })?;
            ids.push(id);
        }
        let text = state
            .tokenizer
            .decode(&ids, false)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("tokens")))?;
        Ok(json!({"prompt": text}))
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

/// Unknown routes: a JSON 404.
pub async fn not_found() -> Response {
    let mut e = ApiError::bad_request("no such endpoint", None);
    e.status = StatusCode::NOT_FOUND;
    e.kind = "not_found_error";
    e.into_response()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
