//! Every OpenCL C program compiles, on both kernel paths, for Intel GPU
//! targets with `ocloc` (Intel's offline compiler, from `intel-opencl-icd`):
//! `dg2` (Arc), `pvc` (Data Center Max) and `tgllp` (Xe-LP), on a machine
//! with no Intel GPU.
//!
//! Where `ocloc` is missing the test prints why and passes, unless
//! `KILN_REQUIRE_OCLOC=1` (set by CI), where a missing `ocloc` fails it.

use std::path::PathBuf;
use std::process::Command;

use kernels_sycl::KernelPath;

const TARGETS: [&str; 3] = ["dg2", "pvc", "tgllp"];
const PATHS: [KernelPath; 2] = [KernelPath::Portable, KernelPath::IntelTuned];

fn ocloc_present() -> bool {
    Command::new("ocloc")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty())
}

/// Compile one program for one target; `Err` carries ocloc's output.
fn compile(
    dir: &std::path::Path,
    name: &str,
    target: &str,
    path: KernelPath,
) -> Result<(), String> {
    let tag = format!("{name}-{target}-{}", path.name());
    let out = Command::new("ocloc")
        .arg("compile")
        .arg("-file")
        .arg(dir.join(format!("{name}.cl")))
        .args(["-device", target, "-options", path.build_options()])
        .arg("-out_dir")
        .arg(dir.join(&tag))
        .args(["-output", &tag, "-q"])
        .output()
        .map_err(|e| format!("{tag}: running ocloc: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tag}: ocloc failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_program_compiles_for_dg2_pvc_tgllp_on_both_paths() {
    if !ocloc_present() {
        let required = std::env::var("KILN_REQUIRE_OCLOC").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "KILN_REQUIRE_OCLOC=1 but ocloc is not on PATH (apt-get install intel-opencl-icd)"
        );
        println!("ocloc compile check skipped: ocloc not found (apt-get install intel-opencl-icd)");
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("kiln-ocloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let programs = kernels_sycl::program_texts();
    for p in &programs {
        std::fs::write(dir.join(format!("{}.cl", p.name)), &p.text).expect("write source");
    }
    // One thread per target: ocloc runs are independent processes.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = TARGETS
            .iter()
            .map(|&target| {
                let (dir, programs) = (&dir, &programs);
                scope.spawn(move || {
                    let mut fails = Vec::new();
                    for p in programs {
                        for path in PATHS {
                            match compile(dir, p.name, target, path) {
                                Ok(()) => println!("{target}: {}.cl ({}) ok", p.name, path.name()),
                                Err(e) => fails.push(e),
                            }
                        }
                    }
                    fails
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a compile thread panicked".into()])
            })
            .collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
