//! The Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2) as a
//! sequence of HAL ops. No model math happens on the host: every product,
//! norm, rotation and softmax is a backend op.
//!
//! Per step, for `T` new tokens of a ragged batch and `S` sequences that
//! need logits:
//!
//! ```text
//! residual[T,H] = embedding(ids)
//! per layer:  h = rms_norm(x, +residual)        (fused add; layer 0 has no add)
//!             q,k,v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ (+bias)  → rope(q, k) → write_kv
//!             x = paged_attention(q, cache)·Woᵀ
//!             h = rms_norm(x, +residual)
//!             x = silu_and_mul(h·[Wgate;Wup]ᵀ)·Wdownᵀ
//! h = rms_norm(x, +residual);  rows = embedding(logit_rows, table = h)
//! logits[S,V] = rows·Woutᵀ      (the embedding table when tied)
//! ```

use std::sync::Arc;

use hal::{
    AttentionBatch, AttentionParams, DType, Device, DeviceAttentionBatch, EmbeddingArgs,
    EmbeddingTable, GemmArgs, HalError, HostTensor, KvCache, Layout, PackedWeight,
    PagedAttentionArgs, Precision, QuantGemmArgs, RmsNormArgs, RopeArgs, SiluAndMulArgs, StepKey,
    StepMode, Tensor, View, ViewMut, WriteKvArgs,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::{Checkpoint, HostWeight, LoadError, ModelConfig, WeightSource};

/// How the model runs on its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Activation dtype (dense weights are converted to it at load).
    pub dtype: DType,
    /// Activation precision of quantised GEMMs.
    pub precision: Precision,
    /// Where the device cannot run a quantised weight at `precision`, run
    /// it at [`Precision::Exact`] instead of failing to load (the `auto`
    /// choice of the command line: int8 activations where the backend has
    /// them, exact elsewhere).
    pub precision_fallback: bool,
    /// Record decode steps and replay them where the device can
    /// ([`hal::Capabilities::step_capture`]: CUDA graphs).
    pub step_capture: bool,
    /// Show a progress bar on stderr while loading (when it is a terminal).
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: DType::F32,
            precision: Precision::Exact,
            precision_fallback: false,
            step_capture: true,
            progress: true,
        }
    }
}

enum LinearWeight {
    Dense(Tensor),
    Quant(PackedWeight),
}

struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
    n: usize,
    /// Activation precision of a quantised weight (chosen at load).
    precision: Precision,
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate_up: Linear,
    down: Linear,
}

enum EmbeddingWeight {
    Dense(Tensor),
    /// A packed table, and the precision of the tied output GEMM over it.
    Quant(PackedWeight, Precision),
}

/// Activation buffers reused across steps, sized for `capacity` tokens.
struct Scratch {
    capacity: usize,
    residual: Tensor,
    x: Tensor,
    normed: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: Tensor,
    gate_up: Tensor,
    act: Tensor,
}

/// Per-step inputs and outputs on the device, reused across steps (grown
/// when a step is larger than any before), plus the host buffer logits are
/// read into: the decode loop allocates nothing.
struct StepBuffers {
    ids: Tensor,
    positions: Tensor,
    rows: Tensor,
    meta: DeviceAttentionBatch,
    gathered: Tensor,
    logits: Tensor,
    host: Vec<u8>,
}

impl StepBuffers {
    fn new(d: &dyn Device, act: DType) -> Result<Self, HalError> {
        let small = |dtype| Tensor::alloc(d, dtype, &[1]);
        Ok(StepBuffers {
            ids: small(DType::I32)?,
            positions: small(DType::I64)?,
            rows: small(DType::I32)?,
            meta: DeviceAttentionBatch {
                query_start_loc: small(DType::I32)?,
                seq_lens: small(DType::I32)?,
                block_tables: small(DType::I32)?,
                slot_mapping: small(DType::I64)?,
                max_query_len: 0,
                max_seq_len: 0,
            },
            gathered: small(act)?,
            logits: small(act)?,
            host: Vec::new(),
        })
    }
}

