//! Batch invariance on the CPU backend: 16 different prompts decoded
//! greedily together give exactly the tokens each gives alone, also when the
//! KV cache is so small that sequences are preempted and recomputed.

mod common;

use kiln::kv::CacheConfig;
use kiln::sampler::SamplingParams;
use kiln::scheduler::SchedulerConfig;

const PROMPTS: [&str; 16] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colours are",
    "In 1969, Apollo 11",
    "My favourite recipe for pancakes uses",
    "The quick brown fox",
    "Water boils at",
    "A haiku about autumn:",
    "The largest planet in the solar system is",
    "To be or not to be,",
    "SELECT name FROM users WHERE",
    "The speed of light is approximately",
    "Photosynthesis is the process by which",
    "1, 1, 2, 3, 5, 8,",
    "Dear hiring manager, I am writing to",
];

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens: 12,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

#[test]
fn batched_greedy_equals_alone_even_with_preemption() {
    let mut engine = common::engine_with(CacheConfig::default(), SchedulerConfig::default());
    let tok = engine.tokenizer().clone();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();

    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            engine
                .generate(std::slice::from_ref(p), &params())
                .unwrap()
                .remove(0)
                .tokens
        })
        .collect();
    let batched = engine.generate(&prompts, &params()).unwrap();
    for (i, c) in batched.iter().enumerate() {
        assert_eq!(c.tokens, alone[i], "prompt {i} ({:?}) batched", PROMPTS[i]);
    }
    assert_eq!(engine.stats().preemptions, 0);

    // A cache of 12 blocks (16 sequences need ~32): preemption by recompute,
    // and small steps so prefills are chunked too.
    let small = CacheConfig {
        memory_bytes: 12 * CacheConfig::default().bytes_per_block(30, 3, 64),
        ..CacheConfig::default()
    };
    let mut engine = common::engine_with(
        small,
        SchedulerConfig {
            max_num_batched_tokens: 24,
            ..SchedulerConfig::default()
        },
    );
    let squeezed = engine.generate(&prompts, &params()).unwrap();
    let preemptions = engine.stats().preemptions;
    eprintln!("preemptions with a 12-block cache: {preemptions}");
    assert!(preemptions > 0, "the small cache must force preemption");
    for (i, c) in squeezed.iter().enumerate() {
        assert_eq!(
            c.tokens, alone[i],
            "prompt {i} ({:?}) with preemption",
            PROMPTS[i]
        );
    }
    assert_eq!(
        engine.scheduler().kv().num_free_blocks(),
        12,
        "no block leaked"
    );
}
