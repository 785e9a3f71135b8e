//! Dense varlen attention with the FlashAttention-2 API.
//!
//! Varlen batches (`cu_seqlens`) with causal and full masks, queries
//! shorter than keys (bottom-right alignment: query `i` of `Lq` sees keys
//! `j ≤ i + Lk − Lq`), queries longer than keys under a causal mask (their
//! first rows see nothing and must be zero), GQA ratios {1, 3, 4, 8}, head
//! dims {64, 80, 96, 128, 256}, f32 / f16 / bf16, sliding window and
//! soft-cap. Low precision passes a fixed budget or FlashAttention's 2×
//! rule (see `lowp`).

use super::lowp::{attend_row, expect_attention, widened};
use super::{case, dt, op_failed, random, refused, CaseResult};
use crate::conformance::{Case, Harness, Outcome, Rng};
use crate::{reference, AttentionParams, DType, FlashAttentionArgs, HostTensor};

use DType::{BF16, F16, F32};

/// One flash-attention case.
#[derive(Clone, Debug)]
struct FlashCase {
    name: String,
    dtype: DType,
    head_dim: usize,
    num_kv_heads: usize,
    /// Query heads per KV head.
    group: usize,
    /// `(Lq, Lk)` per sequence.
    seqs: Vec<(usize, usize)>,
    causal: bool,
    window: Option<usize>,
    softcap: Option<f32>,
    q_std: f64,
    seed: u64,
}

#[allow(clippy::too_many_arguments)]
fn flash(
    dtype: DType,
    head_dim: usize,
    num_kv_heads: usize,
    group: usize,
    causal: bool,
    seqs: &[(usize, usize)],
    suffix: &str,
    seed: u64,
) -> FlashCase {
    FlashCase {
        name: format!(
            "{}_hd{head_dim}_gqa{group}_{}{}{suffix}",
            dt(dtype),
            if causal { "causal" } else { "full" },
            if suffix.is_empty() { "" } else { "_" }
        ),
        dtype,
        head_dim,
        num_kv_heads,
        group,
        seqs: seqs.to_vec(),
        causal,
        window: None,
        softcap: None,
        q_std: 1.5,
        seed,
    }
}

fn flash_cases() -> Vec<FlashCase> {
    let mut v = vec![
        flash(
            F32,
            64,
            4,
            1,
            true,
            &[(17, 17), (1, 40), (33, 33), (5, 70)],
            "varlen",
            1,
        ),
        flash(
            F16,
            80,
            2,
            3,
            false,
            &[(20, 35), (7, 7), (50, 13)],
            "varlen",
            2,
        ),
        flash(
            BF16,
            96,
            1,
            4,
            true,
            &[(64, 64), (9, 30), (1, 1)],
            "varlen",
            3,
        ),
        flash(
            F16,
            128,
            1,
            8,
            true,
            &[(10, 6), (12, 40), (25, 25)],
            "lq_gt_lk",
            4,
        ),
        flash(F32, 256, 2, 1, false, &[(13, 29), (31, 31)], "varlen", 5),
        flash(F16, 128, 2, 4, true, &[(100, 100), (37, 60)], "lq_lt_lk", 6),
        flash(BF16, 256, 1, 8, true, &[(20, 20), (3, 50)], "lq_lt_lk", 7),
        flash(
            F32,
            80,
            3,
            1,
            true,
            &[(1, 1), (2, 9), (41, 41)],
            "varlen",
            8,
        ),
        flash(F32, 64, 1, 2, true, &[(300, 300)], "long", 9),
    ];
    let mut c = flash(F32, 64, 1, 4, true, &[(40, 40), (10, 50)], "window16", 10);
    c.window = Some(16);
    v.push(c);
    let mut c = flash(
        BF16,
        128,
        2,
        1,
        false,
        &[(30, 60), (20, 20)],
        "window24",
        11,
    );
    c.window = Some(24);
    v.push(c);
    let mut c = flash(F16, 128, 2, 4, true, &[(30, 30), (5, 45)], "softcap10", 12);
    (c.softcap, c.q_std) = (Some(10.0), 4.0);
    v.push(c);
    let mut c = flash(
        F32,
        96,
        1,
        3,
        true,
        &[(33, 33), (8, 70)],
        "window20_softcap6",
        13,
    );
    (c.window, c.softcap, c.q_std) = (Some(20), Some(6.0), 4.0);
    v.push(c);
    for c in &mut v {
        c.seed += 0xf1a5_0000;
    }
    v
}

/// Cumulative offsets `[0, l0, l0 + l1, …]`.
fn cumulative(lens: impl Iterator<Item = usize>) -> Vec<i32> {
    let mut out = vec![0i32];
    for l in lens {
        out.push(out[out.len() - 1] + l as i32);
    }
    out
}

