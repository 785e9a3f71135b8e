//! Host-side cos/sin tables for [`crate::RopeArgs::cos_sin_cache`].

/// Llama-3 style frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    /// `factor`.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_position: f64,
}

/// Inverse frequencies `θ^(−2i / rotary_dim)`, `i < rotary_dim / 2`, with
/// optional Llama-3 scaling.
pub fn inv_freq(rotary_dim: usize, theta: f64, scaling: Option<Llama3Scaling>) -> Vec<f64> {
    (0..rotary_dim / 2)
        .map(|i| {
            let f = 1.0 / theta.powf(2.0 * i as f64 / rotary_dim as f64);
            match scaling {
                None => f,
                Some(s) => {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let low_wavelen = s.original_max_position / s.low_freq_factor;
                    let high_wavelen = s.original_max_position / s.high_freq_factor;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / s.factor
                    } else {
                        let smooth = (s.original_max_position / wavelen - s.low_freq_factor)
                            / (s.high_freq_factor - s.low_freq_factor);
                        (1.0 - smooth) * f / s.factor + smooth * f
                    }
                }
            }
        })
        .collect()
}

/// F32 `[max_position, rotary_dim]`: per position, `rotary_dim / 2` cosines
/// then `rotary_dim / 2` sines of `position · inv_freq[i]`.
pub fn cos_sin_table(
    rotary_dim: usize,
    max_position: usize,
    theta: f64,
    scaling: Option<Llama3Scaling>,
) -> Vec<f32> {
    let freqs = inv_freq(rotary_dim, theta, scaling);
    let mut out = Vec::with_capacity(max_position * rotary_dim);
    for p in 0..max_position {
        out.extend(freqs.iter().map(|f| (p as f64 * f).cos() as f32));
        out.extend(freqs.iter().map(|f| (p as f64 * f).sin() as f32));
    }
    out
}
