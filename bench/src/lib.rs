//! # bench: Kiln's kernel benchmarks
//!
//! Every HAL op family × real model shapes (SmolLM2-135M, Llama-3-8B) ×
//! dtype or weight format × workload (decode batch 1/8/32 at context 512/2k,
//! prefill 512/2k), on every backend the registry finds, read against a
//! roofline measured on this machine at the start of the run.
//!
//! * [`shapes`] — the model shapes and workloads;
//! * [`cases`] — the case tables; each [`Case`] builds its inputs on a
//!   `&dyn hal::Device` from a fixed seed, asks `supports` first (a refusal
//!   is a skip with the device's reason, never a failure), and returns a
//!   [`Runner`] that runs the op once and synchronizes, plus its [`Cost`]
//!   (FLOPs and bytes moved) for the roofline;
//! * [`roofline`] — peak FMA GFLOP/s and DRAM / L3 read bandwidth, measured;
//! * [`timing`] — the harness's own best-of-N timing (independent of
//!   criterion);
//! * [`summary`] — the markdown report;
//! * [`devices`] — the registry of in-tree backends and device selection.
//!
//! `cargo bench -p bench` runs the criterion benches (`benches/ops.rs`) and
//! prints the summary; `cargo run --release -p bench --example summary`
//! prints the summary alone; the `kiln` binary calls [`cli_run`]. See
//! `docs/bench/README.md`.

pub mod case;
pub mod cases;
pub mod data;
pub mod devices;
pub mod rng;
pub mod roofline;
pub mod serving;
pub mod shapes;
pub mod summary;
pub mod timing;

use std::sync::Arc;
use std::time::Instant;

use hal::{Device, Registry};
use regex::Regex;

pub use case::{Case, Cost, Family, Prepared, Runner, Temp};
pub use roofline::{Effort, Roofline};
pub use shapes::Scale;
pub use summary::{Outcome, Row, Summary};
pub use timing::{Budget, Timing};

/// Environment variable selecting quick mode (`1`, `true`, `yes`).
pub const QUICK_ENV: &str = "KILN_BENCH_QUICK";
/// Environment variable holding a regex over `case/backend` names.
pub const FILTER_ENV: &str = "KILN_BENCH_FILTER";

/// Errors of a benchmark run's setup (the cases themselves never error:
/// they are timed, skipped or recorded as failed).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The case filter is not a valid regex.
    #[error("invalid case filter {pattern:?}: {source}")]
    Filter {
        /// The pattern given.
        pattern: String,
        /// Why it does not parse.
        source: regex::Error,
    },
    /// No device could be opened.
    #[error("no device to benchmark ({0})")]
    NoDevices(String),
}

/// Quick mode was asked for: [`QUICK_ENV`] is `1`/`true`/`yes`, or
/// `--quick` is among the command-line arguments (criterion's own flag,
/// which `cargo bench -p bench -- --quick` passes through).
pub fn quick_requested() -> bool {
    let env = std::env::var(QUICK_ENV)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    env || std::env::args().any(|a| a == "--quick")
}

/// Compile a case filter.
pub fn compile_filter(pattern: &str) -> Result<Regex, BenchError> {
    Regex::new(pattern).map_err(|source| BenchError::Filter {
        pattern: pattern.to_string(),
        source,
    })
}

/// The filter in [`FILTER_ENV`], if set and not empty.
pub fn filter_from_env() -> Result<Option<Regex>, BenchError> {
    match std::env::var(FILTER_ENV) {
        Ok(p) if !p.trim().is_empty() => compile_filter(p.trim()).map(Some),
        _ => Ok(None),
    }
}

/// How a run is done.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Quick mode: the [`cases::Grid::quick`] grid and [`Budget::quick`].
    pub quick: bool,
    /// Only cases whose `case/backend` name matches.
    pub filter: Option<Regex>,
    /// Real shapes, or tiny ones for tests.
    pub scale: Scale,
    /// Print one line per case to stderr as the run goes.
    pub progress: bool,
    /// Timing budget per case (default: from `quick`).
    pub budget: Option<Budget>,
    /// Roofline effort (default: from `quick`; `Test` at [`Scale::Tiny`]).
    pub effort: Option<Effort>,
}

impl Options {
    /// The cases these options cover.
    pub fn cases(&self) -> Vec<Case> {
        cases::all(&cases::Grid::new(self.quick, self.scale))
    }

    fn budget(&self) -> Budget {
        self.budget.unwrap_or(if self.quick {
            Budget::quick()
        } else {
            Budget::full()
        })
    }

    fn effort(&self) -> Effort {
        self.effort.unwrap_or(match (self.scale, self.quick) {
            (Scale::Tiny, _) => Effort::Test,
            (Scale::Real, true) => Effort::Quick,
            (Scale::Real, false) => Effort::Full,
        })
    }
}

/// A run in progress: the roofline is measured when it starts, each
/// [`Session::measure`] adds a row, [`Session::finish`] returns the summary.
pub struct Session {
    options: Options,
    summary: Summary,
    start: Instant,
}

