//! `kiln-bench-serve`: load-test an OpenAI-compatible server the way
//! `vllm bench serve` does, and print the result as a markdown table.
//!
//! ```text
//! kiln-bench-serve --base-url http://127.0.0.1:8000 --num-prompts 32 \
//!     --input-len 128 --output-len 64 --request-rate inf --max-concurrency 8
//! ```
//!
//! Exits with status 1 when the benchmark cannot start (bad settings,
//! server unreachable, no model) or when every request failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bench::serving::{self, Endpoint, ServeBenchConfig};
use clap::builder::PossibleValuesParser;
use clap::builder::TypedValueParser as _;
use clap::Parser;

/// Load-test an OpenAI-compatible server: streaming requests, TTFT / TPOT /
/// ITL / E2E latencies and throughput, as vLLM's `bench serve` reports them.
#[derive(Debug, Parser)]
#[command(name = "kiln-bench-serve", version)]
struct Args {
    /// Server root (plain HTTP; a trailing /v1 is accepted).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    base_url: String,

    /// Model name; default: the first model GET /v1/models lists.
    #[arg(long)]
    model: Option<String>,

    /// API to call: /v1/completions or /v1/chat/completions.
    #[arg(
        long,
        default_value = "completions",
        value_parser = PossibleValuesParser::new(["completions", "chat"])
            .try_map(|s| s.parse::<Endpoint>()),
    )]
    endpoint: Endpoint,

    /// Number of requests to send.
    #[arg(long, default_value_t = 32)]
    num_prompts: usize,

    /// Prompt length in tokens (approximate; calibrated with the server's
    /// /tokenize when it has one).
    #[arg(long, default_value_t = 128)]
    input_len: usize,

    /// Tokens generated per request (max_tokens, with ignore_eos).
    #[arg(long, default_value_t = 64)]
    output_len: usize,

    /// Poisson arrival rate in requests/s, or "inf" to send all at once.
    #[arg(long, default_value = "inf", value_parser = parse_rate)]
    request_rate: Rate,

    /// Most requests in flight at once (default: no cap).
    #[arg(long)]
    max_concurrency: Option<usize>,

    /// Seed of the prompts and arrival times (change it between runs to
    /// keep the server's prefix cache from serving repeated prompts).
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// API key, sent as "Authorization: Bearer KEY" (default: the
    /// OPENAI_API_KEY environment variable, if set).
    #[arg(long)]
    api_key: Option<String>,

    /// Limit on each request, seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// A request rate: `None` is infinite (all at once), in requests/s.
#[derive(Clone, Copy, Debug)]
struct Rate(Option<f64>);

fn parse_rate(s: &str) -> Result<Rate, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("inf") || s.eq_ignore_ascii_case("infinity") {
        return Ok(Rate(None));
    }
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate(Some(r))),
        Ok(r) if r.is_infinite() && r > 0.0 => Ok(Rate(None)),
        _ => Err(format!(
            "{s:?} is not a request rate: give a positive number of requests/s, or \"inf\""
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        eprintln!("error: --timeout must be a positive number of seconds");
        return ExitCode::FAILURE;
    }
    let config = ServeBenchConfig {
        base_url: args.base_url,
        model: args.model,
        endpoint: args.endpoint,
        num_requests: args.num_prompts,
        prompt_tokens: args.input_len,
        output_tokens: args.output_len,
        request_rate: args.request_rate.0,
        max_concurrency: args.max_concurrency,
        seed: args.seed,
        api_key: args.api_key.or_else(|| {
            std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty())
        }),
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let report = match serving::run(config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        let written = report
            .to_json()
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!(
                "error: cannot write the JSON report to {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if report.completed == 0 {
        eprintln!(
            "error: all {} requests failed (first: {})",
            report.failed,
            report
                .errors
                .first()
                .map_or("no reason recorded", String::as_str)
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("inf").unwrap().0, None);
        assert_eq!(parse_rate("INF").unwrap().0, None);
        assert_eq!(parse_rate("2.5").unwrap().0, Some(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("nan").is_err());
    }

    #[test]
    fn arguments_parse() {
        let a = Args::try_parse_from([
            "kiln-bench-serve",
            "--endpoint",
            "chat",
            "--request-rate",
            "4",
            "--max-concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(a.endpoint, Endpoint::Chat);
        assert_eq!(a.request_rate.0, Some(4.0));
        assert_eq!(a.max_concurrency, Some(2));
        assert_eq!(a.num_prompts, 32);
        assert!(Args::try_parse_from(["kiln-bench-serve", "--endpoint", "embeddings"]).is_err());
    }
}
