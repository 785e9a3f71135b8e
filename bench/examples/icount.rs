//! Fixed work for instruction counting: build the quick-grid cases whose
//! name matches `REGEX` on the `cpu` device and run each `ITERS` times, with
//! no timing loop, so the executed instructions depend only on the binary,
//! the inputs and the environment. `bash bench/icount/run.sh` runs it under
//! `valgrind --tool=callgrind` twice per case (0 and `ITERS` calls) and
//! divides the difference by `ITERS`: instructions per call, a regression
//! signal that the load on a shared machine does not disturb.
//!
//! ```text
//! cargo run --release -p bench --example icount -- 'quant_gemm/q4_1/.*/decode_b1/hot' 4
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(pattern), Some(iters)) = (args.first(), args.get(1)) else {
        eprintln!("usage: icount REGEX ITERS");
        return ExitCode::from(2);
    };
    let Ok(iters) = iters.parse::<usize>() else {
        eprintln!("icount: ITERS must be a non-negative integer, got {iters:?}");
        return ExitCode::from(2);
    };
    let filter = match regex::Regex::new(pattern) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("icount: bad REGEX {pattern:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let (registry, _) = bench::devices::standard_registry();
    let dev = match registry.open("cpu") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("icount: cpu not opened: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cases: Vec<_> = bench::cases::all(&bench::cases::Grid::quick())
        .into_iter()
        .filter(|c| filter.is_match(&c.name))
        .collect();
    if cases.is_empty() {
        eprintln!("icount: no quick-grid case matches {pattern:?}");
        return ExitCode::from(2);
    }
    for case in &cases {
        match case.prepare(dev.as_ref()) {
            bench::Prepared::Ready(mut runner) => {
                for _ in 0..iters {
                    if let Err(e) = runner.run() {
                        eprintln!("icount: {}: {e}", case.name);
                        return ExitCode::FAILURE;
                    }
                }
                println!("{}", case.name);
            }
            bench::Prepared::Skipped(why) => {
                eprintln!("icount: {}: skipped: {why}", case.name);
                return ExitCode::FAILURE;
            }
            bench::Prepared::Failed(why) => {
                eprintln!("icount: {}: failed: {why}", case.name);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
