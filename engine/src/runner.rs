//! The model runner: turns a scheduler step into a ragged batch, runs the
//! model's forward pass on the device and returns last-token logits.

use hal::{AttentionBatch, Device, HalError, KvCache, KvCacheSpec, SeqSlice};

use crate::kv::{CacheConfig, RequestId};
use crate::model::llama::ForwardBatch;
use crate::model::{LlamaModel, LoadError};
use crate::scheduler::{Scheduler, SchedulerOutput};

/// The model and its per-layer KV caches.
pub struct ModelRunner {
    model: LlamaModel,
    caches: Vec<KvCache>,
    spec: KvCacheSpec,
}

impl std::fmt::Debug for ModelRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRunner")
            .field("model", &self.model)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Logits of the sequences that sample this step.
#[derive(Clone, Debug, Default)]
pub struct StepLogits {
    /// The sequences, in row order.
    pub ids: Vec<RequestId>,
    /// `[ids.len(), vocab]`, row-major.
    pub logits: Vec<f32>,
    /// Vocabulary size (row length).
    pub vocab: usize,
}

impl StepLogits {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.vocab..(i + 1) * self.vocab]
    }
}

impl ModelRunner {
    /// Allocate a cache of `num_blocks` blocks per layer for `model`, with
    /// the first layout the device prefers.
    pub fn new(
        model: LlamaModel,
        cache: &CacheConfig,
        num_blocks: usize,
    ) -> Result<Self, LoadError> {
        let c = model.config().clone();
        let device = model.device().clone();
        let layout = device
            .capabilities()
            .kv_layouts
            .first()
            .copied()
            .unwrap_or(hal::KvLayout::Nhd);
        let spec = KvCacheSpec {
            num_blocks,
            block_size: cache.block_size,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            dtype: cache.dtype.dtype(),
            layout,
        };
        let mut caches = Vec::with_capacity(c.num_layers);
        for _ in 0..c.num_layers {
            caches.push(device.alloc_kv_cache(&spec, 1.0, 1.0)?);
        }
        Ok(ModelRunner {
            model,
            caches,
            spec,
        })
    }

    /// The model, to change how it runs (e.g. [`LlamaModel::set_tap`]).
    pub fn model_mut(&mut self) -> &mut LlamaModel {
        &mut self.model
    }

    /// The model.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The device.
    pub fn device(&self) -> &std::sync::Arc<dyn Device> {
        self.model.device()
    }

    /// The per-layer cache spec.
    pub fn cache_spec(&self) -> &KvCacheSpec {
        &self.spec
    }

    /// Run one sequence's tokens `start..start + tokens.len()` whose KV
    /// goes to `blocks`, returning the logits at `rows` (indices into
    /// `tokens`), `[rows.len(), vocab]`.
    pub fn forward_sequence(
        &mut self,
        tokens: &[u32],
        start: usize,
        blocks: &[u32],
        rows: &[u32],
    ) -> Result<Vec<f32>, HalError> {
        let dev = self.model.device().name().to_string();
        let positions: Vec<i64> = (start..start + tokens.len()).map(|p| p as i64).collect();
        let attention = AttentionBatch::build(
            &[SeqSlice {
                query_len: tokens.len(),
                seq_len: start + tokens.len(),
                blocks,
            }],
            self.spec.block_size,
        )
        .map_err(|m| HalError::invalid(&dev, "forward", m))?;
        self.model.forward(
            &mut self.caches,
            &ForwardBatch {
                token_ids: tokens,
                positions: &positions,
                attention: &attention,
                logit_rows: rows,
            },
        )
    }

    /// Run `out` (from `scheduler.schedule()`) and return the logits of the
    /// sequences that sample.
    pub fn execute(
        &mut self,
        scheduler: &Scheduler,
        out: &SchedulerOutput,
    ) -> Result<StepLogits, HalError> {
        let dev = self.model.device().name().to_string();
        let mut token_ids = Vec::with_capacity(out.num_tokens);
        let mut positions = Vec::with_capacity(out.num_tokens);
        let mut slices = Vec::with_capacity(out.seqs.len());
        let mut logit_rows = Vec::new();
        let mut ids = Vec::new();
        for s in &out.seqs {
            let seq = scheduler.seq(s.id).ok_or_else(|| {
                HalError::invalid(&dev, "forward", format!("unknown sequence {}", s.id))
            })?;
            let end = s.start + s.num_new;
            token_ids.extend_from_slice(&seq.tokens[s.start..end]);
            positions.extend((s.start..end).map(|p| p as i64));
            slices.push(SeqSlice {
                query_len: s.num_new,
                seq_len: end,
                blocks: scheduler.block_table(s.id),
            });
            if s.samples {
                logit_rows.push((token_ids.len() - 1) as u32);
                ids.push(s.id);
            }
        }
        let attention = AttentionBatch::build(&slices, self.spec.block_size)
            .map_err(|m| HalError::invalid(&dev, "forward", m))?;
        let logits = self.model.forward(
            &mut self.caches,
            &ForwardBatch {
                token_ids: &token_ids,
                positions: &positions,
                attention: &attention,
                logit_rows: &logit_rows,
            },
        )?;
        Ok(StepLogits {
            ids,
            logits,
            vocab: self.model.config().vocab_size,
        })
    }
}
