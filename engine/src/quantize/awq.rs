//! AWQ (Lin et al., 2023): activation-aware scales. Input channels that
//! carry large activations matter most, so before rounding each input
//! column `k` of the weights sharing an input is multiplied by `s[k]` and
//! the op feeding them divides by it (an exact rewrite of the float model);
//! the rounding then costs those channels relatively less.
//!
//! The search is AutoAWQ's: `s = x̄^α / (w̄^(1−α) + 10⁻⁴)`, normalised by
//! `√(max s · min s)`, for α on a grid of 20, keeping the α whose quantised
//! outputs `x · Q(W·s)/s` are closest (mean squared error) to `x · W` on
//! calibration inputs. `x̄` is the mean |activation| per channel, `w̄` the
//! mean over output rows of |W| normalised by its group's largest |W|.
//! Kiln measures the error on the linear layers' own outputs (AutoAWQ on
//! the whole attention or MLP block) and does not search clipping ranges.

use super::linalg::{HostGemm, Mat};
use super::rtn::IntQuant;
use super::QuantizeError;

/// The chosen scales and what they bought.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqScales {
    /// `s[k]`, one per input channel.
    pub scales: Vec<f32>,
    /// The chosen α.
    pub ratio: f32,
    /// Output MSE with α = 0 (no activation awareness: plain RTN up to
    /// the weight-magnitude term).
    pub loss_rtn: f64,
    /// Output MSE with the chosen α.
    pub loss: f64,
}

/// Grid points of α.
const GRID: usize = 20;

/// Search the scales of the weights `ws` (each `[N_i, K]`) that share the
/// input whose per-channel mean magnitude is `x_mean` `[K]`, judged on the
/// sample inputs `x` `[T, K]`, for 4-bit groups of `group_size`.
pub fn search(
    gemm: &HostGemm,
    ws: &[&Mat],
    x: &Mat,
    x_mean: &[f32],
    group_size: usize,
) -> Result<AwqScales, QuantizeError> {
    let w = Mat::stack(ws);
    let k = w.cols;
    // w̄: |W| over its group's max, averaged over rows.
    let mut w_mean = vec![0f64; k];
    for row in 0..w.rows {
        let r = w.row(row);
        for g in (0..k).step_by(group_size) {
            let end = (g + group_size).min(k);
            let m = r[g..end].iter().fold(0f32, |m, v| m.max(v.abs()));
            if m > 0.0 {
                for c in g..end {
                    w_mean[c] += f64::from(r[c].abs() / m);
                }
            }
        }
    }
    for v in &mut w_mean {
        *v /= w.rows.max(1) as f64;
    }
    let y = gemm.xwt(x, &w)?;
    let mut best: Option<AwqScales> = None;
    let mut loss_rtn = f64::NAN;
    for i in 0..GRID {
        let ratio = i as f32 / GRID as f32;
        let mut s: Vec<f32> = (0..k)
            .map(|c| {
                let v = f64::from(x_mean[c]).powf(f64::from(ratio))
                    / (w_mean[c].powf(f64::from(1.0 - ratio)) + 1e-4);
                v.max(1e-4) as f32
            })
            .collect();
        let (lo, hi) = s
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let norm = (hi * lo).sqrt();
        if norm > 0.0 && norm.is_finite() {
            for v in &mut s {
                *v /= norm;
            }
        }
        let scaled = scale_columns(&w, &s);
        let q = IntQuant::rtn(&scaled, 4, group_size, false, 0).dequantize();
        let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
        let yq = gemm.xwt(x, &scale_columns(&q, &inv))?;
        let loss = y
            .data
            .iter()
            .zip(&yq.data)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / y.data.len().max(1) as f64;
        if i == 0 {
            loss_rtn = loss;
        }
        if best.as_ref().is_none_or(|b| loss < b.loss) {
            best = Some(AwqScales {
                scales: s,
                ratio,
                loss_rtn,
                loss,
            });
        }
    }
    let mut best = best.ok_or_else(|| QuantizeError::Shape("empty AWQ grid".into()))?;
    best.loss_rtn = loss_rtn;
    Ok(best)
}

/// `w` with column `k` multiplied by `s[k]`.
pub fn scale_columns(w: &Mat, s: &[f32]) -> Mat {
    let mut out = w.clone();
    for row in out.data.chunks_exact_mut(w.cols) {
        for (v, f) in row.iter_mut().zip(s) {
            *v *= f;
        }
    }
    out
}

/// `w` with row `n` divided by `s[n]` (the op feeding the scaled input).
pub fn unscale_rows(w: &mut Mat, s: &[f32]) {
    for (row, f) in w.data.chunks_exact_mut(w.cols).zip(s) {
        for v in row {
            *v /= f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_aware_scales_lower_the_output_error() {
        let (n, k, t) = (48, 128, 128);
        let mut rng = hal::conformance::Rng::new(5);
        // A few channels carry activations 20× larger (outliers).
        let x: Vec<f32> = (0..t * k)
            .map(|i| {
                let boost = if (i % k) % 32 == 7 { 20.0 } else { 1.0 };
                boost * rng.uniform(-1.0, 1.0) as f32
            })
            .collect();
        let x = Mat::new(t, k, x);
        let mut x_mean = vec![0f32; k];
        for row in x.data.chunks_exact(k) {
            for (m, v) in x_mean.iter_mut().zip(row) {
                *m += v.abs() / t as f32;
            }
        }
        let w = Mat::new(
            n,
            k,
            (0..n * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect(),
        );
        let gemm = HostGemm::new().unwrap();
        let s = search(&gemm, &[&w], &x, &x_mean, 64).unwrap();
        assert!(s.ratio > 0.0, "{s:?}");
        assert!(s.loss < 0.9 * s.loss_rtn, "{} vs {}", s.loss, s.loss_rtn);
        let mut v = Mat::new(2, 2, vec![2., 4., 6., 8.]);
        unscale_rows(&mut v, &[2.0, 4.0]);
        assert_eq!(v.data, vec![1., 2., 1.5, 2.]);
        assert_eq!(scale_columns(&v, &[2.0, 0.5]).data, vec![2., 1., 3., 1.]);
    }
}
