//! Per-request sampling parameters and the per-sequence token sampler.
//!
//! [`SamplingParams`] mirrors vLLM's request parameters (same names, same
//! defaults, same validation rules). A [`SequenceSampler`] holds what one
//! sequence needs between steps: its random generator, the counts of the
//! tokens it generated (frequency and presence penalties) and the set of
//! prompt and generated tokens (repetition penalty).
//!
//! Each step turns one row of logits `[vocab_size]` (f32) into a
//! [`SampledToken`], in vLLM v1's order:
//!
//! 1. log-probabilities: log-softmax of the raw logits, before anything
//!    below touches them (only when `logprobs` is requested);
//! 2. while fewer than `min_tokens` tokens were generated, EOS and the
//!    stop token ids are masked to -inf;
//! 3. penalties: repetition (prompt and generated tokens), then frequency
//!    and presence (generated tokens only);
//! 4. greedy (`temperature` below 1e-5, or `top_k == 1`): the argmax, ties
//!    to the lowest token id;
//! 5. otherwise temperature scaling, min-p, top-k, top-p, and a
//!    categorical draw from the sequence's own generator.
//!
//! A seeded sequence draws only from its own ChaCha8 stream, so the same
//! seed gives the same tokens whatever else shares the batch.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The most top log-probabilities a request may ask for per token.
pub const MAX_LOGPROBS: usize = 20;

/// Temperatures below this are greedy decoding (vLLM's epsilon).
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Sampling parameters of one request, with vLLM's names and defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Number of independent completions to generate for the prompt.
    pub n: usize,
    /// Softmax temperature; 0 (anything below 1e-5) means greedy decoding.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose
    /// probability mass reaches `top_p`; 1 disables it.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 or -1 disables it.
    pub top_k: i32,
    /// Drop tokens whose probability is below `min_p` times the probability
    /// of the most likely token; 0 disables it.
    pub min_p: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// Divides positive (multiplies non-positive) logits of tokens seen in
    /// the prompt or the output; 1 disables it.
    pub repetition_penalty: f32,
    /// Seed of the sequence's random generator; `None` draws a fresh one.
    pub seed: Option<u64>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Fewest tokens to generate before EOS, stop tokens or stop strings
    /// may end the sequence.
    pub min_tokens: usize,
    /// Strings that end generation when they appear in the output text.
    pub stop: Vec<String>,
    /// Token ids that end generation when sampled.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating after the end-of-sequence token.
    pub ignore_eos: bool,
    /// Number of top log-probabilities to return per generated token
    /// (0: only the chosen token's); `None` returns none.
    pub logprobs: Option<usize>,
    /// Leave special tokens out of the output text.
    pub skip_special_tokens: bool,
    /// Keep the matched stop string at the end of the output text.
    pub include_stop_str_in_output: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            max_tokens: 16,
            min_tokens: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            skip_special_tokens: true,
            include_stop_str_in_output: false,
        }
    }
}

/// A sampling parameter outside its allowed range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// Name of the offending field, as the request spells it.
    pub param: &'static str,
    /// What is wrong and what is allowed, naming the field.
    pub message: String,
}

impl ParamError {
    fn new(param: &'static str, message: String) -> Self {
        Self { param, message }
    }
}