/// One forward step's inputs (host side).
#[derive(Clone, Copy, Debug)]
pub struct ForwardBatch<'a> {
    /// New tokens of every sequence, concatenated (`T`).
    pub token_ids: &'a [u32],
    /// Position of each new token (`T`).
    pub positions: &'a [i64],
    /// Ragged metadata and slot mapping (`T` tokens).
    pub attention: &'a AttentionBatch,
    /// Row (index into the `T` tokens) whose logits are wanted, per sequence
    /// that samples this step (`S`).
    pub logit_rows: &'a [u32],
}

/// The names tensors go by in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorNames {
    /// llama.cpp's GGUF names (`blk.{i}.attn_q.weight`).
    Gguf,
    /// Hugging Face names (`model.layers.{i}.self_attn.q_proj.weight`).
    HuggingFace,
}

impl TensorNames {
    /// Pick the scheme a source uses.
    pub fn detect(source: &dyn WeightSource) -> Self {
        if source.contains("token_embd.weight") {
            TensorNames::Gguf
        } else {
            TensorNames::HuggingFace
        }
    }

    /// The token embedding table.
    pub fn embed(self) -> &'static str {
        match self {
            TensorNames::Gguf => "token_embd.weight",
            TensorNames::HuggingFace => "model.embed_tokens.weight",
        }
    }

    /// The final norm's weight.
    pub fn norm(self) -> &'static str {
        match self {
            TensorNames::Gguf => "output_norm.weight",
            TensorNames::HuggingFace => "model.norm.weight",
        }
    }

    /// The output projection (absent when tied to the embedding).
    pub fn output(self) -> &'static str {
        match self {
            TensorNames::Gguf => "output.weight",
            TensorNames::HuggingFace => "lm_head.weight",
        }
    }

    /// Name of layer `i`'s tensor `what` (`"q"`, `"k"`, `"v"`, `"o"`,
    /// `"gate"`, `"up"`, `"down"`, `"attn_norm"`, `"ffn_norm"`) with suffix
    /// `"weight"` or `"bias"`.
    pub fn layer(self, i: usize, what: &str, suffix: &str) -> String {
        match self {
            TensorNames::Gguf => {
                let t = match what {
                    "q" => "attn_q",
                    "k" => "attn_k",
                    "v" => "attn_v",
                    "o" => "attn_output",
                    "gate" => "ffn_gate",
                    "up" => "ffn_up",
                    "down" => "ffn_down",
                    other => other,
                };
                format!("blk.{i}.{t}.{suffix}")
            }
            TensorNames::HuggingFace => {
                let t = match what {
                    "q" => "self_attn.q_proj",
                    "k" => "self_attn.k_proj",
                    "v" => "self_attn.v_proj",
                    "o" => "self_attn.o_proj",
                    "gate" => "mlp.gate_proj",
                    "up" => "mlp.up_proj",
                    "down" => "mlp.down_proj",
                    "attn_norm" => "input_layernorm",
                    "ffn_norm" => "post_attention_layernorm",
                    other => other,
                };
                format!("model.layers.{i}.{t}.{suffix}")
            }
        }
    }
}

/// A Llama-family model placed on a device.
pub struct LlamaModel {
    config: ModelConfig,
    device: Arc<dyn Device>,
    options: LoadOptions,
    embedding: EmbeddingWeight,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `None`: tied to the embedding table.
    lm_head: Option<Linear>,
    cos_sin: Tensor,
    attention: AttentionParams,
    scratch: Option<Scratch>,
    step: Option<StepBuffers>,
    weight_bytes: usize,
    /// Decode steps are recorded and replayed ([`hal::StepCapture`]).
    capture: bool,
    /// Sees the input of every linear layer (calibration), when set.
    tap: Option<Box<dyn ActivationTap>>,
}

/// Which linear layers of a decoder layer an activation feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearSite {
    /// The normed hidden state into the q, k and v projections.
    Qkv,
    /// The attention output into the output projection.
    O,
    /// The normed hidden state into the gate and up projections.
    GateUp,
    /// `silu(gate) · up` into the down projection.
    Down,
}

