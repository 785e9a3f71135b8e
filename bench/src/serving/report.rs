//! The result of a serving benchmark: throughput and latency statistics,
//! as a markdown table (laid out like vLLM's `bench serve` printout) or
//! JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::client::RequestMetrics;
use super::stats::{tpot_ms, LatencyStats};
use super::{Endpoint, ServeBenchConfig};

/// Failed requests whose messages a report keeps.
pub const MAX_REPORTED_ERRORS: usize = 5;

/// Result of one benchmark run. Latencies are over successful requests
/// only; throughputs divide by the whole run's duration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServeBenchReport {
    /// Server base URL, as normalized (no trailing `/` or `/v1`).
    pub base_url: String,
    /// Model benchmarked.
    pub model: String,
    /// API called.
    pub endpoint: Endpoint,
    /// Requests sent.
    pub num_requests: usize,
    /// Target prompt length, tokens.
    pub input_len: usize,
    /// Requested output length (`max_tokens`), tokens.
    pub output_len: usize,
    /// Whether prompt lengths were calibrated with the server's
    /// `/tokenize` (`false`: estimated at one token per word).
    pub input_len_calibrated: bool,
    /// Poisson arrival rate, requests/s; `null` for all at once.
    pub request_rate: Option<f64>,
    /// Client-side cap on requests in flight; `null` for none.
    pub max_concurrency: Option<usize>,
    /// Seed of prompts and arrival times.
    pub seed: u64,
    /// Requests that finished with `data: [DONE]` and generated text.
    pub completed: usize,
    /// Requests that failed.
    pub failed: usize,
    /// The first [`MAX_REPORTED_ERRORS`] failures, `"request N: reason"`,
    /// in request order.
    pub errors: Vec<String>,
    /// First send → last request finished, s.
    pub duration_s: f64,
    /// Prompt tokens of completed requests (`usage.prompt_tokens`, else the
    /// expected prompt length).
    pub total_input_tokens: u64,
    /// Generated tokens of completed requests.
    pub total_output_tokens: u64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Generated tokens per second.
    pub output_throughput: f64,
    /// Prompt plus generated tokens per second.
    pub total_token_throughput: f64,
    /// Time to first token: send → first chunk with generated text, ms.
    pub ttft: LatencyStats,
    /// Time per output token after the first:
    /// `(e2e − ttft) / (output_tokens − 1)`, per request with more than one
    /// output token, ms.
    pub tpot: LatencyStats,
    /// Inter-token latency: gaps between successive content chunks, over
    /// all requests, ms.
    pub itl: LatencyStats,
    /// End-to-end latency: send → last content chunk, ms.
    pub e2e: LatencyStats,
}

