//! Speed of the CPU attention kernels and RMS norm.
//!
//! ```text
//! cargo run --release -p kernels-cpu --example attention_speed
//! ```
//!
//! * paged decode: batch × context tokens, 32 query heads / 8 KV heads /
//!   head dim 128, f16 cache (also f8e4m3), block size 16, shuffled blocks;
//!   reported in GB/s of K + V bytes read;
//! * flash-attention prefill (causal, f16, same heads) of 512 and 2048
//!   tokens, in GFLOP/s (`4 · head_dim · num_heads · Σ visible keys`);
//! * RMS norm of `[tokens, 4096]` rows (f32 and f16, with and without the
//!   residual), in GB/s of bytes read plus written.
//!
//! Best of several runs; `KILN_CPU_ISA` / `KILN_NUM_THREADS` pick the path;
//! arguments (`bw decode ordered fp8 long flash norm`) pick the benches (default: all).

use std::time::Instant;

use hal::{
    AttentionBatch, AttentionParams, Backend, DType, Elementwise, FlashAttention,
    FlashAttentionArgs, HostTensor, KvCacheOps, KvCacheSpec, KvLayout, PagedAttention,
    PagedAttentionArgs, RmsNormArgs, SeqSlice, Tensor,
};
use kernels_cpu::CpuBackend;

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// CPU time of the whole process (all threads), in seconds.
fn process_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; the call only writes it.
    if unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return f64::NAN;
    }
    t.sec as f64 + t.nsec as f64 * 1e-9
}

/// Timing of one benchmark: best wall time, and the CPU time of that run
/// divided by the thread count (what the wall time would be on an idle box
/// if the run was compute- or cache-bound; the box is shared).
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Best of `runs` calls (after one warm-up).
fn best(runs: usize, mut f: impl FnMut() -> hal::Result<()>) -> hal::Result<Timing> {
    let threads = std::env::var("KILN_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    f()?;
    let mut t = Timing {
        wall: f64::INFINITY,
        cpu: f64::INFINITY,
    };
    for _ in 0..runs {
        let (s, c) = (Instant::now(), process_cpu_seconds());
        f()?;
        t.wall = t.wall.min(s.elapsed().as_secs_f64());
        t.cpu = t.cpu.min((process_cpu_seconds() - c) / threads);
    }
    Ok(t)
}

fn paged_decode(
    cpu: &CpuBackend,
    batch: usize,
    ctx: usize,
    dtype: DType,
    shuffle: bool,
) -> hal::Result<()> {
    let (heads, kv, hd, bs) = (32, 8, 128, 16);
    let per_seq = ctx.div_ceil(bs);
    let spec = KvCacheSpec {
        num_blocks: batch * per_seq + 1,
        block_size: bs,
        num_kv_heads: kv,
        head_dim: hd,
        dtype,
        layout: KvLayout::Nhd,
    };
    let mut cache = cpu.alloc_kv_cache(&spec, 0.05, 0.05)?;
    let bytes: Vec<u8> = values(spec.bytes() / 4 + 1, 7)
        .iter()
        .flat_map(|v| {
            let h = half::f16::from_f32(*v).to_bits();
            // f16 pairs, or two finite e4m3 codes (exponent field < 15).
            if dtype == DType::F8E4M3 {
                [
                    (h & 0x77) as u8,
                    ((h >> 8) & 0x77) as u8,
                    (h & 0x77) as u8 ^ 0x80,
                    0x30,
                ]
            } else {
                let b = h.to_le_bytes();
                [b[0], b[1], b[0], b[1] & 0xBF]
            }
        })
        .take(spec.bytes())
        .collect();
    cpu.upload(&mut cache.key, 0, &bytes)?;
    cpu.upload(&mut cache.value, 0, &bytes)?;
    // Shuffled physical blocks (or in order, to compare).
    let mut ids: Vec<u32> = (1..spec.num_blocks as u32).collect();
    let r = values(ids.len(), 3);
    for i in (1..ids.len()).rev().filter(|_| shuffle) {
        let j = ((r[i] + 1.0) / 2.0 * (i + 1) as f32) as usize % (i + 1);
        ids.swap(i, j);
    }
    let seqs: Vec<SeqSlice<'_>> = (0..batch)
        .map(|b| SeqSlice {
            query_len: 1,
            seq_len: ctx,
            blocks: &ids[b * per_seq..(b + 1) * per_seq],
        })
        .collect();
    let meta =
        AttentionBatch::build(&seqs, bs).map_err(|e| hal::HalError::invalid("cpu", "bench", e))?;
    let dm = meta.to_device(cpu)?;
    let q = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(
            DType::F16,
            &[batch, heads, hd],
            &values(batch * heads * hd, 5),
        ),
    )?;
    let mut out = Tensor::alloc(cpu, DType::F16, &[batch, heads, hd])?;
    let t = best(5, || {
        cpu.paged_attention(PagedAttentionArgs {
            q: q.view(),
            cache: &cache,
            meta: dm.metadata(),
            params: AttentionParams::for_head_dim(hd),
            out: out.view_mut(),
        })
    })?;
    let kv_bytes = (batch * ctx * spec.bytes_per_token()) as f64;
    println!(
        "paged decode  batch {batch:>2} × ctx {ctx}, {heads}/{kv} heads, hd {hd}, {dtype} cache{}: {:8.3} ms  {:6.1} GB/s of KV read  (cpu-time: {:6.1} GB/s)",
        if shuffle { "" } else { ", blocks in order" },
        t.wall * 1e3,
        kv_bytes / t.wall / 1e9,
        kv_bytes / t.cpu / 1e9
    );
    Ok(())
}