impl LinearSite {
    /// Every site, in forward order.
    pub const ALL: [LinearSite; 4] = [
        LinearSite::Qkv,
        LinearSite::O,
        LinearSite::GateUp,
        LinearSite::Down,
    ];
}

/// Observer of the activations entering each linear layer, for calibrating
/// quantisation (GPTQ Hessians, AWQ channel magnitudes, FP8 input scales).
pub trait ActivationTap: Send {
    /// `x` is the `[rows, cols]` row-major f32 input of `site` in `layer`
    /// for one forward step.
    fn observe(&mut self, layer: usize, site: LinearSite, x: &[f32], rows: usize, cols: usize);
}

/// Download a linear layer's input and show it to the tap.
fn tap_input(
    d: &dyn Device,
    tap: &mut Option<Box<dyn ActivationTap>>,
    layer: usize,
    site: LinearSite,
    t: &Tensor,
    rows: usize,
    cols: usize,
) -> Result<(), HalError> {
    let Some(tap) = tap.as_mut() else {
        return Ok(());
    };
    d.synchronize()?;
    let mut host = vec![0u8; t.dtype.bytes_for(rows * cols)];
    d.download(&t.buffer, 0, &mut host)?;
    tap.observe(layer, site, &widen(t.dtype, &host), rows, cols);
    Ok(())
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("config", &self.config)
            .field("device", &self.device.name())
            .finish_non_exhaustive()
    }
}

struct Loader<'a> {
    device: &'a dyn Device,
    source: &'a dyn WeightSource,
    options: LoadOptions,
    bytes: usize,
    progress: ProgressBar,
}

impl Loader<'_> {
    fn dense(
        &mut self,
        name: &str,
        w: &HostWeight,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, LoadError> {
        let origin = self.source.origin();
        if w.shape() != shape {
            return Err(LoadError::tensor(
                origin,
                name,
                format!("shape {:?}, expected {shape:?}", w.shape()),
            ));
        }
        let values = w
            .to_f32()
            .ok_or_else(|| LoadError::tensor(origin, name, "expected a dense tensor"))?;
        let host = HostTensor::from_f32(dtype, shape, &values);
        self.bytes += host.data.len();
        Ok(Tensor::from_host(self.device, &host)?)
    }

    fn norm(&mut self, name: &str, hidden: usize) -> Result<Tensor, LoadError> {
        let w = self.source.require(name)?;
        self.progress.inc(1);
        self.dense(name, &w, DType::F32, &[hidden])
    }

    fn linear_from(
        &mut self,
        name: &str,
        w: HostWeight,
        n: usize,
        k: usize,
    ) -> Result<Linear, LoadError> {
        let origin = self.source.origin().to_string();
        if w.shape() != [n, k] {
            return Err(LoadError::tensor(
                &origin,
                name,
                format!("shape {:?}, expected [{n}, {k}]", w.shape()),
            ));
        }
        let act = self.options.dtype;
        let mut precision = Precision::Exact;
        let weight = match &w {
            HostWeight::Dense { .. } => LinearWeight::Dense(self.dense(name, &w, act, &[n, k])?),
            HostWeight::Quant(q) => {
                q.validate()
                    .map_err(|m| LoadError::tensor(&origin, name, m))?;
                let wanted = self.options.precision;
                let mut supported = self.device.supports(&q.op_desc(act, act, wanted));
                precision = wanted;
                if supported.is_err() && self.options.precision_fallback {
                    supported = self.device.supports(&q.op_desc(act, act, Precision::Exact));
                    precision = Precision::Exact;
                }
                supported.map_err(|u| {
                    LoadError::tensor(
                        &origin,
                        name,
                        format!("device {} cannot run it: {u}", self.device.name()),
                    )
                })?;
                self.bytes += q.storage_bytes();
                LinearWeight::Quant(self.device.pack(q)?)
            }
        };
        Ok(Linear {
            weight,
            bias: None,
            n,
            precision,
        })
    }

    fn linear(&mut self, names: &[String], k: usize, bias: bool) -> Result<Linear, LoadError> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            parts.push(self.source.require(&format!("{name}.weight"))?);
            self.progress.inc(1);
        }
        let label = names.join("+");
        let w = if parts.len() == 1 {
            parts.remove(0)
        } else {
            HostWeight::concat_rows(&parts).ok_or_else(|| {
                LoadError::tensor(
                    self.source.origin(),
                    &label,
                    "these tensors cannot be fused (different formats or widths)",
                )
            })?
        };
        let n = w.shape().first().copied().unwrap_or(0);
        let mut lin = self.linear_from(&label, w, n, k)?;
        if bias {
            let mut values = Vec::with_capacity(n);
            for name in names {
                let bname = format!("{name}.bias");
                let b = self.source.require(&bname)?;
                values.extend(b.to_f32().ok_or_else(|| {
                    LoadError::tensor(self.source.origin(), &bname, "expected a dense tensor")
                })?);
            }
            if values.len() != n {
                return Err(LoadError::tensor(
                    self.source.origin(),
                    &label,
                    format!("bias has {} elements, expected {n}", values.len()),
                ));
            }
            let host = HostTensor::from_f32(self.options.dtype, &[n], &values);
            lin.bias = Some(Tensor::from_host(self.device, &host)?);
        }
        Ok(lin)
    }
}

