//! The engine against golden data from an independent implementation
//! (`tests/golden/make_golden.py`: numpy and the `gguf` package, its own
//! tokenizer, RoPE and forward pass): same token ids, and logits within
//! 1e-3 · max|logit| along the golden token path, computed both as one
//! prefill and token by token as decoding does.

mod common;

use kiln::sampler::SamplingParams;
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/smollm2_135m_q4_1.json"
    ))
    .expect("golden data is committed");
    serde_json::from_str(&text).expect("golden data is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn engine_matches_the_independent_reference() {
    let g = golden();
    let mut engine = common::exact_engine();
    let tok = engine.tokenizer().clone();
    for p in g["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let prompt = ids(&p["prompt_ids"]);
        assert_eq!(
            tok.encode(text, true).unwrap(),
            prompt,
            "token ids of {text:?}"
        );
        let steps = p["steps"].as_array().unwrap();
        let generated: Vec<u32> = steps
            .iter()
            .map(|s| s["token"].as_u64().unwrap() as u32)
            .collect();
        let mut tokens = prompt.clone();
        tokens.extend_from_slice(&generated[..steps.len() - 1]);
        let rows: Vec<usize> = (0..steps.len()).map(|i| prompt.len() - 1 + i).collect();

        for chunk in [usize::MAX, 1] {
            let logits = engine.score(&tokens, &rows, chunk).unwrap();
            let mut worst = 0f64;
            for (step, (s, row)) in steps.iter().zip(&logits).enumerate() {
                let max_abs = s["max_abs_logit"].as_f64().unwrap();
                let tol = 1e-3 * max_abs;
                for pair in s["top"].as_array().unwrap() {
                    let id = pair[0].as_u64().unwrap() as usize;
                    let want = pair[1].as_f64().unwrap();
                    let got = f64::from(row[id]);
                    let d = (got - want).abs();
                    worst = worst.max(d / max_abs);
                    assert!(
                        d <= tol,
                        "{text:?} step {step} token {id}: logit {got} vs reference {want} (|Δ| {d:.2e} > {tol:.2e}, chunk {chunk})"
                    );
                }
            }
            eprintln!("{text:?} chunk {chunk}: worst |Δlogit| / max|logit| = {worst:.2e}");
        }

        // Greedy decoding follows the reference path wherever the
        // reference's top two logits are clearly apart.
        let params = SamplingParams {
            temperature: 0.0,
            max_tokens: steps.len(),
            ignore_eos: true,
            ..SamplingParams::default()
        };
        let out = engine
            .generate(std::slice::from_ref(&prompt), &params)
            .unwrap()
            .remove(0);
        for (step, s) in steps.iter().enumerate() {
            let top = s["top"].as_array().unwrap();
            let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            if gap < 2e-3 * s["max_abs_logit"].as_f64().unwrap() {
                break;
            }
            assert_eq!(
                out.tokens[step], generated[step],
                "{text:?}: greedy token {step}"
            );
        }
    }
}
