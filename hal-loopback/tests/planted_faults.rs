//! Copies of the loopback backend with planted bugs: the conformance suite
//! must fail on each, in the family the bug lives in.

use hal::conformance::{run, Family, Options};
use hal_loopback::{LoopbackBackend, PlantedFault};

fn failures(fault: PlantedFault, family: Family) -> Vec<String> {
    let device = LoopbackBackend::with_fault(fault).expect("loopback opens");
    let report = run(
        &device,
        &Options {
            filter: None,
            families: vec![family],
        },
    );
    println!("{report}");
    assert!(
        report.passed() + report.failed() > 0,
        "no {family:?} case ran"
    );
    report
        .failures()
        .iter()
        .map(|(n, m)| format!("{n}: {m}"))
        .collect()
}

#[test]
fn block_table_off_by_one_is_caught() {
    let f = failures(PlantedFault::BlockTableOffByOne, Family::PagedAttention);
    assert!(
        !f.is_empty(),
        "an off-by-one block-table walk passed the suite"
    );
}

#[test]
fn reading_past_seq_len_is_caught() {
    let f = failures(PlantedFault::ReadPastSeqLen, Family::PagedAttention);
    assert!(
        !f.is_empty(),
        "reading one token past seq_len passed the suite"
    );
    // The poisoned (NaN) slot is what catches it.
    assert!(
        f.iter().any(|m| m.contains("NaN")),
        "expected a NaN mismatch, got {f:?}"
    );
}

#[test]
fn wrong_awq_nibble_order_is_caught() {
    let f = failures(PlantedFault::AwqNaturalNibbleOrder, Family::QuantGemm);
    assert!(
        !f.is_empty(),
        "AWQ with natural nibble order passed the suite"
    );
    assert!(
        f.iter().all(|m| m.contains("awq")),
        "only AWQ cases should fail: {f:?}"
    );
}

#[test]
fn faults_do_not_leak_into_other_families() {
    for (fault, family) in [
        (PlantedFault::BlockTableOffByOne, Family::Gemm),
        (PlantedFault::AwqNaturalNibbleOrder, Family::PagedAttention),
    ] {
        let f = failures(fault, family);
        assert!(f.is_empty(), "{fault:?} broke {family:?}: {f:?}");
    }
}
