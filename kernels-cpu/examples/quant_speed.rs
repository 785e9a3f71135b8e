//! Speed of the GGUF quantised GEMM at the default model's shapes (not a
//! benchmark suite: see `bench/` for that).
//!
//! `cargo run --release -p kernels-cpu --example quant_speed [-- FILTER]`
//! (`KILN_CPU_ISA`, `KILN_NUM_THREADS` pick the ISA and threads; FILTER keeps
//! the lines whose label contains it, e.g. `q4_1` or `m=1 `).
//!
//! For Q4_0, Q4_1 and Q8_0 weights `[N, K]` at the SmolLM2-135M shapes
//! (K→N = 576→576, 576→1536, 1536→576, 576→49152) and M ∈ {1, 16, 64, 512}
//! rows, in both precisions, prints best-of-N wall time, GB/s of weight bytes
//! (the figure of merit at M = 1, against the read bandwidth measured at the
//! start: L3-resident and DRAM), and GFLOP/s (`2·M·N·K` per call; the figure
//! of merit at M > 1), from the best wall time and, for long calls on a busy
//! machine, from the process's CPU time.

use std::time::{Duration, Instant};

use hal::quant::gguf;
use hal::{
    Backend, DType, DeviceBuffer, GgufType, OpDesc, PackedWeight, Precision, QuantGemm,
    QuantGemmArgs, QuantWeights, View, ViewMut,
};
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
    /// Process CPU time per run divided by the thread count: what an idle
    /// machine would give for long calls, where other processes on a busy
    /// box only stretch wall time (idle pool threads spinning inflate it for
    /// short ones, so trust `best` there).
    cpu_per_thread: Duration,
}

/// Time `f` over at least 3 runs and about `budget`.
fn best(threads: usize, budget: Duration, mut f: impl FnMut() -> Res<()>) -> Res<Timing> {
    f()?;
    let (mut best, start, c0, mut runs) = (Duration::MAX, Instant::now(), cpu_time(), 0u32);
    while runs < 3 || (start.elapsed() < budget && runs < 5000) {
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

/// Read bandwidth now: `threads` threads summing a `bytes`-byte buffer
/// (integer adds, which vectorise), best of `reps`, GB/s.
fn read_bandwidth(threads: usize, bytes: usize, reps: usize) -> f64 {
    let buf = vec![1u32; bytes / 4];
    let chunk = buf.len().div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..reps {
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

fn gguf_weight(rng: &mut Rng, ty: GgufType, n: usize, k: usize) -> QuantWeights {
    let mut data = Vec::with_capacity(n * ty.row_bytes(k));
    let mut row = vec![0f32; k];
    for _ in 0..n {
        row.iter_mut().for_each(|v| *v = rng.unit());
        data.extend(gguf::quantize_row(ty, &row));
    }
    QuantWeights::Gguf { ty, n, k, data }
}

/// Time one `[m, k] · w` call; `None` when the backend refuses it.
fn time(
    dev: &CpuBackend,
    rng: &mut Rng,
    w: &PackedWeight,
    m: usize,
    precision: Precision,
) -> Res<Option<Timing>> {
    let desc = OpDesc::QuantGemm {
        spec: w.spec,
        input: DType::F32,
        output: DType::F32,
        precision,
        n: w.n,
        k: w.k,
    };
    if dev.supports(&desc).is_err() {
        return Ok(None);
    }
    let xs: Vec<u8> = (0..m * w.k)
        .flat_map(|_| rng.unit().to_le_bytes())
        .collect();
    let x = upload(dev, &xs)?;
    let mut out = dev.alloc(4 * m * w.n)?;
    // Big calls get fewer repetitions.
    let flops = 2.0 * (m * w.n * w.k) as f64;
    let budget = Duration::from_millis(if flops > 2e9 { 1500 } else { 400 });
    let t = best(dev.threads(), budget, || {
        dev.quant_gemm(QuantGemmArgs {
            x: View::new(&x, DType::F32, &[m, w.k]),
            w,
            bias: None,
            out: ViewMut::new(&mut out, DType::F32, &[m, w.n]),
            precision,
        })?;
        Ok(())
    })?;
    Ok(Some(t))
}

fn main() -> Res<()> {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let dev = CpuBackend::open_default()?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let threads = dev.threads();
    println!(
        "device: {} — {threads} threads, isa {}",
        dev.capabilities().device,
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
    println!(
        "read bandwidth now: L3-resident (16 MiB) {:.1} GB/s, DRAM (1 GiB) {:.1} GB/s",
        read_bandwidth(threads, 16 << 20, 20),
        read_bandwidth(threads, 1 << 30, 3)
    );
    // (K, N) of the model's linear layers and its tied output layer.
    let shapes = [(576, 576), (576, 1536), (1536, 576), (576, 49152)];
    println!(
        "{:<5} {:<6} {:>11} {:>6} {:>10} {:>8} {:>8} {:>12}",
        "type", "prec", "K→N", "M", "ms", "GB/s", "GFLOP/s", "CPU GFLOP/s"
    );
    for ty in [GgufType::Q4_0, GgufType::Q4_1, GgufType::Q8_0] {
        for &(k, n) in &shapes {
            let qw = gguf_weight(&mut rng, ty, n, k);
            let bytes = qw.storage_bytes() as f64;
            let packed = dev.pack(&qw)?;
            for precision in [Precision::Exact, Precision::Int8Activations] {
                for m in [1, 16, 64, 512] {
                    let prec = match precision {
                        Precision::Exact => "exact",
                        Precision::Int8Activations => "int8",
                    };
                    let label = format!(
                        "{:<5} {prec:<6} {:>11} m={m:<4}",
                        ty.name(),
                        format!("{k}→{n}")
                    );
                    if !label.contains(filter.as_str()) {
                        continue;
                    }
                    match time(&dev, &mut rng, &packed, m, precision)? {
                        None => println!("{label} refused"),
                        Some(t) => {
                            let (s, c) = (t.best.as_secs_f64(), t.cpu_per_thread.as_secs_f64());
                            let flops = 2.0 * (m * n * k) as f64;
                            println!(
                                "{label} {:>10.4} {:>8.1} {:>8.1} {:>12.1}",
                                s * 1e3,
                                bytes / s / 1e9,
                                flops / s / 1e9,
                                if c > 0.0 { flops / c / 1e9 } else { f64::NAN }
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
