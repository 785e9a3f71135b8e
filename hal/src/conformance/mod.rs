//! The conformance suite: every op of a backend against [`crate::reference`].
//!
//! * [`run`] runs the case tables against any [`Device`] and returns a
//!   [`Report`] with every pass, failure and skip (used by `kiln
//!   conformance --device X`, so a machine without cargo can run it);
//! * [`conformance_suite!`](crate::conformance_suite) is the one macro a
//!   backend crate writes in `tests/conformance.rs` to get one `#[test]` per
//!   op family.
//!
//! Cases draw random inputs from a fixed seed, compare with per-dtype error
//! budgets, check NaN/Inf parity, surround outputs with guard bytes, poison
//! unused KV slots with NaN, permute physical blocks, and mix prefill and
//! decode. A case the backend refuses through `supports` is skipped, and the
//! reason printed. `HAL_CASE=regex` filters cases by name.

mod budget;
mod cases;
mod harness;
mod rng;

use std::fmt;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::Device;

pub use budget::{compare, Budget, Comparison};
pub use harness::Harness;
pub use rng::Rng;

/// An op family: one `#[test]` each in a backend crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Dense GEMM.
    Gemm,
    /// Quantised GEMM and the packing rules of every format.
    QuantGemm,
    /// `write_kv` and `copy_blocks`.
    KvCache,
    /// Paged attention.
    PagedAttention,
    /// Dense varlen flash attention.
    FlashAttention,
    /// RMS norm, RoPE, SiLU-and-mul, embedding, add.
    Elementwise,
    /// Bitwise batch invariance (backends that declare it).
    BatchInvariance,
}

impl Family {
    /// Every family, in run order.
    pub const ALL: [Family; 7] = [
        Family::Gemm,
        Family::QuantGemm,
        Family::KvCache,
        Family::PagedAttention,
        Family::FlashAttention,
        Family::Elementwise,
        Family::BatchInvariance,
    ];

    /// Snake-case name, the prefix of its case names.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gemm => "gemm",
            Family::QuantGemm => "quant_gemm",
            Family::KvCache => "kv_cache",
            Family::PagedAttention => "paged_attention",
            Family::FlashAttention => "flash_attention",
            Family::Elementwise => "elementwise",
            Family::BatchInvariance => "batch_invariance",
        }
    }
}

/// Which cases to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run only cases whose full name (`family/case`) matches.
    pub filter: Option<Regex>,
    /// Families to run (empty: all).
    pub families: Vec<Family>,
}

impl Options {
    /// All families, filtered by the `HAL_CASE` environment variable if set.
    pub fn from_env() -> Result<Self, regex::Error> {
        let filter = match std::env::var("HAL_CASE") {
            Ok(s) if !s.is_empty() => Some(Regex::new(&s)?),
            _ => None,
        };
        Ok(Options {
            filter,
            families: Vec::new(),
        })
    }

    fn wants(&self, family: Family, full_name: &str) -> bool {
        (self.families.is_empty() || self.families.contains(&family))
            && self.filter.as_ref().is_none_or(|r| r.is_match(full_name))
    }
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Within budget.
    Pass,
    /// Out of budget, wrong NaN pattern, guard bytes overwritten, an error
    /// from an op that `supports` accepted, …: the message says which.
    Fail(String),
    /// The backend refused the op; its reason.
    Skip(String),
}

/// One case's report.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Family.
    pub family: Family,
    /// `family/case` name.
    pub name: String,
    /// Result.
    pub outcome: Outcome,
    /// Wall time.
    pub duration: Duration,
}

/// Everything a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Device name.
    pub device: String,
    /// Cases in run order.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass))
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    /// Cases skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }

    /// The failures, as `(name, message)`.
    pub fn failures(&self) -> Vec<(&str, &str)> {
        self.cases
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Fail(m) => Some((c.name.as_str(), m.as_str())),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Report {
    /// One line per failure and skip, then `N passed, N failed, N skipped`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cases {
            match &c.outcome {
                Outcome::Pass => {}
                Outcome::Fail(m) => writeln!(f, "FAIL {} on {}: {m}", c.name, self.device)?,
                Outcome::Skip(r) => writeln!(f, "skip {} on {}: {r}", c.name, self.device)?,
            }
        }
        write!(
            f,
            "conformance {}: {} passed, {} failed, {} skipped",
            self.device,
            self.passed(),
            self.failed(),
            self.skipped()
        )
    }
}

