//! Every kernel source compiles with NVRTC for Ampere (sm_80), Ada (sm_89)
//! and Hopper (sm_90a), on a machine with no GPU.
//!
//! NVRTC comes from the CUDA toolkit or the `nvidia-cuda-nvrtc` wheel (its
//! lib directory on `LD_LIBRARY_PATH`). Where it is missing the test prints
//! why and passes, unless `KILN_REQUIRE_NVRTC=1` (set by CI), where a
//! missing NVRTC fails it.

#[test]
fn every_kernel_compiles_for_sm80_sm89_sm90a() {
    if !kernels_cuda::nvrtc_available() {
        let required = std::env::var("KILN_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "KILN_REQUIRE_NVRTC=1 but libnvrtc.so.13 cannot be loaded (LD_LIBRARY_PATH?)"
        );
        println!("nvrtc compile check skipped: libnvrtc.so.13 not found");
        return;
    }
    let mut failures = Vec::new();
    for arch in ["compute_80", "compute_89", "compute_90a"] {
        match kernels_cuda::compile_all(arch) {
            Ok(sources) => {
                for (name, bytes) in sources {
                    println!("{arch}: {name}.cu → {bytes} bytes of PTX");
                    assert!(bytes > 0, "{name}.cu produced no PTX for {arch}");
                }
            }
            Err(e) => failures.push(format!("{arch}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn kernel_entry_points_exist_in_the_ptx() {
    if !kernels_cuda::nvrtc_available() {
        println!("skipped: libnvrtc.so.13 not found");
        return;
    }
    for (name, ptx) in kernels_cuda::ptx_for_tests("compute_90a").expect("sources compile") {
        for entry in kernels_cuda::entry_points_for_tests(name) {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{name}.cu has no kernel {entry}"
            );
        }
    }
}
