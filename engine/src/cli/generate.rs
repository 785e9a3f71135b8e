//! `kiln generate`: run prompts through the engine from the command line,
//! one streamed interactively or many at once through continuous batching,
//! and an offline throughput mode.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use hal::Registry;

use super::engine_args::EngineArgs;
use super::{CmdResult, Failure};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::engine::{Completion, Engine};
use crate::sampler::SamplingParams;

/// Arguments of `kiln generate`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenerateArgs {
    /// Prompts; each runs as its own request.
    #[arg(value_name = "PROMPT")]
    prompts: Vec<String>,

    /// Read prompts from a file, one per line (blank lines skipped).
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,

    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,

    /// Offline throughput mode: run N distinct prompts at once (built from
    /// the given prompt or a default one), ignoring EOS, and report
    /// requests/s and tokens/s.
    #[arg(long, value_name = "N")]
    throughput: Option<usize>,

    /// Tokens to generate per prompt.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_tokens: usize,

    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,

    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,

    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: i32,

    /// Drop tokens less likely than min_p × the most likely one.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,

    /// Penalise tokens seen in the prompt or output (> 1 discourages).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,

    /// Penalise generated tokens by how often they occur.
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,

    /// Penalise generated tokens that occurred at all.
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,

    /// Random seed (same seed, same output).
    #[arg(long)]
    seed: Option<u64>,

    /// Stop when this string is generated (repeatable; not printed).
    #[arg(long, value_name = "TEXT")]
    stop: Vec<String>,

    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,

    /// Generate at least this many tokens before any stop condition.
    #[arg(long, default_value_t = 0)]
    min_tokens: usize,

    #[command(flatten)]
    engine: EngineArgs,
}

impl GenerateArgs {
    fn params(&self) -> SamplingParams {
        SamplingParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos || self.throughput.is_some(),
            min_tokens: self.min_tokens,
            ..SamplingParams::default()
        }
    }

    fn prompts(&self) -> Result<Vec<String>, Failure> {
        let mut prompts = self.prompts.clone();
        if let Some(f) = &self.file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Failure::cannot_run(anyhow!("{}: {e}", f.display())))?;
            prompts.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
        if let Some(n) = self.throughput {
            if n == 0 {
                return Err(Failure::cannot_run(anyhow!(
                    "--throughput must be at least 1"
                )));
            }
            let base = prompts.first().cloned().unwrap_or_else(|| {
                "Write a detailed essay about the history of bread, from the first \
                 flatbreads of the Neolithic to modern industrial bakeries."
                    .to_string()
            });
            // Distinct from the first token on, so no prefix-cache hits.
            prompts = (0..n).map(|i| format!("{i}. {base}")).collect();
        }
        if prompts.is_empty() {
            return Err(Failure::cannot_run(anyhow!(
                "no prompt: give one as an argument, or --file FILE, or --throughput N"
            )));
        }
        Ok(prompts)
    }
}

/// Run `kiln generate`.
pub(crate) fn run(registry: &Registry, args: &GenerateArgs) -> CmdResult {
    let params = args.params();
    let prompts = args.prompts()?;
    let mut engine = args.engine.build(registry)?;
    let tok = engine.tokenizer().clone();
    let template = if args.chat {
        let source = tok.chat_template().ok_or_else(|| {
            Failure::cannot_run(anyhow!("--chat: the model has no chat template"))
        })?;
        Some(
            ChatTemplate::new(source, tok.bos_token(), tok.eos_token())
                .map_err(|e| Failure::cannot_run(anyhow!(e)))?,
        )
    } else {
        None
    };
    let mut encoded = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let text = match &template {
            Some(t) => t
                .render(
                    &[ChatMessage {
                        role: "user".into(),
                        content: p.clone(),
                    }],
                    true,
                )
                .map_err(|e| Failure::cannot_run(anyhow!(e)))?,
            None => p.clone(),
        };
        let ids = tok
            .encode(&text, true)
            .map_err(|e| Failure::cannot_run(anyhow!(e)))?;
        encoded.push(ids);
    }
    for ids in &encoded {
        engine
            .validate_request(ids, &params)
            .map_err(|e| Failure::cannot_run(anyhow!(e)))?;
    }
    if encoded.len() == 1 && args.throughput.is_none() {
        stream_one(&mut engine, encoded.remove(0), params)
    } else {
        run_batch(
            &mut engine,
            &prompts,
            &encoded,
            &params,
            args.throughput.is_some(),
        )
    }
}

