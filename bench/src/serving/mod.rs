//! Serving benchmark: a load generator for any OpenAI-compatible server,
//! measuring it the way vLLM's `vllm bench serve` does.
//!
//! [`run`] sends [`ServeBenchConfig::num_requests`] streaming requests to
//! `/v1/completions` or `/v1/chat/completions`, either all at once or as a
//! seeded Poisson process, optionally capped at a number in flight, and
//! returns a [`ServeBenchReport`]:
//!
//! * **TTFT** — send → first SSE chunk with generated text;
//! * **ITL** — gaps between successive content chunks;
//! * **TPOT** — `(E2E − TTFT) / (output_tokens − 1)` per request;
//! * **E2E** — send → last content chunk;
//! * completed requests/s, generated tokens/s, and prompt + generated
//!   tokens/s over the whole run.
//!
//! Every request asks for exactly `output_tokens` tokens (`max_tokens` with
//! `"ignore_eos": true`) and for a final usage chunk
//! (`"stream_options": {"include_usage": true}`), whose `completion_tokens`
//! is the request's output length when the server sends it. A request fails
//! on an HTTP status other than 200, an error event, a stream that ends
//! without `data: [DONE]` or without any text, or the timeout; failures are
//! counted and the first few kept with their reasons.
//!
//! Prompts are synthetic (see [`prompts`]): distinct, numbered, of about
//! `prompt_tokens` tokens, calibrated with the server's `POST /tokenize`
//! when it has one. Modules: [`sse`] parses the event stream, [`client`]
//! sends and times one request, [`arrivals`] draws send times, [`stats`]
//! computes numpy-style percentiles, [`report`] renders the result.

pub mod arrivals;
pub mod client;
pub mod prompts;
pub mod report;
pub mod sse;
pub mod stats;

#[cfg(test)]
mod mock_server;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use client::RequestMetrics;
pub use report::ServeBenchReport;
pub use stats::{percentile, LatencyStats};

/// Which OpenAI API the benchmark calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /v1/completions` with a `prompt`.
    #[default]
    Completions,
    /// `POST /v1/chat/completions` with one user message.
    Chat,
}

impl Endpoint {
    /// The endpoint's path, from the server root.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat",
        })
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// `completions` or `chat` (also `chat-completions`, any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "completions" => Ok(Endpoint::Completions),
            "chat" | "chat-completions" | "chat_completions" => Ok(Endpoint::Chat),
            other => Err(format!(
                "unknown endpoint {other:?}: use \"completions\" or \"chat\""
            )),
        }
    }
}

/// What to benchmark and how hard.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeBenchConfig {
    /// Server root, e.g. `http://127.0.0.1:8000` (a trailing `/` or `/v1`
    /// is accepted). Plain HTTP only.
    pub base_url: String,
    /// Model name to request; `None` takes the first id that
    /// `GET {base_url}/v1/models` lists.
    pub model: Option<String>,
    /// Which API to call.
    pub endpoint: Endpoint,
    /// Requests to send (≥ 1).
    pub num_requests: usize,
    /// Approximate prompt length, tokens (≥ 1).
    pub prompt_tokens: usize,
    /// Tokens every request generates (`max_tokens`, with `ignore_eos`; ≥ 1).
    pub output_tokens: usize,
    /// Poisson arrival rate, requests/s (finite, > 0); `None` sends every
    /// request at once.
    pub request_rate: Option<f64>,
    /// Most requests in flight at once (≥ 1); `None` for no cap. A request
    /// whose arrival time has come waits for a free slot, and its latencies
    /// count from when it is actually sent.
    pub max_concurrency: Option<usize>,
    /// Seed of the prompts' words and of the arrival times.
    pub seed: u64,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Limit on each request, from send to the end of its stream.
    pub timeout: Duration,
}

impl Default for ServeBenchConfig {
    /// `http://127.0.0.1:8000`, completions, 32 requests of 128 prompt and
    /// 64 output tokens, all at once, no cap, seed 0, 600 s timeout.
    fn default() -> Self {
        ServeBenchConfig {
            base_url: "http://127.0.0.1:8000".into(),
            model: None,
            endpoint: Endpoint::Completions,
            num_requests: 32,
            prompt_tokens: 128,
            output_tokens: 64,
            request_rate: None,
            max_concurrency: None,
            seed: 0,
            api_key: None,
            timeout: Duration::from_secs(600),
        }
    }
}

