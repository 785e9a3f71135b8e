//! Quick speed check of the CPU GEMM kernels (not a benchmark suite: see
//! `bench/` for that).
//!
//! `cargo run --release -p kernels-cpu --example gemm_speed`
//! (`KILN_CPU_ISA`, `KILN_NUM_THREADS` pick the ISA and threads). Reports
//! best-of-N wall time: dense f32 GEMM 1024³ in GFLOP/s, and 4096 × 4096
//! matvecs (M = 1) in GB/s of weight bytes read.

use std::time::{Duration, Instant};

use hal::quant::gguf;
use hal::{
    ActivationScale, Backend, DType, DeviceBuffer, Gemm, GemmArgs, GgufType, PackedWeight,
    Precision, QuantGemm, QuantGemmArgs, QuantWeights, View, ViewMut,
};
use half::f16;
use kernels_cpu::CpuBackend;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A xorshift generator (no dependencies).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn upload(dev: &CpuBackend, bytes: &[u8]) -> Res<DeviceBuffer> {
    let mut b = dev.alloc(bytes.len())?;
    dev.upload(&mut b, 0, bytes)?;
    Ok(b)
}

/// CPU time used by this process so far (user + system, all threads), from
/// `/proc/self/stat` (clock ticks of 10 ms); zero where unavailable.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Duration::from_millis(10 * f.iter().sum::<u64>())
}

/// Timing of one kernel.
#[derive(Clone, Copy)]
struct Timing {
    /// Best wall time of one run.
    best: Duration,
    /// Process CPU time per run, divided by the thread count: the wall time
    /// an idle machine would give (other processes on a busy box only
    /// lengthen wall time).
    cpu_per_thread: Duration,
}

/// Time `f` over at least 5 runs and about 1.5 s.
fn best(threads: usize, mut f: impl FnMut() -> Res<()>) -> Res<Timing> {
    f()?;
    let (mut best, start, c0, mut runs) = (Duration::MAX, Instant::now(), cpu_time(), 0u32);
    while runs < 5 || (start.elapsed() < Duration::from_millis(1500) && runs < 2000) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed());
        runs += 1;
    }
    let cpu_per_thread = (cpu_time() - c0) / runs / threads as u32;
    Ok(Timing {
        best,
        cpu_per_thread,
    })
}

/// `what` per second, from the best wall time and from CPU time.
fn rate(amount: f64, t: Timing) -> String {
    let c = t.cpu_per_thread.as_secs_f64();
    format!(
        "{:7.1} (CPU-time basis {:7.1})",
        amount / t.best.as_secs_f64() / 1e9,
        if c > 0.0 { amount / c / 1e9 } else { f64::NAN }
    )
}

/// FMA peak right now: `threads` threads of independent AVX-512 (or AVX2)
/// FMAs on registers, in GFLOP/s. On a shared box this is the ceiling the
/// kernels saw during the run.
fn fma_peak(threads: usize) -> f64 {
    let iters = 20_000_000u64;
    let t = Instant::now();
    let flops: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || calib::fma_loop(iters)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    });
    flops / t.elapsed().as_secs_f64() / 1e9
}

/// Read bandwidth right now: `threads` threads summing a 256 MiB buffer
/// (integer adds, which vectorise), best of 3, GB/s.
fn read_bandwidth(threads: usize) -> f64 {
    let buf = vec![1u32; 64 << 20];
    let chunk = buf.len().div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let total: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u32, |a, &v| a.wrapping_add(v))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u32::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (4 * buf.len()) as f64 / best / 1e9
}

mod calib {
    /// Independent FMAs on 12 registers for `iters` rounds; returns the flops done.
    pub fn fma_loop(iters: u64) -> f64 {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was just detected.
                return unsafe { avx512(iters) };
            }
        }
        0.0
    }

    /// # Safety
    /// The CPU supports AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(iters: u64) -> f64 {
        use std::arch::x86_64::*;
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = 0.0;
        for v in acc {
            s += _mm512_reduce_add_ps(v);
        }
        std::hint::black_box(s);
        (iters * 12 * 32) as f64
    }
}

fn f32_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).flat_map(|_| rng.unit().to_le_bytes()).collect()
}

fn dense(dev: &CpuBackend, rng: &mut Rng, m: usize, n: usize, k: usize) -> Res<Timing> {
    let x = upload(dev, &f32_bytes(rng, m * k))?;
    let w = upload(dev, &f32_bytes(rng, n * k))?;
    let mut out = dev.alloc(4 * m * n)?;
    best(dev.threads(), || {
        dev.gemm(GemmArgs {
            x: View::new(&x, DType::F32, &[m, k]),
            w: View::new(&w, DType::F32, &[n, k]),
            bias: None,
            out: ViewMut::new(&mut out, DType::F32, &[m, n]),
        })?;
        Ok(())
    })
}