fn stream_one(engine: &mut Engine, prompt: Vec<u32>, params: SamplingParams) -> CmdResult {
    let n_prompt = prompt.len();
    let t0 = Instant::now();
    engine
        .add_request(prompt, params)
        .map_err(|e| Failure::cannot_run(anyhow!(e)))?;
    let mut out = std::io::stdout().lock();
    let mut first: Option<Instant> = None;
    let mut generated = 0usize;
    let mut finish = None;
    while engine.has_unfinished() {
        for o in engine.step().map_err(|e| Failure::error(anyhow!(e)))? {
            if !o.tokens.is_empty() && first.is_none() {
                first = Some(Instant::now());
            }
            generated += o.tokens.len();
            let _ = out.write_all(o.text.as_bytes());
            let _ = out.flush();
            if o.finish.is_some() {
                finish = o.finish;
            }
        }
    }
    let _ = writeln!(out);
    let end = Instant::now();
    let ttft = first.map_or(0.0, |f| (f - t0).as_secs_f64());
    let decode_s = first.map_or(0.0, |f| (end - f).as_secs_f64());
    let decode_tps = if generated > 1 && decode_s > 0.0 {
        (generated - 1) as f64 / decode_s
    } else {
        0.0
    };
    if let Some(e) = finish.as_ref().and_then(|f| f.error.clone()) {
        return Err(Failure::error(anyhow!(e)));
    }
    eprintln!(
        "kiln: {n_prompt} prompt tokens, {generated} generated ({}); TTFT {:.1} ms, decode {:.1} tokens/s ({:.2} ms/token), total {:.2}s",
        finish.map_or("unfinished", |f| f.reason.as_str()),
        ttft * 1e3,
        decode_tps,
        if decode_tps > 0.0 { 1e3 / decode_tps } else { 0.0 },
        (end - t0).as_secs_f64(),
    );
    Ok(())
}

fn run_batch(
    engine: &mut Engine,
    prompts: &[String],
    encoded: &[Vec<u32>],
    params: &SamplingParams,
    quiet: bool,
) -> CmdResult {
    let t0 = Instant::now();
    let completions: Vec<Completion> = engine
        .generate(encoded, params)
        .map_err(|e| Failure::error(anyhow!(e)))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut out = String::new();
    let (mut n_out, mut n_in) = (0usize, 0usize);
    for (i, (c, p)) in completions.iter().zip(prompts).enumerate() {
        n_out += c.tokens.len();
        n_in += c.prompt_tokens;
        if !quiet {
            out.push_str(&format!(
                "[{i}] {p}\n    → {}\n",
                c.text.replace('\n', "\n      ")
            ));
        }
        if let Some(e) = c.finish.as_ref().and_then(|f| f.error.clone()) {
            return Err(Failure::error(anyhow!("prompt {i}: {e}")));
        }
    }
    super::print_stdout(&out)?;
    let stats = engine.stats();
    eprintln!(
        "kiln: {} requests in {:.2}s: {:.2} requests/s, {:.1} output tokens/s, {:.1} total tokens/s ({} prompt + {} generated tokens; {} steps, {} preemptions)",
        completions.len(),
        elapsed,
        completions.len() as f64 / elapsed,
        n_out as f64 / elapsed,
        (n_in + n_out) as f64 / elapsed,
        n_in,
        n_out,
        stats.steps,
        stats.preemptions,
    );
    Ok(())
}