impl ServeBenchConfig {
    /// Checks the settings; the error says which one is wrong and how.
    pub fn validate(&self) -> Result<(), ServeBenchError> {
        let bad = |m: String| Err(ServeBenchError::Config(m));
        if self.num_requests == 0 {
            return bad("the number of requests must be at least 1".into());
        }
        if self.prompt_tokens == 0 {
            return bad("the prompt length must be at least 1 token".into());
        }
        if self.output_tokens == 0 {
            return bad("the output length must be at least 1 token".into());
        }
        if let Some(r) = self.request_rate {
            if !(r.is_finite() && r > 0.0) {
                return bad(format!(
                    "the request rate must be a positive number of requests/s, or \
                     unset (inf) for all at once; got {r}"
                ));
            }
        }
        if self.max_concurrency == Some(0) {
            return bad("the concurrency cap must be at least 1 (or unset)".into());
        }
        if self.timeout.is_zero() {
            return bad("the request timeout must be longer than 0 s".into());
        }
        normalize_base_url(&self.base_url).map(|_| ())
    }
}

/// Why a benchmark could not run (failed requests are not errors: they are
/// counted in the report).
#[derive(Debug, thiserror::Error)]
pub enum ServeBenchError {
    /// A setting is out of range.
    #[error("invalid benchmark setting: {0}")]
    Config(String),
    /// Nothing answers at the base URL.
    #[error(
        "cannot reach the server at {url}: {reason} (is it running, and is the base URL right?)"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// `GET /v1/models` failed while the model was to be discovered.
    #[error(
        "cannot list the server's models at {url}: {reason}; name the model explicitly (--model)"
    )]
    Models {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server lists no models.
    #[error("the server lists no models at {url}; name the model explicitly (--model)")]
    NoModels {
        /// The URL tried.
        url: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// `url` without trailing `/` or `/v1`; refuses anything but `http://`.
pub fn normalize_base_url(url: &str) -> Result<String, ServeBenchError> {
    let url = url.trim();
    if url.starts_with("https://") {
        return Err(ServeBenchError::Config(format!(
            "{url}: this benchmark speaks plain HTTP only; use an http:// URL \
             (e.g. through a local TLS-terminating proxy)"
        )));
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(ServeBenchError::Config(format!(
            "{url:?} is not a base URL; expected e.g. http://127.0.0.1:8000"
        )));
    }
    let mut base = url.trim_end_matches('/');
    if let Some(stripped) = base.strip_suffix("/v1") {
        base = stripped.trim_end_matches('/');
    }
    Ok(base.to_string())
}

/// The HTTP client: `Authorization: Bearer` from `api_key`, no proxy (the
/// benchmark times the server, not an intermediary).
fn http_client(api_key: Option<&str>) -> Result<reqwest::Client, ServeBenchError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ServeBenchError::Config(
                    "the API key contains characters not allowed in an HTTP header".into(),
                )
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ServeBenchError::Client(client::describe(&e)))
}

/// Runs the benchmark: resolves the model, builds the prompts, sends every
/// request on its schedule and under the concurrency cap, and reports.
///
/// Errors only when the run cannot start (bad settings, server unreachable,
/// no model); failed requests are counted in the report.
pub async fn run(config: ServeBenchConfig) -> Result<ServeBenchReport, ServeBenchError> {
    config.validate()?;
    let base = normalize_base_url(&config.base_url)?;
    let http = http_client(config.api_key.as_deref())?;
    let setup_timeout = config.timeout.min(Duration::from_secs(30));
    let model = client::resolve_model(&http, &base, config.model.as_deref(), setup_timeout).await?;
    let token_model = prompts::calibrate(
        &http,
        &base,
        &model,
        config.prompt_tokens,
        config.seed,
        setup_timeout,
    )
    .await;
    let prompts = prompts::build(
        config.num_requests,
        config.prompt_tokens,
        config.seed,
        &token_model,
    );
    let expected_input: Vec<u64> = prompts.iter().map(|p| p.expected_tokens).collect();
    let offsets = arrivals::arrival_offsets(config.num_requests, config.request_rate, config.seed);
    let target = Arc::new(client::Target {
        http,
        base: base.clone(),
        model: model.clone(),
        endpoint: config.endpoint,
        output_tokens: config.output_tokens,
        timeout: config.timeout,
    });
    let slots = config.max_concurrency.map(|n| Arc::new(Semaphore::new(n)));

    let start = Instant::now();
    // Dropping the run (e.g. on Ctrl-C) aborts every request still going.
    let mut tasks = JoinSet::new();
    for (prompt, offset) in prompts.into_iter().zip(offsets) {
        let target = Arc::clone(&target);
        let slots = slots.clone();
        tasks.spawn(async move {
            tokio::time::sleep_until(start + offset).await;
            let _slot = match slots {
                Some(s) => match s.acquire_owned().await {
                    Ok(permit) => Some(permit),
                    Err(_) => return (prompt.index, Err("concurrency limiter closed".into())),
                },
                None => None,
            };
            (prompt.index, target.send(&prompt.text).await)
        });
    }
    let mut outcomes: Vec<Result<RequestMetrics, String>> =
        vec![Err("request task panicked".into()); config.num_requests];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((index, outcome)) = joined {
            outcomes[index] = outcome;
        }
    }
    let duration = start.elapsed();

    Ok(ServeBenchReport::from_outcomes(
        &config,
        base,
        model,
        token_model.calibrated,
        &expected_input,
        &outcomes,
        duration,
    ))
}

