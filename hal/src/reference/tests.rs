//! Checks of the oracle itself: hand-computed values and cross-checks
//! between ops that must agree.

use super::*;
use crate::conformance::Rng;
use crate::{AttentionBatch, AttentionParams, KvCacheSpec, KvLayout, RopeStyle, SeqSlice};

fn t32(shape: &[usize], v: &[f32]) -> HostTensor {
    HostTensor::from_f32(DType::F32, shape, v)
}

#[test]
fn gemm_by_hand() {
    let x = t32(&[2, 3], &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
    let w = t32(&[2, 3], &[1.0, 0.0, 1.0, 0.5, 0.5, 0.5]);
    let b = t32(&[2], &[10.0, 20.0]);
    let y = gemm(&x, &w, Some(&b), DType::F32).to_f32();
    assert_eq!(y, vec![14.0, 23.0, 10.0, 20.0]);
}

#[test]
fn rms_norm_by_hand() {
    let x = t32(&[1, 2], &[3.0, 4.0]);
    let w = t32(&[2], &[1.0, 2.0]);
    let mut res = t32(&[1, 2], &[1.0, 0.0]);
    // r = [4, 4]; rms = 4; out = [1, 2]
    let y = rms_norm(&x, Some(&mut res), &w, 0.0).to_f32();
    assert_eq!(res.to_f32(), vec![4.0, 4.0]);
    assert_eq!(y, vec![1.0, 2.0]);
}

#[test]
fn rope_rotates_pairs() {
    // One head of 4, rotary_dim 4, position 1 with angle 90° for pair 0 and 0° for pair 1.
    let table = t32(&[2, 4], &[1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    let mut q = t32(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let mut k = q.clone();
    rope(&[1], &mut q, &mut k, &table, RopeStyle::Neox);
    // NeoX pairs (0,2) rotated 90°: (1,3) -> (-3, 1); (1,3) pair angle 0: unchanged.
    assert_eq!(q.to_f32(), vec![-3.0, 2.0, 1.0, 4.0]);
    let mut q = t32(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    rope(&[1], &mut q, &mut k, &table, RopeStyle::Gptj);
    // GPT-J pairs (0,1) rotated 90°: (1,2) -> (-2, 1); (2,3) unchanged.
    assert_eq!(q.to_f32(), vec![-2.0, 1.0, 3.0, 4.0]);
    // Out-of-table positions leave rows unchanged.
    let mut q = t32(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    rope(&[7], &mut q, &mut k, &table, RopeStyle::Neox);
    assert_eq!(q.to_f32(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn attention_by_hand() {
    // One query, two keys with scores 0 and ln 3 → weights 1/4, 3/4.
    let q = t32(&[1, 1, 1], &[1.0]);
    let k = t32(&[2, 1, 1], &[0.0, 3f32.ln()]);
    let v = t32(&[2, 1, 1], &[4.0, 8.0]);
    let p = AttentionParams {
        scale: 1.0,
        sliding_window: None,
        softcap: None,
    };
    let y = flash_attention(&q, &k, &v, &[0, 1], &[0, 2], true, &p).to_f32();
    assert!((y[0] - 7.0).abs() < 1e-6, "{y:?}");
    // A window of 1 sees only the last key.
    let p1 = AttentionParams {
        sliding_window: Some(1),
        ..p
    };
    assert_eq!(
        flash_attention(&q, &k, &v, &[0, 1], &[0, 2], true, &p1).to_f32(),
        vec![8.0]
    );
}

/// Paged attention over a permuted cache equals dense attention over the
/// same keys, for every layout and a GQA group.
#[test]
fn paged_matches_dense() {
    let mut rng = Rng::new(7);
    let (h, hk, d, bs) = (4, 2, 8, 4);
    let lens = [9usize, 3];
    let qlens = [3usize, 1];
    for layout in [KvLayout::Nhd, KvLayout::VllmSplitX { x: 4 }] {
        let spec = KvCacheSpec {
            num_blocks: 12,
            block_size: bs,
            num_kv_heads: hk,
            head_dim: d,
            dtype: DType::F32,
            layout,
        };
        let mut cache = HostKvCache::poisoned(spec, 1.0, 1.0);
        let perm = rng.permutation(11);
        let blocks: Vec<Vec<u32>> = vec![
            perm[..3].iter().map(|&b| b as u32 + 1).collect(),
            perm[3..4].iter().map(|&b| b as u32 + 1).collect(),
        ];
        let keys: Vec<Vec<f64>> = lens.iter().map(|&l| rng.normals(l * hk * d, 1.0)).collect();
        let vals: Vec<Vec<f64>> = lens.iter().map(|&l| rng.normals(l * hk * d, 1.0)).collect();
        for s in 0..2 {
            let all = AttentionBatch::build(
                &[SeqSlice {
                    query_len: lens[s],
                    seq_len: lens[s],
                    blocks: &blocks[s],
                }],
                bs,
            )
            .unwrap();
            let k = HostTensor::from_f64(DType::F32, &[lens[s], hk, d], &keys[s]);
            let v = HostTensor::from_f64(DType::F32, &[lens[s], hk, d], &vals[s]);
            write_kv(&k, &v, &all.slot_mapping, &mut cache);
        }
        let seqs: Vec<SeqSlice<'_>> = (0..2)
            .map(|s| SeqSlice {
                query_len: qlens[s],
                seq_len: lens[s],
                blocks: &blocks[s],
            })
            .collect();
        let batch = AttentionBatch::build(&seqs, bs).unwrap();
        batch.validate(&spec).unwrap();
        let nq: usize = qlens.iter().sum();
        let q = HostTensor::from_f64(DType::F32, &[nq, h, d], &rng.normals(nq * h * d, 1.0));
        let p = AttentionParams::for_head_dim(d);
        let paged = paged_attention(
            &q,
            &cache,
            &batch.query_start_loc,
            &batch.seq_lens,
            &batch.block_tables,
            batch.max_blocks_per_seq,
            &p,
        );
        let k_all: Vec<f64> = keys.concat();
        let v_all: Vec<f64> = vals.concat();
        let total: usize = lens.iter().sum();
        let dense = flash_attention(
            &q,
            &HostTensor::from_f64(DType::F32, &[total, hk, d], &k_all),
            &HostTensor::from_f64(DType::F32, &[total, hk, d], &v_all),
            &[0, 3, 4],
            &[0, 9, 12],
            true,
            &p,
        );
        let (a, b) = (paged.to_f64(), dense.to_f64());
        assert!(
            a.iter().all(|x| x.is_finite()),
            "paged read a poisoned slot"
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{layout:?}: {x} vs {y}");
        }
    }
}

#[test]
fn kv_layouts_are_bijections() {
    for layout in [KvLayout::Nhd, KvLayout::VllmSplitX { x: 8 }] {
        let spec = KvCacheSpec {
            num_blocks: 3,
            block_size: 4,
            num_kv_heads: 2,
            head_dim: 16,
            dtype: DType::F16,
            layout,
        };
        for f in [KvCacheSpec::key_index, KvCacheSpec::value_index] {
            let mut seen = vec![false; spec.elements()];
            for b in 0..3 {
                for o in 0..4 {
                    for h in 0..2 {
                        for d in 0..16 {
                            let i = f(&spec, b, o, h, d);
                            assert!(!seen[i], "{layout:?} maps two elements to {i}");
                            seen[i] = true;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fp8_cache_stores_scaled_values() {
    let spec = KvCacheSpec {
        num_blocks: 1,
        block_size: 2,
        num_kv_heads: 1,
        head_dim: 2,
        dtype: DType::F8E4M3,
        layout: KvLayout::Nhd,
    };
    let mut cache = HostKvCache::zeros(spec, 2.0, 0.5);
    let k = t32(&[1, 1, 2], &[3.0, -1000.0]);
    write_kv(&k, &k, &[1, -1][..1], &mut cache);
    assert_eq!(cache.key_at(0, 1, 0, 0), 3.0); // e4m3(1.5) * 2
    assert_eq!(cache.key_at(0, 1, 0, 1), -896.0); // saturates at -448 * 2
    assert_eq!(cache.value_at(0, 1, 0, 0), 3.0); // e4m3(6) * 0.5
    assert_eq!(cache.key_at(0, 0, 0, 0), 0.0); // untouched slot
}

#[test]
fn copy_blocks_reads_before_writing() {
    let spec = KvCacheSpec {
        num_blocks: 2,
        block_size: 1,
        num_kv_heads: 1,
        head_dim: 1,
        dtype: DType::F32,
        layout: KvLayout::Nhd,
    };
    let mut cache = HostKvCache::zeros(spec, 1.0, 1.0);
    cache.key.set(0, 1.0);
    cache.key.set(1, 2.0);
    copy_blocks(&mut cache, &[(0, 1), (1, 0)]);
    assert_eq!(cache.key.to_f32(), vec![2.0, 1.0]);
}

#[test]
fn int8_activations_follow_ggml() {
    let x: Vec<f32> = (0..40).map(|i| i as f32 - 20.0).collect();
    let q = int8_activation_row(&x);
    // First block of 32: amax 20 → d = 20/127; the extremes round-trip exactly up to f16(d).
    let d16 = half::f16::from_f32(20.0 / 127.0).to_f64();
    assert_eq!(q[0], -127.0 * d16);
    // Last, shorter block of 8 (values 12..19): its own scale.
    let d2 = half::f16::from_f32(19.0 / 127.0).to_f64();
    assert_eq!(q[39], 127.0 * d2);
}

#[test]
fn quant_gemm_uses_the_format_definition() {
    // A Q8_0 row with d = 1 and q = 0..32 times a one-hot x picks one weight.
    let mut data = half::f16::from_f32(1.0).to_le_bytes().to_vec();
    data.extend((0..32u8).map(|v| v as i8 as u8));
    let w = crate::QuantWeights::Gguf {
        ty: crate::GgufType::Q8_0,
        n: 1,
        k: 32,
        data,
    };
    let mut xv = vec![0f32; 32];
    xv[5] = 2.0;
    let x = t32(&[1, 32], &xv);
    let y = quant_gemm(&x, &w, None, crate::Precision::Exact, DType::F32).to_f32();
    assert_eq!(y, vec![10.0]);
}