impl Session {
    /// Measure the roofline (a few seconds) and start a run over `devices`.
    pub fn start(devices: &[Arc<dyn Device>], options: Options) -> Session {
        let start = Instant::now();
        let load_start = roofline::load_average();
        if options.progress {
            eprintln!("bench: measuring the roofline…");
        }
        let roofline = Roofline::measure(options.effort());
        let grid = cases::Grid::new(options.quick, options.scale);
        let summary = Summary {
            roofline,
            quick: options.quick,
            budget: options.budget(),
            load_start,
            load_end: None,
            devices: devices
                .iter()
                .map(|d| (d.name().to_string(), d.capabilities().device.clone()))
                .collect(),
            notes: Vec::new(),
            rows: Vec::new(),
            elapsed: Default::default(),
            cold_bytes: grid.cold_bytes,
        };
        Session {
            options,
            summary,
            start,
        }
    }

    /// The roofline measured at the start.
    pub fn roofline(&self) -> &Roofline {
        &self.summary.roofline
    }

    /// Add a remark to the summary's header.
    pub fn note(&mut self, note: impl Into<String>) {
        self.summary.notes.push(note.into());
    }

    /// Whether the filter selects `case` on `dev`.
    pub fn wants(&self, case: &Case, dev: &dyn Device) -> bool {
        self.options
            .filter
            .as_ref()
            .is_none_or(|f| f.is_match(&format!("{}/{}", case.name, dev.name())))
    }

    /// Build `case` on `dev`, time it, record the row; the runner comes
    /// back for further timing (criterion) when the case ran.
    pub fn measure<'d>(&mut self, case: &Case, dev: &'d dyn Device) -> Option<Runner<'d>> {
        let (outcome, runner) = match case.prepare(dev) {
            Prepared::Skipped(reason) => (Outcome::Skipped(reason), None),
            Prepared::Failed(msg) => (Outcome::Failed(msg), None),
            Prepared::Ready(mut runner) => match timing::best_of(&mut runner, &self.summary.budget)
            {
                Ok(t) => (Outcome::Timed(t), Some(runner)),
                Err(e) => (Outcome::Failed(e.to_string()), None),
            },
        };
        let row = Row {
            case: case.name.clone(),
            family: case.family(),
            temp: case.temp,
            backend: dev.name().to_string(),
            cost: case.cost(),
            working_set: case.working_set(),
            outcome,
        };
        if self.options.progress {
            eprintln!("bench: {}", progress_line(&row, &self.summary.roofline));
        }
        self.summary.rows.push(row);
        runner
    }

    /// End the run: records the load average and the elapsed time.
    pub fn finish(mut self) -> Summary {
        self.summary.load_end = roofline::load_average();
        self.summary.elapsed = self.start.elapsed();
        self.summary
    }
}

fn progress_line(row: &Row, roof: &Roofline) -> String {
    let what = format!("{}/{}", row.case, row.backend);
    match &row.outcome {
        Outcome::Timed(t) => {
            let v = summary::verdict(row, t, roof);
            format!(
                "{what}: {} ({:.1} GFLOP/s, {:.1} GB/s)",
                summary::duration(v.secs),
                v.gflops,
                v.gbps
            )
        }
        Outcome::Skipped(reason) => format!("{what}: skipped: {reason}"),
        Outcome::Failed(msg) => format!("{what}: FAILED: {msg}"),
    }
}

/// Time every case of `options` on every device in `devices`.
pub fn run_with(devices: &[Arc<dyn Device>], options: Options) -> Summary {
    let cases = options.cases();
    let mut session = Session::start(devices, options);
    for case in &cases {
        for dev in devices {
            if session.wants(case, dev.as_ref()) {
                session.measure(case, dev.as_ref());
            }
        }
    }
    session.finish()
}

/// Time every case (the full or quick grid at real scale) whose
/// `case/backend` name matches `filter` on every device in `devices`,
/// printing progress to stderr.
pub fn run(devices: &[Arc<dyn Device>], filter: Option<&Regex>, quick: bool) -> Summary {
    run_with(
        devices,
        Options {
            quick,
            filter: filter.cloned(),
            progress: true,
            ..Options::default()
        },
    )
}

/// `kiln bench`: open `device_names` from `registry` (all available devices
/// but `loopback` when empty), run, and return the markdown summary.
pub fn cli_run(
    registry: &Registry,
    device_names: &[String],
    filter: Option<&str>,
    quick: bool,
) -> Result<String, BenchError> {
    let filter = filter
        .filter(|p| !p.trim().is_empty())
        .map(|p| compile_filter(p.trim()))
        .transpose()?;
    let (devices, notes) = devices::open(registry, device_names);
    if devices.is_empty() {
        return Err(BenchError::NoDevices(notes.join("; ")));
    }
    let mut summary = run(&devices, filter.as_ref(), quick);
    summary.notes.extend(notes);
    Ok(summary.to_markdown())
}
