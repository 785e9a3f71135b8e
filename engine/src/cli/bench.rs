//! `kiln bench [--device NAME]... [--filter REGEX] [--quick]`: the benchmark
//! cases of the `bench` crate, timed from the binary (no cargo needed), with
//! the roofline summary table.

use anyhow::anyhow;
use hal::Registry;

use super::{print_stdout, CmdResult, Failure};

/// Arguments of `kiln bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Device to benchmark; repeat for several. Default: every available
    /// device except the `loopback` test backend.
    #[arg(long = "device", short = 'd', value_name = "NAME")]
    devices: Vec<String>,

    /// Run only the cases whose name matches this regular expression
    /// (e.g. `quant_gemm/q4_0`).
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,

    /// The quick grid: fewer shapes, cache-resident data only.
    #[arg(long)]
    quick: bool,
}

/// Run `kiln bench`.
pub(crate) fn run(registry: &Registry, args: &BenchArgs) -> CmdResult {
    let table = bench::cli_run(registry, &args.devices, args.filter.as_deref(), args.quick)
        .map_err(|e| Failure::cannot_run(anyhow!("{e}")))?;
    print_stdout(&table)
}
