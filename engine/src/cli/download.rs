//! `kiln download`: fetch the default model into the cache (nothing to do
//! when it is there) and print its path — for provisioning machines and
//! container images ahead of `kiln serve`.

use anyhow::anyhow;

use super::{print_stdout, CmdResult, Failure};
use crate::model::fetch;

/// Arguments of `kiln download`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownloadArgs {
    /// Print only the path.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Run `kiln download`.
pub(crate) fn run(args: &DownloadArgs) -> CmdResult {
    let path =
        fetch::ensure_default_model(!args.quiet).map_err(|e| Failure::cannot_run(anyhow!(e)))?;
    print_stdout(&format!("{}\n", path.display()))
}