impl LlamaModel {
    /// Place a checkpoint's weights on `device`.
    pub fn load(
        checkpoint: &Checkpoint,
        device: Arc<dyn Device>,
        options: LoadOptions,
    ) -> Result<LlamaModel, LoadError> {
        Self::load_from(
            &checkpoint.config,
            checkpoint.source.as_ref(),
            device,
            options,
        )
    }

    /// Place weights from `source` on `device`.
    pub fn load_from(
        config: &ModelConfig,
        source: &dyn WeightSource,
        device: Arc<dyn Device>,
        options: LoadOptions,
    ) -> Result<LlamaModel, LoadError> {
        let c = config.clone();
        let names = TensorNames::detect(source);
        let (h, hd) = (c.hidden_size, c.head_dim);
        let per_layer = 9;
        let total = (c.num_layers * per_layer + 3) as u64;
        let progress = if options.progress {
            let pb = ProgressBar::new(total);
            pb.set_style(
                ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} tensors")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            pb.set_message(device.name().to_string());
            pb
        } else {
            ProgressBar::hidden()
        };
        let mut l = Loader {
            device: device.as_ref(),
            source,
            options,
            bytes: 0,
            progress,
        };
        let origin = source.origin().to_string();

        let embed_w = source.require(names.embed())?;
        l.progress.inc(1);
        if embed_w.shape() != [c.vocab_size, h] {
            return Err(LoadError::tensor(
                &origin,
                names.embed(),
                format!(
                    "shape {:?}, expected [{}, {h}]",
                    embed_w.shape(),
                    c.vocab_size
                ),
            ));
        }
        let tied = !source.contains(names.output());
        let embedding = match &embed_w {
            HostWeight::Dense { .. } => EmbeddingWeight::Dense(l.dense(
                names.embed(),
                &embed_w,
                options.dtype,
                &[c.vocab_size, h],
            )?),
            HostWeight::Quant(_) => {
                let lin = l.linear_from(names.embed(), embed_w, c.vocab_size, h)?;
                match lin.weight {
                    LinearWeight::Quant(p) => EmbeddingWeight::Quant(p, lin.precision),
                    LinearWeight::Dense(t) => EmbeddingWeight::Dense(t),
                }
            }
        };

        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let n = |what: &str| {
                names
                    .layer(i, what, "weight")
                    .trim_end_matches(".weight")
                    .to_string()
            };
            let attn_norm = l.norm(&names.layer(i, "attn_norm", "weight"), h)?;
            let q = l.linear(&[n("q")], h, c.attention_bias)?;
            let k = l.linear(&[n("k")], h, c.attention_bias)?;
            let v = l.linear(&[n("v")], h, c.attention_bias)?;
            for (lin, want, what) in [
                (&q, c.num_heads * hd, "q"),
                (&k, c.num_kv_heads * hd, "k"),
                (&v, c.num_kv_heads * hd, "v"),
            ] {
                if lin.n != want {
                    return Err(LoadError::tensor(
                        &origin,
                        &n(what),
                        format!("{} output features, expected {want}", lin.n),
                    ));
                }
            }
            let o = l.linear(&[n("o")], c.num_heads * hd, false)?;
            let ffn_norm = l.norm(&names.layer(i, "ffn_norm", "weight"), h)?;
            let gate_up = l.linear(&[n("gate"), n("up")], h, false)?;
            if gate_up.n != 2 * c.intermediate_size || o.n != h {
                return Err(LoadError::tensor(
                    &origin,
                    &n("gate"),
                    "MLP or output projection widths do not match the configuration",
                ));
            }
            let down = l.linear(&[n("down")], c.intermediate_size, false)?;
            if down.n != h {
                return Err(LoadError::tensor(&origin, &n("down"), "wrong output width"));
            }
            layers.push(Layer {
                attn_norm,
                q,
                k,
                v,
                o,
                ffn_norm,
                gate_up,
                down,
            });
        }
        let norm = l.norm(names.norm(), h)?;
        let lm_head = if tied {
            None
        } else {
            let out_name = names.output().trim_end_matches(".weight").to_string();
            Some(l.linear(&[out_name], h, false)?)
        };
        l.progress.finish_and_clear();

