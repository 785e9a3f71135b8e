//! The machine's roofline, measured at the start of every run.
//!
//! * **Peak FMA GFLOP/s** (fp32), on one thread and on all of them: a loop of
//!   12 independent `vfmadd231ps` per iteration (AVX-512 zmm, else AVX2 ymm,
//!   chosen at run time; enough accumulators to cover the FMA latency on two
//!   ports), written in `asm!` so the compiler can neither drop nor reorder
//!   it. Without AVX2 a plain Rust multiply-add loop stands in.
//! * **Read bandwidth GB/s** (10⁹ bytes/s): a SIMD sum (8 independent
//!   `vaddps` with memory operands per iteration) over a 1 GiB buffer —
//!   larger than any last-level cache, so it measures DRAM — and over a
//!   buffer that stays L3-resident after a first pass (64 MiB, or a quarter
//!   of the last-level cache if smaller: [`l3_buffer_bytes`]). All threads
//!   sum disjoint slices of the same buffer.
//! * Every figure is the best of many short rounds (a few milliseconds
//!   each; all threads start each round together), like the cases' own
//!   best-of-N timing: on a machine shared with other work, the figure is
//!   what it reaches in its quiet moments. The DRAM buffer is read one
//!   32 MiB segment per round, each last touched a whole GiB earlier. The
//!   load average goes beside the figures.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The SIMD level the roofline loops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F, 16 f32 lanes.
    Avx512,
    /// AVX2 + FMA, 8 f32 lanes.
    Avx2,
    /// No x86 SIMD (or another architecture): plain Rust loops.
    Scalar,
}

impl Simd {
    /// Best level this CPU runs.
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Scalar => "scalar",
        }
    }

    /// FLOPs of one iteration of [`fma_loop`].
    fn flops_per_iter(self) -> u64 {
        match self {
            Simd::Avx512 => 12 * 16 * 2,
            Simd::Avx2 => 12 * 8 * 2,
            Simd::Scalar => 16 * 2,
        }
    }
}

/// How hard to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    /// Fewer repetitions (quick mode): about 2 s.
    Quick,
    /// More repetitions: about 4 s.
    Full,
    /// Tiny buffers and loops, for tests only: the figures mean nothing.
    Test,
}

/// The measured roofline of this machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Roofline {
    /// CPU model name.
    pub cpu: String,
    /// SIMD level of the loops.
    pub simd: Simd,
    /// Threads of the all-thread figures (the available parallelism).
    pub threads: usize,
    /// Peak fp32 FMA GFLOP/s on one thread.
    pub peak_gflops_1t: f64,
    /// Peak fp32 FMA GFLOP/s on all threads.
    pub peak_gflops: f64,
    /// DRAM read GB/s on one thread.
    pub dram_gbps_1t: f64,
    /// DRAM read GB/s on all threads.
    pub dram_gbps: f64,
    /// L3-resident read GB/s on one thread.
    pub l3_gbps_1t: f64,
    /// L3-resident read GB/s on all threads.
    pub l3_gbps: f64,
    /// Bytes of the DRAM buffer.
    pub dram_buffer: usize,
    /// Bytes of the L3 buffer.
    pub l3_buffer: usize,
    /// Last-level cache size in bytes, from sysfs, where known.
    pub llc_bytes: Option<u64>,
}

impl Roofline {
    /// Measure this machine (a few seconds; allocates 1 GiB unless `Test`).
    pub fn measure(effort: Effort) -> Roofline {
        let simd = Simd::detect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let llc = llc_bytes();
        let p = Plan::new(effort, llc);
        let iters = calibrate(simd, p.fma_round);
        let peak = |t: usize| {
            let flops = (simd.flops_per_iter() * iters * t as u64) as f64;
            best_rate(
                flops,
                &rounds(t, p.fma_rounds, |_, _| fma_loop(simd, iters)),
            ) / 1e9
        };
        let peak_gflops_1t = peak(1);
        let peak_gflops = peak(threads);
        let (l3_gbps_1t, l3_gbps) = {
            let buf = Buffer::new(p.l3_buffer);
            buf.read_rounds(simd, 1, 1, 1);
            (
                buf.gbps(simd, 1, 1, p.l3_rounds),
                buf.gbps(simd, threads, 1, p.l3_rounds),
            )
        };
        let (dram_gbps_1t, dram_gbps) = {
            let buf = Buffer::new(p.dram_buffer);
            let rounds = p.dram_passes * p.dram_segments;
            (
                buf.gbps(simd, 1, p.dram_segments, rounds),
                buf.gbps(simd, threads, p.dram_segments, rounds),
            )
        };
        Roofline {
            cpu: cpu_model(),
            simd,
            threads,
            peak_gflops_1t,
            peak_gflops,
            dram_gbps_1t,
            dram_gbps,
            l3_gbps_1t,
            l3_gbps,
            dram_buffer: p.dram_buffer,
            l3_buffer: p.l3_buffer,
            llc_bytes: llc,
        }
    }

