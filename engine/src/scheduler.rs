//! Continuous batching: which tokens of which sequences run in the next step.
//!
//! Each step has a token budget (`max_num_batched_tokens`) and a sequence
//! cap (`max_num_seqs`). Running sequences go first (decodes, and the next
//! chunk of prefills already under way), then waiting ones in arrival order
//! (FCFS) with chunked prefill. When the KV cache runs out of blocks the
//! newest running sequence is preempted by recompute: its blocks are freed
//! and it goes back to the front of the queue with its generated tokens,
//! which are recomputed (largely from the prefix cache) when it resumes.
//! A request that could never fit is refused when it is added.

use std::collections::VecDeque;

use crate::kv::{KvCacheManager, RequestId};

/// Batching limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tokens computed per step, over all sequences.
    pub max_num_batched_tokens: usize,
    /// Sequences per step.
    pub max_num_seqs: usize,
    /// Longest sequence (prompt + generated tokens).
    pub max_model_len: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_num_batched_tokens: 2048,
            max_num_seqs: 256,
            max_model_len: 8192,
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// No prompt tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Prompt plus `max_tokens` is longer than the model's context
    /// (vLLM's wording, which clients match on).
    #[error("This model's maximum context length is {max_model_len} tokens. However, you requested {requested} tokens ({prompt} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.")]
    TooLong {
        /// The model's context length.
        max_model_len: usize,
        /// Prompt plus completion.
        requested: usize,
        /// Prompt tokens.
        prompt: usize,
        /// Completion tokens asked for.
        max_tokens: usize,
    },
    /// The whole KV cache could not hold this one request.
    #[error("the request needs {needed} KV-cache blocks for {tokens} tokens but the cache has only {available}; raise --kv-cache-memory or lower max_tokens")]
    CacheTooSmall {
        /// Prompt plus completion tokens.
        tokens: usize,
        /// Blocks that needs.
        needed: usize,
        /// Blocks in the cache.
        available: usize,
    },
    /// The id is already in use.
    #[error("request id {0} is already in use")]
    DuplicateId(RequestId),
}

/// A sequence's tokens and progress.
#[derive(Clone, Debug)]
pub struct Sequence {
    /// Its id.
    pub id: RequestId,
    /// Prompt followed by generated tokens.
    pub tokens: Vec<u32>,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Tokens whose KV is in the cache.
    pub num_computed: usize,
    /// Completion tokens the request may produce.
    pub max_tokens: usize,
    /// Prompt tokens found in the prefix cache at first admission.
    pub num_cached_tokens: Option<usize>,
    /// Times this sequence was preempted.
    pub num_preemptions: u32,
}

impl Sequence {
    /// Generated tokens so far.
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}

/// One sequence's share of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// The sequence.
    pub id: RequestId,
    /// First token computed this step (= tokens already in the cache).
    pub start: usize,
    /// Tokens computed this step.
    pub num_new: usize,
    /// The step reaches the end of the known tokens, so a token is sampled.
    pub samples: bool,
}

/// What to run this step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    /// Scheduled sequences, running ones first.
    pub seqs: Vec<ScheduledSeq>,
    /// Sequences preempted while making room.
    pub preempted: Vec<RequestId>,
    /// Tokens over all sequences.
    pub num_tokens: usize,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Preemptions.
    pub preemptions: u64,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub cached_prompt_tokens: u64,
}

/// The continuous-batching scheduler; owns the KV block bookkeeping.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    seqs: std::collections::HashMap<RequestId, Sequence>,
    waiting: VecDeque<RequestId>,
    running: Vec<RequestId>,
    stats: SchedulerStats,
}

impl Scheduler {
    /// A scheduler over `kv`.
    pub fn new(config: SchedulerConfig, kv: KvCacheManager) -> Self {
        Scheduler {
            config,
            kv,
            seqs: Default::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            stats: SchedulerStats::default(),
        }
    }

