//! Every kernel source compiles for CDNA 2 (gfx90a, MI200; wave64) and RDNA 2
//! (gfx1030; wave32) on a machine with no GPU, and every kernel name the
//! Rust side can launch is in the code object.
//!
//! The compiler is the crate's own hiprtc binding when hiprtc loads (ROCm 5
//! ships it inside `libamdhip64.so`, ROCm 6 as `libhiprtc.so`); else
//! `hipcc --genco` on the same text. Where neither exists the test prints
//! why and passes, unless `KILN_REQUIRE_HIP_COMPILER=1` (set by CI), where a
//! missing compiler fails it. gfx942 (MI300) is not checked: the hiprtc and
//! clang of ROCm 5.2, the version Debian packages, abort on it.
//!
//! Sources × architectures compile in parallel, one job per core; hiprtc
//! results go through the crate's code-object cache (`$KILN_HIP_CACHE`,
//! else `~/.cache/kiln/hip`), keyed by the SHA-256 of the full text, the
//! target, the hiprtc version and the options, so an unchanged kernel is
//! not recompiled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

const ARCHS: [&str; 2] = ["gfx90a", "gfx1030"];

/// How the sources are compiled here.
#[derive(Clone, Copy, Debug)]
enum Compiler {
    Hiprtc,
    Hipcc,
}

fn hipcc_present() -> bool {
    Command::new("hipcc")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compile `text` (source `name`) for `arch` with `hipcc --genco`.
fn hipcc_compile(dir: &Path, name: &str, text: &str, arch: &str) -> Result<Vec<u8>, String> {
    let src = dir.join(format!("{name}-{arch}.hip"));
    let out = dir.join(format!("{name}-{arch}.hsaco"));
    std::fs::write(&src, text).map_err(|e| format!("writing {}: {e}", src.display()))?;
    let run = Command::new("hipcc")
        .arg(format!("--offload-arch={arch}"))
        .args(["--genco", "-O3", "-std=c++17", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|e| format!("running hipcc: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "hipcc could not compile {name} for {arch}:\n{}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    std::fs::read(&out).map_err(|e| format!("reading {}: {e}", out.display()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_kernel_compiles_for_gfx90a_and_gfx1030() {
    let required = std::env::var("KILN_REQUIRE_HIP_COMPILER").is_ok_and(|v| v == "1");
    let compiler = if kernels_hip::hiprtc_available() {
        Compiler::Hiprtc
    } else if hipcc_present() {
        Compiler::Hipcc
    } else {
        assert!(
            !required,
            "KILN_REQUIRE_HIP_COMPILER=1 but neither hiprtc (libhiprtc.so / libamdhip64.so) \
             nor hipcc is available (apt: hipcc libamdhip64-dev rocm-device-libs \
             libhiprtc-builtins5)"
        );
        println!("hip compile check skipped: no hiprtc and no hipcc");
        return;
    };
    let sources = match kernels_hip::sources_for_tests() {
        Ok(s) => s,
        Err(e) => panic!("assembling the kernel sources: {e}"),
    };
    let dir: PathBuf = std::env::temp_dir().join(format!("kiln-hip-check-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {e}", dir.display());
    }

    // Jobs: every (source, arch), slowest sources first (their order in
    // `sources_for_tests`), taken by one worker per core.
    let jobs: Vec<(&str, &str, &str)> = sources
        .iter()
        .flat_map(|(name, text)| ARCHS.iter().map(move |a| (*name, text.as_str(), *a)))
        .collect();
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(jobs.len()) {
            scope.spawn(|| loop {
                let job = {
                    let Ok(mut n) = next.lock() else { return };
                    let Some(job) = jobs.get(*n) else { return };
                    *n += 1;
                    *job
                };
                let (name, text, arch) = job;
                let t = Instant::now();
                let code = match compiler {
                    Compiler::Hiprtc => kernels_hip::code_object_for_tests(name, arch),
                    Compiler::Hipcc => hipcc_compile(&dir, name, text, arch),
                };
                if let Ok(mut r) = results.lock() {
                    r.push((name, arch, code, t.elapsed()));
                }
            });
        }
    });
    let _ = std::fs::remove_dir_all(&dir);

    let mut failures = Vec::new();
    let results = results.into_inner().unwrap_or_default();
    assert_eq!(results.len(), jobs.len(), "a compile worker stopped early");
    for (name, arch, code, took) in results {
        match code {
            Ok(code) => {
                println!(
                    "{compiler:?} {arch}: {name} → {} bytes in {:.1} s",
                    code.len(),
                    took.as_secs_f64()
                );
                for entry in kernels_hip::entry_points_for_tests(name) {
                    if !contains(&code, format!("{entry}.kd").as_bytes()) {
                        failures.push(format!("{arch}: {name} has no kernel {entry}"));
                    }
                }
            }
            Err(e) => failures.push(format!("{arch}: {e}")),
        }
    }
    println!(
        "{} sources × {} targets in {:.1} s",
        sources.len(),
        ARCHS.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
