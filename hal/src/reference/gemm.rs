//! Dense and quantised GEMM.

use half::f16;

use super::round_to;
use crate::quant::fp8_w8a8;
use crate::{DType, HostTensor, Precision, QuantWeights};

/// `out[M, N] = x[M, K] · w[N, K]ᵀ + bias[N]` in f64, rounded to `out_dtype`.
pub fn gemm(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    out_dtype: DType,
) -> HostTensor {
    let (m, k) = (x.shape[0], x.shape[1]);
    let n = w.shape[0];
    let xv = x.to_f64();
    let wv = w.to_f64();
    product(&xv, m, k, n, |j, kk| wv[j * k + kk], bias, out_dtype)
}

/// `x̂ · Wᵀ + bias` with `W[j, kk]` from `weight`, exact in f64.
fn product(
    xv: &[f64],
    m: usize,
    k: usize,
    n: usize,
    weight: impl Fn(usize, usize) -> f64,
    bias: Option<&HostTensor>,
    out_dtype: DType,
) -> HostTensor {
    let b = bias.map(HostTensor::to_f64);
    let mut out = vec![0f64; m * n];
    for j in 0..n {
        let wrow: Vec<f64> = (0..k).map(|kk| weight(j, kk)).collect();
        for i in 0..m {
            let acc: f64 = xv[i * k..(i + 1) * k]
                .iter()
                .zip(&wrow)
                .map(|(a, b)| a * b)
                .sum();
            out[i * n + j] = acc + b.as_ref().map_or(0.0, |b| b[j]);
        }
    }
    round_to(out_dtype, &[m, n], &out)
}

/// llama.cpp's int8 activation quantisation of one row, dequantised: blocks
/// of 32 along K (the last may be shorter), `d = amax / 127` in f32,
/// `q = round(x / d)` (half away from zero, via `x · (1/d)` as ggml does),
/// value `q · f16(d)`.
pub fn int8_activation_row(x: &[f32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for blk in x.chunks(32) {
        let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = f16::from_f32(d).to_f64();
        out.extend(
            blk.iter()
                .map(|&v| (v * id).round().clamp(-127.0, 127.0) as f64 * d16),
        );
    }
    out
}

/// `out[M, N] = x̂[M, K] · dequant(w)[N, K]ᵀ + bias[N]`.
///
/// `x̂` is `x` itself with [`Precision::Exact`], [`int8_activation_row`] of
/// each row with [`Precision::Int8Activations`], and for FP8 W8A8 always the
/// E4M3 cast defined by [`fp8_w8a8`] (the precision mode does not apply).
pub fn quant_gemm(
    x: &HostTensor,
    w: &QuantWeights,
    bias: Option<&HostTensor>,
    precision: Precision,
    out_dtype: DType,
) -> HostTensor {
    let (m, k) = (x.shape[0], x.shape[1]);
    let n = w.n();
    let xf = x.to_f32();
    let xv: Vec<f64> = match w {
        QuantWeights::Fp8 {
            activation,
            input_scale,
            ..
        } => {
            let scales = fp8_w8a8::activation_scales(*activation, *input_scale, &xf, m, k);
            (0..m * k)
                .map(|i| fp8_w8a8::fake_quant(xf[i], scales[i / k]) as f64)
                .collect()
        }
        _ => match precision {
            Precision::Exact => x.to_f64(),
            Precision::Int8Activations => {
                xf.chunks(k.max(1)).flat_map(int8_activation_row).collect()
            }
        },
    };
    let wd = w.dequantize();
    product(&xv, m, k, n, |j, kk| wd[j * k + kk], bias, out_dtype)
}
