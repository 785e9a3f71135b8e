//! GPTQ (Frantar et al., 2022): quantise a weight one input column at a
//! time and spread each column's rounding error over the columns not yet
//! quantised, weighted by the inverse Hessian `H = Σ x·xᵀ` of the layer's
//! calibration inputs — so the layer's *outputs*, not its weights, stay
//! close. With act-order the columns go in order of decreasing `H[i, i]`
//! (the inputs with the most energy first) and `g_idx` records each input
//! row's group.

use half::f16;

use super::linalg::{inverse_cholesky_upper, Mat};
use super::rtn::{Grid, IntQuant};

/// GPTQ's knobs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqParams {
    /// 4 or 8.
    pub bits: u8,
    /// Input rows per group.
    pub group_size: usize,
    /// Symmetric grids (zero point 2^(bits−1)).
    pub sym: bool,
    /// Quantise columns in order of decreasing Hessian diagonal.
    pub act_order: bool,
    /// Dampening added to the diagonal, as a fraction of its mean.
    pub damp: f64,
}

/// Quantise `w` `[N, K]` against the Hessian `h` `[K, K]` (row-major,
/// symmetric). Zero points stay ≥ 1 (the GPTQ v1 layout stores `z − 1`).
pub fn quantize(w: &Mat, h: &[f32], p: &GptqParams) -> Result<IntQuant, String> {
    let (n, k) = (w.rows, w.cols);
    if h.len() != k * k {
        return Err(format!("Hessian has {} entries for K = {k}", h.len()));
    }
    // Columns of W as contiguous rows: wt[c] = W[:, c].
    let mut wt = w.transpose().data;
    let mut hh: Vec<f64> = h.iter().map(|&v| f64::from(v)).collect();
    // Inputs that never fired carry no information: zero them.
    for c in 0..k {
        if hh[c * k + c] == 0.0 {
            hh[c * k + c] = 1.0;
            wt[c * n..(c + 1) * n].fill(0.0);
        }
    }
    let mut perm: Vec<usize> = (0..k).collect();
    if p.act_order {
        perm.sort_by(|&a, &b| hh[b * k + b].total_cmp(&hh[a * k + a]));
        let mut pw = vec![0f32; k * n];
        let mut ph = vec![0f64; k * k];
        for (i, &pi) in perm.iter().enumerate() {
            pw[i * n..(i + 1) * n].copy_from_slice(&wt[pi * n..(pi + 1) * n]);
            for (j, &pj) in perm.iter().enumerate() {
                ph[i * k + j] = hh[pi * k + pj];
            }
        }
        wt = pw;
        hh = ph;
    }
    let mean_diag = (0..k).map(|c| hh[c * k + c]).sum::<f64>() / k as f64;
    let mut damp = p.damp * mean_diag;
    let u = loop {
        let mut damped = hh.clone();
        for c in 0..k {
            damped[c * k + c] += damp;
        }
        if let Some(u) = inverse_cholesky_upper(&damped, k) {
            break u;
        }
        // Not positive definite at this dampening (too few samples): more.
        damp = if damp > 0.0 { damp * 10.0 } else { 1e-6 };
        if damp > 1e6 * mean_diag.max(1e-12) {
            return Err("the calibration Hessian is not positive definite".into());
        }
    };

    let groups = k.div_ceil(p.group_size);
    let mut codes = vec![0u8; k * n];
    let mut scales = vec![f16::ZERO; groups * n];
    let mut zeros = vec![0u8; groups * n];
    let mut grids: Vec<Grid> = Vec::new();
    let mut err = vec![0f32; n];
    for c in 0..k {
        if c % p.group_size == 0 {
            // Fit this group's grids on the error-corrected columns.
            let g = c / p.group_size;
            let end = (c + p.group_size).min(k);
            grids = (0..n)
                .map(|row| Grid::fit((c..end).map(|j| wt[j * n + row]), p.bits, p.sym, 1))
                .collect();
            for (row, grid) in grids.iter().enumerate() {
                scales[g * n + row] = grid.scale;
                zeros[g * n + row] = grid.zero as u8;
            }
        }
        let d = u[c * k + c] as f32;
        let col = &wt[c * n..(c + 1) * n];
        for row in 0..n {
            let q = grids[row].code(col[row]);
            codes[perm[c] * n + row] = q as u8;
            err[row] = (col[row] - grids[row].value(q)) / d;
        }
        // W[:, j] −= err · U[c, j] for the columns still to come.
        let (_, rest) = wt.split_at_mut((c + 1) * n);
        for (j, wj) in rest.chunks_exact_mut(n).enumerate() {
            let f = u[c * k + c + 1 + j] as f32;
            if f != 0.0 {
                for (x, e) in wj.iter_mut().zip(&err) {
                    *x -= e * f;
                }
            }
        }
    }
    let mut g_idx = vec![0i32; k];
    for (i, &pi) in perm.iter().enumerate() {
        g_idx[pi] = (i / p.group_size) as i32;
    }
    let trivial = hal::quant::gptq::is_trivial_g_idx(&g_idx, p.group_size, k);
    Ok(IntQuant {
        bits: p.bits,
        group_size: p.group_size,
        n,
        k,
        codes,
        scales,
        zeros,
        g_idx: (!trivial).then_some(g_idx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::linalg::HostGemm;

    /// Inputs with a few dominant, correlated channels (as LLM activations
    /// have), a random weight, and the output error of RTN vs GPTQ.
    #[test]
    fn gptq_beats_round_to_nearest_on_outputs() {
        let (n, k, t) = (32, 64, 256);
        let mut rng = hal::conformance::Rng::new(11);
        let mut x = vec![0f32; t * k];
        for r in 0..t {
            let common = rng.uniform(-1.0, 1.0) as f32;
            for c in 0..k {
                let boost = if c % 16 == 3 { 8.0 } else { 1.0 };
                x[r * k + c] = boost * (rng.uniform(-1.0, 1.0) as f32 + 0.5 * common);
            }
        }
        let x = Mat::new(t, k, x);
        let w = Mat::new(
            n,
            k,
            (0..n * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect(),
        );
        let gemm = HostGemm::new().unwrap();
        let xt = x.transpose();
        let h = gemm.xwt(&xt, &xt).unwrap();
        let y = gemm.xwt(&x, &w).unwrap();
        let loss = |q: &IntQuant| {
            let yq = gemm.xwt(&x, &q.dequantize()).unwrap();
            y.data
                .iter()
                .zip(&yq.data)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        let rtn = IntQuant::rtn(&w, 4, 32, false, 1);
        for act_order in [false, true] {
            let params = GptqParams {
                bits: 4,
                group_size: 32,
                sym: false,
                act_order,
                damp: 0.01,
            };
            let q = quantize(&w, &h.data, &params).unwrap();
            assert_eq!(q.g_idx.is_some(), act_order);
            q.to_gptq().validate().unwrap();
            let (l_rtn, l_gptq) = (loss(&rtn), loss(&q));
            assert!(
                l_gptq < 0.8 * l_rtn,
                "act_order {act_order}: {l_gptq} vs {l_rtn}"
            );
        }
        assert!(quantize(
            &w,
            &h.data[1..],
            &GptqParams {
                bits: 4,
                group_size: 32,
                sym: true,
                act_order: false,
                damp: 0.01,
            }
        )
        .is_err());
    }
}