#[cfg(test)]
mod tests {
    use super::mock_server::{MockOptions, MockServer};
    use super::*;

    fn config(server: &MockServer) -> ServeBenchConfig {
        ServeBenchConfig {
            base_url: server.base_url.clone(),
            num_requests: 6,
            prompt_tokens: 16,
            output_tokens: 5,
            timeout: Duration::from_secs(5),
            ..ServeBenchConfig::default()
        }
    }

    #[test]
    fn base_urls_are_normalized() {
        let n = |u| normalize_base_url(u).ok();
        assert_eq!(n("http://h:8000"), Some("http://h:8000".into()));
        assert_eq!(n("http://h:8000/"), Some("http://h:8000".into()));
        assert_eq!(n("http://h:8000/v1/"), Some("http://h:8000".into()));
        assert_eq!(n("http://h/api/v1"), Some("http://h/api".into()));
        assert_eq!(n("https://h"), None);
        assert_eq!(n("h:8000"), None);
        assert_eq!(n("http://"), None);
    }

    #[test]
    fn settings_are_validated() {
        let ok = ServeBenchConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            ServeBenchConfig {
                num_requests: 0,
                ..ok.clone()
            },
            ServeBenchConfig {
                output_tokens: 0,
                ..ok.clone()
            },
            ServeBenchConfig {
                request_rate: Some(f64::INFINITY),
                ..ok.clone()
            },
            ServeBenchConfig {
                request_rate: Some(0.0),
                ..ok.clone()
            },
            ServeBenchConfig {
                max_concurrency: Some(0),
                ..ok.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(ServeBenchError::Config(_))));
        }
    }

    #[test]
    fn endpoints_parse_and_print() {
        assert_eq!("chat".parse::<Endpoint>(), Ok(Endpoint::Chat));
        assert_eq!("Completions".parse::<Endpoint>(), Ok(Endpoint::Completions));
        assert!("embeddings".parse::<Endpoint>().is_err());
        assert_eq!(Endpoint::Chat.to_string(), "chat");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn completions_all_at_once_under_a_concurrency_cap() {
        let server = MockServer::start(MockOptions::default()).await;
        let report = run(ServeBenchConfig {
            max_concurrency: Some(2),
            api_key: Some("secret".into()),
            ..config(&server)
        })
        .await
        .unwrap();
        assert_eq!(report.completed, 6, "{:?}", report.errors);
        assert_eq!(report.failed, 0);
        assert_eq!(report.model, "mock-model");
        assert_eq!(server.max_streams(), 2);
        assert_eq!(report.total_output_tokens, 6 * 5);
        // No /tokenize: 16 tokens = number + 15 words, counted 1 per word.
        assert!(!report.input_len_calibrated);
        assert_eq!(report.total_input_tokens, 6 * 16);
        let requests = server.requests();
        assert_eq!(requests.len(), 6);
        for r in &requests {
            assert_eq!(r.path, "/v1/completions");
            assert_eq!(r.authorization.as_deref(), Some("Bearer secret"));
            assert_eq!(r.body["stream"], true);
            assert_eq!(r.body["stream_options"]["include_usage"], true);
            assert_eq!(r.body["ignore_eos"], true);
            assert_eq!(r.body["max_tokens"], 5);
            assert_eq!(r.body["model"], "mock-model");
        }
        let mut leading: Vec<u64> = requests.iter().filter_map(|r| r.leading_number()).collect();
        leading.sort_unstable();
        assert_eq!(leading, vec![0, 1, 2, 3, 4, 5]);
        // Timings: the server sleeps 2 ms before each of the 5 chunks, so
        // no chunk can arrive sooner (later is possible on a busy machine).
        assert_eq!(report.ttft.count, 6);
        assert_eq!(report.itl.count, 6 * 4);
        assert_eq!(report.tpot.count, 6);
        assert!(report.ttft.mean_ms >= 2.0, "{:?}", report.ttft);
        assert!(report.e2e.mean_ms >= 10.0, "{:?}", report.e2e);
        // Same token count per request: mean TPOT is mean ITL.
        assert!((report.tpot.mean_ms - report.itl.mean_ms).abs() < 1e-6);
        assert!(report.duration_s * 1e3 >= report.e2e.p99_ms);
        assert!(report.to_markdown().contains("| Successful requests | 6 |"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_with_poisson_arrivals_and_split_writes() {
        let server = MockServer::start(MockOptions {
            split_writes: true,
            usage: false,
            ..MockOptions::default()
        })
        .await;
        let report = run(ServeBenchConfig {
            endpoint: Endpoint::Chat,
            request_rate: Some(400.0),
            model: Some("chosen".into()),
            ..config(&server)
        })
        .await
        .unwrap();
        assert_eq!(report.completed, 6, "{:?}", report.errors);
        // No usage chunk: output tokens are the content chunks (the role
        // chunk does not count).
        assert_eq!(report.total_output_tokens, 6 * 5);
        assert_eq!(report.model, "chosen");
        for r in server.requests() {
            assert_eq!(r.path, "/v1/chat/completions");
            assert_eq!(r.body["model"], "chosen");
            assert_eq!(r.body["messages"][0]["role"], "user");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_counted_with_their_reasons() {
        let server = MockServer::start(MockOptions {
            http_error: vec![1],
            error_event: vec![2],
            truncate: vec![3],
            ..MockOptions::default()
        })
        .await;
        let report = run(config(&server)).await.unwrap();
        assert_eq!((report.completed, report.failed), (3, 3));
        assert_eq!(report.errors.len(), 3);
        assert!(
            report.errors[0].starts_with("request 1: HTTP 500")
                && report.errors[0].contains("mock overload"),
            "{:?}",
            report.errors
        );
        assert_eq!(
            report.errors[1],
            "request 2: error event: mock failure mid-stream"
        );
        assert!(report.errors[2].starts_with("request 3: stream ended without data: [DONE]"));
        assert_eq!(report.total_output_tokens, 3 * 5);
        assert!(report.to_markdown().contains("Failures (3 of 6 requests"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prompt_length_is_calibrated_with_tokenize() {
        // The mock's tokenizer: 2 tokens per word (the number included) + 1.
        let server = MockServer::start(MockOptions {
            tokenize: true,
            ..MockOptions::default()
        })
        .await;
        let report = run(ServeBenchConfig {
            prompt_tokens: 64,
            ..config(&server)
        })
        .await
        .unwrap();
        assert!(report.input_len_calibrated);
        for r in server.requests() {
            let tokens = 2 * r.prompt_words() + 1;
            assert!(tokens.abs_diff(64) <= 2, "{tokens} tokens");
        }
        assert_eq!(report.completed, 6);
        let per_request = report.total_input_tokens / 6;
        assert!(per_request.abs_diff(64) <= 2, "{per_request}");
    }

    #[tokio::test]
    async fn model_discovery_failures_are_clear() {
        let server = MockServer::start(MockOptions {
            models: vec![],
            ..MockOptions::default()
        })
        .await;
        let err = run(config(&server)).await.unwrap_err();
        assert!(matches!(err, ServeBenchError::NoModels { .. }), "{err}");
        assert!(err.to_string().contains("--model"));
        // Naming the model skips discovery.
        let report = run(ServeBenchConfig {
            model: Some("m".into()),
            num_requests: 1,
            ..config(&server)
        })
        .await
        .unwrap();
        assert_eq!(report.completed, 1);
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        for model in [None, Some("m".to_string())] {
            let err = run(ServeBenchConfig {
                base_url: format!("http://{addr}"),
                model,
                ..ServeBenchConfig::default()
            })
            .await
            .unwrap_err();
            assert!(matches!(err, ServeBenchError::Unreachable { .. }), "{err}");
        }
    }
}
