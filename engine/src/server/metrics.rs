//! Prometheus metrics served at `GET /metrics` (text format), named after
//! vLLM's where there is one.

use std::sync::Mutex;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::engine::EngineStats;

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    running: IntGauge,
    waiting: IntGauge,
    kv_usage: Gauge,
    prefix_hit_rate: Gauge,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    prompt_tokens: IntCounter,
    generation_tokens: IntCounter,
    preemptions: IntCounter,
    success: IntCounterVec,
    /// Requests aborted because their client disconnected.
    pub aborted_disconnect: IntCounter,
    /// Requests refused with 503 (queue full or shutting down).
    pub rejected_overload: IntCounter,
    /// Time to first token, seconds.
    pub ttft: Histogram,
    /// Time between tokens, seconds.
    pub itl: Histogram,
    /// Arrival to last token, seconds.
    pub e2e: Histogram,
    last: Mutex<EngineStats>,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        20.0, 40.0, 80.0,
    ]
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let ig = |name: &str, help: &str| IntGauge::new(name, help);
        let ic = |name: &str, help: &str| IntCounter::new(name, help);
        let hist = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
        };
        let m = Metrics {
            running: ig(
                "kiln_num_requests_running",
                "Sequences in the running batch.",
            )?,
            waiting: ig(
                "kiln_num_requests_waiting",
                "Sequences waiting to be scheduled.",
            )?,
            kv_usage: Gauge::new(
                "kiln_kv_cache_usage_perc",
                "Fraction of KV-cache blocks in use (0 to 1).",
            )?,
            prefix_hit_rate: Gauge::new(
                "kiln_prefix_cache_hit_rate",
                "Prefix-cache hits over queried full prompt blocks since start (0 to 1).",
            )?,
            prefix_queries: ic(
                "kiln_prefix_cache_queries_total",
                "Full prompt blocks looked up in the prefix cache.",
            )?,
            prefix_hits: ic(
                "kiln_prefix_cache_hits_total",
                "Full prompt blocks found in the prefix cache.",
            )?,
            prompt_tokens: ic("kiln_prompt_tokens_total", "Prompt tokens computed.")?,
            generation_tokens: ic("kiln_generation_tokens_total", "Tokens generated.")?,
            preemptions: ic(
                "kiln_num_preemptions_total",
                "Sequences preempted (recomputed later) for lack of KV blocks.",
            )?,
            success: IntCounterVec::new(
                Opts::new(
                    "kiln_request_success_total",
                    "Finished requests by finish reason.",
                ),
                &["finished_reason"],
            )?,
            aborted_disconnect: ic(
                "kiln_requests_aborted_disconnect_total",
                "Requests aborted because the client disconnected.",
            )?,
            rejected_overload: ic(
                "kiln_requests_rejected_overload_total",
                "Requests refused with 503 (waiting queue full or shutting down).",
            )?,
            ttft: hist(
                "kiln_time_to_first_token_seconds",
                "Time from arrival to the first generated token.",
            )?,
            itl: hist(
                "kiln_inter_token_latency_seconds",
                "Time between consecutive generated tokens of a request.",
            )?,
            e2e: hist(
                "kiln_e2e_request_latency_seconds",
                "Time from arrival to the last token.",
            )?,
            last: Mutex::new(EngineStats::default()),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.running.clone()))?;
        r.register(Box::new(m.waiting.clone()))?;
        r.register(Box::new(m.kv_usage.clone()))?;
        r.register(Box::new(m.prefix_hit_rate.clone()))?;
        r.register(Box::new(m.prefix_queries.clone()))?;
        r.register(Box::new(m.prefix_hits.clone()))?;
        r.register(Box::new(m.prompt_tokens.clone()))?;
        r.register(Box::new(m.generation_tokens.clone()))?;
        r.register(Box::new(m.preemptions.clone()))?;
        r.register(Box::new(m.success.clone()))?;
        r.register(Box::new(m.aborted_disconnect.clone()))?;
        r.register(Box::new(m.rejected_overload.clone()))?;
        r.register(Box::new(m.ttft.clone()))?;
        r.register(Box::new(m.itl.clone()))?;
        r.register(Box::new(m.e2e.clone()))?;
        Ok(m)
    }

    /// Update gauges and counters from an engine snapshot.
    pub fn observe_engine(&self, s: &EngineStats) {
        self.running.set(s.running as i64);
        self.waiting.set(s.waiting as i64);
        self.kv_usage.set(s.kv_usage);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        self.prefix_queries
            .inc_by(delta(s.prefix_queries, last.prefix_queries));
        self.prefix_hits
            .inc_by(delta(s.prefix_hits, last.prefix_hits));
        self.prompt_tokens
            .inc_by(delta(s.prompt_tokens, last.prompt_tokens));
        self.generation_tokens
            .inc_by(delta(s.generation_tokens, last.generation_tokens));
        self.preemptions
            .inc_by(delta(s.preemptions, last.preemptions));
        if s.prefix_queries > 0 {
            self.prefix_hit_rate
                .set(s.prefix_hits as f64 / s.prefix_queries as f64);
        }
        *last = *s;
    }

    /// Count a finished request.
    pub fn finished(&self, reason: &str) {
        self.success.with_label_values(&[reason]).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_engine_totals() {
        let m = Metrics::new().unwrap();
        let mut s = EngineStats {
            running: 2,
            prompt_tokens: 10,
            generation_tokens: 3,
            prefix_queries: 4,
            prefix_hits: 1,
            ..EngineStats::default()
        };
        m.observe_engine(&s);
        s.generation_tokens = 5;
        m.observe_engine(&s);
        m.finished("stop");
        let text = m.render();
        assert!(text.contains("kiln_generation_tokens_total 5"), "{text}");
        assert!(text.contains("kiln_prompt_tokens_total 10"));
        assert!(text.contains("kiln_num_requests_running 2"));
        assert!(text.contains("kiln_prefix_cache_hit_rate 0.25"));
        assert!(text.contains("kiln_request_success_total{finished_reason=\"stop\"} 1"));
        assert!(text.contains("kiln_time_to_first_token_seconds_bucket"));
    }
}
