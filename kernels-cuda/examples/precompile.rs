//! Fill the PTX cache for a GPU architecture without a GPU:
//! `KILN_CUDA_CACHE=DIR cargo run -p kernels-cuda --example precompile -- compute_90a`
//! (NVRTC on `LD_LIBRARY_PATH`). Ship DIR with a binary to a GPU machine to
//! skip run-time compilation there.

fn main() -> std::process::ExitCode {
    let archs: Vec<String> = std::env::args().skip(1).collect();
    if archs.is_empty() {
        eprintln!("usage: precompile ARCH... (e.g. compute_90a compute_80)");
        return std::process::ExitCode::from(2);
    }
    for arch in &archs {
        match kernels_cuda::precompile(arch) {
            Ok(sources) => {
                for (name, bytes) in sources {
                    println!("{arch}: {name}.cu → {bytes} bytes of PTX");
                }
            }
            Err(e) => {
                eprintln!("{arch}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