impl SamplingParams {
    /// Checks every field against vLLM's rules for a model with
    /// `vocab_size` tokens; the error names the first offending field.
    pub fn validate(&self, vocab_size: usize) -> Result<(), ParamError> {
        if self.n < 1 {
            return Err(ParamError::new(
                "n",
                format!("n must be at least 1, got {}.", self.n),
            ));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(ParamError::new(
                "presence_penalty",
                format!(
                    "presence_penalty must be in [-2, 2], got {}.",
                    self.presence_penalty
                ),
            ));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(ParamError::new(
                "frequency_penalty",
                format!(
                    "frequency_penalty must be in [-2, 2], got {}.",
                    self.frequency_penalty
                ),
            ));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(ParamError::new(
                "repetition_penalty",
                format!(
                    "repetition_penalty must be a finite number greater than zero, got {}.",
                    self.repetition_penalty
                ),
            ));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ParamError::new(
                "temperature",
                format!(
                    "temperature must be a finite non-negative number, got {}.",
                    self.temperature
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ParamError::new(
                "top_p",
                format!("top_p must be in (0, 1], got {}.", self.top_p),
            ));
        }
        if self.top_k < -1 {
            return Err(ParamError::new(
                "top_k",
                format!(
                    "top_k must be 0 or -1 (disable), or at least 1, got {}.",
                    self.top_k
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(ParamError::new(
                "min_p",
                format!("min_p must be in [0, 1], got {}.", self.min_p),
            ));
        }
        if self.max_tokens < 1 {
            return Err(ParamError::new(
                "max_tokens",
                format!("max_tokens must be at least 1, got {}.", self.max_tokens),
            ));
        }
        if self.min_tokens > self.max_tokens {
            return Err(ParamError::new(
                "min_tokens",
                format!(
                    "min_tokens must be less than or equal to max_tokens={}, got {}.",
                    self.max_tokens, self.min_tokens
                ),
            ));
        }
        if let Some(n) = self.logprobs {
            if n > MAX_LOGPROBS {
                return Err(ParamError::new(
                    "logprobs",
                    format!("logprobs must be at most {MAX_LOGPROBS}, got {n}."),
                ));
            }
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(ParamError::new(
                "stop",
                "stop cannot contain an empty string.".to_string(),
            ));
        }
        if let Some(&id) = self
            .stop_token_ids
            .iter()
            .find(|&&id| id as usize >= vocab_size)
        {
            return Err(ParamError::new(
                "stop_token_ids",
                format!("stop_token_ids must be below the vocabulary size {vocab_size}, got {id}."),
            ));
        }
        Ok(())
    }

    /// Whether these parameters decode greedily (temperature below 1e-5 or
    /// `top_k == 1`); greedy sequences draw no random numbers.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE || self.top_k == 1
    }

    /// The parameters of the `index`-th of the `n` completions of a
    /// request, as vLLM builds them: `n` becomes 1 and a seed becomes
    /// `seed + index` (wrapping), so seeded completions differ from each
    /// other yet are reproducible.
    pub fn for_choice(&self, index: usize) -> SamplingParams {
        let mut params = self.clone();
        params.n = 1;
        params.seed = self.seed.map(|s| s.wrapping_add(index as u64));
        params
    }
}

/// One sampled token with its log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    /// The chosen token id.
    pub token: u32,
    /// Natural-log probability of `token` under the raw logits (before
    /// penalties and temperature) when `logprobs` was requested; NaN when
    /// it was not (nothing is computed then).
    pub logprob: f32,
    /// The `logprobs` most likely tokens under the raw logits as
    /// `(token, logprob)`, most likely first, ties to the lower id; empty
    /// when `logprobs` is `None` or 0.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Why a row of logits could not be sampled.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SampleError {
    /// The logits row has no entries.
    #[error("the logits row is empty; the model returned no vocabulary")]
    EmptyLogits,
    /// The model produced NaN or +inf.
    #[error("logit of token {token} is {value}; the model output is not finite")]
    NonFiniteLogit {
        /// Token whose logit is not finite.
        token: u32,
        /// The offending value.
        value: f32,
    },
    /// A penalty pushed a logit to NaN or +inf (an extreme
    /// `repetition_penalty` on a large logit).
    #[error("logit of token {token} became {value} after penalties; lower repetition_penalty")]
    PenaltyOverflow {
        /// Token whose penalised logit is not finite.
        token: u32,
        /// The penalised value.
        value: f32,
    },
    /// Every token has a logit of -inf (after the min-tokens mask).
    #[error("every token has probability zero; nothing can be sampled")]
    NoCandidates,
}

/// Sampling state of one sequence, kept across its decoding steps.
///
/// The engine calls [`sample`](Self::sample) on the sequence's logits row,
/// then [`record`](Self::record) with the token it accepts.
#[derive(Clone, Debug)]
pub struct SequenceSampler {
    rng: ChaCha8Rng,
    /// How often each token was generated.
    output_counts: HashMap<u32, u32>,
    /// Every token of the prompt and of the output.
    seen: HashSet<u32>,
    num_generated: usize,
    /// Tokens masked while fewer than `min_tokens` were generated, on top
    /// of `stop_token_ids`.
    eos_token_ids: Vec<u32>,
    /// Scratch: the penalised logits `[vocab_size]`.
    work: Vec<f32>,
    /// Scratch: candidates as (unnormalised probability, token id).
    cand: Vec<(f32, u32)>,
}

impl SequenceSampler {
    /// A sampler for a sequence whose prompt is `prompt_tokens`, seeded from
    /// `params.seed` when given, else from a fresh process-wide source.
    pub fn new(params: &SamplingParams, prompt_tokens: &[u32]) -> Self {
        let seed = params.seed.unwrap_or_else(fresh_seed);
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            output_counts: HashMap::new(),
            seen: prompt_tokens.iter().copied().collect(),
            num_generated: 0,
            eos_token_ids: Vec::new(),
            work: Vec::new(),
            cand: Vec::new(),
        }
    }

    /// Sets the end-of-sequence tokens that, like `stop_token_ids`, cannot
    /// be sampled while fewer than `min_tokens` tokens were generated
    /// (masked even with `ignore_eos`, as vLLM does).
    pub fn with_eos_token_ids(mut self, eos_token_ids: &[u32]) -> Self {
        self.eos_token_ids = eos_token_ids.to_vec();
        self
    }

    /// Records `token` as the sequence's next generated token.
    pub fn record(&mut self, token: u32) {
        *self.output_counts.entry(token).or_insert(0) += 1;
        self.seen.insert(token);
        self.num_generated += 1;
    }

    /// Number of tokens recorded so far.
    pub fn num_generated(&self) -> usize {
        self.num_generated
    }

    /// Samples the next token from one row of logits `[vocab_size]`.
    ///
    /// `params` should have passed [`SamplingParams::validate`]; values
    /// outside the ranges never panic but are clamped to the nearest
    /// meaningful behaviour. NaN or +inf logits are an error; -inf logits
    /// are tokens that cannot be drawn.
    pub fn sample(
        &mut self,
        logits: &[f32],
        params: &SamplingParams,
    ) -> Result<SampledToken, SampleError> {
        let raw_max = checked_max(logits)?;

        let mut lse = f64::NAN;
        let mut top_logprobs = Vec::new();
        if let Some(n) = params.logprobs {
            lse = log_sum_exp(logits, raw_max);
            top_logprobs = top_n(logits, n);
            for entry in &mut top_logprobs {
                entry.1 = (f64::from(entry.1) - lse) as f32;
            }
        }

        let token = if params.is_greedy() && !self.changes_logits(params) {
            argmax(logits)?
        } else {
            let mut work = std::mem::take(&mut self.work);
            work.clear();
            work.extend_from_slice(logits);
            let result = self
                .apply_masks_and_penalties(&mut work, params)
                .and_then(|()| {
                    if params.is_greedy() {
                        argmax(&work)
                    } else {
                        self.draw(&mut work, params)
                    }
                });
            self.work = work;
            result?
        };

        let logprob = if params.logprobs.is_some() {
            (f64::from(logits[token as usize]) - lse) as f32
        } else {
            f32::NAN
        };
        Ok(SampledToken {
            token,
            logprob,
            top_logprobs,
        })
    }

    /// Whether the min-tokens mask or a penalty changes any logit.
    fn changes_logits(&self, params: &SamplingParams) -> bool {
        let masking = self.num_generated < params.min_tokens
            && !(self.eos_token_ids.is_empty() && params.stop_token_ids.is_empty());
        let repetition = params.repetition_penalty != 1.0 && !self.seen.is_empty();
        let counts = (params.frequency_penalty != 0.0 || params.presence_penalty != 0.0)
            && !self.output_counts.is_empty();
        masking || repetition || counts
    }

    /// Masks stop tokens while `min_tokens` is not reached, then applies the
    /// repetition, frequency and presence penalties, in place.
    fn apply_masks_and_penalties(
        &self,
        work: &mut [f32],
        params: &SamplingParams,
    ) -> Result<(), SampleError> {
        if self.num_generated < params.min_tokens {
            for &id in self.eos_token_ids.iter().chain(&params.stop_token_ids) {
                if let Some(v) = work.get_mut(id as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        let rep = params.repetition_penalty;
        if rep != 1.0 && rep > 0.0 {
            for &id in &self.seen {
                if let Some(v) = work.get_mut(id as usize) {
                    if *v > 0.0 {
                        *v /= rep;
                    } else {
                        *v *= rep;
                    }
                    if v.is_nan() || *v == f32::INFINITY {
                        return Err(SampleError::PenaltyOverflow {
                            token: id,
                            value: *v,
                        });
                    }
                }
            }
        }
        let freq = params.frequency_penalty;
        let pres = params.presence_penalty;
        if freq != 0.0 || pres != 0.0 {
            for (&id, &count) in &self.output_counts {
                if let Some(v) = work.get_mut(id as usize) {
                    *v -= freq * count as f32;
                    *v -= pres;
                    if v.is_nan() || *v == f32::INFINITY {
                        return Err(SampleError::PenaltyOverflow {
                            token: id,
                            value: *v,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Temperature, min-p, top-k, top-p and the categorical draw over the
    /// penalised logits (overwritten with unnormalised probabilities).
    fn draw(&mut self, work: &mut [f32], params: &SamplingParams) -> Result<u32, SampleError> {
        to_weights(work, params)?;
        let u = unit_f64(self.rng.next_u64());
        let top_k_off = params.top_k <= 0 || params.top_k as usize >= work.len();
        if top_k_off && (params.top_p >= 1.0 || params.top_p.is_nan()) {
            return pick_dense(work, u);
        }
        let mut cand = std::mem::take(&mut self.cand);
        let kept = restrict(work, params, &mut cand);
        let picked = pick(&cand[..kept], u);
        self.cand = cand;
        picked
    }
}

/// Turns penalised logits into unnormalised probabilities
/// `exp((x - x_max) / T)` (1 for the most likely token) and zeroes those
/// below `min_p` (vLLM applies min-p right after temperature, before top-k
/// and top-p).
fn to_weights(work: &mut [f32], params: &SamplingParams) -> Result<(), SampleError> {
    let max = max_f32(work);
    if max == f32::NEG_INFINITY {
        return Err(SampleError::NoCandidates);
    }
    let temperature = params.temperature.max(GREEDY_TEMPERATURE);
    let min_weight = if params.min_p > 0.0 {
        params.min_p.min(1.0)
    } else {
        0.0
    };
    for x in work.iter_mut() {
        let w = exp_nonpositive((*x - max) / temperature);
        *x = if w >= min_weight { w } else { 0.0 };
    }
    Ok(())
}

/// Fills `cand` with the tokens that can survive top-k and top-p, then
/// keeps exactly the top-k and the top-p nucleus of those at its front;
/// returns how many are kept.
///
/// A histogram of the weights by binary exponent first bounds the k-th
/// largest weight (or the weight where the nucleus ends) from below, so
/// that `cand` only holds the few tokens above that bound instead of the
/// whole vocabulary.
fn restrict(weights: &[f32], params: &SamplingParams, cand: &mut Vec<(f32, u32)>) -> usize {
    // Weights are in [0, 1]: bucket e > 0 holds [2^(e-127), 2^(e-126))
    // (bucket 127 holds just 1), bucket 0 holds the zeros.
    let bucket = |w: f32| ((w.to_bits() >> 23) & 127) as usize;
    let top_k = usize::try_from(params.top_k).unwrap_or(0);
    let top_p = params.top_p < 1.0;
    let mut floor = 0;
    let mut total = 0.0f64;
    if top_k > 0 {
        let mut counts = [0usize; 128];
        for &w in weights {
            counts[bucket(w)] += 1;
        }
        let mut above = 0;
        for e in (1..128).rev() {
            above += counts[e];
            if above >= top_k {
                floor = e;
                break;
            }
        }
    } else if top_p {
        let mut mass = [0.0f64; 128];
        for &w in weights {
            mass[bucket(w)] += f64::from(w);
        }
        total = mass.iter().sum();
        let target = f64::from(params.top_p.max(0.0)) * total;
        let mut above = 0.0;
        for e in (1..128).rev() {
            above += mass[e];
            if above >= target {
                // One bucket lower: a margin for rounding in the sums.
                floor = e - 1;
                break;
            }
        }
    }
    let bound = f32::from_bits((floor as u32) << 23);

    cand.clear();
    for (i, &w) in weights.iter().enumerate() {
        if w >= bound && w > 0.0 {
            cand.push((w, i as u32));
        }
    }
    let mut len = cand.len();
    if top_k > 0 && top_k < len {
        cand.select_nth_unstable_by(top_k - 1, by_weight_desc);
        len = top_k;
    }
    if top_p {
        if top_k > 0 {
            total = cand[..len].iter().map(|&(w, _)| f64::from(w)).sum();
        }
        let target = f64::from(params.top_p.max(0.0)) * total;
        len = nucleus_len(&mut cand[..len], target);
    }
    len
}

/// Moves the top-p nucleus of `cand` to its front and returns its length:
/// the shortest run of most likely entries (ties to the lower id) whose
/// weight reaches `target`, at least one entry. A weighted quickselect, so
/// the nucleus is found in linear expected time without sorting it.
fn nucleus_len(cand: &mut [(f32, u32)], target: f64) -> usize {
    if cand.is_empty() {
        return 0;
    }
    // Entries before `lo` are in the nucleus and `need` is the weight still
    // missing; the nucleus ends inside `lo..hi`.
    let (mut lo, mut hi) = (0, cand.len());
    let mut need = target;
    // Rounds of partitioning before falling back to a sort (bad pivots).
    let mut rounds = 2 * (usize::BITS - cand.len().leading_zeros()) + 8;
    while hi - lo > 32 && rounds > 0 {
        rounds -= 1;
        let mid = lo + (hi - lo) / 2;
        let pivot_at = median_of_three(cand, lo, mid, hi - 1);
        cand.swap(pivot_at, hi - 1);
        let pivot = cand[hi - 1];
        let mut store = lo;
        let mut mass = 0.0f64;
        for i in lo..hi - 1 {
            if by_weight_desc(&cand[i], &pivot) == Ordering::Less {
                mass += f64::from(cand[i].0);
                cand.swap(i, store);
                store += 1;
            }
        }
        cand.swap(store, hi - 1);
        if mass >= need {
            hi = store;
        } else {
            need -= mass + f64::from(pivot.0);
            if need <= 0.0 {
                return store + 1;
            }
            lo = store + 1;
        }
    }
    let rest = &mut cand[lo..hi];
    rest.sort_unstable_by(by_weight_desc);
    let mut cum = 0.0f64;
    for (i, &(w, _)) in rest.iter().enumerate() {
        cum += f64::from(w);
        if cum >= need {
            return lo + i + 1;
        }
    }
    hi.max(1)
}

/// Index of the median of three entries under [`by_weight_desc`].
fn median_of_three(cand: &[(f32, u32)], a: usize, b: usize, c: usize) -> usize {
    let before = |x: usize, y: usize| by_weight_desc(&cand[x], &cand[y]) == Ordering::Less;
    if before(a, b) {
        if before(b, c) {
            b
        } else if before(a, c) {
            c
        } else {
            a
        }
    } else if before(a, c) {
        a
    } else if before(b, c) {
        c
    } else {
        b
    }
}

/// Draws from `cand` (weight, token) with `u` uniform in [0, 1).
fn pick(cand: &[(f32, u32)], u: f64) -> Result<u32, SampleError> {
    let total: f64 = cand.iter().map(|&(w, _)| f64::from(w)).sum();
    let threshold = u * total;
    let mut cum = 0.0f64;
    let mut last = None;
    for &(w, token) in cand {
        if w > 0.0 {
            cum += f64::from(w);
            last = Some(token);
            if threshold < cum {
                return Ok(token);
            }
        }
    }
    last.ok_or(SampleError::NoCandidates)
}

/// Entries summed at once when drawing from a whole row.
const DRAW_BLOCK: usize = 1024;

/// Draws a token from a whole row of weights with `u` uniform in [0, 1):
/// block sums find the block, a scan finds the token in it.
fn pick_dense(weights: &[f32], u: f64) -> Result<u32, SampleError> {
    let total: f64 = weights.chunks(DRAW_BLOCK).map(sum_f64).sum();
    let threshold = u * total;
    let mut cum = 0.0f64;
    let mut last = None;
    for (b, block) in weights.chunks(DRAW_BLOCK).enumerate() {
        let block_sum = sum_f64(block);
        if threshold < cum + block_sum {
            for (i, &w) in block.iter().enumerate() {
                if w > 0.0 {
                    cum += f64::from(w);
                    last = Some(b * DRAW_BLOCK + i);
                    if threshold < cum {
                        break;
                    }
                }
            }
            break;
        }
        cum += block_sum;
        if block_sum > 0.0 {
            last = block
                .iter()
                .rposition(|&w| w > 0.0)
                .map(|i| b * DRAW_BLOCK + i);
        }
    }
    last.map(|i| i as u32).ok_or(SampleError::NoCandidates)
}

/// Sum of `values` in f64, in eight interleaved lanes so that it vectorises.
fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `e^x` for `x <= 0` (-inf included; 0 below -87) within about two ulps,
/// without branches or library calls so that loops over a row vectorise.
/// Cephes' `expf`: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6
/// polynomial for `e^r`, and `2^n` built from its exponent bits.
#[inline]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to an integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 0.0);
    // The low mantissa bits of `shifted` hold n = round(x log2 e) + ROUND.
    let shifted = xc * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_66)
        * r
        + 0.5;
    let e = p * (r * r) + r + 1.0;
    // n is in [-126, 0]: 2^n is a normal number with biased exponent
    // n + 127, read from the bits without a float-to-int conversion.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    let scale = f32::from_bits(biased << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

/// Descending by weight, ties to the lower token id; weights are never NaN.
fn by_weight_desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// The maximum of a row of logits, which must not be empty nor hold NaN or
/// +inf, and must have a finite entry.
fn checked_max(logits: &[f32]) -> Result<f32, SampleError> {
    if logits.is_empty() {
        return Err(SampleError::EmptyLogits);
    }
    let max = max_f32(logits);
    let mut nan_lanes = [0u32; 8];
    let chunks = logits.chunks_exact(8);
    let nan_tail = chunks.remainder().iter().any(|x| x.is_nan());
    for chunk in chunks {
        for (lane, &x) in nan_lanes.iter_mut().zip(chunk) {
            *lane |= u32::from(x.is_nan());
        }
    }
    if nan_tail || max == f32::INFINITY || nan_lanes.iter().any(|&l| l != 0) {
        if let Some(i) = logits
            .iter()
            .position(|x| x.is_nan() || *x == f32::INFINITY)
        {
            return Err(SampleError::NonFiniteLogit {
                token: i as u32,
                value: logits[i],
            });
        }
    }
    if max == f32::NEG_INFINITY {
        return Err(SampleError::NoCandidates);
    }
    Ok(max)
}

/// The largest of `values` ignoring NaN (-inf when there is none), in
/// eight interleaved lanes so that it vectorises.
fn max_f32(values: &[f32]) -> f32 {
    let larger = |m: f32, x: f32| if x > m { x } else { m };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| larger(m, x));
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, x);
        }
    }
    lanes.iter().fold(tail, |m, &x| larger(m, x))
}

/// Index of the largest entry, ties to the lowest index.
fn argmax(values: &[f32]) -> Result<u32, SampleError> {
    let max = max_f32(values);
    if max == f32::NEG_INFINITY {
        return Err(SampleError::NoCandidates);
    }
    // Find the block first with a branch-free test, then the entry.
    const BLOCK: usize = 64;
    let block = values
        .chunks(BLOCK)
        .position(|c| c.iter().fold(false, |found, &v| found | (v == max)))
        .ok_or(SampleError::NoCandidates)?;
    let start = block * BLOCK;
    values[start..]
        .iter()
        .position(|&v| v == max)
        .map(|i| (start + i) as u32)
        .ok_or(SampleError::NoCandidates)
}

/// `ln(sum(exp(x)))` over `logits`, accumulated in f64, given their finite
/// maximum.
fn log_sum_exp(logits: &[f32], max: f32) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = logits.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| f64::from(exp_nonpositive(x - max)))
        .sum();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(exp_nonpositive(x - max));
        }
    }
    f64::from(max) + (lanes.iter().sum::<f64>() + tail).ln()
}

/// The `n` largest logits as `(token, logit)`, largest first, ties to the
/// lower token id.
fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let n = n.min(logits.len());
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    for (i, &x) in logits.iter().enumerate() {
        if best.len() == n && best.last().is_some_and(|&(_, worst)| x <= worst) {
            continue;
        }
        // Equal logits stay behind the earlier (lower) ids.
        let pos = best.partition_point(|&(_, v)| v >= x);
        best.insert(pos, (i as u32, x));
        best.truncate(n);
    }
    best
}

/// A uniform f64 in [0, 1) from 64 random bits.
fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A seed for an unseeded sequence: std's per-process random hash keys
/// (drawn from the operating system) mixed with a counter and the clock.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    RandomState::new().hash_one((count, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            seed: Some(7),
            ..SamplingParams::default()
        }
    }

    fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            ..params()
        }
    }

    /// Empirical frequencies of `draws` samples from `logits`.
    fn histogram(logits: &[f32], p: &SamplingParams, draws: usize) -> Vec<usize> {
        let mut s = SequenceSampler::new(p, &[]);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[s.sample(logits, p).unwrap().token as usize] += 1;
        }
        counts
    }

    fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let e: Vec<f64> = logits
            .iter()
            .map(|&x| (f64::from(x - m) / f64::from(t)).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// Pearson chi-square statistic of `counts` against `probs` (cells with
    /// zero expected probability must have zero counts).
    fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        let mut chi = 0.0;
        for (&c, &p) in counts.iter().zip(probs) {
            if p == 0.0 {
                assert_eq!(c, 0, "drew a token of probability zero");
                continue;
            }
            let e = p * n as f64;
            chi += (c as f64 - e).powi(2) / e;
        }
        chi
    }

    #[test]
    fn defaults_match_vllm() {
        let p = SamplingParams::default();
        assert_eq!(p.n, 1);
        assert_eq!(p.temperature, 1.0);
        assert_eq!(p.top_p, 1.0);
        assert_eq!(p.top_k, 0);
        assert_eq!(p.min_p, 0.0);
        assert_eq!(p.repetition_penalty, 1.0);
        assert_eq!(p.max_tokens, 16);
        assert!(p.skip_special_tokens);
        assert!(!p.include_stop_str_in_output);
        assert!(p.validate(10).is_ok());
    }

    #[test]
    fn greedy_picks_argmax_with_lowest_id_on_ties() {
        let mut s = SequenceSampler::new(&greedy(), &[]);
        let t = s.sample(&[0.1, 3.0, -1.0, 3.0, 2.9], &greedy()).unwrap();
        assert_eq!(t.token, 1);
        let top1 = SamplingParams {
            top_k: 1,
            ..params()
        };
        let t = s.sample(&[0.1, 2.0, 5.0, 5.0], &top1).unwrap();
        assert_eq!(t.token, 2);
        // -inf entries are never chosen, even when first.
        let t = s.sample(&[f32::NEG_INFINITY, -5.0], &greedy()).unwrap();
        assert_eq!(t.token, 1);
    }

    #[test]
    fn greedy_draws_no_random_numbers() {
        let p = greedy();
        let mut a = SequenceSampler::new(&p, &[]);
        let b = SequenceSampler::new(&p, &[]);
        a.sample(&[1.0, 2.0], &p).unwrap();
        let mut a_rng = a.rng.clone();
        let mut b_rng = b.rng.clone();
        assert_eq!(a_rng.next_u64(), b_rng.next_u64());
    }

    #[test]
    fn temperature_matches_softmax_statistically() {
        let logits = [1.0, 2.0, 0.5, 3.0, -1.0, 2.5];
        for t in [0.5f32, 1.0, 1.7] {
            let p = SamplingParams {
                temperature: t,
                ..params()
            };
            let counts = histogram(&logits, &p, 20_000);
            let chi = chi_square(&counts, &softmax(&logits, t));
            // 5 degrees of freedom: P(chi2 > 25) < 2e-4.
            assert!(chi < 25.0, "T={t}: chi-square {chi}, counts {counts:?}");
        }
    }

    #[test]
    fn top_k_restricts_support() {
        let logits = [1.0, 2.0, 0.5, 3.0, -1.0, 2.5];
        let p = SamplingParams {
            top_k: 3,
            ..params()
        };
        let counts = histogram(&logits, &p, 6_000);
        let mut expected = softmax(&[2.0, 3.0, 2.5], 1.0);
        // Tokens 1, 3 and 5 survive, renormalised.
        let probs = vec![
            0.0,
            expected.remove(0),
            0.0,
            expected.remove(0),
            0.0,
            expected.remove(0),
        ];
        assert!(chi_square(&counts, &probs) < 20.0, "{counts:?}");
    }

    #[test]
    fn top_k_ties_keep_lower_ids() {
        let logits = [1.0, 1.0, 1.0, 1.0];
        let p = SamplingParams {
            top_k: 2,
            ..params()
        };
        let counts = histogram(&logits, &p, 2_000);
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        assert!(counts[0] > 800 && counts[1] > 800, "{counts:?}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        // 0.5 < 0.75 <= 0.8: the two most likely tokens.
        let p = SamplingParams {
            top_p: 0.75,
            ..params()
        };
        let counts = histogram(&logits, &p, 8_000);
        let want = [0.625, 0.375, 0.0, 0.0];
        assert!(chi_square(&counts, &want) < 15.0, "{counts:?}");
        // 0.8 < 0.85 <= 0.95: three tokens.
        let p = SamplingParams {
            top_p: 0.85,
            ..params()
        };
        let counts = histogram(&logits, &p, 8_000);
        let want = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0];
        assert!(chi_square(&counts, &want) < 15.0, "{counts:?}");
        // A tiny top_p keeps the single most likely token.
        let p = SamplingParams {
            top_p: 1e-6,
            ..params()
        };
        assert_eq!(histogram(&logits, &p, 200)[0], 200);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        // Threshold 0.2 * 0.5 = 0.1: token 3 goes.
        let p = SamplingParams {
            min_p: 0.2,
            ..params()
        };
        let counts = histogram(&logits, &p, 8_000);
        let want = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0];
        assert!(chi_square(&counts, &want) < 15.0, "{counts:?}");
        // Threshold 0.5 * 0.5 = 0.25: tokens 2 and 3 go.
        let p = SamplingParams {
            min_p: 0.5,
            ..params()
        };
        let counts = histogram(&logits, &p, 8_000);
        assert!(chi_square(&counts, &[0.625, 0.375, 0.0, 0.0]) < 15.0);
        // min_p applies to the temperature-scaled distribution: at T = 0.5
        // the probabilities are proportional to p^2, so token 2 (0.0225 vs
        // 0.25 * 0.3 = 0.075) goes at min_p 0.3 while token 1 stays.
        let p = SamplingParams {
            min_p: 0.3,
            temperature: 0.5,
            ..params()
        };
        let counts = histogram(&logits, &p, 4_000);
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        assert!(counts[1] > 0);
    }

    #[test]
    fn candidate_filter_matches_a_naive_reference() {
        // Pseudo-random logits over a mid-size vocabulary, several settings.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let vocab = 3000;
        let logits: Vec<f32> = (0..vocab)
            .map(|_| (unit_f64(rng.next_u64()) * 12.0 - 6.0) as f32)
            .collect();
        for (top_k, top_p, min_p, t) in [
            (0, 0.9f32, 0.0f32, 1.0f32),
            (50, 0.95, 0.0, 0.8),
            (0, 0.5, 0.05, 1.3),
            (200, 1.0, 0.1, 0.7),
            (0, 0.999, 0.0, 2.0),
        ] {
            let p = SamplingParams {
                top_k,
                top_p,
                min_p,
                temperature: t,
                ..params()
            };
            let mut weights = logits.clone();
            to_weights(&mut weights, &p).unwrap();
            let mut cand = Vec::new();
            let kept = restrict(&weights, &p, &mut cand);
            let mut got: Vec<u32> = cand[..kept].iter().map(|&(_, id)| id).collect();
            got.sort_unstable();

            // Reference, in vLLM v1's order: softmax(x / T), min-p, top-k,
            // then top-p over the renormalised survivors.
            let probs = softmax(&logits, t);
            let pmax = probs.iter().cloned().fold(0.0, f64::max);
            let mut order: Vec<usize> = (0..vocab).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            order.retain(|&i| probs[i] >= f64::from(min_p) * pmax);
            if top_k > 0 {
                order.truncate(top_k as usize);
            }
            let total: f64 = order.iter().map(|&i| probs[i]).sum();
            let mut cum = 0.0;
            let mut want = Vec::new();
            for &i in &order {
                want.push(i as u32);
                cum += probs[i];
                if cum >= f64::from(top_p) * total {
                    break;
                }
            }
            want.sort_unstable();
            assert_eq!(got, want, "top_k={top_k} top_p={top_p} min_p={min_p} T={t}");
        }
    }

    #[test]
    fn nucleus_matches_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for case in 0..200 {
            let n = 1 + (rng.next_u64() % 3000) as usize;
            // Few distinct weights in some cases, to exercise ties.
            let levels = if case % 3 == 0 { 4 } else { 1 << 20 };
            let mut cand: Vec<(f32, u32)> = (0..n)
                .map(|i| {
                    let level = (rng.next_u64() % levels) as f32 / levels as f32;
                    (exp_nonpositive(-8.0 * level), i as u32)
                })
                .collect();
            let total: f64 = cand.iter().map(|&(w, _)| f64::from(w)).sum();
            let top_p = unit_f64(rng.next_u64());
            let mut sorted = cand.clone();
            sorted.sort_by(by_weight_desc);
            let mut cum = 0.0;
            let mut want_len = n;
            for (i, &(w, _)) in sorted.iter().enumerate() {
                cum += f64::from(w);
                if cum >= top_p * total {
                    want_len = i + 1;
                    break;
                }
            }
            let len = nucleus_len(&mut cand, top_p * total);
            let mut got: Vec<u32> = cand[..len].iter().map(|&(_, id)| id).collect();
            let mut want: Vec<u32> = sorted[..want_len].iter().map(|&(_, id)| id).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "case {case}: n={n} top_p={top_p}");
        }
        assert_eq!(nucleus_len(&mut [(0.5, 0), (1.0, 1)], 0.0), 1);
        assert_eq!(nucleus_len(&mut [], 0.5), 0);
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -87.0 {
            let exact = f64::from(x).exp();
            let rel = ((f64::from(exp_nonpositive(x)) - exact) / exact).abs();
            worst = worst.max(rel);
            x -= 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn dense_draw_finds_the_right_block() {
        let mut weights = vec![0.0f32; 5000];
        weights[10] = 1.0;
        weights[2500] = 1.0;
        weights[4999] = 2.0;
        assert_eq!(pick_dense(&weights, 0.0), Ok(10));
        assert_eq!(pick_dense(&weights, 0.24), Ok(10));
        assert_eq!(pick_dense(&weights, 0.26), Ok(2500));
        assert_eq!(pick_dense(&weights, 0.51), Ok(4999));
        assert_eq!(pick_dense(&weights, 1.0 - f64::EPSILON), Ok(4999));
        assert_eq!(pick_dense(&[0.0; 3], 0.5), Err(SampleError::NoCandidates));
    }

    #[test]
    fn large_vocabulary_paths_work() {
        let vocab = 152_064;
        let mut logits = vec![0.0f32; vocab];
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for x in &mut logits {
            *x = (unit_f64(rng.next_u64()) * 4.0) as f32;
        }
        logits[123_456] = 30.0;
        let p = SamplingParams {
            top_k: 40,
            top_p: 0.9,
            ..params()
        };
        let mut s = SequenceSampler::new(&p, &[]);
        assert_eq!(s.sample(&logits, &p).unwrap().token, 123_456);
        // A flat distribution: top-p has to grow its sorted prefix a lot.
        logits[123_456] = 0.0;
        let p = SamplingParams {
            top_p: 0.9,
            logprobs: Some(5),
            ..params()
        };
        let t = s.sample(&logits, &p).unwrap();
        assert_eq!(t.top_logprobs.len(), 5);
    }

    #[test]
    fn repetition_penalty_exact_values() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..params()
        };
        // Token 1 in the prompt, token 2 generated, token 3 never seen.
        let mut s = SequenceSampler::new(&p, &[1, 1]);
        s.record(2);
        let mut work = vec![4.0, 3.0, -3.0, 5.0];
        s.apply_masks_and_penalties(&mut work, &p).unwrap();
        assert_eq!(work, vec![4.0, 1.5, -6.0, 5.0]);
    }

    #[test]
    fn frequency_and_presence_penalties_exact_values() {
        let p = SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..params()
        };
        // The prompt's tokens are not penalised by these two.
        let mut s = SequenceSampler::new(&p, &[0]);
        s.record(1);
        s.record(1);
        s.record(1);
        s.record(2);
        let mut work = vec![1.0, 1.0, 1.0, 1.0];
        s.apply_masks_and_penalties(&mut work, &p).unwrap();
        assert_eq!(work, vec![1.0, 1.0 - 1.5 - 0.25, 1.0 - 0.5 - 0.25, 1.0]);
    }

    #[test]
    fn penalties_compose_in_vllm_order() {
        let p = SamplingParams {
            repetition_penalty: 1.25,
            frequency_penalty: 1.0,
            presence_penalty: -0.5,
            ..params()
        };
        let mut s = SequenceSampler::new(&p, &[]);
        s.record(0);
        s.record(0);
        let mut work = vec![2.5, 0.0];
        s.apply_masks_and_penalties(&mut work, &p).unwrap();
        // 2.5 / 1.25 = 2, - 1 * 2 = 0, + 0.5 = 0.5.
        assert_eq!(work, vec![0.5, 0.0]);
        // The penalties move the greedy choice.
        let g = SamplingParams {
            temperature: 0.0,
            ..p
        };
        assert_eq!(s.sample(&[2.5, 1.0], &g).unwrap().token, 1);
    }

    #[test]
    fn min_tokens_masks_eos_and_stop_tokens() {
        let p = SamplingParams {
            min_tokens: 2,
            stop_token_ids: vec![1],
            ..greedy()
        };
        let mut s = SequenceSampler::new(&p, &[]).with_eos_token_ids(&[0]);
        let logits = [9.0, 8.0, 1.0];
        assert_eq!(s.sample(&logits, &p).unwrap().token, 2);
        s.record(2);
        assert_eq!(s.sample(&logits, &p).unwrap().token, 2);
        s.record(2);
        assert_eq!(s.sample(&logits, &p).unwrap().token, 0);
        // A vocabulary of nothing but stop tokens cannot be sampled.
        let mut s = SequenceSampler::new(&p, &[]).with_eos_token_ids(&[0]);
        assert_eq!(s.sample(&[1.0, 2.0], &p), Err(SampleError::NoCandidates));
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits: Vec<f32> = (0..64).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed: u64, interleave: bool| -> Vec<u32> {
            let p = SamplingParams {
                seed: Some(seed),
                ..SamplingParams::default()
            };
            let other_p = SamplingParams::default();
            let mut s = SequenceSampler::new(&p, &[]);
            let mut other = SequenceSampler::new(&other_p, &[]);
            (0..50)
                .map(|_| {
                    if interleave {
                        // Another sequence in the same batch.
                        other.sample(&logits, &other_p).unwrap();
                    }
                    let t = s.sample(&logits, &p).unwrap().token;
                    s.record(t);
                    t
                })
                .collect()
        };
        assert_eq!(run(42, false), run(42, true));
        assert_ne!(run(42, false), run(43, false));
    }

    #[test]
    fn unseeded_sequences_differ() {
        let logits = vec![0.0f32; 1000];
        let p = SamplingParams::default();
        let mut a = SequenceSampler::new(&p, &[]);
        let mut b = SequenceSampler::new(&p, &[]);
        let ta: Vec<u32> = (0..8)
            .map(|_| a.sample(&logits, &p).unwrap().token)
            .collect();
        let tb: Vec<u32> = (0..8)
            .map(|_| b.sample(&logits, &p).unwrap().token)
            .collect();
        assert_ne!(ta, tb);
    }

    #[test]
    fn for_choice_offsets_the_seed() {
        let p = SamplingParams {
            n: 3,
            seed: Some(u64::MAX),
            ..SamplingParams::default()
        };
        assert_eq!(p.for_choice(0).seed, Some(u64::MAX));
        assert_eq!(p.for_choice(2).seed, Some(1));
        assert_eq!(p.for_choice(2).n, 1);
        assert_eq!(SamplingParams::default().for_choice(1).seed, None);
    }

    #[test]
    fn logprobs_are_raw_log_softmax_with_ordered_top_n() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -0.5, f32::NEG_INFINITY];
        let p = SamplingParams {
            logprobs: Some(4),
            // Penalties and temperature must not touch the logprobs.
            temperature: 0.3,
            repetition_penalty: 1.7,
            presence_penalty: 1.0,
            ..params()
        };
        let mut s = SequenceSampler::new(&p, &[1, 2]);
        s.record(3);
        let t = s.sample(&logits, &p).unwrap();
        let m = 3.0f64;
        let lse = m + logits
            .iter()
            .map(|&x| (f64::from(x) - m).exp())
            .sum::<f64>()
            .ln();
        let lp = |i: usize| (f64::from(logits[i]) - lse) as f32;
        assert!((t.logprob - lp(t.token as usize)).abs() < 1e-6);
        let ids: Vec<u32> = t.top_logprobs.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3, 2, 0]);
        for &(id, v) in &t.top_logprobs {
            assert!((v - lp(id as usize)).abs() < 1e-6);
        }
        let total: f64 = logits.iter().map(|&x| (f64::from(x) - lse).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);

        // 0: only the chosen token's; None: nothing.
        let p0 = SamplingParams {
            logprobs: Some(0),
            ..greedy()
        };
        let t = s.sample(&logits, &p0).unwrap();
        assert!(t.top_logprobs.is_empty());
        assert!((t.logprob - lp(1)).abs() < 1e-6);
        let t = s.sample(&logits, &greedy()).unwrap();
        assert!(t.logprob.is_nan() && t.top_logprobs.is_empty());
        // More than the vocabulary: every token once.
        let p = SamplingParams {
            logprobs: Some(20),
            ..greedy()
        };
        assert_eq!(s.sample(&logits, &p).unwrap().top_logprobs.len(), 6);
    }

    #[test]
    fn bad_logits_are_errors_not_panics() {
        let p = params();
        let mut s = SequenceSampler::new(&p, &[]);
        assert_eq!(s.sample(&[], &p), Err(SampleError::EmptyLogits));
        assert!(matches!(
            s.sample(&[0.0, f32::NAN], &p),
            Err(SampleError::NonFiniteLogit { token: 1, .. })
        ));
        assert!(matches!(
            s.sample(&[f32::INFINITY, 0.0], &greedy()),
            Err(SampleError::NonFiniteLogit { token: 0, .. })
        ));
        assert_eq!(
            s.sample(&[f32::NEG_INFINITY; 3], &p),
            Err(SampleError::NoCandidates)
        );
        // An extreme repetition penalty that overflows is reported.
        let p = SamplingParams {
            repetition_penalty: 1e-38,
            ..params()
        };
        let mut s = SequenceSampler::new(&p, &[0]);
        assert!(matches!(
            s.sample(&[1e3, 0.0], &p),
            Err(SampleError::PenaltyOverflow { token: 0, .. })
        ));
        // Unvalidated parameters do not panic either.
        let p = SamplingParams {
            top_p: 0.0,
            top_k: -7,
            min_p: 3.0,
            temperature: -1.0,
            ..params()
        };
        assert_eq!(s.sample(&[1.0, 2.0], &p).unwrap().token, 1);
        let p = SamplingParams {
            top_p: -1.0,
            min_p: 1.0,
            ..params()
        };
        assert_eq!(s.sample(&[1.0, 2.0], &p).unwrap().token, 1);
    }

    #[test]
    fn validate_names_each_bad_field() {
        let with = |edit: fn(&mut SamplingParams)| {
            let mut p = params();
            edit(&mut p);
            p
        };
        let cases: Vec<(&str, SamplingParams)> = vec![
            ("n", with(|p| p.n = 0)),
            ("temperature", with(|p| p.temperature = -0.1)),
            ("temperature", with(|p| p.temperature = f32::NAN)),
            ("temperature", with(|p| p.temperature = f32::INFINITY)),
            ("top_p", with(|p| p.top_p = 0.0)),
            ("top_p", with(|p| p.top_p = 1.01)),
            ("top_p", with(|p| p.top_p = f32::NAN)),
            ("top_k", with(|p| p.top_k = -2)),
            ("min_p", with(|p| p.min_p = -0.1)),
            ("min_p", with(|p| p.min_p = 1.5)),
            ("presence_penalty", with(|p| p.presence_penalty = 2.5)),
            ("presence_penalty", with(|p| p.presence_penalty = f32::NAN)),
            ("frequency_penalty", with(|p| p.frequency_penalty = -2.5)),
            ("repetition_penalty", with(|p| p.repetition_penalty = 0.0)),
            (
                "repetition_penalty",
                with(|p| p.repetition_penalty = f32::INFINITY),
            ),
            ("max_tokens", with(|p| p.max_tokens = 0)),
            ("min_tokens", with(|p| p.min_tokens = 17)),
            ("logprobs", with(|p| p.logprobs = Some(21))),
            ("stop", with(|p| p.stop = vec!["a".into(), String::new()])),
            ("stop_token_ids", with(|p| p.stop_token_ids = vec![3, 100])),
        ];
        for (field, p) in cases {
            let err = p.validate(100).unwrap_err();
            assert_eq!(err.param, field, "{p:?}");
            assert!(err.message.contains(field), "{}", err.message);
            assert!(err.to_string().contains(field));
        }
        let ok = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: -1,
            min_p: 1.0,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            repetition_penalty: 0.5,
            min_tokens: 16,
            logprobs: Some(20),
            stop: vec!["\n".into()],
            stop_token_ids: vec![99],
            ..params()
        };
        assert_eq!(ok.validate(100), Ok(()));
    }
}
