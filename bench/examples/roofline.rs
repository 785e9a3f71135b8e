//! Print this machine's measured roofline (peak FMA GFLOP/s, DRAM and L3
//! read GB/s) and the load average, as the benchmark header reports them.
//!
//! ```text
//! cargo run --release -p bench --example roofline
//! ```

use bench::roofline::{load_average, Roofline};
use bench::Effort;

fn main() {
    let load = load_average();
    let r = Roofline::measure(Effort::Full);
    println!("cpu: {} ({} threads, {})", r.cpu, r.threads, r.simd.name());
    println!(
        "peak fp32 FMA: {:.1} GFLOP/s (1 thread), {:.1} GFLOP/s (all)",
        r.peak_gflops_1t, r.peak_gflops
    );
    println!(
        "DRAM read: {:.1} GB/s (1 thread), {:.1} GB/s (all)",
        r.dram_gbps_1t, r.dram_gbps
    );
    println!(
        "L3 read: {:.1} GB/s (1 thread), {:.1} GB/s (all)",
        r.l3_gbps_1t, r.l3_gbps
    );
    println!("ridge point: {:.1} FLOP/byte", r.ridge());
    if let Some([a, b, c]) = load {
        println!("load average: {a:.2} {b:.2} {c:.2}");
    }
}
