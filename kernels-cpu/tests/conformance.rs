//! The shared conformance suite on the CPU backend: once with the default
//! ISA (or `KILN_CPU_ISA`) through the macro, and once per ISA this machine
//! has, so the scalar, AVX2 and AVX-512 paths are all checked.

use hal::conformance::{run, Options};
use kernels_cpu::{CpuBackend, Isa};

hal::conformance_suite!(kernels_cpu::CpuBackend::open_default);

#[test]
fn conformance_every_isa() {
    let mut options = Options::from_env().expect("HAL_CASE is a valid regex");
    let mut failures = Vec::new();
    for isa in Isa::available() {
        // Two threads whatever the machine, so work is split as on CI.
        let device = CpuBackend::with(isa, 2).expect("the CPU opens with an available ISA");
        options.families.clear();
        let report = run(&device, &options);
        println!("[{isa}] {report}");
        failures.extend(
            report
                .failures()
                .iter()
                .map(|(n, m)| format!("[{isa}] {n}: {m}")),
        );
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
