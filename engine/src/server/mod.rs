//! `kiln serve`: an OpenAI-compatible HTTP server (axum + tokio).
//!
//! The engine core loop runs on its own thread ([`core`]); handlers
//! ([`handlers`]) validate requests, hand them to the core through a
//! channel and stream the outputs back as they come. Overload gets a 503
//! with `Retry-After`, a client that disconnects has its request aborted and
//! its KV blocks freed, and SIGTERM / Ctrl-C drains in-flight requests
//! before the process exits.

pub mod core;
pub mod error;
pub mod handlers;
pub mod metrics;
pub mod protocol;
pub mod render;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::chat::ChatTemplate;
use crate::engine::Engine;
use crate::tokenizer::Tokenizer;
use error::ApiError;

/// The OpenAPI document of the API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to bind.
    pub addr: SocketAddr,
    /// The model id clients name (`model` field).
    pub model_id: String,
    /// Requests allowed to wait for a place in the batch before new ones
    /// get 503.
    pub max_waiting: usize,
    /// How long SIGTERM waits for in-flight requests before aborting them.
    pub shutdown_timeout: Duration,
    /// Bearer token required on `/v1/*`, `/tokenize` and `/detokenize`.
    pub api_key: Option<String>,
    /// Largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
}

/// State shared by the handlers.
pub struct AppState {
    /// The engine thread.
    pub core: core::CoreHandle,
    /// The tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The chat template, when the model has one.
    pub template: Option<ChatTemplate>,
    /// Served model id.
    pub model_id: String,
    /// Longest sequence.
    pub max_model_len: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Waiting-queue bound.
    pub max_waiting: usize,
    /// Set on SIGTERM: new requests get 503.
    pub draining: AtomicBool,
    /// SHA-256 of the API key.
    api_key_hash: Option<[u8; 32]>,
    /// Unix time at start (for `created` of models).
    pub started_unix: u64,
    /// Nanosecond clock at start, to make response ids unique across restarts.
    pub started_nanos: u64,
    /// Counter for response ids.
    pub next_id: AtomicU64,
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the address failed.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The chat template does not compile.
    #[error("the model's chat template is invalid: {0}")]
    Template(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(want) = &state.api_key_hash {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let got: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if !bool::from(got.ct_eq(want)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// The router over `state`.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let protected = Router::new()
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/models", get(handlers::models))
        .route("/tokenize", post(handlers::tokenize))
        .route("/detokenize", post(handlers::detokenize))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_key,
        ));
    Router::new()
        .merge(protected)
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Build the shared state and start the engine thread.
pub fn start(
    engine: Engine,
    config: &ServeConfig,
) -> Result<(Arc<AppState>, std::thread::JoinHandle<()>), ServeError> {
    let tokenizer = Arc::clone(engine.tokenizer());
    let template = match tokenizer.chat_template() {
        Some(src) => Some(
            ChatTemplate::new(src, tokenizer.bos_token(), tokenizer.eos_token())
                .map_err(|e| ServeError::Template(e.to_string()))?,
        ),
        None => None,
    };
    let max_model_len = engine.max_model_len();
    let vocab = engine.model_config().vocab_size;
    let metrics = Arc::new(metrics::Metrics::new().map_err(|e| ServeError::Other(e.to_string()))?);
    let (core, join) = core::spawn(engine, Arc::clone(&metrics));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let state = Arc::new(AppState {
        core,
        tokenizer,
        template,
        model_id: config.model_id.clone(),
        max_model_len,
        vocab,
        metrics,
        max_waiting: config.max_waiting,
        draining: AtomicBool::new(false),
        api_key_hash: config
            .api_key
            .as_ref()
            .map(|k| Sha256::digest(k.as_bytes()).into()),
        started_unix: now.as_secs(),
        started_nanos: u64::from(now.subsec_nanos()),
        next_id: AtomicU64::new(0),
    });
    Ok((state, join))
}

/// Wait for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serve until SIGTERM / Ctrl-C, then drain: new requests get 503,
/// in-flight ones may finish within `shutdown_timeout`, the rest are
/// aborted (`finish_reason: "abort"`). Returns once every connection closed.
pub async fn serve(engine: Engine, config: ServeConfig) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(config.addr);
    let (state, join) = start(engine, &config)?;
    let app = router(Arc::clone(&state), config.max_body_bytes);
    tracing::info!(address = %local, model = %config.model_id, "kiln serve ready");
    eprintln!(
        "kiln: serving {} on http://{local} (OpenAI API at /v1)",
        config.model_id
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = Arc::clone(&state);
    let timeout = config.shutdown_timeout;
    tokio::spawn(async move {
        shutdown_signal().await;
        drain(&drain_state, timeout).await;
        let _ = stop_tx.send(());
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let result = server.await.map_err(|e| ServeError::Other(e.to_string()));
    state.core.send(core::Command::Stop);
    let _ = tokio::task::spawn_blocking(move || join.join()).await;
    eprintln!("kiln: stopped");
    result
}

/// Stop accepting, wait for in-flight requests up to `timeout`, abort the
/// rest and give their streams a moment to deliver the abort.
pub async fn drain(state: &AppState, timeout: Duration) {
    state.draining.store(true, Ordering::SeqCst);
    let in_flight = state.core.state.in_flight.load(Ordering::SeqCst);
    eprintln!("kiln: shutting down; {in_flight} request(s) in flight, waiting up to {timeout:?}");
    let t0 = Instant::now();
    while state.core.state.in_flight.load(Ordering::SeqCst) > 0 && t0.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.core.state.in_flight.load(Ordering::SeqCst);
    if left > 0 {
        eprintln!("kiln: aborting {left} request(s) still running after {timeout:?}");
        state.core.send(core::Command::AbortAll);
        let t1 = Instant::now();
        while state.core.state.in_flight.load(Ordering::SeqCst) > 0
            && t1.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the streams write their final chunk.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
