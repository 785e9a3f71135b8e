//! `kiln perplexity --text FILE`: a model's perplexity on a text with a
//! sliding window, so quantised formats can be compared on equal terms.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use hal::Registry;

use super::engine_args::EngineArgs;
use super::{print_stdout, CmdResult, Failure};
use crate::perplexity::perplexity;

/// Arguments of `kiln perplexity`.
#[derive(Debug, clap::Args)]
pub(crate) struct PerplexityArgs {
    #[command(flatten)]
    engine: EngineArgs,

    /// The text (UTF-8).
    #[arg(long, value_name = "FILE")]
    text: PathBuf,

    /// Tokens per window.
    #[arg(long, default_value_t = 512, value_name = "N")]
    window: usize,

    /// Tokens between window starts (each token is scored once).
    #[arg(long, default_value_t = 256, value_name = "N")]
    stride: usize,

    /// Score at most this many tokens of the text.
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Run `kiln perplexity`.
pub(crate) fn run(registry: &Registry, args: &PerplexityArgs) -> CmdResult {
    let bad = |m: String| Failure::cannot_run(anyhow!(m));
    if args.window < 2 || args.stride == 0 || args.stride > args.window {
        return Err(bad(format!(
            "--window {} must be at least 2 and --stride {} between 1 and the window",
            args.window, args.stride
        )));
    }
    let text = std::fs::read_to_string(&args.text)
        .map_err(|e| bad(format!("{}: {e}", args.text.display())))?;
    let mut engine = args.engine.build(registry)?;
    if args.window > engine.max_model_len() {
        return Err(bad(format!(
            "--window {} is longer than the context length {}",
            args.window,
            engine.max_model_len()
        )));
    }
    let mut tokens = engine
        .tokenizer()
        .encode(&text, true)
        .map_err(|e| Failure::error(anyhow!("tokenizing {}: {e}", args.text.display())))?;
    if let Some(max) = args.max_tokens {
        tokens.truncate(max.saturating_add(1));
    }
    if tokens.len() < 2 {
        return Err(bad(format!(
            "{} has fewer than two tokens",
            args.text.display()
        )));
    }
    let t0 = Instant::now();
    let p = perplexity(&mut engine, &tokens, args.window, args.stride)
        .map_err(|e| Failure::error(anyhow!("scoring: {e}")))?;
    let seconds = t0.elapsed().as_secs_f64();
    let out = if args.json {
        let v = serde_json::json!({
            "model": engine.model_name(),
            "device": engine.runner().device().name(),
            "text": args.text.display().to_string(),
            "tokens": p.scored,
            "window": args.window,
            "stride": args.stride,
            "mean_nll": p.mean_nll,
            "perplexity": p.perplexity,
            "seconds": seconds,
        });
        format!("{v}\n")
    } else {
        format!(
            "perplexity {:.4} (mean NLL {:.4} nats) over {} tokens of {}; window {}, stride {}, {} passes in {:.1}s ({:.0} tokens/s)\n",
            p.perplexity,
            p.mean_nll,
            p.scored,
            args.text.display(),
            args.window,
            args.stride,
            p.windows,
            seconds,
            (p.scored as f64 * args.window as f64 / args.stride as f64) / seconds.max(1e-9),
        )
    };
    print_stdout(&out)
}
