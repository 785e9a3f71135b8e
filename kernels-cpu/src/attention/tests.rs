//! Bitwise batch invariance across every execution plan (wide decode items,
//! per-head token blocks, split-K partitions), thread count and chunking, on
//! every ISA; and the metadata checks.

use hal::{
    AttentionBatch, AttentionParams, Backend, DType, FlashAttention, FlashAttentionArgs,
    HostTensor, KvCache, KvCacheOps, KvCacheSpec, KvLayout, PagedAttention, PagedAttentionArgs,
    SeqSlice, Tensor, WriteKvArgs,
};

use crate::{CpuBackend, Isa};

const BS: usize = 16;

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

struct Setup {
    spec: KvCacheSpec,
    heads: usize,
    /// The sequence under test, `len` tokens on `blocks`.
    len: usize,
    blocks: Vec<u32>,
    q: Vec<f32>,
}

impl Setup {
    fn new(dtype: DType, len: usize, hd: usize) -> Self {
        let (kv, group) = (2, 4);
        let n = len.div_ceil(BS);
        let spec = KvCacheSpec {
            num_blocks: n + 3,
            block_size: BS,
            num_kv_heads: kv,
            head_dim: hd,
            dtype,
            layout: KvLayout::Nhd,
        };
        // Blocks in reverse order, block 0 unused.
        let blocks = (0..n as u32).rev().map(|b| b + 2).collect();
        Setup {
            spec,
            heads: kv * group,
            len,
            blocks,
            q: values(len * kv * group * hd, 3),
        }
    }

    fn cache(&self, cpu: &CpuBackend) -> KvCache {
        let mut cache = cpu.alloc_kv_cache(&self.spec, 0.5, 0.25).expect("cache");
        let poison = vec![0xFFu8; self.spec.bytes()];
        cpu.upload(&mut cache.key, 0, &poison).expect("poison");
        cpu.upload(&mut cache.value, 0, &poison).expect("poison");
        let slots = AttentionBatch::build(&[self.seq(self.len, self.len)], BS)
            .expect("batch")
            .slot_mapping;
        let shape = [self.len, self.spec.num_kv_heads, self.spec.head_dim];
        let n = shape.iter().product();
        let k = Tensor::from_host(
            cpu,
            &HostTensor::from_f32(DType::F32, &shape, &values(n, 1)),
        )
        .expect("k");
        let v = Tensor::from_host(
            cpu,
            &HostTensor::from_f32(DType::F32, &shape, &values(n, 2)),
        )
        .expect("v");
        let s = Tensor::from_host(cpu, &HostTensor::from_i64(&[self.len], &slots)).expect("slots");
        cpu.write_kv(WriteKvArgs {
            key: k.view(),
            value: v.view(),
            slot_mapping: s.view(),
            cache: &mut cache,
        })
        .expect("write_kv");
        cache
    }

    fn seq(&self, query_len: usize, seq_len: usize) -> SeqSlice<'_> {
        SeqSlice {
            query_len,
            seq_len,
            blocks: &self.blocks,
        }
    }

    /// Queries of tokens `t0..t1` of the sequence.
    fn q_rows(&self, t0: usize, t1: usize) -> Vec<f32> {
        let row = self.heads * self.spec.head_dim;
        self.q[t0 * row..t1 * row].to_vec()
    }

    /// Run paged attention for `seqs` (with queries `q`); output bytes.
    fn run(
        &self,
        cpu: &CpuBackend,
        cache: &KvCache,
        seqs: &[SeqSlice<'_>],
        q: &[f32],
        params: AttentionParams,
    ) -> Vec<u8> {
        let batch = AttentionBatch::build(seqs, BS).expect("batch");
        let meta = batch.to_device(cpu).expect("meta");
        let t = batch.num_tokens();
        let shape = [t, self.heads, self.spec.head_dim];
        let qd = Tensor::from_host(cpu, &HostTensor::from_f32(DType::F16, &shape, q)).expect("q");
        let mut out = Tensor::alloc(cpu, DType::F16, &shape).expect("out");
        cpu.paged_attention(PagedAttentionArgs {
            q: qd.view(),
            cache,
            meta: meta.metadata(),
            params,
            out: out.view_mut(),
        })
        .expect("paged_attention");
        out.to_host(cpu).expect("download").data
    }
}

/// Row bytes of token `t` in an output of the sequence's tokens.
fn row(out: &[u8], s: &Setup, t: usize) -> Vec<u8> {
    let n = s.heads * s.spec.head_dim * 2;
    out[t * n..(t + 1) * n].to_vec()
}

