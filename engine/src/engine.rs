//! The engine core: requests in, tokens and text out, one step at a time.
//!
//! [`Engine::step`] asks the [`Scheduler`] for a batch, runs it through the
//! [`ModelRunner`], samples the sequences that reached their last known
//! token, detokenises incrementally and checks stop conditions. It is
//! synchronous; the server drives it from its own thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hal::Device;

use crate::detok::{Decode, IncrementalDetokenizer};
use crate::kv::{CacheConfig, KvCacheManager, RequestId};
use crate::model::{Checkpoint, LlamaModel, LoadError, LoadOptions, ModelConfig};
use crate::runner::ModelRunner;
use crate::sampler::{ParamError, SamplingParams, SequenceSampler};
use crate::scheduler::{RejectReason, Scheduler, SchedulerConfig};
use crate::stop::{self, FinishReason, StopReason, StopStringMatcher};
use crate::tokenizer::Tokenizer;

/// Engine settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineConfig {
    /// KV cache budget, block size, dtype, prefix caching.
    pub cache: CacheConfig,
    /// Batching limits; `max_model_len == 0` means the model's own context.
    pub scheduler: SchedulerConfig,
    /// Activation dtype and precision.
    pub load: LoadOptions,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A sampling parameter is out of range.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The request can never run.
    #[error(transparent)]
    Rejected(#[from] RejectReason),
    /// A prompt token id is not in the vocabulary.
    #[error("token id {id} at position {position} is out of vocabulary (size {vocab})")]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// Its index in the prompt.
        position: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// A step failed on the device; every running request is lost.
#[derive(Debug, thiserror::Error)]
#[error("engine step failed: {0}")]
pub struct EngineError(#[from] pub hal::HalError);

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finish {
    /// OpenAI's `finish_reason`.
    pub reason: FinishReason,
    /// What stopped it, for `Stop`.
    pub stop_reason: Option<StopReason>,
    /// Set when the request failed (e.g. NaN logits) rather than ended.
    pub error: Option<String>,
}

/// A generated token and its log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// The token.
    pub token: u32,
    /// Its log-probability under the model (raw logits, before sampling
    /// transforms).
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// What one step produced for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestOutput {
    /// The request.
    pub id: RequestId,
    /// Tokens generated this step (zero or one).
    pub tokens: Vec<u32>,
    /// Their log-probabilities, when the request asked for them.
    pub logprobs: Vec<TokenLogprobs>,
    /// New text, complete UTF-8, with stop strings removed.
    pub text: String,
    /// Set on the request's last output.
    pub finish: Option<Finish>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// Tokens generated so far.
    pub completion_tokens: usize,
    /// Time from arrival to the first token.
    pub ttft: Option<Duration>,
}

/// Engine counters and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences in the running batch.
    pub running: usize,
    /// Sequences waiting.
    pub waiting: usize,
    /// Fraction of KV blocks in use.
    pub kv_usage: f64,
    /// Prefix-cache block queries and hits.
    pub prefix_queries: u64,
    /// Hits.
    pub prefix_hits: u64,
    /// Preemptions since start.
    pub preemptions: u64,
    /// Prompt tokens computed (not served from the cache) since start.
    pub prompt_tokens: u64,
    /// Tokens generated since start.
    pub generation_tokens: u64,
    /// Steps run.
    pub steps: u64,
}

struct RequestState {
    params: SamplingParams,
    sampler: SequenceSampler,
    detok: IncrementalDetokenizer,
    matcher: StopStringMatcher,
    prompt_tokens: usize,
    arrival: Instant,
    first_token: Option<Instant>,
}

impl Decode for Tokenizer {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        Tokenizer::decode(self, ids, skip_special_tokens).map_err(|e| e.to_string())
    }
}