fn flash_prefill(cpu: &CpuBackend, len: usize) -> hal::Result<()> {
    let (heads, kv, hd) = (32, 8, 128);
    let dt = DType::F16;
    let q = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(dt, &[len, heads, hd], &values(len * heads * hd, 11)),
    )?;
    let k = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(dt, &[len, kv, hd], &values(len * kv * hd, 12)),
    )?;
    let v = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(dt, &[len, kv, hd], &values(len * kv * hd, 13)),
    )?;
    let cu = Tensor::from_host(cpu, &HostTensor::from_i32(&[2], &[0, len as i32]))?;
    let mut out = Tensor::alloc(cpu, dt, &[len, heads, hd])?;
    let t = best(3, || {
        cpu.flash_attention(FlashAttentionArgs {
            q: q.view(),
            k: k.view(),
            v: v.view(),
            cu_seqlens_q: cu.view(),
            cu_seqlens_k: cu.view(),
            max_seqlen_q: len,
            max_seqlen_k: len,
            causal: true,
            params: AttentionParams::for_head_dim(hd),
            out: out.view_mut(),
        })
    })?;
    let flops = 4.0 * (hd * heads) as f64 * (len * (len + 1) / 2) as f64;
    println!(
        "flash prefill {len:>5} tokens causal, {heads}/{kv} heads, hd {hd}, f16: {:8.3} ms  {:6.1} GFLOP/s  (cpu-time: {:6.1} GFLOP/s)",
        t.wall * 1e3,
        flops / t.wall / 1e9,
        flops / t.cpu / 1e9
    );
    Ok(())
}

fn rms_norm(cpu: &CpuBackend, rows: usize, dt: DType, residual: bool) -> hal::Result<()> {
    let hidden = 4096;
    let x = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(dt, &[rows, hidden], &values(rows * hidden, 21)),
    )?;
    let w = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(DType::F32, &[hidden], &values(hidden, 22)),
    )?;
    let mut res = Tensor::from_host(
        cpu,
        &HostTensor::from_f32(dt, &[rows, hidden], &values(rows * hidden, 23)),
    )?;
    let mut out = Tensor::alloc(cpu, dt, &[rows, hidden])?;
    let t = best(10, || {
        cpu.rms_norm(RmsNormArgs {
            x: x.view(),
            residual: residual.then(|| res.view_mut()),
            weight: w.view(),
            eps: 1e-5,
            out: out.view_mut(),
        })
    })?;
    let bytes = (dt.bytes_for(rows * hidden) * if residual { 4 } else { 2 }) as f64;
    println!(
        "rms_norm      [{rows}, {hidden}] {dt}{}: {:8.3} ms  {:6.1} GB/s  (cpu-time: {:6.1} GB/s)",
        if residual { " + residual" } else { "" },
        t.wall * 1e3,
        bytes / t.wall / 1e9,
        bytes / t.cpu / 1e9
    );
    Ok(())
}

/// Read bandwidth of the machine right now: two threads summing 256 MB, for
/// comparison with the paged-decode figure (the box is shared). Returns
/// (wall, cpu-time) GB/s.
fn read_bandwidth() -> (f64, f64) {
    let data = vec![1u64; 32 << 20];
    let t = best(3, || {
        let sum: u64 = std::thread::scope(|s| {
            let h: Vec<_> = data
                .chunks(data.len() / 2)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &b| a ^ b)))
                .collect();
            h.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        std::hint::black_box(sum);
        Ok(())
    });
    let bytes = (data.len() * 8) as f64;
    t.map_or((0.0, 0.0), |t| (bytes / t.wall / 1e9, bytes / t.cpu / 1e9))
}

fn main() -> hal::Result<()> {
    let which: Vec<String> = std::env::args().skip(1).collect();
    let want = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let cpu = CpuBackend::open_default()?;
    println!("{}", cpu.capabilities().device);
    if want("bw") {
        let (wall, cpu) = read_bandwidth();
        println!("memory read bandwidth now (2 threads, 256 MB): {wall:.1} GB/s  (cpu-time: {cpu:.1} GB/s)");
    }
    if want("decode") {
        paged_decode(&cpu, 32, 2048, DType::F16, true)?;
    }
    if want("ordered") {
        paged_decode(&cpu, 32, 2048, DType::F16, false)?;
    }
    if want("fp8") {
        paged_decode(&cpu, 32, 2048, DType::F8E4M3, true)?;
    }
    if want("long") {
        paged_decode(&cpu, 1, 16384, DType::F16, true)?;
    }
    if want("flash") {
        flash_prefill(&cpu, 512)?;
        flash_prefill(&cpu, 2048)?;
    }
    if want("norm") {
        for (dt, residual) in [(DType::F32, false), (DType::F32, true), (DType::F16, true)] {
            rms_norm(&cpu, 512, dt, residual)?;
        }
    }
    Ok(())
}
