//! `kiln quantize --method awq|gptq|fp8|q4_0|q8_0 --out PATH`: write a
//! model in a published quantised layout. With `--calibration FILE`, GPTQ
//! and AWQ run their calibrated algorithms (and FP8 can take static
//! activation scales); without it every method is round-to-nearest.

use std::path::PathBuf;

use anyhow::anyhow;
use hal::Registry;

use super::engine_args::EngineArgs;
use super::{print_stdout, CmdResult, Failure};
use crate::model::{fetch, Checkpoint};
use crate::quantize::{quantize, Calibration, Method, Options};

/// Arguments of `kiln quantize`.
#[derive(Debug, clap::Args)]
pub(crate) struct QuantizeArgs {
    /// The source: a `.gguf` file, an unquantised Hugging Face directory, or
    /// `synthetic:NAME`. Default: SmolLM2-135M-Instruct (Q4_1).
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,

    /// Output format: awq, gptq, fp8 (Hugging Face directories), q4_0, q8_0
    /// (GGUF files), or f16 / f32 (unquantised Hugging Face directories).
    #[arg(long, value_name = "METHOD")]
    method: String,

    /// Where to write: a directory (awq, gptq, fp8) or a `.gguf` file.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,

    /// A text to calibrate on: GPTQ's Hessians, AWQ's scale search, FP8
    /// static activation scales.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,

    /// Calibration tokens used at most.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    calibration_tokens: usize,

    /// Tokens per calibration forward pass.
    #[arg(long, default_value_t = 512, value_name = "N")]
    calibration_window: usize,

    /// GPTQ bits: 4 or 8.
    #[arg(long, default_value_t = 4)]
    bits: u8,

    /// Input rows per group (default 128, or 64/32 where 128 does not divide
    /// every layer's width).
    #[arg(long, value_name = "N")]
    group_size: Option<usize>,

    /// GPTQ: symmetric grids (`sym: true`).
    #[arg(long)]
    sym: bool,

    /// GPTQ: keep the natural column order (no `desc_act`).
    #[arg(long)]
    no_act_order: bool,

    /// GPTQ: dampening of the Hessian diagonal, as a fraction of its mean
    /// (AutoGPTQ's default is 0.01; 0.1 is steadier with a few thousand
    /// calibration tokens).
    #[arg(long, default_value_t = 0.1)]
    damp: f64,

    /// FP8 activation scales: dynamic (per call) or static (calibrated).
    #[arg(long, default_value = "dynamic", value_name = "SCHEME")]
    activation_scheme: String,
}

/// Run `kiln quantize`.
pub(crate) fn run(registry: &Registry, args: &QuantizeArgs) -> CmdResult {
    let bad = |m: String| Failure::cannot_run(anyhow!(m));
    let method: Method = args.method.parse().map_err(bad)?;
    let fp8_static = match args.activation_scheme.as_str() {
        "dynamic" => false,
        "static" => true,
        other => {
            return Err(bad(format!(
                "--activation-scheme {other:?}: expected dynamic or static"
            )))
        }
    };
    let opts = Options {
        method,
        bits: args.bits,
        group_size: args.group_size,
        sym: args.sym,
        act_order: !args.no_act_order,
        damp: args.damp,
        fp8_static,
    };
    let path = match &args.model {
        Some(p) => p.clone(),
        None => fetch::ensure_default_model(true).map_err(|e| bad(e.to_string()))?,
    };
    let checkpoint = Checkpoint::open(&path).map_err(|e| bad(e.to_string()))?;
    let calibrated = args.calibration.is_some() && matches!(method, Method::Awq | Method::Gptq)
        || (method == Method::Fp8 && fp8_static);
    let mut engine = None;
    let mut tokens = Vec::new();
    if calibrated {
        let Some(file) = &args.calibration else {
            return Err(bad(
                "--activation-scheme static needs a calibration text (--calibration FILE)".into(),
            ));
        };
        let text =
            std::fs::read_to_string(file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        let engine_args = EngineArgs::for_calibration(path.clone());
        let e = engine_args.build(registry)?;
        tokens = e
            .tokenizer()
            .encode(&text, true)
            .map_err(|e| bad(format!("{}: {e}", file.display())))?;
        tokens.truncate(args.calibration_tokens);
        engine = Some(e);
    } else if args.calibration.is_some() {
        eprintln!(
            "kiln quantize: --calibration is not used by {}",
            args.method
        );
    }
    let calibration = engine.as_mut().map(|e| Calibration {
        engine: e,
        tokens: tokens.clone(),
        window: args.calibration_window,
    });
    let report = quantize(&checkpoint, &opts, calibration, &args.out)
        .map_err(|e| Failure::error(anyhow!(e)))?;
    let mut text = format!(
        "kiln quantize: {} → {} ({}, {:.1} MB of weights{}) in {:.1}s\n",
        checkpoint.name(),
        report.path.display(),
        report.algorithm,
        report.bytes as f64 / 1e6,
        report
            .group_size
            .map(|g| format!(", groups of {g}"))
            .unwrap_or_default(),
        report.seconds
    );
    for note in &report.notes {
        text.push_str(&format!("  {note}\n"));
    }
    print_stdout(&text)
}