    /// FLOPs per byte above which an op is compute-bound (all threads, DRAM).
    pub fn ridge(&self) -> f64 {
        self.peak_gflops / self.dram_gbps
    }
}

/// How much to measure. Every figure is the best of many short rounds (a
/// few milliseconds each), like the cases' own best-of-N timing, so a
/// machine shared with other work still shows what it can do in its quiet
/// moments.
struct Plan {
    /// Length of one FMA round.
    fma_round: Duration,
    /// FMA rounds per thread count.
    fma_rounds: usize,
    /// Bytes of the DRAM buffer.
    dram_buffer: usize,
    /// The DRAM buffer is read in this many segments, one per round: each
    /// segment was last touched a whole buffer ago, so it comes from DRAM.
    dram_segments: usize,
    /// Passes over the DRAM buffer per thread count.
    dram_passes: usize,
    /// Bytes of the L3 buffer.
    l3_buffer: usize,
    /// Passes over the L3 buffer per thread count.
    l3_rounds: usize,
}

impl Plan {
    fn new(effort: Effort, llc: Option<u64>) -> Plan {
        let l3_buffer = l3_buffer_bytes(llc);
        match effort {
            Effort::Quick => Plan {
                fma_round: Duration::from_millis(5),
                fma_rounds: 40,
                dram_buffer: 1 << 30,
                dram_segments: 32,
                dram_passes: 2,
                l3_buffer,
                l3_rounds: 100,
            },
            Effort::Full => Plan {
                fma_round: Duration::from_millis(5),
                fma_rounds: 120,
                dram_buffer: 1 << 30,
                dram_segments: 32,
                dram_passes: 5,
                l3_buffer,
                l3_rounds: 300,
            },
            Effort::Test => Plan {
                fma_round: Duration::from_micros(200),
                fma_rounds: 3,
                dram_buffer: 1 << 20,
                dram_segments: 2,
                dram_passes: 1,
                l3_buffer: 256 << 10,
                l3_rounds: 2,
            },
        }
    }
}

/// The L3 buffer: 64 MiB, or a quarter of the last-level cache if that is
/// smaller (a VM's or a tenant's share of a shared L3 is often far less than
/// sysfs reports: on the 105 MiB-L3 box the bench was written on, 64 MiB
/// already streams from DRAM), but at least 8 MiB (beyond two cores' L2).
pub fn l3_buffer_bytes(llc: Option<u64>) -> usize {
    let quarter = llc.map_or(usize::MAX, |b| (b / 4) as usize);
    (quarter.min(64 << 20) >> 20 << 20).max(8 << 20)
}

/// `work` per round ÷ the fastest round's seconds.
fn best_rate(work: f64, rounds: &[Duration]) -> f64 {
    rounds
        .iter()
        .map(|d| work / d.as_secs_f64().max(1e-9))
        .fold(0.0, f64::max)
}

/// Iterations of [`fma_loop`] lasting about `target` on one thread.
fn calibrate(simd: Simd, target: Duration) -> u64 {
    let mut iters = 1u64 << 10;
    loop {
        let t = Instant::now();
        fma_loop(simd, iters);
        let d = t.elapsed();
        if d >= target / 4 || iters >= 1 << 40 {
            let scale = target.as_secs_f64() / d.as_secs_f64().max(1e-9);
            return ((iters as f64 * scale) as u64).max(1);
        }
        iters *= 4;
    }
}

