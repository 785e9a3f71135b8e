//! The little linear algebra quantisation needs: a dense matrix, products
//! on the CPU backend's GEMM (all cores, SIMD), and the Cholesky factors of
//! GPTQ's inverse Hessian.

use std::sync::Arc;

use hal::{DType, Device, GemmArgs, HostTensor, Tensor};

use super::QuantizeError;

/// A dense f32 matrix, row-major `[rows, cols]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    /// Rows (output features of a linear weight).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// `rows · cols` values.
    pub data: Vec<f32>,
}

impl Mat {
    /// A matrix from its values (`data.len() == rows · cols`).
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Mat {
        debug_assert_eq!(data.len(), rows * cols);
        Mat { rows, cols, data }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The transpose, `[cols, rows]`.
    pub fn transpose(&self) -> Mat {
        let mut t = vec![0f32; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                t[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Mat::new(self.cols, self.rows, t)
    }

    /// Matrices with equal column counts stacked along the rows.
    pub fn stack(parts: &[&Mat]) -> Mat {
        let cols = parts.first().map_or(0, |m| m.cols);
        let rows = parts.iter().map(|m| m.rows).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for m in parts {
            data.extend_from_slice(&m.data);
        }
        Mat::new(rows, cols, data)
    }
}

/// `x[M, K] · w[N, K]ᵀ` on the CPU backend.
#[derive(Clone)]
pub struct HostGemm {
    device: Arc<dyn Device>,
}

impl std::fmt::Debug for HostGemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostGemm").finish_non_exhaustive()
    }
}

impl HostGemm {
    /// Open the CPU backend.
    pub fn new() -> Result<HostGemm, QuantizeError> {
        let device = (kernels_cpu::factory().open)(0)?;
        Ok(HostGemm { device })
    }

    /// `x · wᵀ`, `[x.rows, w.rows]`.
    pub fn xwt(&self, x: &Mat, w: &Mat) -> Result<Mat, QuantizeError> {
        if x.cols != w.cols {
            return Err(QuantizeError::Shape(format!(
                "gemm of [{}, {}] by [{}, {}]ᵀ",
                x.rows, x.cols, w.rows, w.cols
            )));
        }
        let d = self.device.as_ref();
        let xt = Tensor::from_host(
            d,
            &HostTensor::from_f32(DType::F32, &[x.rows, x.cols], &x.data),
        )?;
        let wt = Tensor::from_host(
            d,
            &HostTensor::from_f32(DType::F32, &[w.rows, w.cols], &w.data),
        )?;
        let mut out = Tensor::alloc(d, DType::F32, &[x.rows, w.rows])?;
        d.gemm(GemmArgs {
            x: xt.view(),
            w: wt.view(),
            bias: None,
            out: out.view_mut(),
        })?;
        d.synchronize()?;
        let host = out.to_host(d)?;
        let data = host
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Mat::new(x.rows, w.rows, data))
    }
}

/// Lower Cholesky factor `L` of a symmetric positive definite `[n, n]`
/// matrix (`L·Lᵀ = a`), or `None` when it is not positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (li, lj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let dot: f64 = li.iter().zip(lj).map(|(a, b)| a * b).sum();
            let s = a[i * n + j] - dot;
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Inverse of a lower-triangular `[n, n]` matrix (also lower-triangular).
pub fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    // Row i of L·X = I: X[i] = (e_i − Σ_{m<i} L[i, m]·X[m]) / L[i, i].
    for i in 0..n {
        let mut row = vec![0f64; n];
        row[i] = 1.0;
        for m in 0..i {
            let c = l[i * n + m];
            if c != 0.0 {
                for (r, xm) in row[..=m].iter_mut().zip(&x[m * n..m * n + m + 1]) {
                    *r -= c * xm;
                }
            }
        }
        let d = l[i * n + i];
        for (xi, r) in x[i * n..i * n + i + 1].iter_mut().zip(&row[..=i]) {
            *xi = r / d;
        }
    }
    x
}

/// The upper-triangular `U` with `Uᵀ·U = h⁻¹` for a symmetric positive
/// definite `h` `[n, n]` — the factor GPTQ propagates errors with — or
/// `None` when `h` is not positive definite.
///
/// With `J` the exchange matrix and `J·h·J = L·Lᵀ`: `h⁻¹ = (J·L⁻¹·J)ᵀ·(J·L⁻¹·J)`
/// and `J·L⁻¹·J` is upper-triangular, so one Cholesky factorisation and one
/// triangular inverse give `U` (no explicit inverse of `h`).
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut flipped = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            flipped[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    let l = cholesky(&flipped, n)?;
    let linv = invert_lower(&l, n);
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = linv[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Vec<f64> {
        let mut rng = hal::conformance::Rng::new(3);
        let a: Vec<f64> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|m| a[i * n + m] * a[j * n + m]).sum::<f64>()
                    + if i == j { 0.1 } else { 0.0 };
            }
        }
        h
    }

    #[test]
    fn upper_factor_of_the_inverse() {
        let n = 7;
        let h = spd(n);
        let u = inverse_cholesky_upper(&h, n).unwrap();
        // Uᵀ·U·h = I.
        for i in 0..n {
            for j in 0..n {
                if j < i {
                    assert_eq!(u[i * n + j], 0.0);
                }
                let mut v = 0.0;
                for m in 0..n {
                    let utu: f64 = (0..n).map(|r| u[r * n + i] * u[r * n + m]).sum();
                    v += utu * h[m * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-8, "({i},{j}) = {v}");
            }
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn gemm_on_the_cpu_backend() {
        let g = HostGemm::new().unwrap();
        let x = Mat::new(2, 3, vec![1., 2., 3., 4., 5., 6.]);
        let w = Mat::new(2, 3, vec![1., 0., 0., 0., 1., 1.]);
        assert_eq!(g.xwt(&x, &w).unwrap().data, vec![1., 5., 4., 11.]);
        assert!(g.xwt(&x, &x.transpose()).is_err());
        assert_eq!(Mat::stack(&[&x, &w]).rows, 4);
    }
}
