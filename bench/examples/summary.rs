//! The benchmark summary alone (no criterion): every case on every device,
//! timed best-of-N, printed as markdown.
//!
//! ```text
//! cargo run --release -p bench --example summary            # full grid
//! KILN_BENCH_QUICK=1 cargo run --release -p bench --example summary
//! KILN_BENCH_FILTER='quant_gemm/q4' KILN_BENCH_DEVICES=cpu cargo run --release -p bench --example summary
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let filter = std::env::var(bench::FILTER_ENV).ok();
    let names = bench::devices::names_from_env().unwrap_or_default();
    let (registry, notes) = bench::devices::standard_registry();
    for n in notes {
        eprintln!("bench: {n}");
    }
    match bench::cli_run(
        &registry,
        &names,
        filter.as_deref(),
        bench::quick_requested(),
    ) {
        Ok(markdown) => {
            println!("{markdown}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