/// Run `f(thread, round)` on `threads` threads for `n` rounds, all
/// threads starting each round together (a barrier); per round, the wall
/// time from the first thread's start to the last one's end. Each thread
/// reads the clock itself, so spawning costs nothing.
fn rounds(threads: usize, n: usize, f: impl Fn(usize, usize) + Sync) -> Vec<Duration> {
    let barrier = Barrier::new(threads);
    let spans: Vec<Vec<(Instant, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    (0..n)
                        .map(|r| {
                            barrier.wait();
                            let t0 = Instant::now();
                            f(t, r);
                            (t0, Instant::now())
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    (0..n)
        .filter_map(|r| {
            let start = spans.iter().filter_map(|s| s.get(r)).map(|s| s.0).min()?;
            let end = spans.iter().filter_map(|s| s.get(r)).map(|s| s.1).max()?;
            Some(end - start)
        })
        .collect()
}

/// `iters` iterations of 12 independent FMAs on zeroed registers.
fn fma_loop(simd: Simd, iters: u64) {
    #[cfg(target_arch = "x86_64")]
    match simd {
        Simd::Avx512 => return x86::fma_avx512(iters),
        Simd::Avx2 => return x86::fma_avx2(iters),
        Simd::Scalar => {}
    }
    let _ = simd;
    let (x, y) = (
        std::hint::black_box(0.999f32),
        std::hint::black_box(1e-3f32),
    );
    let mut acc = [0f32; 16];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * x + y;
        }
    }
    std::hint::black_box(acc);
}

/// 64-byte aligned f32 storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A buffer to stream through, pages touched on creation.
struct Buffer {
    lines: Vec<Line>,
}

/// Bytes one iteration of the read loops consumes.
const READ_STEP: usize = 512;

impl Buffer {
    fn new(bytes: usize) -> Buffer {
        let n = bytes.div_ceil(READ_STEP) * (READ_STEP / 64);
        Buffer {
            lines: vec![Line([1.0; 16]); n],
        }
    }

    /// Lines of one thread's slice of one of `segments` segments (a
    /// multiple of the 8 lines one loop iteration reads).
    fn slice_lines(&self, threads: usize, segments: usize) -> usize {
        let step = READ_STEP / 64;
        self.lines.len() / segments / threads / step * step
    }

    /// `rounds` rounds on `threads` threads; round `r` sums segment
    /// `r % segments`, each thread a disjoint slice of it.
    fn read_rounds(&self, simd: Simd, threads: usize, segments: usize, n: usize) -> Vec<Duration> {
        let per = self.slice_lines(threads, segments);
        let seg = per * threads;
        rounds(threads, n, |t, r| {
            let start = (r % segments) * seg + t * per;
            read_lines(simd, &self.lines[start..start + per]);
        })
    }

    /// Best read GB/s over `n` rounds (see [`Buffer::read_rounds`]).
    fn gbps(&self, simd: Simd, threads: usize, segments: usize, n: usize) -> f64 {
        let bytes = (self.slice_lines(threads, segments) * threads * 64) as f64;
        best_rate(bytes, &self.read_rounds(simd, threads, segments, n)) / 1e9
    }
}

/// Sum `lines` (a multiple of 8 lines) with the widest loads available.
fn read_lines(simd: Simd, lines: &[Line]) {
    if lines.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    match simd {
        Simd::Avx512 => return x86::sum_avx512(lines.as_ptr().cast(), lines.len() * 64),
        Simd::Avx2 => return x86::sum_avx2(lines.as_ptr().cast(), lines.len() * 64),
        Simd::Scalar => {}
    }
    let _ = simd;
    let mut acc = [0f32; 16];
    for line in lines {
        for (a, v) in acc.iter_mut().zip(line.0) {
            *a += v;
        }
    }
    std::hint::black_box(acc);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The measuring loops in `asm!`: stable on every supported toolchain,
    //! immune to the optimiser, and free of target-feature attributes (the
    //! callers check the CPU features first).

    use std::arch::asm;

    macro_rules! fma12 {
        ($reg:literal) => {
            concat!(
                "vfmadd231ps ",
                $reg,
                "0, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "1, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "2, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "3, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "4, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "5, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "6, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "7, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "8, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "9, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "10, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
                "vfmadd231ps ",
                $reg,
                "11, ",
                $reg,
                "12, ",
                $reg,
                "13\n",
            )
        };
    }

    /// Zero xmm0–13 (VEX zeroing clears the upper ymm/zmm bits too), so no
    /// denormal or NaN slows the loop.
    macro_rules! zero14 {
        () => {
            concat!(
                "vxorps xmm0, xmm0, xmm0\n",
                "vxorps xmm1, xmm1, xmm1\n",
                "vxorps xmm2, xmm2, xmm2\n",
                "vxorps xmm3, xmm3, xmm3\n",
                "vxorps xmm4, xmm4, xmm4\n",
                "vxorps xmm5, xmm5, xmm5\n",
                "vxorps xmm6, xmm6, xmm6\n",
                "vxorps xmm7, xmm7, xmm7\n",
                "vxorps xmm8, xmm8, xmm8\n",
                "vxorps xmm9, xmm9, xmm9\n",
                "vxorps xmm10, xmm10, xmm10\n",
                "vxorps xmm11, xmm11, xmm11\n",
                "vxorps xmm12, xmm12, xmm12\n",
                "vxorps xmm13, xmm13, xmm13\n",
            )
        };
    }

    /// `iters` × 12 zmm FMAs. Call only when AVX-512F is present.
    pub(super) fn fma_avx512(iters: u64) {
        if iters == 0 {
            return;
        }
        // SAFETY: the caller checked AVX-512F; the asm touches only the
        // registers declared clobbered (xmm0–13 via `clobber_abi`, rcx).
        unsafe {
            asm!(
                zero14!(),
                "2:",
                fma12!("zmm"),
                "dec rcx",
                "jnz 2b",
                "vzeroupper",
                inout("rcx") iters => _,
                clobber_abi("C"),
                options(nostack, nomem),
            );
        }
    }

    /// `iters` × 12 ymm FMAs. Call only when AVX2 and FMA are present.
    pub(super) fn fma_avx2(iters: u64) {
        if iters == 0 {
            return;
        }
        // SAFETY: the caller checked AVX2 + FMA; registers as above.
        unsafe {
            asm!(
                zero14!(),
                "2:",
                fma12!("ymm"),
                "dec rcx",
                "jnz 2b",
                "vzeroupper",
                inout("rcx") iters => _,
                clobber_abi("C"),
                options(nostack, nomem),
            );
        }
    }

    /// Sum `bytes` (a non-zero multiple of 512) at `ptr` with zmm loads.
    /// Call only when AVX-512F is present.
    pub(super) fn sum_avx512(ptr: *const u8, bytes: usize) {
        // SAFETY: the caller checked AVX-512F and passes a live buffer of
        // `bytes` bytes; the asm only reads it.
        unsafe {
            asm!(
                zero14!(),
                "2:",
                "vaddps zmm0, zmm0, [rsi]",
                "vaddps zmm1, zmm1, [rsi + 64]",
                "vaddps zmm2, zmm2, [rsi + 128]",
                "vaddps zmm3, zmm3, [rsi + 192]",
                "vaddps zmm4, zmm4, [rsi + 256]",
                "vaddps zmm5, zmm5, [rsi + 320]",
                "vaddps zmm6, zmm6, [rsi + 384]",
                "vaddps zmm7, zmm7, [rsi + 448]",
                "add rsi, 512",
                "sub rcx, 512",
                "jnz 2b",
                "vzeroupper",
                inout("rsi") ptr => _,
                inout("rcx") bytes => _,
                clobber_abi("C"),
                options(nostack, readonly),
            );
        }
    }

    /// Sum `bytes` (a non-zero multiple of 512) at `ptr` with ymm loads.
    /// Call only when AVX2 is present.
    pub(super) fn sum_avx2(ptr: *const u8, bytes: usize) {
        // SAFETY: as for `sum_avx512`, with AVX2.
        unsafe {
            asm!(
                zero14!(),
                "2:",
                "vaddps ymm0, ymm0, [rsi]",
                "vaddps ymm1, ymm1, [rsi + 32]",
                "vaddps ymm2, ymm2, [rsi + 64]",
                "vaddps ymm3, ymm3, [rsi + 96]",
                "vaddps ymm4, ymm4, [rsi + 128]",
                "vaddps ymm5, ymm5, [rsi + 160]",
                "vaddps ymm6, ymm6, [rsi + 192]",
                "vaddps ymm7, ymm7, [rsi + 224]",
                "add rsi, 256",
                "sub rcx, 256",
                "jnz 2b",
                "vzeroupper",
                inout("rsi") ptr => _,
                inout("rcx") bytes => _,
                clobber_abi("C"),
                options(nostack, readonly),
            );
        }
    }
}

/// The CPU model name from `/proc/cpuinfo`, or the architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The 1-, 5- and 15-minute load averages from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(s: &str) -> Option<[f64; 3]> {
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Size of the highest-level cache of CPU 0, from sysfs.
pub fn llc_bytes() -> Option<u64> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| {
        let p = e.ok()?.path();
        let level: u32 = std::fs::read_to_string(p.join("level"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let size = parse_size(std::fs::read_to_string(p.join("size")).ok()?.trim())?;
        Some((level, size))
    })
    .max()
    .map(|(_, size)| size)
}

/// `"107520K"` → bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    Some(num.trim().parse::<u64>().ok()? * mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_sysfs_formats() {
        assert_eq!(
            parse_loadavg("1.35 0.80 0.35 1/101 13878\n"),
            Some([1.35, 0.80, 0.35])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        assert_eq!(parse_size("107520K"), Some(107520 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(l3_buffer_bytes(Some(105 << 20)), 26 << 20);
        assert_eq!(l3_buffer_bytes(Some(260 << 20)), 64 << 20);
        assert_eq!(l3_buffer_bytes(Some(16 << 20)), 8 << 20);
        assert_eq!(l3_buffer_bytes(None), 64 << 20);
    }

    #[test]
    fn measures_something_positive() {
        let r = Roofline::measure(Effort::Test);
        for v in [
            r.peak_gflops_1t,
            r.peak_gflops,
            r.dram_gbps_1t,
            r.dram_gbps,
            r.l3_gbps_1t,
            r.l3_gbps,
        ] {
            assert!(v.is_finite() && v > 0.0, "{r:?}");
        }
        assert!(r.ridge() > 0.0);
    }
}