/// Keys `lo..=hi` that query `i` of `lq` sees among `lk` keys (the
/// reference's rule, restated); `None` when it sees none.
fn visible(
    i: usize,
    lq: usize,
    lk: usize,
    causal: bool,
    window: Option<usize>,
) -> Option<(usize, usize)> {
    let aligned = i as isize + lk as isize - lq as isize;
    let start = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
    let (lo, hi) = if causal {
        if aligned < 0 {
            return None;
        }
        let p = aligned as usize;
        (start(p), p.min(lk.checked_sub(1)?))
    } else {
        let lo = if aligned >= 0 {
            start(aligned as usize)
        } else {
            0
        };
        (lo, lk.checked_sub(1)?)
    };
    (lo <= hi).then_some((lo, hi))
}

/// The naive same-precision computation (see `lowp`).
fn naive_flash(
    c: &FlashCase,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    params: &AttentionParams,
) -> Vec<f64> {
    let (h, d, hk) = (q.shape[1], q.shape[2], k.shape[1]);
    let (qv, kv, vv) = (q.to_f64(), k.to_f64(), v.to_f64());
    let mut out = vec![0f64; qv.len()];
    let (mut q0, mut k0) = (0, 0);
    for &(lq, lk) in &c.seqs {
        for i in 0..lq {
            let Some((lo, hi)) = visible(i, lq, lk, c.causal, c.window) else {
                continue;
            };
            for hh in 0..h {
                let kvh = hh / (h / hk);
                let rows = |src: &[f64]| -> Vec<f64> {
                    (lo..=hi)
                        .flat_map(|j| {
                            let at = ((k0 + j) * hk + kvh) * d;
                            src[at..at + d].to_vec()
                        })
                        .collect()
                };
                let row = ((q0 + i) * h + hh) * d;
                let o = attend_row(q.dtype, &qv[row..row + d], &rows(&kv), &rows(&vv), params);
                out[row..row + d].copy_from_slice(&o);
            }
        }
        q0 += lq;
        k0 += lk;
    }
    out
}

fn run(h: &Harness<'_>, c: &FlashCase) -> CaseResult {
    let mut rng = Rng::new(c.seed);
    let heads = c.num_kv_heads * c.group;
    let tq: usize = c.seqs.iter().map(|s| s.0).sum();
    let tk: usize = c.seqs.iter().map(|s| s.1).sum();
    let q = random(&mut rng, c.dtype, &[tq, heads, c.head_dim], c.q_std);
    let k = random(&mut rng, c.dtype, &[tk, c.num_kv_heads, c.head_dim], 1.0);
    let v = random(&mut rng, c.dtype, &[tk, c.num_kv_heads, c.head_dim], 1.0);
    let cu_q = cumulative(c.seqs.iter().map(|s| s.0));
    let cu_k = cumulative(c.seqs.iter().map(|s| s.1));
    let n = cu_q.len();
    let params = AttentionParams {
        scale: 1.0 / (c.head_dim as f32).sqrt(),
        sliding_window: c.window,
        softcap: c.softcap,
    };
    let (qd, kd, vd) = (h.upload(&q)?, h.upload(&k)?, h.upload(&v)?);
    let cqd = h.upload(&HostTensor::from_i32(&[n], &cu_q))?;
    let ckd = h.upload(&HostTensor::from_i32(&[n], &cu_k))?;
    let mut out = h.output(c.dtype, &q.shape)?;
    let args = FlashAttentionArgs {
        q: qd.view(),
        k: kd.view(),
        v: vd.view(),
        cu_seqlens_q: cqd.view(),
        cu_seqlens_k: ckd.view(),
        max_seqlen_q: c.seqs.iter().map(|s| s.0).max().unwrap_or(0),
        max_seqlen_k: c.seqs.iter().map(|s| s.1).max().unwrap_or(0),
        causal: c.causal,
        params,
        out: out.view_mut(),
    };
    if let Some(skip) = refused(h, &args.desc()) {
        return Ok(skip);
    }
    h.device
        .flash_attention(args)
        .map_err(|e| op_failed("flash_attention", e))?;
    let got = h.read(&out)?;
    let want = reference::flash_attention(&q, &k, &v, &cu_q, &cu_k, c.causal, &params);
    expect_attention(&got, &want, || {
        let (wq, wk, wv) = (widened(&q), widened(&k), widened(&v));
        (
            reference::flash_attention(&wq, &wk, &wv, &cu_q, &cu_k, c.causal, &params).to_f64(),
            naive_flash(c, &q, &k, &v, &params),
        )
    })?;
    Ok(Outcome::Pass)
}

/// The flash-attention cases.
pub(super) fn cases() -> Vec<Case> {
    flash_cases()
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            case(name, move |h| run(h, &c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_is_bottom_right_aligned() {
        // Lq = 2, Lk = 5, causal: query 0 sees 0..=3, query 1 sees 0..=4.
        assert_eq!(visible(0, 2, 5, true, None), Some((0, 3)));
        assert_eq!(visible(1, 2, 5, true, None), Some((0, 4)));
        // Lq = 5, Lk = 2, causal: the first three queries see nothing.
        assert_eq!(visible(2, 5, 2, true, None), None);
        assert_eq!(visible(3, 5, 2, true, None), Some((0, 0)));
        // Window 2 at aligned position 4: keys 3..=4.
        assert_eq!(visible(1, 2, 5, true, Some(2)), Some((3, 4)));
        assert_eq!(visible(0, 3, 3, false, None), Some((0, 2)));
    }
}
