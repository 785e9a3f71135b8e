//! Prefix caching: a second request sharing a prompt prefix reuses the full
//! KV blocks of the first and skips their prefill, with identical output.

mod common;

use kiln::kv::CacheConfig;
use kiln::sampler::SamplingParams;

#[test]
fn second_request_skips_the_shared_full_blocks() {
    let mut engine = common::engine_with(CacheConfig::default(), Default::default());
    let tok = engine.tokenizer().clone();
    let system = "You are a careful assistant. Answer in one short sentence, \
                  without preamble, and never invent facts you are unsure of. ";
    let a = tok
        .encode(
            &format!("{system}Question: what is the capital of Italy?"),
            true,
        )
        .unwrap();
    let b = tok
        .encode(
            &format!("{system}Question: what is the capital of Spain?"),
            true,
        )
        .unwrap();
    let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let full_blocks = shared / 16;
    assert!(full_blocks >= 1, "the prompts share {shared} tokens");
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 6,
        ..SamplingParams::default()
    };

    let first = engine.generate(&[a], &params).unwrap().remove(0);
    assert_eq!(first.cached_tokens, 0);
    let computed_before = engine.stats().prompt_tokens;
    let second = engine
        .generate(std::slice::from_ref(&b), &params)
        .unwrap()
        .remove(0);
    let computed = engine.stats().prompt_tokens - computed_before;
    eprintln!(
        "shared {shared} tokens; second request: {} of {} prompt tokens from the cache, {computed} computed",
        second.cached_tokens,
        b.len()
    );
    assert_eq!(second.cached_tokens, full_blocks * 16);
    assert_eq!(computed as usize, b.len() - full_blocks * 16);
    let stats = engine.stats();
    assert!(stats.prefix_hits >= full_blocks as u64);

    // Same output as without the cache.
    let mut cold = common::engine_with(
        CacheConfig {
            prefix_caching: false,
            ..CacheConfig::default()
        },
        Default::default(),
    );
    let reference = cold.generate(&[b], &params).unwrap().remove(0);
    assert_eq!(second.tokens, reference.tokens);
    assert_eq!(second.text, reference.text);
}
