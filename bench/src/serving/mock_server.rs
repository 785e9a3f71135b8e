//! A minimal OpenAI-compatible server for the serving benchmark's tests:
//! raw HTTP/1.1 over tokio, one connection per request
//! (`Connection: close`), streaming one SSE chunk per token with a delay.
//!
//! It serves `GET /v1/models`, optionally `POST /tokenize` (two tokens per
//! whitespace-separated word, plus one), and `POST /v1/completions` /
//! `POST /v1/chat/completions`. It records every generation request and the
//! most streams it had open at once. Requests are told apart by their
//! prompt's leading number, which selects the failures to inject.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the mock serves and which requests fail.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Model ids listed by `/v1/models`.
    pub models: Vec<String>,
    /// Serve `POST /tokenize`.
    pub tokenize: bool,
    /// Pause before each token chunk.
    pub chunk_delay: Duration,
    /// Write every event in 5-byte pieces, flushing between them.
    pub split_writes: bool,
    /// Send the usage chunk when the request asks for it.
    pub usage: bool,
    /// Leading numbers answered with HTTP 500.
    pub http_error: Vec<u64>,
    /// Leading numbers whose stream has an error event after two tokens.
    pub error_event: Vec<u64>,
    /// Leading numbers whose stream closes after two tokens, without
    /// `[DONE]`.
    pub truncate: Vec<u64>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            models: vec!["mock-model".into(), "other-model".into()],
            tokenize: false,
            chunk_delay: Duration::from_millis(2),
            split_writes: false,
            usage: true,
            http_error: vec![],
            error_event: vec![],
            truncate: vec![],
        }
    }
}

/// A generation request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request path.
    pub path: String,
    /// `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// JSON body.
    pub body: Value,
}

impl RecordedRequest {
    /// The prompt (completions) or the first message's content (chat).
    pub fn prompt(&self) -> &str {
        self.body["prompt"]
            .as_str()
            .or_else(|| self.body["messages"][0]["content"].as_str())
            .unwrap_or("")
    }

    /// The prompt's leading number.
    pub fn leading_number(&self) -> Option<u64> {
        self.prompt().split_whitespace().next()?.parse().ok()
    }

    /// Whitespace-separated words of the prompt, the number included.
    pub fn prompt_words(&self) -> usize {
        self.prompt().split_whitespace().count()
    }
}

struct State {
    options: MockOptions,
    active: AtomicUsize,
    max_active: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running mock; stops when dropped.
pub struct MockServer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    /// Starts a mock on a free local port.
    pub async fn start(options: MockOptions) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            options,
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let _ = handle(stream, &state).await;
                });
            }
        });
        MockServer {
            base_url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Most token streams open at once so far.
    pub fn max_streams(&self) -> usize {
        self.state.max_active.load(Ordering::SeqCst)
    }

    /// Generation requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("lock").clone()
    }
}

/// Reads one request: (method, path, headers, body).
async fn read_request(
    stream: &mut TcpStream,
) -> std::io::Result<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let path = request_line.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((method, path, headers, body))
}

async fn respond_json(stream: &mut TcpStream, status: &str, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The mock tokenizer: 2 tokens per word plus 1 with `/tokenize`, else 1
/// per word.
fn mock_tokens(options: &MockOptions, text: &str) -> u64 {
    let words = text.split_whitespace().count() as u64;
    if options.tokenize {
        2 * words + 1
    } else {
        words
    }
}

async fn handle(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (method, path, headers, body) = read_request(&mut stream).await?;
    let options = &state.options;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/models") => {
            let data: Vec<Value> = options
                .models
                .iter()
                .map(|id| json!({ "id": id, "object": "model", "owned_by": "mock" }))
                .collect();
            respond_json(
                &mut stream,
                "200 OK",
                &json!({ "object": "list", "data": data }),
            )
            .await
        }
        ("POST", "/tokenize") if options.tokenize => {
            let n = mock_tokens(options, body["prompt"].as_str().unwrap_or(""));
            let tokens: Vec<u64> = (0..n).collect();
            let answer = json!({ "count": n, "tokens": tokens, "max_model_len": 4096 });
            respond_json(&mut stream, "200 OK", &answer).await
        }
        ("POST", "/v1/completions" | "/v1/chat/completions") => {
            let request = RecordedRequest {
                path: path.clone(),
                authorization: headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v.clone()),
                body,
            };
            state.requests.lock().expect("lock").push(request.clone());
            generate(&mut stream, state, &request).await
        }
        _ => {
            let error =
                json!({ "error": { "message": "not found", "type": "not_found", "code": 404 } });
            respond_json(&mut stream, "404 Not Found", &error).await
        }
    }
}

async fn write_event(stream: &mut TcpStream, split: bool, data: &str) -> std::io::Result<()> {
    let bytes = format!("data: {data}\n\n").into_bytes();
    if split {
        for piece in bytes.chunks(5) {
            stream.write_all(piece).await?;
            stream.flush().await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    } else {
        stream.write_all(&bytes).await
    }
}

async fn generate(
    stream: &mut TcpStream,
    state: &State,
    request: &RecordedRequest,
) -> std::io::Result<()> {
    let options = &state.options;
    let n = request.leading_number().unwrap_or(u64::MAX);
    if options.http_error.contains(&n) {
        let error =
            json!({ "error": { "message": "mock overload", "type": "server_error", "code": 500 } });
        return respond_json(stream, "500 Internal Server Error", &error).await;
    }
    let chat = request.path.ends_with("/chat/completions");
    let max_tokens = request.body["max_tokens"].as_u64().unwrap_or(16);
    let split = options.split_writes;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    let active = state.active.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_active.fetch_max(active, Ordering::SeqCst);
    let end_stream = || state.active.fetch_sub(1, Ordering::SeqCst);

    if chat {
        let role = json!({ "id": "c", "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" } }] });
        write_event(stream, split, &role.to_string()).await?;
    }
    stream.write_all(b": keep-alive\n\n").await?;
    for k in 0..max_tokens {
        tokio::time::sleep(options.chunk_delay).await;
        if k == 2 && options.error_event.contains(&n) {
            end_stream();
            let error = json!({ "error": { "message": "mock failure mid-stream", "type": "server_error" } });
            write_event(stream, split, &error.to_string()).await?;
            write_event(stream, split, "[DONE]").await?;
            return stream.shutdown().await;
        }
        if k == 2 && options.truncate.contains(&n) {
            end_stream();
            return stream.shutdown().await;
        }
        let text = format!(" w\u{f6}rd{k}");
        let finish = if k + 1 == max_tokens {
            json!("length")
        } else {
            Value::Null
        };
        let chunk = if chat {
            json!({ "id": "c", "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": finish }] })
        } else {
            json!({ "id": "c", "choices": [{ "index": 0, "text": text, "finish_reason": finish }] })
        };
        write_event(stream, split, &chunk.to_string()).await?;
    }
    let wants_usage = request.body["stream_options"]["include_usage"] == true;
    if options.usage && wants_usage {
        let prompt_tokens = mock_tokens(options, request.prompt());
        let usage = json!({ "id": "c", "choices": [], "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max_tokens,
            "total_tokens": prompt_tokens + max_tokens,
        }});
        write_event(stream, split, &usage.to_string()).await?;
    }
    // The stream counts as closed before [DONE] reaches the client, which
    // may then start its next request at once.
    end_stream();
    write_event(stream, split, "[DONE]").await?;
    stream.shutdown().await
}