/// Milliseconds in `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl ServeBenchReport {
    /// Builds the report of a run of `config` against `base_url` and
    /// `model`: `outcomes[i]` is request `i`'s result, `expected_input[i]`
    /// its expected prompt length in tokens, `duration` the whole run.
    pub(crate) fn from_outcomes(
        config: &ServeBenchConfig,
        base_url: String,
        model: String,
        input_len_calibrated: bool,
        expected_input: &[u64],
        outcomes: &[Result<RequestMetrics, String>],
        duration: Duration,
    ) -> Self {
        let mut errors = Vec::new();
        let (mut ttft, mut tpot, mut itl, mut e2e) = (vec![], vec![], vec![], vec![]);
        let (mut completed, mut input_tokens, mut output_tokens) = (0usize, 0u64, 0u64);
        for (i, outcome) in outcomes.iter().enumerate() {
            match outcome {
                Ok(m) => {
                    completed += 1;
                    let expected = expected_input.get(i).copied().unwrap_or(0);
                    input_tokens += m.prompt_tokens.unwrap_or(expected);
                    output_tokens += m.output_tokens;
                    ttft.push(ms(m.ttft));
                    e2e.push(ms(m.e2e));
                    itl.extend(m.itl.iter().copied().map(ms));
                    tpot.extend(tpot_ms(ms(m.e2e), ms(m.ttft), m.output_tokens));
                }
                Err(reason) if errors.len() < MAX_REPORTED_ERRORS => {
                    errors.push(format!("request {i}: {reason}"));
                }
                Err(_) => {}
            }
        }
        let duration_s = duration.as_secs_f64();
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        ServeBenchReport {
            base_url,
            model,
            endpoint: config.endpoint,
            num_requests: outcomes.len(),
            input_len: config.prompt_tokens,
            output_len: config.output_tokens,
            input_len_calibrated,
            request_rate: config.request_rate,
            max_concurrency: config.max_concurrency,
            seed: config.seed,
            completed,
            failed: outcomes.len() - completed,
            errors,
            duration_s,
            total_input_tokens: input_tokens,
            total_output_tokens: output_tokens,
            request_throughput: per_s(completed as f64),
            output_throughput: per_s(output_tokens as f64),
            total_token_throughput: per_s((input_tokens + output_tokens) as f64),
            ttft: LatencyStats::from_ms(&ttft),
            tpot: LatencyStats::from_ms(&tpot),
            itl: LatencyStats::from_ms(&itl),
            e2e: LatencyStats::from_ms(&e2e),
        }
    }

    /// The report as markdown: a run table, a latency table (ms) and the
    /// first failures, if any.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let rate = self
            .request_rate
            .map_or_else(|| "inf".to_string(), |r| format!("{r}"));
        let concurrency = self
            .max_concurrency
            .map_or_else(|| "none".to_string(), |c| c.to_string());
        let input = if self.input_len_calibrated {
            format!("{} (calibrated with /tokenize)", self.input_len)
        } else {
            format!("{} (estimated, 1 token/word)", self.input_len)
        };
        let rows: [(&str, String); 16] = [
            ("Model", format!("`{}`", self.model)),
            ("Endpoint", format!("`{}`", self.endpoint.path())),
            ("Request rate (req/s)", rate),
            ("Max concurrency", concurrency),
            ("Input length (tokens)", input),
            ("Output length (tokens)", self.output_len.to_string()),
            ("Successful requests", self.completed.to_string()),
            ("Failed requests", self.failed.to_string()),
            ("Benchmark duration (s)", format!("{:.2}", self.duration_s)),
            ("Total input tokens", self.total_input_tokens.to_string()),
            (
                "Total generated tokens",
                self.total_output_tokens.to_string(),
            ),
            (
                "Request throughput (req/s)",
                format!("{:.2}", self.request_throughput),
            ),
            (
                "Output token throughput (tok/s)",
                format!("{:.2}", self.output_throughput),
            ),
            (
                "Total token throughput (tok/s)",
                format!("{:.2}", self.total_token_throughput),
            ),
            ("Seed", self.seed.to_string()),
            ("Server", self.base_url.clone()),
        ];
        s.push_str("| Serving benchmark | Result |\n|---|--:|\n");
        for (name, value) in rows {
            let _ = writeln!(s, "| {name} | {value} |");
        }
        s.push_str("\n| Latency (ms) | Mean | Std | Median | P90 | P99 |\n");
        s.push_str("|---|--:|--:|--:|--:|--:|\n");
        let metrics = [
            ("TTFT (time to first token)", &self.ttft),
            ("TPOT (time per output token, excl. 1st)", &self.tpot),
            ("ITL (inter-token latency)", &self.itl),
            ("E2E (end-to-end latency)", &self.e2e),
        ];
        for (name, m) in metrics {
            if m.count == 0 {
                let _ = writeln!(s, "| {name} | – | – | – | – | – |");
            } else {
                let _ = writeln!(
                    s,
                    "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    m.mean_ms, m.std_ms, m.median_ms, m.p90_ms, m.p99_ms
                );
            }
        }
        if self.failed > 0 {
            let _ = writeln!(
                s,
                "\nFailures ({} of {} requests; first {} shown):\n",
                self.failed,
                self.num_requests,
                self.errors.len()
            );
            for e in &self.errors {
                let _ = writeln!(s, "- {e}");
            }
        }
        s
    }

    /// The report as pretty-printed JSON (latencies in ms, durations in s;
    /// `request_rate: null` means all requests at once).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(ttft: u64, gaps: &[u64], prompt_tokens: Option<u64>) -> RequestMetrics {
        let itl: Vec<Duration> = gaps.iter().map(|&g| Duration::from_millis(g)).collect();
        let ttft = Duration::from_millis(ttft);
        RequestMetrics {
            prompt_tokens,
            output_tokens: gaps.len() as u64 + 1,
            ttft,
            e2e: ttft + itl.iter().sum::<Duration>(),
            itl,
        }
    }

    fn sample() -> ServeBenchReport {
        let config = ServeBenchConfig {
            num_requests: 3,
            prompt_tokens: 10,
            output_tokens: 4,
            request_rate: Some(2.5),
            max_concurrency: Some(2),
            ..ServeBenchConfig::default()
        };
        let outcomes = vec![
            Ok(metrics(100, &[10, 20, 30], Some(12))),
            Err("HTTP 503 Service Unavailable: queue full".to_string()),
            Ok(metrics(200, &[], None)),
        ];
        ServeBenchReport::from_outcomes(
            &config,
            "http://127.0.0.1:8000".into(),
            "m".into(),
            false,
            &[10, 10, 10],
            &outcomes,
            Duration::from_secs(2),
        )
    }

    #[test]
    fn counts_throughputs_and_latencies() {
        let r = sample();
        assert_eq!((r.completed, r.failed, r.num_requests), (2, 1, 3));
        assert_eq!(
            r.errors,
            vec!["request 1: HTTP 503 Service Unavailable: queue full"]
        );
        // Usage's 12 prompt tokens for request 0, the expected 10 for 2.
        assert_eq!(r.total_input_tokens, 22);
        assert_eq!(r.total_output_tokens, 5);
        assert_eq!(r.request_throughput, 1.0);
        assert_eq!(r.output_throughput, 2.5);
        assert_eq!(r.total_token_throughput, 13.5);
        assert_eq!(r.ttft.count, 2);
        assert!((r.ttft.mean_ms - 150.0).abs() < 1e-9);
        // Only request 0 has more than one token: (160 − 100) / 3.
        assert_eq!(r.tpot.count, 1);
        assert!((r.tpot.mean_ms - 20.0).abs() < 1e-9);
        assert_eq!(r.itl.count, 3);
        assert!((r.itl.median_ms - 20.0).abs() < 1e-9);
        assert_eq!(r.e2e.count, 2);
        assert!((r.e2e.p99_ms - (160.0 + 0.99 * 40.0)).abs() < 1e-9);
    }

    #[test]
    fn markdown_has_both_tables_and_the_failures() {
        let md = sample().to_markdown();
        assert!(md.contains("| Successful requests | 2 |"), "{md}");
        assert!(md.contains("| Failed requests | 1 |"));
        assert!(md.contains("| Request rate (req/s) | 2.5 |"));
        assert!(md.contains("| Output token throughput (tok/s) | 2.50 |"));
        assert!(md.contains("| TPOT (time per output token, excl. 1st) | 20.00 | 0.00 |"));
        assert!(md.contains("- request 1: HTTP 503"));
        assert!(md.lines().filter(|l| l.starts_with('|')).count() >= 16 + 2 + 4 + 2);
    }

    #[test]
    fn json_round_trips_the_numbers() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        assert_eq!(v["endpoint"], "completions");
        assert_eq!(v["completed"], 2);
        assert_eq!(v["request_rate"], 2.5);
        assert_eq!(v["max_concurrency"], 2);
        assert_eq!(v["tpot"]["count"], 1);
        assert_eq!(v["tpot"]["mean_ms"], 20.0);
        assert_eq!(
            v["errors"][0],
            "request 1: HTTP 503 Service Unavailable: queue full"
        );
    }
}