/// The engine.
pub struct Engine {
    runner: ModelRunner,
    tokenizer: Arc<Tokenizer>,
    scheduler: Scheduler,
    requests: HashMap<RequestId, RequestState>,
    next_id: RequestId,
    model_name: String,
    stats: EngineStats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model_name)
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load `checkpoint` onto `device` and size the KV cache.
    pub fn new(
        checkpoint: Checkpoint,
        device: Arc<dyn Device>,
        config: EngineConfig,
    ) -> Result<Engine, LoadError> {
        let model_name = checkpoint.name();
        let model = LlamaModel::load(&checkpoint, device, config.load)?;
        let Checkpoint { tokenizer, .. } = checkpoint;
        Self::from_parts(model, tokenizer, model_name, config)
    }

    /// Build an engine from a loaded model and its tokenizer.
    pub fn from_parts(
        model: LlamaModel,
        tokenizer: Tokenizer,
        model_name: String,
        config: EngineConfig,
    ) -> Result<Engine, LoadError> {
        let c: ModelConfig = model.config().clone();
        let num_blocks = config
            .cache
            .num_blocks(c.num_layers, c.num_kv_heads, c.head_dim);
        if num_blocks == 0 {
            return Err(LoadError::Unsupported {
                file: model_name,
                what: format!(
                    "KV-cache budget of {} bytes: it holds no block of {} tokens",
                    config.cache.memory_bytes, config.cache.block_size
                ),
            });
        }
        let runner = ModelRunner::new(model, &config.cache, num_blocks)?;
        let mut sched = config.scheduler;
        if sched.max_model_len == 0 || sched.max_model_len > c.max_position {
            sched.max_model_len = c.max_position;
        }
        sched.max_num_batched_tokens = sched.max_num_batched_tokens.max(1);
        sched.max_num_seqs = sched.max_num_seqs.max(1);
        let kv = KvCacheManager::new(
            num_blocks,
            config.cache.block_size,
            config.cache.prefix_caching,
        );
        Ok(Engine {
            runner,
            tokenizer: Arc::new(tokenizer),
            scheduler: Scheduler::new(sched, kv),
            requests: HashMap::new(),
            next_id: 0,
            model_name,
            stats: EngineStats::default(),
        })
    }

    /// The model's name (file stem or directory name).
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// The model's hyper-parameters.
    pub fn model_config(&self) -> &ModelConfig {
        self.runner.model().config()
    }

    /// The model runner, mutable (e.g. to set an activation tap).
    pub fn runner_mut(&mut self) -> &mut ModelRunner {
        &mut self.runner
    }

    /// The model runner.
    pub fn runner(&self) -> &ModelRunner {
        &self.runner
    }

    /// The scheduler (limits, KV bookkeeping).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Longest sequence a request may reach.
    pub fn max_model_len(&self) -> usize {
        self.scheduler.config().max_model_len
    }

    /// Check a request without adding it.
    pub fn validate_request(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
    ) -> Result<(), RequestError> {
        let vocab = self.model_config().vocab_size;
        params.validate(vocab)?;
        if let Some((position, &id)) = prompt
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(RequestError::TokenOutOfVocab {
                id,
                position,
                vocab,
            });
        }
        self.scheduler.check(prompt.len(), params.max_tokens)?;
        Ok(())
    }

    /// Queue a request; returns its id.
    pub fn add_request(
        &mut self,
        prompt: Vec<u32>,
        params: SamplingParams,
    ) -> Result<RequestId, RequestError> {
        self.validate_request(&prompt, &params)?;
        let id = self.next_id;
        self.next_id += 1;
        let sampler = SequenceSampler::new(&params, &prompt)
            .with_eos_token_ids(self.tokenizer.eos_token_ids());
        let detok = IncrementalDetokenizer::new(&prompt, params.skip_special_tokens);
        let matcher = StopStringMatcher::from_params(&params);
        let prompt_tokens = prompt.len();
        self.scheduler.add(id, prompt, params.max_tokens)?;
        self.requests.insert(
            id,
            RequestState {
                params,
                sampler,
                detok,
                matcher,
                prompt_tokens,
                arrival: Instant::now(),
                first_token: None,
            },
        );
        Ok(id)
    }

    /// Abort a request, freeing its blocks at once; returns its final output.
    pub fn abort(&mut self, id: RequestId) -> Option<RequestOutput> {
        let st = self.requests.remove(&id)?;
        let seq = self.scheduler.finish(id);
        let completion_tokens = seq.as_ref().map_or(0, |s| s.output().len());
        let cached_tokens = seq.as_ref().and_then(|s| s.num_cached_tokens).unwrap_or(0);
        Some(RequestOutput {
            id,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            finish: Some(Finish {
                reason: FinishReason::Abort,
                stop_reason: None,
                error: None,
            }),
            prompt_tokens: st.prompt_tokens,
            cached_tokens,
            completion_tokens,
            ttft: st.first_token.map(|t| t - st.arrival),
        })
    }

    /// Requests not yet finished.
    pub fn num_unfinished(&self) -> usize {
        self.requests.len()
    }

    /// Whether any request is unfinished.
    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> EngineStats {
        let kv = self.scheduler.kv();
        let p = kv.prefix_stats();
        EngineStats {
            running: self.scheduler.num_running(),
            waiting: self.scheduler.num_waiting(),
            kv_usage: kv.usage(),
            prefix_queries: p.queried_blocks,
            prefix_hits: p.hit_blocks,
            preemptions: self.scheduler.stats().preemptions,
            ..self.stats
        }
    }

    /// Run one step. Returns one output per request that produced a token
    /// or finished.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>, EngineError> {
        let out = self.scheduler.schedule();
        if out.seqs.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.runner.execute(&self.scheduler, &out)?;
        self.scheduler.step_done(&out);
        self.stats.steps += 1;
        for s in &out.seqs {
            if let Some(seq) = self.scheduler.seq(s.id) {
                let prompt_part = seq.prompt_len.saturating_sub(s.start).min(s.num_new);
                self.stats.prompt_tokens += prompt_part as u64;
            }
        }
        let now = Instant::now();
        let mut outputs = Vec::with_capacity(logits.ids.len());
        for (row, &id) in logits.ids.iter().enumerate() {
            let Some(st) = self.requests.get_mut(&id) else {
                continue;
            };
            let sampled = match st.sampler.sample(logits.row(row), &st.params) {
                Ok(s) => s,
                Err(e) => {
                    let mut o = self.finish_output(id, Vec::new(), Vec::new(), String::new());
                    o.finish = Some(Finish {
                        reason: FinishReason::Abort,
                        stop_reason: None,
                        error: Some(format!("sampling failed: {e}")),
                    });
                    outputs.push(o);
                    continue;
                }
            };
            let token = sampled.token;
            st.sampler.record(token);
            self.scheduler.append_token(id, token);
            self.stats.generation_tokens += 1;
            if st.first_token.is_none() {
                st.first_token = Some(now);
            }
            let num_generated = self.scheduler.seq(id).map_or(0, |s| s.output().len());
            let eos = self.tokenizer.eos_token_ids();
            let mut finish = stop::check_token(&st.params, eos, token, num_generated).map(
                |(reason, stop_reason)| Finish {
                    reason,
                    stop_reason,
                    error: None,
                },
            );
            let stopped_by_token = matches!(
                finish.as_ref().and_then(|f| f.stop_reason.as_ref()),
                Some(StopReason::Eos) | Some(StopReason::StopToken(_))
            );
            let mut text = String::new();
            if !stopped_by_token {
                let delta = st
                    .detok
                    .push(self.tokenizer.as_ref(), token)
                    .unwrap_or_default();
                // As vLLM: stop strings count only once more than
                // `min_tokens` tokens were generated; earlier text passes.
                let m = if num_generated > st.params.min_tokens {
                    st.matcher.push(&delta)
                } else {
                    crate::stop::StopMatch {
                        text: delta,
                        stop: None,
                    }
                };
                text.push_str(&m.text);
                if let Some(stop_string) = m.stop {
                    finish = Some(Finish {
                        reason: FinishReason::Stop,
                        stop_reason: Some(StopReason::StopString(stop_string)),
                        error: None,
                    });
                }
            }
            if let Some(f) = &finish {
                if !matches!(f.stop_reason, Some(StopReason::StopString(_))) {
                    if !stopped_by_token {
                        let rest = st.detok.finish(self.tokenizer.as_ref()).unwrap_or_default();
                        let m = st.matcher.push(&rest);
                        text.push_str(&m.text);
                    }
                    text.push_str(&st.matcher.flush());
                }
            }
            let logprobs = if st.params.logprobs.is_some() {
                vec![TokenLogprobs {
                    token,
                    logprob: sampled.logprob,
                    top: sampled.top_logprobs,
                }]
            } else {
                Vec::new()
            };
            match finish {
                Some(f) => {
                    let mut o = self.finish_output(id, vec![token], logprobs, text);
                    o.finish = Some(f);
                    outputs.push(o);
                }
                None => {
                    let seq = self.scheduler.seq(id);
                    outputs.push(RequestOutput {
                        id,
                        tokens: vec![token],
                        logprobs,
                        text,
                        finish: None,
                        prompt_tokens: st.prompt_tokens,
                        cached_tokens: seq.and_then(|s| s.num_cached_tokens).unwrap_or(0),
                        completion_tokens: num_generated,
                        ttft: st.first_token.map(|t| t - st.arrival),
                    });
                }
            }
        }
        Ok(outputs)
    }

    /// Remove a finished request and build its last output (finish set by
    /// the caller).
    fn finish_output(
        &mut self,
        id: RequestId,
        tokens: Vec<u32>,
        logprobs: Vec<TokenLogprobs>,
        text: String,
    ) -> RequestOutput {
        let st = self.requests.remove(&id);
        let seq = self.scheduler.finish(id);
        RequestOutput {
            id,
            tokens,
            logprobs,
            text,
            finish: None,
            prompt_tokens: st.as_ref().map_or(0, |s| s.prompt_tokens),
            cached_tokens: seq.as_ref().and_then(|s| s.num_cached_tokens).unwrap_or(0),
            completion_tokens: seq.as_ref().map_or(0, |s| s.output().len()),
            ttft: st.and_then(|s| s.first_token.map(|t| t - s.arrival)),
        }
    }

    /// Logits of `tokens` at every position in `rows` (the distribution of
    /// the token after each), computed `chunk` tokens per step (1 = token by
    /// token, as decoding does). Used for scoring and perplexity. Runs only
    /// when no request is in flight; the KV blocks are returned afterwards.
    pub fn score(
        &mut self,
        tokens: &[u32],
        rows: &[usize],
        chunk: usize,
    ) -> Result<Vec<Vec<f32>>, ScoreError> {
        if self.has_unfinished() {
            return Err(ScoreError::Busy);
        }
        let vocab = self.model_config().vocab_size;
        if let Some((position, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(RequestError::TokenOutOfVocab {
                id,
                position,
                vocab,
            }
            .into());
        }
        if let Some(&r) = rows.iter().find(|&&r| r >= tokens.len()) {
            return Err(ScoreError::Row(r, tokens.len()));
        }
        self.scheduler
            .check(tokens.len(), 0)
            .map_err(RequestError::from)?;
        let id = RequestId::MAX;
        self.scheduler
            .add(id, tokens.to_vec(), 0)
            .map_err(RequestError::from)?;
        let result = self.score_inner(id, tokens, rows, chunk.max(1));
        self.scheduler.finish(id);
        result
    }

    fn score_inner(
        &mut self,
        id: RequestId,
        tokens: &[u32],
        rows: &[usize],
        chunk: usize,
    ) -> Result<Vec<Vec<f32>>, ScoreError> {
        let vocab = self.model_config().vocab_size;
        if !self.scheduler.reserve(id, tokens.len()) {
            return Err(ScoreError::NoBlocks);
        }
        let blocks = self.scheduler.block_table(id).to_vec();
        let mut out = vec![Vec::new(); rows.len()];
        let mut start = 0;
        while start < tokens.len() {
            let end = (start + chunk).min(tokens.len());
            let (want, local): (Vec<usize>, Vec<u32>) = rows
                .iter()
                .enumerate()
                .filter(|(_, &r)| (start..end).contains(&r))
                .map(|(i, &r)| (i, (r - start) as u32))
                .unzip();
            let logits = self
                .runner
                .forward_sequence(&tokens[start..end], start, &blocks, &local)
                .map_err(EngineError::from)?;
            for (j, &i) in want.iter().enumerate() {
                out[i] = logits[j * vocab..(j + 1) * vocab].to_vec();
            }
            start = end;
        }
        Ok(out)
    }

    /// Run every queued request to completion (offline use).
    pub fn run_to_completion(&mut self) -> Result<Vec<Completion>, EngineError> {
        let mut done: HashMap<RequestId, Completion> = HashMap::new();
        while self.has_unfinished() {
            for o in self.step()? {
                let c = done.entry(o.id).or_insert_with(|| Completion {
                    id: o.id,
                    ..Default::default()
                });
                c.tokens.extend_from_slice(&o.tokens);
                c.logprobs.extend(o.logprobs);
                c.text.push_str(&o.text);
                c.prompt_tokens = o.prompt_tokens;
                c.cached_tokens = o.cached_tokens;
                if c.ttft.is_none() {
                    c.ttft = o.ttft;
                }
                if o.finish.is_some() {
                    c.finish = o.finish;
                }
            }
        }
        let mut v: Vec<Completion> = done.into_values().collect();
        v.sort_by_key(|c| c.id);
        Ok(v)
    }

    /// Tokenise `prompts`, run them all at once through continuous batching
    /// and return their completions in order.
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
    ) -> Result<Vec<Completion>, GenerateError> {
        let mut ids = Vec::with_capacity(prompts.len());
        for p in prompts {
            ids.push(self.add_request(p.clone(), params.clone())?);
        }
        let all = self.run_to_completion()?;
        let mut by_id: HashMap<RequestId, Completion> =
            all.into_iter().map(|c| (c.id, c)).collect();
        Ok(ids
            .into_iter()
            .map(|id| by_id.remove(&id).unwrap_or_default())
            .collect())
    }
}