/// A case: its name within the family and the function that runs it.
pub(crate) struct Case {
    pub name: String,
    pub run: Box<dyn Fn(&Harness<'_>) -> Outcome>,
}

/// Run the selected cases against `device`.
pub fn run(device: &dyn Device, options: &Options) -> Report {
    let mut report = Report {
        device: device.name().to_string(),
        cases: Vec::new(),
    };
    let harness = Harness::new(device);
    for family in Family::ALL {
        for case in cases::for_family(family) {
            let full = format!("{}/{}", family.name(), case.name);
            if !options.wants(family, &full) {
                continue;
            }
            let start = Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(&harness)))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "panic".into());
                        Outcome::Fail(format!("panicked: {msg}"))
                    });
            report.cases.push(CaseReport {
                family,
                name: full,
                outcome,
                duration: start.elapsed(),
            });
        }
    }
    report
}

/// What the macro's tests call: open the device, run one family, print the
/// skips, and panic with every failure.
///
/// When the device cannot be opened because its driver, device or plugin is
/// missing (or its kernels are not written yet), the test prints why and
/// returns: there is nothing to check on this machine.
pub fn check_family<D, F>(open: F, family: Family)
where
    D: Device + 'static,
    F: FnOnce() -> crate::Result<D>,
{
    let device = match open() {
        Ok(d) => d,
        Err(crate::HalError::Unavailable { backend, reason }) => {
            println!(
                "conformance {}: skipped, {backend} unavailable: {reason}",
                family.name()
            );
            return;
        }
        Err(e) => panic!(
            "conformance {}: could not open the device: {e}",
            family.name()
        ),
    };
    let mut options = match Options::from_env() {
        Ok(o) => o,
        Err(e) => panic!("HAL_CASE is not a valid regex: {e}"),
    };
    options.families = vec![family];
    let filtered = options.filter.is_some();
    let report = run(&device, &options);
    println!("{report}");
    assert!(
        filtered || !report.cases.is_empty(),
        "conformance {}: the family has no cases",
        family.name()
    );
    assert!(
        report.failed() == 0,
        "{} conformance case(s) failed on {}:\n{}",
        report.failed(),
        report.device,
        report
            .failures()
            .iter()
            .map(|(n, m)| format!("  {n}: {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One `#[test]` per op family for a backend crate:
///
/// ```ignore
/// // tests/conformance.rs
/// hal::conformance_suite!(my_backend::MyBackend::open_default);
/// ```
///
/// `$open` is a path to a function `fn() -> hal::Result<D>` with `D: Device`.
#[macro_export]
macro_rules! conformance_suite {
    ($open:path) => {
        #[test]
        fn conformance_gemm() {
            $crate::conformance::check_family($open, $crate::conformance::Family::Gemm);
        }
        #[test]
        fn conformance_quant_gemm() {
            $crate::conformance::check_family($open, $crate::conformance::Family::QuantGemm);
        }
        #[test]
        fn conformance_kv_cache() {
            $crate::conformance::check_family($open, $crate::conformance::Family::KvCache);
        }
        #[test]
        fn conformance_paged_attention() {
            $crate::conformance::check_family($open, $crate::conformance::Family::PagedAttention);
        }
        #[test]
        fn conformance_flash_attention() {
            $crate::conformance::check_family($open, $crate::conformance::Family::FlashAttention);
        }
        #[test]
        fn conformance_elementwise() {
            $crate::conformance::check_family($open, $crate::conformance::Family::Elementwise);
        }
        #[test]
        fn conformance_batch_invariance() {
            $crate::conformance::check_family($open, $crate::conformance::Family::BatchInvariance);
        }
    };
}
