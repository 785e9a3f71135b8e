//! The default model on `tpu:0` (XLA's CPU PJRT plugin where there is no TPU):
//! greedy output equals the CPU backend's, token for token.
//!
//! With no PJRT plugin the test prints why and passes; with
//! `KILN_REQUIRE_TPU=1` (set in CI) a missing plugin is a failure.

mod common;

use std::sync::Arc;

use kiln::engine::{Engine, EngineConfig};
use kiln::model::LoadOptions;
use kiln::sampler::SamplingParams;

/// `tpu:0`, or `None` (after printing why) when there is no PJRT plugin and
/// the environment does not require one.
fn tpu_device() -> Option<Arc<dyn hal::Device>> {
    match kernels_tpu::open_default() {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            let required = std::env::var("KILN_REQUIRE_TPU").is_ok_and(|v| v == "1");
            assert!(!required, "KILN_REQUIRE_TPU=1 but tpu:0 did not open: {e}");
            println!("skipped: tpu:0 did not open: {e}");
            None
        }
    }
}

fn engine_on(device: Arc<dyn hal::Device>) -> Engine {
    Engine::new(
        common::default_checkpoint(),
        device,
        EngineConfig {
            cache: Default::default(),
            scheduler: Default::default(),
            load: LoadOptions {
                progress: false,
                ..LoadOptions::default()
            },
        },
    )
    .expect("engine starts")
}

#[test]
fn greedy_output_on_tpu_equals_cpu() {
    let Some(device) = tpu_device() else {
        return;
    };
    let mut tpu = engine_on(device);
    let mut cpu = engine_on(common::cpu());
    let tok = cpu.tokenizer().clone();
    let greedy = SamplingParams {
        temperature: 0.0,
        max_tokens: 8,
        ..SamplingParams::default()
    };
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Water boils at a temperature of",
    ];
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tok.encode(p, true).expect("prompt encodes"))
        .collect();
    // One batch: a mixed prefill and decode of three sequences per step.
    let want = cpu.generate(&ids, &greedy).expect("cpu generates");
    let got = tpu.generate(&ids, &greedy).expect("tpu generates");
    for ((prompt, w), g) in prompts.iter().zip(&want).zip(&got) {
        assert_eq!(
            g.tokens, w.tokens,
            "{prompt:?}: tpu {:?} vs cpu {:?}",
            g.text, w.text
        );
    }
    assert!(got[0].text.starts_with(" Paris"), "{:?}", got[0].text);
}
