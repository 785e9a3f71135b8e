//! FP8 E4M3 W8A8 (vLLM / llm-compressor "fp8" checkpoints).
//!
//! * `weight` E4M3 bytes `[N, K]`, `weight_scale` f32 `[1]` or `[N]`:
//!   `W[n, k] = e4m3(weight[n, k]) · weight_scale[n or 0]`.
//! * Activations are cast to E4M3 before the product:
//!   `x̂[m, k] = e4m3(x[m, k] / s_x) · s_x`, with `s_x` the static
//!   `input_scale`, or computed per call in f32 as
//!   `max(amax / 448, 1 / (448 · 512))` over the whole tensor or per row
//!   (vLLM's minimum scaling factor keeps all-zero rows finite).

use crate::fp8::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX};
use crate::quant::ActivationScale;

/// vLLM's lower bound on a dynamic activation scale.
pub const MIN_SCALE: f32 = 1.0 / (E4M3_MAX * 512.0);

/// A dynamic scale from an absolute maximum, in f32 exactly as kernels compute it.
pub fn dynamic_scale(amax: f32) -> f32 {
    (amax / E4M3_MAX).max(MIN_SCALE)
}

/// Quantise-dequantise one activation value with scale `s` (f32 arithmetic).
pub fn fake_quant(x: f32, s: f32) -> f32 {
    e4m3_to_f32(f32_to_e4m3(x / s)) * s
}

/// Element `W[row, col]`.
pub fn weight(k: usize, weight: &[u8], weight_scale: &[f32], row: usize, col: usize) -> f64 {
    let s = if weight_scale.len() == 1 {
        weight_scale[0]
    } else {
        weight_scale[row]
    };
    e4m3_to_f32(weight[row * k + col]) as f64 * s as f64
}

/// The activation scale of each row of `x` (`[M, K]` row-major, f32 values).
pub fn activation_scales(
    activation: ActivationScale,
    input_scale: Option<f32>,
    x: &[f32],
    m: usize,
    k: usize,
) -> Vec<f32> {
    let row_amax = |r: usize| {
        x[r * k..(r + 1) * k]
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()))
    };
    match activation {
        ActivationScale::Static => vec![input_scale.unwrap_or(1.0); m],
        ActivationScale::DynamicPerTensor => {
            let amax = (0..m).map(row_amax).fold(0f32, f32::max);
            vec![dynamic_scale(amax); m]
        }
        ActivationScale::DynamicPerToken => (0..m).map(|r| dynamic_scale(row_amax(r))).collect(),
    }
}

/// Check shapes and scales.
pub fn validate(
    n: usize,
    k: usize,
    weight: &[u8],
    weight_scale: &[f32],
    activation: ActivationScale,
    input_scale: Option<f32>,
) -> Result<(), String> {
    if weight.len() != n * k {
        return Err(format!(
            "fp8: weight has {} bytes, expected {} for [{n}, {k}]",
            weight.len(),
            n * k
        ));
    }
    if weight_scale.len() != 1 && weight_scale.len() != n {
        return Err(format!(
            "fp8: weight_scale has {} entries, expected 1 or N = {n}",
            weight_scale.len()
        ));
    }
    if weight_scale.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return Err("fp8: weight_scale entries must be finite and positive".into());
    }
    match (activation, input_scale) {
        (ActivationScale::Static, None) => {
            Err("fp8: static activation scaling needs input_scale".into())
        }
        (ActivationScale::Static, Some(s)) if !s.is_finite() || s <= 0.0 => {
            Err(format!("fp8: input_scale {s} must be finite and positive"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // 0x38 = 1.0, 0x40 = 2.0, 0xC0 = -2.0 in E4M3.
        let w = [0x38, 0x40, 0xC0, 0x38];
        assert_eq!(weight(2, &w, &[0.5], 1, 0), -1.0);
        assert_eq!(weight(2, &w, &[0.5, 4.0], 1, 1), 4.0);
        assert_eq!(dynamic_scale(448.0), 1.0);
        assert_eq!(fake_quant(3.0, 1.0), 3.0);
        assert_eq!(fake_quant(1000.0, 1.0), 448.0);
        let s = activation_scales(
            ActivationScale::DynamicPerToken,
            None,
            &[1.0, -896.0, 0.0, 0.0],
            2,
            2,
        );
        assert_eq!(s, vec![2.0, MIN_SCALE]);
    }
}
