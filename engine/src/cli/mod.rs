//! The `kiln` command line.
//!
//! Subcommands, one module each:
//!
//! * `kiln devices [--json]` (module `devices`): every registered backend, its
//!   devices on this machine and their capabilities, or why there are none;
//! * `kiln conformance --device NAME` (module `conformance`): the HAL conformance
//!   suite against one device, for machines without cargo;
//! * `kiln bench` (module `bench`): the benchmark cases and roofline summary;
//! * `kiln generate PROMPT…` (module `generate`): run prompts through the
//!   engine, streamed or batched, or measure offline throughput;
//! * `kiln serve` (module `serve`): the OpenAI-compatible server;
//! * `kiln download` (module `download`): fetch the default model;
//! * `kiln parity --device NAME` (module `parity`): one model on two devices,
//!   logits compared;
//! * `kiln quantize --method M --out PATH` (module `quantize`): write a model
//!   as AWQ, GPTQ, FP8, Q4_0 or Q8_0;
//! * `kiln perplexity --text FILE` (module `perplexity`): perplexity on a text.
//!
//! Exit codes: `0` success; `1` the command ran and found a problem (a
//! conformance case failed) or hit an unexpected error; `2` the command could
//! not run as asked (bad arguments, a bad or unknown device name, a device
//! that is unavailable on this machine).

mod bench;
mod conformance;
mod devices;
mod download;
mod engine_args;
mod generate;
mod parity;
mod perplexity;
mod quantize;
mod serve;

use std::any::Any;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use hal::{Device, HalError, Registry};

/// Exit code of a command that ran and found a problem.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command that could not run as asked (usage error, bad
/// device name, device unavailable on this machine).
pub const EXIT_CANNOT_RUN: u8 = 2;

/// Kiln: LLM inference kernels for many kinds of hardware.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every registered backend, its devices on this machine and their
    /// capabilities, or why it has none.
    Devices(devices::DevicesArgs),
    /// Run the HAL conformance suite against one device (exit 1 if a case
    /// fails, 2 if the device cannot be opened here).
    Conformance(conformance::ConformanceArgs),
    /// Time the benchmark cases on the available devices and print the
    /// roofline summary (GB/s, GFLOP/s, % of this machine's peak).
    Bench(bench::BenchArgs),
    /// Generate text from prompts (default model: SmolLM2-135M-Instruct,
    /// fetched on first use). One prompt streams; several run batched.
    Generate(Box<generate::GenerateArgs>),
    /// Serve a model over an OpenAI-compatible HTTP API (default model:
    /// SmolLM2-135M-Instruct, fetched on first use).
    Serve(Box<serve::ServeArgs>),
    /// Fetch the default model (SmolLM2-135M-Instruct) into the cache and
    /// print its path.
    Download(download::DownloadArgs),
    /// Run one model on two devices (`--device` against `--against`, default
    /// cpu) and compare their logits: prefill, token-by-token decode and a
    /// greedy batch (exit 1 beyond `--tolerance`).
    Parity(Box<parity::ParityArgs>),
    /// Write a model as AWQ, GPTQ or FP8 (Hugging Face directories) or
    /// Q4_0 / Q8_0 (GGUF), round-to-nearest or calibrated on a text.
    Quantize(Box<quantize::QuantizeArgs>),
    /// Perplexity of a model on a text (sliding window).
    Perplexity(Box<perplexity::PerplexityArgs>),
}

/// Parse the process's command line and run it against `registry`.
///
/// The `kiln` binary calls this with [`crate::backends::default_registry`];
/// an out-of-tree backend's binary registers its own factory first.
pub fn main_with(registry: Registry) -> ExitCode {
    run_from(registry, std::env::args_os())
}

/// Like [`main_with`], with the command line given (`args[0]` is the
/// program name).
pub fn run_from<I, T>(registry: Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" printed on stdout.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CANNOT_RUN)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Devices(args) => devices::run(&registry, &args),
        Command::Conformance(args) => conformance::run(&registry, &args),
        Command::Bench(args) => bench::run(&registry, &args),
        Command::Generate(args) => generate::run(&registry, &args),
        Command::Download(args) => download::run(&args),
        Command::Serve(args) => serve::run(&registry, &args),
        Command::Parity(args) => parity::run(&registry, &args),
        Command::Quantize(args) => quantize::run(&registry, &args),
        Command::Perplexity(args) => perplexity::run(&registry, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(error) = &failure.error {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// Why a command stopped: the message to print (if not printed already) and
/// the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Exit code: [`EXIT_FAILURE`] or [`EXIT_CANNOT_RUN`].
    pub code: u8,
    /// Printed as `error: …` on stderr; `None` when the command already
    /// reported the problem.
    pub error: Option<anyhow::Error>,
}

impl Failure {
    /// The command could not run as asked (exit 2).
    pub fn cannot_run(error: anyhow::Error) -> Self {
        Failure {
            code: EXIT_CANNOT_RUN,
            error: Some(error),
        }
    }

    /// The command ran and failed (exit 1), with this error.
    pub fn error(error: anyhow::Error) -> Self {
        Failure {
            code: EXIT_FAILURE,
            error: Some(error),
        }
    }

    /// The command ran, reported its failures itself, and exits 1.
    pub fn reported() -> Self {
        Failure {
            code: EXIT_FAILURE,
            error: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(e) => write!(f, "{e:#} (exit {})", self.code),
            None => write!(f, "exit {}", self.code),
        }
    }
}

/// A command's result.
pub(crate) type CmdResult = Result<(), Failure>;

/// Open device `name` through `registry`. A bad name, an unknown kind and a
/// device that is unavailable on this machine are [`EXIT_CANNOT_RUN`]
/// failures with a message saying what to do; a backend that panics while
/// opening is reported, not propagated.
pub(crate) fn open_device(registry: &Registry, name: &str) -> Result<Arc<dyn Device>, Failure> {
    let opened = catch_unwind(AssertUnwindSafe(|| registry.open(name)));
    match opened {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e @ (HalError::InvalidDeviceName { .. } | HalError::UnknownDevice { .. }))) => {
            Err(Failure::cannot_run(anyhow!(
                "{e}\n(run `kiln devices` to list the registered backends and their devices)"
            )))
        }
        Ok(Err(HalError::Unavailable { backend, reason })) => Err(Failure::cannot_run(anyhow!(
            "device {backend} is unavailable on this machine: {reason}"
        ))),
        Ok(Err(e)) => Err(Failure::error(
            anyhow::Error::new(e).context(format!("could not open device {name}")),
        )),
        Err(panic) => Err(Failure::error(anyhow!(
            "the backend panicked while opening {name}: {} (a bug in that backend)",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Write `text` to stdout. A closed pipe (`kiln devices | head`) ends the
/// output quietly; any other write error is a failure.
pub(crate) fn print_stdout(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::error(
            anyhow::Error::new(e).context("could not write to stdout"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_arguments_exit_2() {
        let code = run_from(Registry::new(), ["kiln", "no-such-command"]);
        assert_eq!(code, ExitCode::from(EXIT_CANNOT_RUN));
    }
}
