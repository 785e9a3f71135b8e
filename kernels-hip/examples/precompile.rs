//! Fill the kernel cache for a GPU ahead of its first use:
//! `KILN_HIP_CACHE=DIR precompile gfx90a:sramecc+:xnack-` (the device's
//! full `gcnArchName`, as `kiln devices` prints it), hiprtc on the loader
//! path, no GPU needed. Every source compiles on its own thread. Run it on
//! the GPU machine before `kiln` (or ship DIR with a binary) so the first
//! request does not wait for hiprtc.

fn main() -> std::process::ExitCode {
    let targets: Vec<String> = std::env::args().skip(1).collect();
    if targets.is_empty() {
        eprintln!("usage: precompile ARCH... (e.g. gfx90a:sramecc+:xnack- gfx1100)");
        return std::process::ExitCode::from(2);
    }
    let mut ok = true;
    for target in &targets {
        let t0 = std::time::Instant::now();
        match kernels_hip::precompile_parallel(target) {
            Ok(sources) => {
                for (name, bytes) in sources {
                    println!("{target}: {name} → {bytes} bytes");
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
