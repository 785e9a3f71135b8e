//! `kiln serve`: the OpenAI-compatible server on one model and device.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::anyhow;
use hal::Registry;

use super::engine_args::EngineArgs;
use super::{CmdResult, Failure};
use crate::kv::sizing::parse_size;
use crate::server::{self, ServeConfig};

/// Arguments of `kiln serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// Port (0 picks a free one).
    #[arg(long, short = 'p', default_value_t = 8000)]
    port: u16,

    /// The model id clients send (default: the model's file or directory name).
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,

    /// Requests that may wait for a place in the batch; more get 503 with
    /// Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_waiting: usize,

    /// Seconds SIGTERM waits for in-flight requests before aborting them.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    shutdown_timeout: f64,

    /// Require `Authorization: Bearer KEY` on the API (also read from
    /// KILN_API_KEY).
    #[arg(long, env = "KILN_API_KEY", value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Largest request body (413 beyond).
    #[arg(long, default_value = "4MiB", value_name = "SIZE")]
    max_body_bytes: String,

    #[command(flatten)]
    engine: EngineArgs,
}

/// Run `kiln serve`.
pub(crate) fn run(registry: &Registry, args: &ServeArgs) -> CmdResult {
    let bad = |m: String| Failure::cannot_run(anyhow!(m));
    if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
        return Err(bad(format!(
            "--shutdown-timeout {} must be ≥ 0",
            args.shutdown_timeout
        )));
    }
    let max_body =
        parse_size(&args.max_body_bytes).map_err(|m| bad(format!("--max-body-bytes: {m}")))?;
    if args.api_key.as_deref() == Some("") {
        return Err(bad("--api-key must not be empty".into()));
    }
    init_logging();
    let engine = args.engine.build(registry)?;
    let config = ServeConfig {
        addr: SocketAddr::new(args.host, args.port),
        model_id: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| engine.model_name().to_string()),
        max_waiting: args.max_waiting,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        api_key: args.api_key.clone(),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("kiln-http")
        .build()
        .map_err(|e| Failure::error(anyhow!("could not start the async runtime: {e}")))?;
    runtime
        .block_on(server::serve(engine, config))
        .map_err(|e| Failure::cannot_run(anyhow!(e)))
}

/// Structured logs on stderr; `KILN_LOG` (or `RUST_LOG`) sets the filter,
/// default `info`.
fn init_logging() {
    let filter = std::env::var("KILN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
