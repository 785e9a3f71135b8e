//! `kiln conformance --device NAME [--filter REGEX] [--family NAME]...`: the
//! HAL conformance suite ([`hal::conformance::run`]) against one device, on
//! any machine that has the `kiln` binary (no cargo needed).
//!
//! Prints one line per failed or skipped case (and per passed case with
//! `--verbose`), then `conformance DEV: N passed, N failed, N skipped`.
//! Exits 1 if a case failed, 2 if the device cannot be opened here, the
//! arguments are wrong, or no case was selected.

use std::fmt::Write as _;

use anyhow::anyhow;
use hal::conformance::{self, Family, Options, Outcome};
use hal::Registry;
use regex::Regex;

use super::{open_device, print_stdout, CmdResult, Failure};

/// Arguments of `kiln conformance`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConformanceArgs {
    /// Device to test: `loopback`, `cpu`, `cuda[:N]`, `hip[:N]`,
    /// `opencl[:N]`, `wgpu[:N]`, `tpu[:N]` (see `kiln devices`).
    #[arg(long, short = 'd', value_name = "NAME")]
    device: String,

    /// Run only the cases whose full name (`family/case`) matches this
    /// regular expression. Defaults to the HAL_CASE environment variable.
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,

    /// Run only this op family; repeat for several. One of: gemm,
    /// quant_gemm, kv_cache, paged_attention, flash_attention, elementwise,
    /// batch_invariance.
    #[arg(long = "family", value_name = "NAME", value_parser = parse_family)]
    families: Vec<Family>,

    /// Also print a line, with its time, for every case that passed.
    #[arg(long, short)]
    verbose: bool,
}

/// A family by its snake-case name (`-` accepted for `_`).
fn parse_family(s: &str) -> Result<Family, String> {
    let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
    Family::ALL
        .into_iter()
        .find(|f| f.name() == wanted)
        .ok_or_else(|| {
            let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            format!("unknown op family; expected one of {}", names.join(", "))
        })
}

/// The filter: `--filter`, else a non-empty `HAL_CASE`, as (regex, where it
/// came from).
fn filter(args: &ConformanceArgs) -> Result<Option<Regex>, Failure> {
    let (pattern, source) = match &args.filter {
        Some(p) => (p.clone(), "--filter"),
        None => match std::env::var("HAL_CASE") {
            Ok(p) if !p.is_empty() => (p, "HAL_CASE"),
            _ => return Ok(None),
        },
    };
    Regex::new(&pattern)
        .map(Some)
        .map_err(|e| Failure::cannot_run(anyhow!("{source} {pattern:?} is not a valid regex: {e}")))
}

/// Run `kiln conformance`.
pub(crate) fn run(registry: &Registry, args: &ConformanceArgs) -> CmdResult {
    let options = Options {
        filter: filter(args)?,
        families: args.families.clone(),
    };
    let device = open_device(registry, &args.device)?;
    let report = conformance::run(device.as_ref(), &options);
    if report.cases.is_empty() {
        return Err(Failure::cannot_run(anyhow!(
            "no conformance case matched{}{} on {}",
            options
                .filter
                .as_ref()
                .map(|r| format!(" the filter {:?}", r.as_str()))
                .unwrap_or_default(),
            if options.families.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = options.families.iter().map(|f| f.name()).collect();
                format!(" in {}", names.join(", "))
            },
            report.device,
        )));
    }
    let mut text = String::new();
    if args.verbose {
        for case in &report.cases {
            if case.outcome == Outcome::Pass {
                // Infallible: writing to a String.
                let _ = writeln!(
                    text,
                    "ok   {} on {} ({:.1} ms)",
                    case.name,
                    report.device,
                    case.duration.as_secs_f64() * 1e3
                );
            }
        }
    }
    let _ = writeln!(text, "{report}");
    print_stdout(&text)?;
    if report.failed() > 0 {
        Err(Failure::reported())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_parse_by_name() {
        for f in Family::ALL {
            assert_eq!(parse_family(f.name()), Ok(f));
        }
        assert_eq!(parse_family("Paged-Attention"), Ok(Family::PagedAttention));
        let err = parse_family("attention").err().unwrap_or_default();
        assert!(err.contains("paged_attention"), "{err}");
    }
}
