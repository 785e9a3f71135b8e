//! Every case of the tiny grid, built on the `loopback` device (the f64
//! reference behind opaque, deferred buffers) and run once: the harness
//! builds valid inputs for every op, hot and cold, and reports them.

use std::sync::Arc;

use bench::{Budget, Effort, Options, Outcome, Scale};
use hal::Device;

fn loopback() -> Arc<dyn Device> {
    match hal_loopback::LoopbackBackend::open_default() {
        Ok(d) => Arc::new(d),
        Err(e) => panic!("loopback: {e}"),
    }
}

#[test]
fn every_case_runs_on_loopback() {
    let options = Options {
        quick: false,
        scale: Scale::Tiny,
        budget: Some(Budget::once()),
        effort: Some(Effort::Test),
        ..Options::default()
    };
    let cases = options.cases();
    let summary = bench::run_with(&[loopback()], options);
    assert_eq!(summary.rows.len(), cases.len());
    let problems: Vec<String> = summary
        .rows
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Timed(_) => None,
            Outcome::Skipped(m) => Some(format!("{}: skipped: {m}", r.case)),
            Outcome::Failed(m) => Some(format!("{}: failed: {m}", r.case)),
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for family in bench::Family::ALL {
        assert!(
            summary.rows.iter().any(|r| r.family == family),
            "no case of {}",
            family.name()
        );
    }
    assert!(summary.rows.iter().any(|r| r.temp == bench::Temp::Cold));
    let md = summary.to_markdown();
    assert!(md.contains("## Hot") && md.contains("## Cold"), "{md}");
    assert!(
        md.contains("quant_gemm/gptq4_actorder/tiny.mlp_down/decode_b3/cold"),
        "{md}"
    );
}

#[test]
fn filter_selects_cases() {
    let options = Options {
        quick: true,
        scale: Scale::Tiny,
        filter: Some(
            bench::compile_filter("^rms_norm/.*/loopback:0$").unwrap_or_else(|e| panic!("{e}")),
        ),
        budget: Some(Budget::once()),
        effort: Some(Effort::Test),
        ..Options::default()
    };
    let summary = bench::run_with(&[loopback()], options);
    assert!(!summary.rows.is_empty());
    assert!(summary.rows.iter().all(|r| r.case.starts_with("rms_norm/")));
}

/// A device that refuses every op (as a backend whose kernels are not
/// written yet does), with memory from `loopback`.
struct Refusing(hal_loopback::LoopbackBackend);

impl hal::Backend for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }
    fn capabilities(&self) -> &hal::Capabilities {
        self.0.capabilities()
    }
    fn supports(&self, op: &hal::OpDesc) -> Result<(), hal::Unsupported> {
        Err(hal::Unsupported::new(
            op.name(),
            "not implemented yet (test)",
        ))
    }
    fn alloc(&self, bytes: usize) -> hal::Result<hal::DeviceBuffer> {
        self.0.alloc(bytes)
    }
    fn upload(&self, dst: &mut hal::DeviceBuffer, offset: usize, src: &[u8]) -> hal::Result<()> {
        self.0.upload(dst, offset, src)
    }
    fn download(&self, src: &hal::DeviceBuffer, offset: usize, dst: &mut [u8]) -> hal::Result<()> {
        self.0.download(src, offset, dst)
    }
    fn synchronize(&self) -> hal::Result<()> {
        self.0.synchronize()
    }
}

impl hal::Gemm for Refusing {}
impl hal::QuantGemm for Refusing {}
impl hal::KvCacheOps for Refusing {}
impl hal::PagedAttention for Refusing {}
impl hal::FlashAttention for Refusing {}
impl hal::Elementwise for Refusing {}
impl hal::StepCapture for Refusing {}

#[test]
fn refused_ops_are_skipped_with_the_reason() {
    let dev: Arc<dyn Device> = match hal_loopback::LoopbackBackend::open_default() {
        Ok(d) => Arc::new(Refusing(d)),
        Err(e) => panic!("loopback: {e}"),
    };
    let options = Options {
        quick: true,
        scale: Scale::Tiny,
        budget: Some(Budget::once()),
        effort: Some(Effort::Test),
        ..Options::default()
    };
    let summary = bench::run_with(&[dev], options);
    assert!(!summary.rows.is_empty());
    assert_eq!(summary.skipped(), summary.rows.len());
    let md = summary.to_markdown();
    assert!(
        md.contains("| refusing | gemm | 3 | not implemented yet (test) |"),
        "{md}"
    );
}

#[test]
fn cli_run_reports_setup_errors() {
    let registry = hal::Registry::new();
    let err = bench::cli_run(&registry, &["cpu".to_string()], None, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no device"), "{err}");
    let bad = bench::cli_run(&registry, &[], Some("("), true);
    assert!(matches!(bad, Err(bench::BenchError::Filter { .. })));
}
