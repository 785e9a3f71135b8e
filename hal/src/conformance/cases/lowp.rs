//! Judging low-precision attention: a fixed budget, or FlashAttention's rule.
//!
//! An f16 / bf16 attention kernel passes when its output is within
//! [`Budget::for_dtype`] of the reference (rounded once to the dtype), *or*
//! when `max |out − ref_hi| ≤ 2 · max |naive − ref_hi|`, where `ref_hi` is
//! the reference in f32 and `naive` is the textbook computation carried out
//! in the dtype itself ([`attend_row`]: scaled queries, scores, soft-capped
//! scores, probabilities and the output each rounded to the dtype, as
//! FlashAttention's `attention_ref(upcast=False)` does). The rule accepts
//! kernels that are as accurate as low precision allows, and nothing sloppier.

use crate::conformance::budget::within_naive;
use crate::conformance::{compare, Budget};
use crate::{AttentionParams, DType, HostTensor};

/// `v` rounded to `dtype` (nearest, ties to even).
fn round(dtype: DType, v: f64) -> f64 {
    let mut b = [0u8; 8];
    dtype.write_f64(&mut b, 0, v);
    dtype.read_f64(&b, 0)
}

/// Naive attention of one query row `q` (`[head_dim]`) over the `n` keys
/// and values it sees (`[n, head_dim]` each), every intermediate rounded to
/// `dtype`. No visible key gives a zero row.
pub(super) fn attend_row(
    dtype: DType,
    q: &[f64],
    keys: &[f64],
    values: &[f64],
    params: &AttentionParams,
) -> Vec<f64> {
    let d = q.len();
    let n = keys.len() / d.max(1);
    let mut out = vec![0f64; d];
    if n == 0 {
        return out;
    }
    let r = |v: f64| round(dtype, v);
    let qs: Vec<f64> = q.iter().map(|&x| r(x * params.scale as f64)).collect();
    let scores: Vec<f64> = (0..n)
        .map(|j| {
            let s = r((0..d).map(|i| qs[i] * r(keys[j * d + i])).sum());
            match params.softcap {
                Some(cap) => r(cap as f64 * r(s / cap as f64).tanh()),
                None => s,
            }
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| r(x / sum)).collect();
    for (i, o) in out.iter_mut().enumerate() {
        *o = r((0..n).map(|j| p[j] * r(values[j * d + i])).sum());
    }
    out
}

/// `q` with its values in f32 (exact for f16 / bf16), so the reference run
/// on it returns its result unrounded to the low precision.
pub(super) fn widened(q: &HostTensor) -> HostTensor {
    HostTensor::from_f64(DType::F32, &q.shape, &q.to_f64())
}

/// Judge an attention output `got` against the reference `want` (in the
/// output dtype). For f16 / bf16, when the fixed budget fails, `fallback`
/// gives `(ref_hi, naive)` for FlashAttention's rule.
pub(super) fn expect_attention(
    got: &HostTensor,
    want: &HostTensor,
    fallback: impl FnOnce() -> (Vec<f64>, Vec<f64>),
) -> Result<(), String> {
    let g = got.to_f64();
    match compare(&g, &want.to_f64(), &Budget::for_dtype(want.dtype)) {
        Ok(_) => Ok(()),
        Err(e) if matches!(want.dtype, DType::F16 | DType::BF16) => {
            let (hi, naive) = fallback();
            within_naive(&g, &hi, &naive)
                .map(|_| ())
                .map_err(|e2| format!("out: {e}; nor FlashAttention's rule: {e2}"))
        }
        Err(e) => Err(format!("out: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_row_is_close_to_exact() {
        let params = AttentionParams::for_head_dim(4);
        let q = [0.5, -1.0, 0.25, 2.0];
        let keys = [1.0, 0.0, -1.0, 0.5, 0.2, 0.3, 0.1, -0.7];
        let values = [1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0];
        let exact = attend_row(DType::F32, &q, &keys, &values, &params);
        let half = attend_row(DType::F16, &q, &keys, &values, &params);
        for (a, b) in exact.iter().zip(&half) {
            assert!((a - b).abs() < 1e-2, "{a} vs {b}");
        }
        assert_eq!(attend_row(DType::F16, &q, &[], &[], &params), vec![0.0; 4]);
    }
}