    /// Limits in effect.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The block bookkeeping.
    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    /// Counters.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// Check that a request could ever run, without adding it.
    pub fn check(&self, prompt_len: usize, max_tokens: usize) -> Result<(), RejectReason> {
        if prompt_len == 0 {
            return Err(RejectReason::EmptyPrompt);
        }
        let total = prompt_len.saturating_add(max_tokens);
        if total > self.config.max_model_len {
            return Err(RejectReason::TooLong {
                max_model_len: self.config.max_model_len,
                requested: total,
                prompt: prompt_len,
                max_tokens,
            });
        }
        // The last generated token is never written to the cache.
        let needed = self.kv.blocks_for(total.saturating_sub(1).max(1));
        if needed > self.kv.num_blocks() {
            return Err(RejectReason::CacheTooSmall {
                tokens: total,
                needed,
                available: self.kv.num_blocks(),
            });
        }
        Ok(())
    }

    /// Queue a request.
    pub fn add(
        &mut self,
        id: RequestId,
        prompt: Vec<u32>,
        max_tokens: usize,
    ) -> Result<(), RejectReason> {
        if self.seqs.contains_key(&id) {
            return Err(RejectReason::DuplicateId(id));
        }
        self.check(prompt.len(), max_tokens)?;
        self.seqs.insert(
            id,
            Sequence {
                id,
                prompt_len: prompt.len(),
                tokens: prompt,
                num_computed: 0,
                max_tokens,
                num_cached_tokens: None,
                num_preemptions: 0,
            },
        );
        self.waiting.push_back(id);
        Ok(())
    }

