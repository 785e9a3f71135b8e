//! Fill the kernel cache for a GPU ahead of its first use:
//! `KILN_CUDA_CACHE=DIR precompile sm_90a` (CUBINs; `compute_90a` gives
//! PTX), NVRTC on the loader path, no GPU needed. Every source compiles on
//! its own thread. Run it on a GPU machine before `kiln` (or ship DIR with a
//! binary) to skip NVRTC and the driver's JIT at the first request.

fn main() -> std::process::ExitCode {
    let targets: Vec<String> = std::env::args().skip(1).collect();
    if targets.is_empty() {
        eprintln!("usage: precompile TARGET... (e.g. sm_90a sm_80 compute_90a)");
        return std::process::ExitCode::from(2);
    }
    let mut ok = true;
    for target in &targets {
        let t0 = std::time::Instant::now();
        match kernels_cuda::precompile_parallel(target) {
            Ok(sources) => {
                for (name, bytes) in sources {
                    println!("{target}: {name}.cu → {bytes} bytes");
                }
                println!("{target}: {:.1} s", t0.elapsed().as_secs_f64());
            }
            Err(e) => {
                eprintln!("{target}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