fn invariance(dtype: DType, hd: usize, window: Option<usize>) {
    let s = Setup::new(dtype, 1100, hd);
    let params = AttentionParams {
        sliding_window: window,
        ..AttentionParams::for_head_dim(hd)
    };
    for isa in Isa::available() {
        let cpu = CpuBackend::with(isa, 2).expect("cpu");
        let cache = s.cache(&cpu);
        // The whole prefill: per-head token blocks.
        let whole = s.run(&cpu, &cache, &[s.seq(s.len, s.len)], &s.q, params);
        let check = |what: &str, got: &[u8], t: usize| {
            assert!(
                got == row(&whole, &s, t).as_slice(),
                "{isa} {dtype} hd{hd} {window:?}: {what}, token {t}"
            );
        };
        // Single decodes: split-K past 512 keys.
        for p in [0, 31, 511, 512, 700, 1024, s.len - 1] {
            let got = s.run(
                &cpu,
                &cache,
                &[s.seq(1, p + 1)],
                &s.q_rows(p, p + 1),
                params,
            );
            check("decode", &got, p);
        }
        // A decode batch: wide items.
        let ps = [100, 513, 1099, 7, 640, 901, 1000, 2, 333, 1050];
        let seqs: Vec<_> = ps.iter().map(|&p| s.seq(1, p + 1)).collect();
        let q: Vec<f32> = ps.iter().flat_map(|&p| s.q_rows(p, p + 1)).collect();
        let got = s.run(&cpu, &cache, &seqs, &q, params);
        for (i, &p) in ps.iter().enumerate() {
            check("decode batch", &row(&got, &s, i), p);
        }
        // Chunked prefill, and other thread counts.
        for threads in [1, 3] {
            let cpu = CpuBackend::with(isa, threads).expect("cpu");
            let cache = s.cache(&cpu);
            for (a, b) in [(0, 300), (300, 777), (777, s.len)] {
                let got = s.run(&cpu, &cache, &[s.seq(b - a, b)], &s.q_rows(a, b), params);
                for t in a..b {
                    check("chunk", &row(&got, &s, t - a), t);
                }
            }
        }
    }
}

#[test]
fn paged_rows_are_invariant_f16() {
    invariance(DType::F16, 128, None);
}

#[test]
fn paged_rows_are_invariant_fp8_odd_head_dim_window() {
    invariance(DType::F8E4M3, 72, Some(600));
}

#[test]
fn flash_rows_match_their_own_decode() {
    let (len, heads, kv, hd) = (700, 4, 2, 96);
    let q = values(len * heads * hd, 5);
    let k = values(len * kv * hd, 6);
    let v = values(len * kv * hd, 7);
    for isa in Isa::available() {
        let cpu = CpuBackend::with(isa, 2).expect("cpu");
        let run = |lq: usize, lk: usize, q: &[f32]| {
            let t = |data: &[f32], rows: usize, h: usize| {
                Tensor::from_host(
                    &cpu,
                    &HostTensor::from_f32(DType::BF16, &[rows, h, hd], &data[..rows * h * hd]),
                )
                .expect("t")
            };
            let (qt, kt, vt) = (t(q, lq, heads), t(&k, lk, kv), t(&v, lk, kv));
            let cq =
                Tensor::from_host(&cpu, &HostTensor::from_i32(&[2], &[0, lq as i32])).expect("cu");
            let ck =
                Tensor::from_host(&cpu, &HostTensor::from_i32(&[2], &[0, lk as i32])).expect("cu");
            let mut out = Tensor::alloc(&cpu, DType::BF16, &[lq, heads, hd]).expect("out");
            cpu.flash_attention(FlashAttentionArgs {
                q: qt.view(),
                k: kt.view(),
                v: vt.view(),
                cu_seqlens_q: cq.view(),
                cu_seqlens_k: ck.view(),
                max_seqlen_q: lq,
                max_seqlen_k: lk,
                causal: true,
                params: AttentionParams::for_head_dim(hd),
                out: out.view_mut(),
            })
            .expect("flash");
            out.to_host(&cpu).expect("download").data
        };
        let whole = run(len, len, &q);
        let n = heads * hd * 2;
        for p in [0, 1, 511, 512, 699] {
            let got = run(1, p + 1, &q[p * heads * hd..]);
            assert!(got == whole[p * n..(p + 1) * n], "{isa}: token {p}");
        }
    }
}

#[test]
fn bad_metadata_is_an_error() {
    let s = Setup::new(DType::F16, 40, 64);
    let cpu = CpuBackend::with(Isa::Scalar, 2).expect("cpu");
    let cache = s.cache(&cpu);
    let params = AttentionParams::for_head_dim(64);
    let good = AttentionBatch::build(&[s.seq(2, 40)], BS).expect("batch");
    let q = Tensor::from_host(
        &cpu,
        &HostTensor::from_f32(DType::F16, &[2, s.heads, 64], &s.q_rows(0, 2)),
    )
    .expect("q");
    let mut out = Tensor::alloc(&cpu, DType::F16, &[2, s.heads, 64]).expect("out");
    let mut try_batch = |b: &AttentionBatch| {
        let meta = b.to_device(&cpu).expect("meta");
        cpu.paged_attention(PagedAttentionArgs {
            q: q.view(),
            cache: &cache,
            meta: meta.metadata(),
            params,
            out: out.view_mut(),
        })
    };
    assert!(try_batch(&good).is_ok());
    let mut b = good.clone();
    b.block_tables[1] = s.spec.num_blocks as i32; // block id outside the cache
    assert!(try_batch(&b).is_err());
    let mut b = good.clone();
    b.block_tables[0] = -1;
    assert!(try_batch(&b).is_err());
    let mut b = good.clone();
    b.seq_lens[0] = 1; // seq_len < query_len
    assert!(try_batch(&b).is_err());
    let mut b = good.clone();
    b.seq_lens[0] = (good.max_blocks_per_seq * BS + 1) as i32; // past the table
    assert!(try_batch(&b).is_err());
    let mut b = good.clone();
    b.query_start_loc[1] = 3; // past num_tokens
    assert!(try_batch(&b).is_err());
}
