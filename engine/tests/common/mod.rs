//! Shared set-up of the engine's integration tests.

#![allow(dead_code)]

use std::sync::Arc;

use kiln::engine::{Engine, EngineConfig};
use kiln::kv::{CacheConfig, CacheDtype};
use kiln::model::{fetch, Checkpoint, LoadOptions};
use kiln::scheduler::SchedulerConfig;

/// The CPU backend with every core.
pub fn cpu() -> Arc<dyn hal::Device> {
    Arc::new(kernels_cpu::CpuBackend::open_default().expect("the CPU backend opens"))
}

/// The default model (the test command installs it; fetched if missing).
pub fn default_checkpoint() -> Checkpoint {
    let path = fetch::ensure_default_model(false)
        .expect("the default model is available (bash ci/test.sh installs it)");
    Checkpoint::open(&path).expect("the default model loads")
}

/// An engine on the default model with this cache config.
pub fn engine_with(cache: CacheConfig, scheduler: SchedulerConfig) -> Engine {
    Engine::new(
        default_checkpoint(),
        cpu(),
        EngineConfig {
            cache,
            scheduler,
            load: LoadOptions {
                progress: false,
                ..LoadOptions::default()
            },
        },
    )
    .expect("engine starts")
}

/// Exact-f32 engine: f32 activations, f32 KV cache.
pub fn exact_engine() -> Engine {
    engine_with(
        CacheConfig {
            memory_bytes: 256 << 20,
            dtype: CacheDtype::F32,
            ..CacheConfig::default()
        },
        SchedulerConfig::default(),
    )
}
