//! `kiln parity --device NAME [--against cpu]`: run the same model and the
//! same tokens on two devices in one process and compare their logits —
//! a whole-model check of a backend against the reference CPU backend
//! (e.g. on a GPU machine, with `--model synthetic:smollm2-135m:q4_1`, the
//! default model's shapes with seeded random weights).
//!
//! Three passes: the whole prompt as one prefill, the same tokens decoded
//! one at a time (so the decode attention path runs at every length), and
//! greedy generation of a small batch through continuous batching. The
//! first two must agree within `--tolerance` (the largest |Δlogit| over the
//! largest |logit| of each row); the third reports how many generated
//! tokens agree (greedy decoding amplifies last-bit differences, so it is
//! informative, not judged). Both devices run quantised GEMMs at exact
//! precision (`--precision` is ignored here).

use std::time::Instant;

use anyhow::anyhow;
use hal::Registry;

use super::engine_args::EngineArgs;
use super::{CmdResult, Failure};
use crate::engine::Engine;
use crate::sampler::SamplingParams;

/// Arguments of `kiln parity`.
#[derive(Debug, clap::Args)]
pub(crate) struct ParityArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// The reference device the `--device` results are compared with.
    #[arg(long, default_value = "cpu", value_name = "NAME")]
    against: String,

    /// Prompt length in tokens (seeded random ids).
    #[arg(long, default_value_t = 96, value_name = "N")]
    tokens: usize,

    /// Largest allowed max|Δlogit| / max|logit| of any row.
    #[arg(long, default_value_t = 1e-2)]
    tolerance: f64,

    /// Seed of the token ids.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// How two sets of logit rows differ.
#[derive(Debug, Default)]
struct RowStats {
    rows: usize,
    worst_rel: f64,
    argmax_agree: usize,
}

fn compare(test: &[Vec<f32>], reference: &[Vec<f32>]) -> RowStats {
    let mut s = RowStats::default();
    for (a, b) in test.iter().zip(reference) {
        s.rows += 1;
        let scale = b
            .iter()
            .fold(0f64, |m, &v| m.max((v as f64).abs()))
            .max(1e-6);
        let diff = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| {
                if x.is_finite() {
                    (x as f64 - y as f64).abs()
                } else {
                    f64::INFINITY
                }
            })
            .fold(0f64, f64::max);
        s.worst_rel = s.worst_rel.max(diff / scale);
        if argmax(a) == argmax(b) {
            s.argmax_agree += 1;
        }
    }
    s
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Run `kiln parity`.
pub(crate) fn run(registry: &Registry, args: &ParityArgs) -> CmdResult {
    // Both devices run quantised GEMMs at exact precision, so the comparison
    // sees the kernels' accumulation differences and nothing else.
    let mut test_args = args.engine.clone();
    test_args.precision = "exact".into();
    let mut reference_args = test_args.clone();
    reference_args.device = args.against.clone();
    let mut test = test_args.build(registry)?;
    let mut reference = reference_args.build(registry)?;
    let vocab = test.model_config().vocab_size;
    if args.tokens == 0 || args.tokens > test.max_model_len() {
        return Err(Failure::cannot_run(anyhow!(
            "--tokens {} must be between 1 and the context length {}",
            args.tokens,
            test.max_model_len()
        )));
    }
    let mut rng = hal::conformance::Rng::new(args.seed);
    let tokens: Vec<u32> = (0..args.tokens).map(|_| rng.below(vocab) as u32).collect();
    let rows: Vec<usize> = (0..tokens.len()).collect();
    let dev = test.runner().device().name().to_string();
    let refdev = reference.runner().device().name().to_string();
    println!(
        "kiln parity: {} on {dev} against {refdev}, {} tokens, tolerance {:e}",
        test.model_name(),
        tokens.len(),
        args.tolerance
    );
    println!("| pass | rows | max |Δlogit| / max |logit| | argmax agreement | {dev} time | {refdev} time |");
    println!("|---|---|---|---|---|---|");
    let mut failed = false;
    for (name, chunk) in [("prefill", tokens.len()), ("decode", 1)] {
        let t0 = Instant::now();
        let a = score(&mut test, &tokens, &rows, chunk)?;
        let ta = t0.elapsed();
        let t1 = Instant::now();
        let b = score(&mut reference, &tokens, &rows, chunk)?;
        let tb = t1.elapsed();
        let s = compare(&a, &b);
        let ok = s.worst_rel <= args.tolerance;
        failed |= !ok;
        println!(
            "| {name} | {} | {:.2e}{} | {}/{} | {:.3} s | {:.3} s |",
            s.rows,
            s.worst_rel,
            if ok { "" } else { " FAIL" },
            s.argmax_agree,
            s.rows,
            ta.as_secs_f64(),
            tb.as_secs_f64()
        );
    }
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| tokens[..(tokens.len() / (i + 1)).max(1)].to_vec())
        .collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: 16,
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let t0 = Instant::now();
    let ga = test
        .generate(&prompts, &params)
        .map_err(|e| Failure::error(anyhow!("generate on {dev}: {e}")))?;
    let ta = t0.elapsed();
    let t1 = Instant::now();
    let gb = reference
        .generate(&prompts, &params)
        .map_err(|e| Failure::error(anyhow!("generate on {refdev}: {e}")))?;
    let tb = t1.elapsed();
    let (mut same, mut total) = (0, 0);
    for (a, b) in ga.iter().zip(&gb) {
        let prefix = a
            .tokens
            .iter()
            .zip(&b.tokens)
            .take_while(|(x, y)| x == y)
            .count();
        same += prefix;
        total += b.tokens.len();
    }
    println!(
        "| greedy batch of {} | {total} tokens | — | {same}/{total} identical prefix tokens | {:.3} s | {:.3} s |",
        prompts.len(),
        ta.as_secs_f64(),
        tb.as_secs_f64()
    );
    if failed {
        eprintln!(
            "kiln parity: {dev} differs from {refdev} by more than {:e}",
            args.tolerance
        );
        return Err(Failure::reported());
    }
    println!("kiln parity: ok");
    Ok(())
}

fn score(
    engine: &mut Engine,
    tokens: &[u32],
    rows: &[usize],
    chunk: usize,
) -> Result<Vec<Vec<f32>>, Failure> {
    let dev = engine.runner().device().name().to_string();
    engine
        .score(tokens, rows, chunk)
        .map_err(|e| Failure::error(anyhow!("scoring on {dev}: {e}")))
}