/// A finished request, assembled from its outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// The request.
    pub id: RequestId,
    /// Generated tokens.
    pub tokens: Vec<u32>,
    /// Per-token log-probabilities, when asked.
    pub logprobs: Vec<TokenLogprobs>,
    /// Generated text.
    pub text: String,
    /// How it ended.
    pub finish: Option<Finish>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// Time to first token.
    pub ttft: Option<Duration>,
}

/// Errors of [`Engine::score`].
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Requests are in flight.
    #[error("scoring needs an idle engine")]
    Busy,
    /// A row index is past the end.
    #[error("row {0} is past the end of the {1} tokens")]
    Row(usize, usize),
    /// The KV cache cannot hold the sequence.
    #[error("the KV cache cannot hold the sequence")]
    NoBlocks,
    /// The tokens were refused.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The device failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Errors of [`Engine::generate`].
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A request was refused.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The device failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::CacheDtype;

    fn tiny(memory_bytes: u64) -> Engine {
        let c = Checkpoint::synthetic("tiny").unwrap();
        let dev: Arc<dyn Device> = Arc::new(kernels_cpu::CpuBackend::open_default().unwrap());
        Engine::new(
            c,
            dev,
            EngineConfig {
                cache: CacheConfig {
                    memory_bytes,
                    dtype: CacheDtype::F32,
                    ..CacheConfig::default()
                },
                load: LoadOptions {
                    progress: false,
                    ..LoadOptions::default()
                },
                ..EngineConfig::default()
            },
        )
        .unwrap()
    }

    fn sampled(seed: u64) -> SamplingParams {
        // The tiny random model is sharply peaked: sample hot.
        SamplingParams {
            temperature: 20.0,
            seed: Some(seed),
            max_tokens: 10,
            ignore_eos: true,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn a_seeded_request_gives_the_same_tokens_alone_or_in_a_batch() {
        let mut e = tiny(8 << 20);
        let p: Vec<u32> = (10..30).collect();
        let alone = e.generate(std::slice::from_ref(&p), &sampled(5)).unwrap();
        let others: Vec<Vec<u32>> = (0..5).map(|i| (40 + i..60 + 3 * i).collect()).collect();
        let mut batch = others.clone();
        batch.insert(2, p.clone());
        let together = e.generate(&batch, &sampled(5)).unwrap();
        assert_eq!(together[2].tokens, alone[0].tokens);
        assert_eq!(alone[0].tokens.len(), 10);
        let other_seed = e.generate(&[p], &sampled(6)).unwrap();
        assert_ne!(other_seed[0].tokens, alone[0].tokens);
    }

    #[test]
    fn abort_frees_every_block_and_reports_abort() {
        let mut e = tiny(8 << 20);
        let total = e.scheduler().kv().num_free_blocks();
        let id = e.add_request((1..40).collect(), sampled(1)).unwrap();
        e.step().unwrap();
        assert!(e.scheduler().kv().num_free_blocks() < total);
        let out = e.abort(id).unwrap();
        assert_eq!(out.finish.unwrap().reason, FinishReason::Abort);
        assert_eq!(e.scheduler().kv().num_free_blocks(), total);
        assert!(!e.has_unfinished());
        assert!(e.abort(id).is_none());
    }

    #[test]
    fn bad_requests_are_refused_before_they_run() {
        let e = tiny(1 << 20);
        let vocab = e.model_config().vocab_size as u32;
        let p = SamplingParams::default();
        assert!(matches!(
            e.validate_request(&[1, vocab], &p),
            Err(RequestError::TokenOutOfVocab { position: 1, .. })
        ));
        assert!(matches!(
            e.validate_request(&[], &p),
            Err(RequestError::Rejected(RejectReason::EmptyPrompt))
        ));
        let long = SamplingParams {
            max_tokens: 100_000,
            ..SamplingParams::default()
        };
        assert!(matches!(
            e.validate_request(&[1], &long),
            Err(RequestError::Rejected(RejectReason::TooLong { .. }))
        ));
        let bad = SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        };
        assert!(matches!(
            e.validate_request(&[1], &bad),
            Err(RequestError::Param(_))
        ));
    }

    #[test]
    fn stop_strings_end_generation_and_are_not_emitted() {
        let mut e = tiny(8 << 20);
        let p: Vec<u32> = (10..30).collect();
        let free = e
            .generate(std::slice::from_ref(&p), &sampled(3))
            .unwrap()
            .remove(0);
        // Stop at the third character of the free-running text.
        let chars: Vec<char> = free.text.chars().collect();
        assert!(chars.len() >= 4, "{:?}", free.text);
        let stop: String = chars[2..4].iter().collect();
        let params = SamplingParams {
            stop: vec![stop.clone()],
            ..sampled(3)
        };
        let out = e.generate(&[p], &params).unwrap().remove(0);
        let f = out.finish.unwrap();
        assert_eq!(f.reason, FinishReason::Stop);
        assert_eq!(f.stop_reason, Some(StopReason::StopString(stop.clone())));
        assert!(free.text.starts_with(&out.text));
        assert!(!out.text.contains(&stop));
    }
}