    /// A sequence's state.
    pub fn seq(&self, id: RequestId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    /// Its block table.
    pub fn block_table(&self, id: RequestId) -> &[u32] {
        self.kv.block_table(id)
    }

    /// Sequences holding a place in the running batch.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting (new or preempted).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether anything is left to do.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    fn preempt(&mut self, id: RequestId) {
        self.kv.free(id);
        if let Some(s) = self.seqs.get_mut(&id) {
            s.num_computed = 0;
            s.num_preemptions += 1;
        }
        self.stats.preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Choose the next step's work.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;

        // Running sequences, oldest first; preempt from the newest end.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let Some(seq) = self.seqs.get(&id) else {
                self.running.remove(i);
                continue;
            };
            let start = seq.num_computed;
            let num_new = (seq.tokens.len() - start).min(budget);
            if num_new == 0 {
                i += 1;
                continue;
            }
            let samples = start + num_new == seq.tokens.len();
            let mut scheduled = false;
            loop {
                if self.kv.allocate(id, None, start + num_new) {
                    scheduled = true;
                    break;
                }
                let Some(victim) = self.running.pop() else {
                    break;
                };
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    break;
                }
            }
            if !scheduled {
                break;
            }
            out.seqs.push(ScheduledSeq {
                id,
                start,
                num_new,
                samples,
            });
            budget -= num_new;
            i += 1;
        }

        // Waiting sequences, first come first served, only when nothing had
        // to be preempted this step.
        if out.preempted.is_empty() {
            while budget > 0 && self.running.len() < self.config.max_num_seqs {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let Some(seq) = self.seqs.get(&id) else {
                    self.waiting.pop_front();
                    continue;
                };
                let prefix = self.kv.cached_prefix(&seq.tokens);
                let start = prefix.num_tokens;
                let num_new = (seq.tokens.len() - start).min(budget);
                let samples = start + num_new == seq.tokens.len();
                if !self.kv.allocate(id, Some(&prefix), start + num_new) {
                    break;
                }
                self.waiting.pop_front();
                if let Some(seq) = self.seqs.get_mut(&id) {
                    seq.num_computed = start;
                    if seq.num_cached_tokens.is_none() {
                        seq.num_cached_tokens = Some(start.min(seq.prompt_len));
                        self.stats.cached_prompt_tokens += start.min(seq.prompt_len) as u64;
                    }
                }
                self.running.push(id);
                out.seqs.push(ScheduledSeq {
                    id,
                    start,
                    num_new,
                    samples,
                });
                budget -= num_new;
            }
        }
        out.num_tokens = self.config.max_num_batched_tokens - budget;
        out
    }

    /// Record that a step ran: the scheduled tokens are now in the cache.
    pub fn step_done(&mut self, out: &SchedulerOutput) {
        for s in &out.seqs {
            if let Some(seq) = self.seqs.get_mut(&s.id) {
                seq.num_computed = s.start + s.num_new;
                self.kv.cache_computed(s.id, &seq.tokens, seq.num_computed);
            }
        }
    }

    /// Give a queued sequence blocks for `tokens` tokens outside the normal
    /// schedule (scoring); `false` when they are not free.
    pub fn reserve(&mut self, id: RequestId, tokens: usize) -> bool {
        if !self.seqs.contains_key(&id) {
            return false;
        }
        self.kv.allocate(id, None, tokens)
    }

    /// Append a sampled token to a sequence.
    pub fn append_token(&mut self, id: RequestId, token: u32) {
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.tokens.push(token);
        }
    }

    /// Remove a finished or aborted sequence and free its blocks.
    pub fn finish(&mut self, id: RequestId) -> Option<Sequence> {
        self.kv.free(id);
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&r| r != id);
        self.seqs.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(blocks: usize, budget: usize, max_seqs: usize) -> Scheduler {
        Scheduler::new(
            SchedulerConfig {
                max_num_batched_tokens: budget,
                max_num_seqs: max_seqs,
                max_model_len: 1024,
            },
            KvCacheManager::new(blocks, 4, true),
        )
    }

    /// Run a step the way the engine does: sample token 7 for every
    /// sequence that samples; finish those that reach `max_tokens`.
    fn run_step(s: &mut Scheduler) -> SchedulerOutput {
        let out = s.schedule();
        s.step_done(&out);
        for x in &out.seqs {
            if x.samples {
                s.append_token(x.id, 7);
                let seq = s.seq(x.id).unwrap();
                if seq.output().len() >= seq.max_tokens {
                    s.finish(x.id);
                }
            }
        }
        out
    }

    #[test]
    fn token_budget_chunks_prefill_and_decodes_go_first() {
        let mut s = sched(100, 8, 16);
        s.add(1, (0..5).collect(), 3).unwrap();
        let o = run_step(&mut s);
        assert_eq!(
            o.seqs,
            vec![ScheduledSeq {
                id: 1,
                start: 0,
                num_new: 5,
                samples: true
            }]
        );
        s.add(2, (10..30).collect(), 2).unwrap();
        let o = run_step(&mut s);
        // Decode of 1 first, then a 7-token chunk of 2's 20-token prompt.
        assert_eq!(
            o.seqs[0],
            ScheduledSeq {
                id: 1,
                start: 5,
                num_new: 1,
                samples: true
            }
        );
        assert_eq!(
            o.seqs[1],
            ScheduledSeq {
                id: 2,
                start: 0,
                num_new: 7,
                samples: false
            }
        );
        assert_eq!(o.num_tokens, 8);
        let o = run_step(&mut s);
        assert_eq!(
            o.seqs[1],
            ScheduledSeq {
                id: 2,
                start: 7,
                num_new: 7,
                samples: false
            }
        );
        while s.has_unfinished() {
            run_step(&mut s);
        }
        assert_eq!(s.kv().num_free_blocks(), 100, "every block is returned");
    }

    #[test]
    fn sequence_cap_is_respected() {
        let mut s = sched(100, 100, 2);
        for id in 0..4 {
            s.add(id, vec![1, 2, 3], 5).unwrap();
        }
        let o = run_step(&mut s);
        assert_eq!(o.seqs.len(), 2);
        assert_eq!(s.num_waiting(), 2);
    }

    #[test]
    fn preemption_by_recompute_newest_first_then_resume() {
        // 6 blocks of 4 tokens; two sequences of 8-token prompts growing to 16.
        let mut s = sched(6, 64, 8);
        s.add(1, (0..8).collect(), 8).unwrap();
        s.add(2, (100..108).collect(), 8).unwrap();
        let mut preempted = Vec::new();
        let mut steps = 0;
        while s.has_unfinished() {
            let o = run_step(&mut s);
            preempted.extend(o.preempted.iter().copied());
            steps += 1;
            assert!(steps < 100, "no livelock");
        }
        assert_eq!(preempted.first(), Some(&2), "the newest is preempted");
        assert!(s.stats().preemptions >= 1);
        assert_eq!(s.kv().num_free_blocks(), 6);
    }

    #[test]
    fn preempted_sequence_keeps_its_output_and_recomputes_it() {
        let mut s = sched(6, 64, 8);
        s.add(1, (0..8).collect(), 8).unwrap();
        s.add(2, (100..108).collect(), 8).unwrap();
        loop {
            let o = run_step(&mut s);
            if let Some(&v) = o.preempted.first() {
                let seq = s.seq(v).unwrap();
                assert_eq!(seq.num_computed, 0);
                assert!(!seq.output().is_empty());
                break;
            }
        }
        // When it comes back it recomputes prompt + output before sampling.
        loop {
            let o = s.schedule();
            s.step_done(&o);
            if let Some(x) = o.seqs.iter().find(|x| x.id == 2) {
                let seq = s.seq(2).unwrap();
                assert_eq!(x.start + x.num_new, seq.tokens.len());
                break;
            }
            for x in &o.seqs {
                if x.samples {
                    s.append_token(x.id, 7);
                    if s.seq(x.id).unwrap().output().len() >= 8 {
                        s.finish(x.id);
                    }
                }
            }
        }
    }

    #[test]
    fn impossible_requests_are_rejected() {
        let s = sched(4, 64, 8);
        assert_eq!(s.check(0, 4), Err(RejectReason::EmptyPrompt));
        assert!(matches!(
            s.check(1000, 100),
            Err(RejectReason::TooLong {
                requested: 1100,
                ..
            })
        ));
        let e = s.check(10, 10).unwrap_err();
        assert!(matches!(
            e,
            RejectReason::CacheTooSmall {
                needed: 5,
                available: 4,
                ..
            }
        ));
        assert!(e.to_string().contains("--kv-cache-memory"));
        assert!(s.check(10, 7).is_ok());
        let msg = s.check(1000, 100).unwrap_err().to_string();
        assert!(msg.starts_with("This model's maximum context length is 1024 tokens. However, you requested 1100 tokens (1000 in the messages, 100 in the completion)."), "{msg}");
    }

    #[test]
    fn fcfs_the_head_of_the_queue_is_not_overtaken() {
        // 4 blocks: a 12-token prompt (3 blocks) runs; the next needs 3 blocks
        // and must wait even though a later 1-block request would fit.
        let mut s = sched(4, 64, 8);
        s.add(1, (0..12).collect(), 2).unwrap();
        s.add(2, (20..32).collect(), 2).unwrap();
        s.add(3, vec![1], 2).unwrap();
        let o = run_step(&mut s);
        assert_eq!(o.seqs.iter().map(|x| x.id).collect::<Vec<_>>(), vec![1]);
        while s.has_unfinished() {
            run_step(&mut s);
        }
    }

    #[test]
    fn prefix_hits_skip_prefill_of_shared_blocks() {
        let mut s = sched(32, 64, 8);
        let prompt: Vec<u32> = (0..13).collect();
        s.add(1, prompt.clone(), 1).unwrap();
        while s.has_unfinished() {
            run_step(&mut s);
        }
        s.add(2, prompt, 1).unwrap();
        let o = s.schedule();
        assert_eq!(o.seqs[0].start, 12, "three full blocks reused");
        assert_eq!(o.seqs[0].num_new, 1);
        assert_eq!(s.seq(2).unwrap().num_cached_tokens, Some(12));
        assert_eq!(s.stats().cached_prompt_tokens, 12);
    }
}
