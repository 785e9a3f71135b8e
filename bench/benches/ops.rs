//! `cargo bench -p bench`: one criterion group per op family, over every
//! device the registry finds (not `loopback`, unless `KILN_BENCH_DEVICES`
//! names it), then the harness's own best-of-N summary as markdown.
//!
//! * `KILN_BENCH_QUICK=1` (or `cargo bench -p bench -- --quick`): the quick
//!   grid, hot only, short measurements — under 2 minutes on a 2-core box.
//! * `KILN_BENCH_FILTER=regex`: only cases whose `case/backend` name matches
//!   (a criterion positional filter, `cargo bench -p bench -- REGEX`, works
//!   the same way).
//! * `KILN_BENCH_DEVICES=cpu,cuda:0`: these devices only.
//!
//! Throughput: `Elements` are FLOPs (criterion prints them as `elem/s`)
//! and `Bytes` are the bytes moved of one call, as in the summary.

use std::process::ExitCode;
use std::time::Duration;

use bench::{devices, Family, Options, Session};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// Criterion flags that take a value (so the value is not a filter).
const VALUED_FLAGS: &[&str] = &[
    "-c",
    "--color",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--load-baseline",
    "--output-format",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--profile-time",
    "--format",
    "--plotting-backend",
];

/// Criterion's positional filter argument, if any.
fn positional_filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if VALUED_FLAGS.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

fn main() -> ExitCode {
    let quick = bench::quick_requested();
    let filter = match bench::filter_from_env() {
        Ok(Some(f)) => Some(f),
        Ok(None) => match positional_filter().map(|p| bench::compile_filter(&p)) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                eprintln!("bench: {e}");
                return ExitCode::FAILURE;
            }
            None => None,
        },
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (registry, mut notes) = devices::standard_registry();
    let names = devices::names_from_env().unwrap_or_default();
    let (devs, open_notes) = devices::open(&registry, &names);
    notes.extend(open_notes);
    for n in &notes {
        eprintln!("bench: {n}");
    }
    if devs.is_empty() {
        eprintln!("bench: no device to benchmark");
        return ExitCode::FAILURE;
    }

    let mut criterion = if quick {
        Criterion::default()
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300))
            .sample_size(10)
    } else {
        Criterion::default()
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    }
    .configure_from_args();

    let options = Options {
        quick,
        filter,
        progress: true,
        ..Options::default()
    };
    let cases = options.cases();
    let mut session = Session::start(&devs, options);
    for n in notes {
        session.note(n);
    }
    for family in Family::ALL {
        let mut group = criterion.benchmark_group(family.name());
        group.sampling_mode(SamplingMode::Flat);
        for case in cases.iter().filter(|c| c.family() == family) {
            for dev in &devs {
                let dev = dev.as_ref();
                if !session.wants(case, dev) {
                    continue;
                }
                let Some(mut runner) = session.measure(case, dev) else {
                    continue;
                };
                let cost = case.cost();
                group.throughput(if cost.flops > 0 {
                    Throughput::ElementsAndBytes {
                        elements: cost.flops,
                        bytes: cost.bytes,
                    }
                } else {
                    Throughput::Bytes(cost.bytes)
                });
                let label = case.name[family.name().len() + 1..].to_string();
                let mut error = None;
                group.bench_function(BenchmarkId::new(label, dev.name()), |b| {
                    b.iter(|| {
                        if let Err(e) = runner.run() {
                            error.get_or_insert(e);
                        }
                    })
                });
                if let Some(e) = error {
                    session.note(format!(
                        "{}/{}: criterion run failed: {e}",
                        case.name,
                        dev.name()
                    ));
                }
            }
        }
        group.finish();
    }
    criterion.final_summary();
    println!("\n{}", session.finish().to_markdown());
    ExitCode::SUCCESS
}