        let rot = hd;
        let table =
            hal::rope_table::cos_sin_table(rot, c.max_position, c.rope_theta, c.rope_scaling);
        let cos_sin = Tensor::from_host(
            device.as_ref(),
            &HostTensor::from_f32(DType::F32, &[c.max_position, rot], &table),
        )?;
        let mut attention = AttentionParams::for_head_dim(hd);
        attention.sliding_window = c.sliding_window;
        let weight_bytes = l.bytes;
        let capture = options.step_capture && device.capabilities().step_capture;
        Ok(LlamaModel {
            config: c,
            device,
            options,
            embedding,
            layers,
            norm,
            lm_head,
            cos_sin,
            attention,
            scratch: None,
            step: None,
            weight_bytes,
            capture,
            tap: None,
        })
    }

    /// Show every linear layer's input to `tap` from the next step on
    /// (`None` stops); returns the previous tap. Steps with a tap run op by
    /// op, never as recorded graphs.
    pub fn set_tap(
        &mut self,
        tap: Option<Box<dyn ActivationTap>>,
    ) -> Result<Option<Box<dyn ActivationTap>>, HalError> {
        if tap.is_some() && self.capture {
            self.capture = false;
            self.device.invalidate_steps()?;
        } else if tap.is_none() {
            self.capture = self.options.step_capture && self.device.capabilities().step_capture;
        }
        Ok(std::mem::replace(&mut self.tap, tap))
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    /// Load options in effect.
    pub fn options(&self) -> LoadOptions {
        self.options
    }

    /// Bytes of weights read per forward pass (as stored in the checkpoint
    /// format, i.e. what a decode step must stream from memory).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    fn scratch(&mut self, tokens: usize) -> Result<&mut Scratch, HalError> {
        let fits = self.scratch.as_ref().is_some_and(|s| s.capacity >= tokens);
        if !fits {
            let cap = tokens.next_power_of_two().max(16);
            let c = &self.config;
            let d = self.device.as_ref();
            let act = self.options.dtype;
            let a = |cols: usize| Tensor::alloc(d, act, &[cap, cols]);
            self.scratch = Some(Scratch {
                capacity: cap,
                residual: a(c.hidden_size)?,
                x: a(c.hidden_size)?,
                normed: a(c.hidden_size)?,
                q: a(c.num_heads * c.head_dim)?,
                k: a(c.num_kv_heads * c.head_dim)?,
                v: a(c.num_kv_heads * c.head_dim)?,
                attn: a(c.num_heads * c.head_dim)?,
                gate_up: a(2 * c.intermediate_size)?,
                act: a(c.intermediate_size)?,
            });
        }
        self.scratch
            .as_mut()
            .ok_or_else(|| HalError::invalid(self.device.name(), "forward", "no scratch"))
    }

    /// Run one step over `caches` (one per layer) and return the logits of
    /// the requested rows, f32 row-major `[S, vocab]`.
    pub fn forward(
        &mut self,
        caches: &mut [KvCache],
        batch: &ForwardBatch<'_>,
    ) -> Result<Vec<f32>, HalError> {
        let t = batch.token_ids.len();
        let s = batch.logit_rows.len();
        let dev_name = self.device.name().to_string();
        if t == 0 || batch.positions.len() != t || caches.len() != self.layers.len() {
            return Err(HalError::invalid(
                &dev_name,
                "forward",
                format!(
                    "{t} tokens, {} positions, {} caches for {} layers",
                    batch.positions.len(),
                    caches.len(),
                    self.layers.len()
                ),
            ));
        }
        let c = self.config.clone();
        let h = c.hidden_size;
        let device = Arc::clone(&self.device);
        let d = device.as_ref();
        let act = self.options.dtype;

        // Every upload and allocation of the step happens here, before any
        // op: a step recorded as a graph then reads the same buffers when it
        // is replayed, and a reallocation invalidates the recordings.
        let before = self.buffer_signature();
        if self.step.is_none() {
            self.step = Some(StepBuffers::new(d, act)?);
        }
        let Some(step) = self.step.as_mut() else {
            return Err(HalError::invalid(&dev_name, "forward", "no step buffers"));
        };
        let ids_bytes: Vec<u8> = batch
            .token_ids
            .iter()
            .flat_map(|&x| (x as i32).to_le_bytes())
            .collect();
        step.ids.refill(d, DType::I32, &[t], &ids_bytes)?;
        let pos_bytes: Vec<u8> = batch
            .positions
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        step.positions.refill(d, DType::I64, &[t], &pos_bytes)?;
        step.meta.update(d, batch.attention)?;
        let rows_bytes: Vec<u8> = batch
            .logit_rows
            .iter()
            .flat_map(|&r| (r as i32).to_le_bytes())
            .collect();
        step.rows.refill(d, DType::I32, &[s], &rows_bytes)?;
        step.gathered.reshape_for(d, act, &[s, h])?;
        step.logits.reshape_for(d, act, &[s, c.vocab_size])?;
        self.scratch(t)?;
        if self.capture && self.buffer_signature() != before {
            d.invalidate_steps()?;
        }

        let attention = batch.attention;
        let key = StepKey {
            num_tokens: t,
            num_seqs: attention.num_seqs(),
            max_query_len: attention.max_query_len(),
            max_blocks_per_seq: attention.max_blocks_per_seq,
        };
        // Pure decode steps are captured: their shapes repeat.
        let capturable = self.capture && key.max_query_len == 1 && s == t;
        let mode = if capturable {
            match d.begin_step(&key) {
                Ok(mode) => mode,
                Err(e) => {
                    self.stop_capture(&e);
                    StepMode::Eager
                }
            }
        } else {
            StepMode::Eager
        };
        match mode {
            StepMode::Replay => d.replay_step(&key)?,
            StepMode::Eager => {
                self.run_step(caches, batch)?;
                if capturable {
                    d.end_step(&key)?;
                }
            }
            StepMode::Record => {
                // The ops are recorded, not run; `end_step` runs the graph.
                let ran = self.run_step(caches, batch);
                let ended = d.end_step(&key);
                if let Some(e) = ran.err().or(ended.err()) {
                    self.stop_capture(&e);
                    self.run_step(caches, batch)?;
                }
            }
        }
        if s == 0 {
            return Ok(Vec::new());
        }
        let Some(step) = self.step.as_mut() else {
            return Err(HalError::invalid(&dev_name, "forward", "no step buffers"));
        };
        d.synchronize()?;
        step.host.resize(act.bytes_for(s * c.vocab_size), 0);
        d.download(&step.logits.buffer, 0, &mut step.host)?;
        Ok(widen(act, &step.host))
    }

    /// Lengths of every buffer a step uses and the scratch capacity: a
    /// change means a buffer was reallocated.
    fn buffer_signature(&self) -> Vec<usize> {
        let mut sig = vec![self.scratch.as_ref().map_or(0, |s| s.capacity)];
        if let Some(st) = &self.step {
            for t in [
                &st.ids,
                &st.positions,
                &st.rows,
                &st.meta.query_start_loc,
                &st.meta.seq_lens,
                &st.meta.block_tables,
                &st.meta.slot_mapping,
                &st.gathered,
                &st.logits,
            ] {
                sig.push(t.buffer.len());
            }
        }
        sig
    }

    /// Stop recording steps after a capture failed (this step and every
    /// later one then run op by op).
    fn stop_capture(&mut self, e: &HalError) {
        self.capture = false;
        let _ = self.device.invalidate_steps();
        tracing::warn!(
            device = self.device.name(),
            error = %e,
            "step capture failed; running steps op by op"
        );
    }

    /// Issue every op of a step whose inputs `forward` has uploaded.
    fn run_step(
        &mut self,
        caches: &mut [KvCache],
        batch: &ForwardBatch<'_>,
    ) -> Result<(), HalError> {
        let t = batch.token_ids.len();
        let s = batch.logit_rows.len();
        let dev_name = self.device.name().to_string();
        let c = self.config.clone();
        let (h, hd, nh, nkv, inter) = (
            c.hidden_size,
            c.head_dim,
            c.num_heads,
            c.num_kv_heads,
            c.intermediate_size,
        );
        let device = Arc::clone(&self.device);
        let d = device.as_ref();
        let eps = c.rms_norm_eps;
        let params = self.attention;
        // Split borrows: weights (immutable) and scratch (mutable).
        let LlamaModel {
            embedding,
            layers,
            norm,
            lm_head,
            cos_sin,
            scratch,
            step,
            tap,
            ..
        } = self;
        let step = step
            .as_mut()
            .ok_or_else(|| HalError::invalid(&dev_name, "forward", "no step buffers"))?;
        let StepBuffers {
            ids,
            positions,
            rows,
            meta,
            gathered,
            logits,
            ..
        } = step;
        let sc = scratch
            .as_mut()
            .ok_or_else(|| HalError::invalid(&dev_name, "forward", "no scratch"))?;
        let Scratch {
            residual,
            x,
            normed,
            q,
            k,
            v,
            attn,
            gate_up,
            act: mlp_act,
            ..
        } = sc;

        let table = match &*embedding {
            EmbeddingWeight::Dense(t) => EmbeddingTable::Dense(t.view()),
            EmbeddingWeight::Quant(p, _) => EmbeddingTable::Quant(p),
        };
        d.embedding(EmbeddingArgs {
            ids: ids.view(),
            table: table.clone(),
            out: vm(residual, &[t, h]),
        })?;

        for (li, (layer, cache)) in layers.iter().zip(caches.iter_mut()).enumerate() {
            if li == 0 {
                d.rms_norm(RmsNormArgs {
                    x: vw(residual, &[t, h]),
                    residual: None,
                    weight: layer.attn_norm.view(),
                    eps,
                    out: vm(normed, &[t, h]),
                })?;
            } else {
                d.rms_norm(RmsNormArgs {
                    x: vw(x, &[t, h]),
                    residual: Some(vm(residual, &[t, h])),
                    weight: layer.attn_norm.view(),
                    eps,
                    out: vm(normed, &[t, h]),
                })?;
            }
            tap_input(d, tap, li, LinearSite::Qkv, normed, t, h)?;
            linear(d, &layer.q, vw(normed, &[t, h]), vm(q, &[t, nh * hd]))?;
            linear(d, &layer.k, vw(normed, &[t, h]), vm(k, &[t, nkv * hd]))?;
            linear(d, &layer.v, vw(normed, &[t, h]), vm(v, &[t, nkv * hd]))?;
            d.rope(RopeArgs {
                positions: positions.view(),
                q: vm(q, &[t, nh, hd]),
                k: vm(k, &[t, nkv, hd]),
                cos_sin_cache: cos_sin.view(),
                style: c.rope_style,
            })?;
            d.write_kv(WriteKvArgs {
                key: vw(k, &[t, nkv, hd]),
                value: vw(v, &[t, nkv, hd]),
                slot_mapping: meta.slot_mapping.view(),
                cache,
            })?;
            d.paged_attention(PagedAttentionArgs {
                q: vw(q, &[t, nh, hd]),
                cache,
                meta: meta.metadata(),
                params,
                out: vm(attn, &[t, nh, hd]),
            })?;
            tap_input(d, tap, li, LinearSite::O, attn, t, nh * hd)?;
            linear(d, &layer.o, vw(attn, &[t, nh * hd]), vm(x, &[t, h]))?;
            d.rms_norm(RmsNormArgs {
                x: vw(x, &[t, h]),
                residual: Some(vm(residual, &[t, h])),
                weight: layer.ffn_norm.view(),
                eps,
                out: vm(normed, &[t, h]),
            })?;
            tap_input(d, tap, li, LinearSite::GateUp, normed, t, h)?;
            linear(
                d,
                &layer.gate_up,
                vw(normed, &[t, h]),
                vm(gate_up, &[t, 2 * inter]),
            )?;
            d.silu_and_mul(SiluAndMulArgs {
                x: vw(gate_up, &[t, 2 * inter]),
                out: vm(mlp_act, &[t, inter]),
            })?;
            tap_input(d, tap, li, LinearSite::Down, mlp_act, t, inter)?;
            linear(d, &layer.down, vw(mlp_act, &[t, inter]), vm(x, &[t, h]))?;
        }
        d.rms_norm(RmsNormArgs {
            x: vw(x, &[t, h]),
            residual: Some(vm(residual, &[t, h])),
            weight: norm.view(),
            eps,
            out: vm(normed, &[t, h]),
        })?;
        if s == 0 {
            return Ok(());
        }
        d.embedding(EmbeddingArgs {
            ids: rows.view(),
            table: EmbeddingTable::Dense(vw(normed, &[t, h])),
            out: gathered.view_mut(),
        })?;
        // Logits come out in the activation dtype and are widened on the host.
        match (&*lm_head, &*embedding) {
            (Some(head), _) => linear(d, head, gathered.view(), logits.view_mut())?,
            (None, EmbeddingWeight::Quant(p, precision)) => d.quant_gemm(QuantGemmArgs {
                x: gathered.view(),
                w: p,
                bias: None,
                out: logits.view_mut(),
                precision: *precision,
            })?,
            (None, EmbeddingWeight::Dense(w)) => d.gemm(GemmArgs {
                x: gathered.view(),
                w: w.view(),
                bias: None,
                out: logits.view_mut(),
            })?,
        }
        Ok(())
    }
}

/// Little-endian `dtype` bytes as f32.
fn widen(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

fn vw<'a>(t: &'a Tensor, shape: &[usize]) -> View<'a> {
    View {
        buffer: &t.buffer,
        dtype: t.dtype,
        layout: Layout::contiguous(shape),
    }
}

fn vm<'a>(t: &'a mut Tensor, shape: &[usize]) -> ViewMut<'a> {
    ViewMut {
        buffer: &mut t.buffer,
        dtype: t.dtype,
        layout: Layout::contiguous(shape),
    }
}

fn linear(d: &dyn Device, l: &Linear, x: View<'_>, out: ViewMut<'_>) -> Result<(), HalError> {
    let bias = l.bias.as_ref().map(Tensor::view);
    match &l.weight {
        LinearWeight::Dense(w) => d.gemm(GemmArgs {
            x,
            w: w.view(),
            bias,
            out,
        }),
        LinearWeight::Quant(p) => d.quant_gemm(QuantGemmArgs {
            x,
            w: p,
            bias,
            out,
            precision: l.precision,
        }),
    }
}