fn quant(dev: &CpuBackend, rng: &mut Rng, w: &PackedWeight, m: usize) -> Res<Timing> {
    let x = upload(dev, &f32_bytes(rng, m * w.k))?;
    let mut out = dev.alloc(4 * m * w.n)?;
    best(dev.threads(), || {
        dev.quant_gemm(QuantGemmArgs {
            x: View::new(&x, DType::F32, &[m, w.k]),
            w,
            bias: None,
            out: ViewMut::new(&mut out, DType::F32, &[m, w.n]),
            precision: Precision::Exact,
        })?;
        Ok(())
    })
}

fn weights(rng: &mut Rng, name: &str, n: usize, k: usize) -> QuantWeights {
    let g = 128;
    let words =
        |rng: &mut Rng, len: usize| -> Vec<i32> { (0..len).map(|_| rng.next() as i32).collect() };
    let scales = |rng: &mut Rng, len: usize| -> Vec<f16> {
        (0..len)
            .map(|_| f16::from_f32(0.01 * (1.0 + rng.unit())))
            .collect()
    };
    match name {
        "awq" => QuantWeights::Awq {
            group_size: g,
            n,
            k,
            qweight: words(rng, k * n / 8),
            qzeros: words(rng, k / g * n / 8),
            scales: scales(rng, k / g * n),
        },
        "gptq4" | "gptq8" | "gptq4-act" => {
            let bits = if name == "gptq8" { 8 } else { 4 };
            let p = 32 / bits as usize;
            let g_idx = if name == "gptq4-act" {
                Some((0..k).map(|i| ((i * 7919) % k / g) as i32).collect())
            } else {
                None
            };
            QuantWeights::Gptq {
                bits,
                group_size: g,
                n,
                k,
                qweight: words(rng, k / p * n),
                qzeros: words(rng, k / g * n / p),
                scales: scales(rng, k / g * n),
                g_idx,
            }
        }
        "fp8" => QuantWeights::Fp8 {
            n,
            k,
            weight: (0..n * k)
                .map(|_| hal::fp8::f32_to_e4m3(rng.unit() * 4.0))
                .collect(),
            weight_scale: (0..n).map(|_| 0.01).collect(),
            activation: ActivationScale::DynamicPerToken,
            input_scale: None,
        },
        _ => {
            let ty = match name {
                "q4_0" => GgufType::Q4_0,
                "q4_1" => GgufType::Q4_1,
                _ => GgufType::Q8_0,
            };
            let mut data = Vec::with_capacity(n * ty.row_bytes(k));
            for _ in 0..n {
                let row: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
                data.extend(gguf::quantize_row(ty, &row));
            }
            QuantWeights::Gguf { ty, n, k, data }
        }
    }
}

fn main() -> Res<()> {
    let dev = CpuBackend::open_default()?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    println!(
        "device: {} — {} threads, isa {}",
        dev.capabilities().device,
        dev.threads(),
        dev.isa()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let threads = dev.threads();
    println!(
        "calibration now: AVX-512 FMA peak {:.0} GFLOP/s (nominal idle: 409 on 2 threads), read bandwidth {:.1} GB/s (idle: 29)",
        fma_peak(threads),
        read_bandwidth(threads)
    );

    let s = 1024;
    let t = dense(&dev, &mut rng, s, s, s)?;
    println!(
        "f32 gemm {s}³: best {:8.3} ms; GFLOP/s {}",
        t.best.as_secs_f64() * 1e3,
        rate(2.0 * (s * s * s) as f64, t)
    );
    let (n, k) = (4096, 4096);
    for m in [1, 32] {
        let t = dense(&dev, &mut rng, m, n, k)?;
        println!(
            "f32       m={m:<2} {n}×{k}: best {:8.3} ms; GB/s of weights {}; GFLOP/s {}",
            t.best.as_secs_f64() * 1e3,
            rate((4 * n * k) as f64, t),
            rate(2.0 * (m * n * k) as f64, t)
        );
    }
    for name in [
        "q4_0",
        "q4_1",
        "q8_0",
        "awq",
        "gptq4",
        "gptq4-act",
        "gptq8",
        "fp8",
    ] {
        let qw = weights(&mut rng, name, n, k);
        let bytes = qw.storage_bytes();
        let packed = dev.pack(&qw)?;
        for m in [1, 32] {
            let t = quant(&dev, &mut rng, &packed, m)?;
            println!(
                "{name:<9} m={m:<2} {n}×{k}: best {:8.3} ms; GB/s of checkpoint bytes ({:.1} MB) {}; GFLOP/s {}",
                t.best.as_secs_f64() * 1e3,
                bytes as f64 / 1e6,
                rate(bytes as f64, t),
                rate(2.0 * (m * n * k) as f64, t)
            );
        }
    }
    println!(
        "calibration now: AVX-512 FMA peak {:.0} GFLOP/s, read bandwidth {:.1} GB/s",
        fma_peak(threads),
        read_bandwidth(threads)
    );
    Ok(())
}
