//! Error budgets and the comparison every case uses.

use std::fmt;

use crate::DType;

/// How far a backend's output may be from the reference.
///
/// A case passes when NaN/Inf positions match exactly and, over the finite
/// elements, `nmse ≤ nmse` and `max |got − want| ≤ atol + rtol · max |want|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Normalised mean squared error `Σ(got − want)² / Σ want²`.
    pub nmse: f64,
    /// Absolute part of the max-abs bound.
    pub atol: f64,
    /// Part of the max-abs bound relative to the largest reference magnitude.
    pub rtol: f64,
}

impl Budget {
    /// Bit-exact.
    pub const EXACT: Budget = Budget {
        nmse: 0.0,
        atol: 0.0,
        rtol: 0.0,
    };

    /// The default budget for an output of `dtype` computed with f32
    /// accumulation: a few roundings of the output type.
    pub fn for_dtype(dtype: DType) -> Budget {
        match dtype {
            DType::F32 => Budget {
                nmse: 1e-10,
                atol: 1e-5,
                rtol: 1e-4,
            },
            DType::F16 => Budget {
                nmse: 1e-5,
                atol: 1e-3,
                rtol: 4e-3,
            },
            DType::BF16 => Budget {
                nmse: 2e-4,
                atol: 1e-2,
                rtol: 3e-2,
            },
            DType::F8E4M3 | DType::F8E5M2 => Budget {
                nmse: 4e-3,
                atol: 2e-2,
                rtol: 0.15,
            },
            _ => Budget::EXACT,
        }
    }

    /// Quantised GEMM in [`crate::Precision::Exact`] mode (AWQ, GPTQ, GGUF)
    /// against `x · dequant(W)` in f64: the output dtype's budget, widened
    /// for a kernel that dequantises weights to f16 before the product
    /// (relative error 2⁻¹¹ per weight, so about 3·10⁻⁴ per output).
    pub fn quant_weights(out: DType) -> Budget {
        Budget::for_dtype(out).max(Budget {
            nmse: 1e-6,
            atol: 1e-4,
            rtol: 2e-3,
        })
    }

    /// Quantised GEMM with [`crate::Precision::Int8Activations`], against the
    /// reference that quantises activations the same way: the output dtype's
    /// budget, widened for a kernel that divides by `d` instead of
    /// multiplying by `1/d` (an occasional `q` off by one) and combines the
    /// two scales in f32.
    pub fn int8_activations(out: DType) -> Budget {
        Budget::for_dtype(out).max(Budget {
            nmse: 1e-5,
            atol: 1e-3,
            rtol: 5e-3,
        })
    }

    /// FP8 W8A8 against the reference that casts activations to E4M3 as the
    /// format defines: the output dtype's budget, widened because one
    /// activation landing on the other side of a rounding tie moves by a
    /// whole E4M3 step (12.5 %).
    pub fn fp8_w8a8(out: DType) -> Budget {
        Budget::for_dtype(out).max(Budget {
            nmse: 1e-4,
            atol: 1e-2,
            rtol: 2e-2,
        })
    }

    /// The looser of two budgets, bound by bound.
    pub fn max(self, other: Budget) -> Budget {
        Budget {
            nmse: self.nmse.max(other.nmse),
            atol: self.atol.max(other.atol),
            rtol: self.rtol.max(other.rtol),
        }
    }
}

/// Error statistics of one comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Normalised mean squared error over finite elements.
    pub nmse: f64,
    /// Largest absolute difference over finite elements.
    pub max_abs: f64,
    /// Index of that difference.
    pub worst: usize,
    /// Largest reference magnitude.
    pub ref_max: f64,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nmse {:.3e}, max |Δ| {:.3e} at {} (max |ref| {:.3e})",
            self.nmse, self.max_abs, self.worst, self.ref_max
        )
    }
}

/// Compare `got` with `want` under `budget`; `Err` says what broke.
pub fn compare(got: &[f64], want: &[f64], budget: &Budget) -> Result<Comparison, String> {
    if got.len() != want.len() {
        return Err(format!(
            "output has {} elements, reference {}",
            got.len(),
            want.len()
        ));
    }
    let mut c = Comparison::default();
    let (mut err2, mut ref2) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() != g.is_nan() {
            return Err(format!(
                "NaN mismatch at element {i}: got {g}, reference {w}"
            ));
        }
        if w.is_infinite() || g.is_infinite() {
            if w != g {
                return Err(format!(
                    "Inf mismatch at element {i}: got {g}, reference {w}"
                ));
            }
            continue;
        }
        if w.is_nan() {
            continue;
        }
        let d = (g - w).abs();
        err2 += d * d;
        ref2 += w * w;
        c.ref_max = c.ref_max.max(w.abs());
        if d > c.max_abs {
            c.max_abs = d;
            c.worst = i;
        }
    }
    c.nmse = if ref2 > 0.0 { err2 / ref2 } else { err2 };
    let bound = budget.atol + budget.rtol * c.ref_max;
    if c.nmse > budget.nmse || c.max_abs > bound {
        return Err(format!(
            "{c}; budget nmse {:.1e}, max |Δ| {:.3e}; got[{}] = {}, ref = {}",
            budget.nmse, bound, c.worst, got[c.worst], want[c.worst]
        ));
    }
    Ok(c)
}

/// FlashAttention's rule for low-precision attention: the backend's error
/// against a high-precision reference `hi` may be at most twice the error of
/// a naive computation in the same precision (`naive`), measured as
/// max |· − hi| over the finite elements. NaN/Inf positions must match `hi`.
pub fn within_naive(got: &[f64], hi: &[f64], naive: &[f64]) -> Result<(f64, f64), String> {
    if got.len() != hi.len() || naive.len() != hi.len() {
        return Err(format!(
            "output has {} elements, reference {}, naive {}",
            got.len(),
            hi.len(),
            naive.len()
        ));
    }
    let (mut err, mut naive_err) = (0f64, 0f64);
    for (i, ((&g, &r), &n)) in got.iter().zip(hi).zip(naive).enumerate() {
        if g.is_nan() != r.is_nan() || (r.is_infinite() || g.is_infinite()) && g != r {
            return Err(format!(
                "NaN/Inf mismatch at element {i}: got {g}, reference {r}"
            ));
        }
        if r.is_finite() {
            err = err.max((g - r).abs());
            if n.is_finite() {
                naive_err = naive_err.max((n - r).abs());
            }
        }
    }
    if err > 2.0 * naive_err {
        return Err(format!(
            "max |out − ref| {err:.3e} > 2 × max |naive − ref| = {:.3e}",
            2.0 * naive_err
        ));
    }
    Ok((err, naive_err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_nan_and_error() {
        let b = Budget::for_dtype(DType::F32);
        assert!(compare(&[1.0, 2.0], &[1.0, 2.0], &b).is_ok());
        assert!(compare(&[1.0, f64::NAN], &[1.0, 2.0], &b).is_err());
        assert!(compare(&[1.0, 2.0], &[1.0, f64::NAN], &b).is_err());
        assert!(compare(&[1.0, 2.1], &[1.0, 2.0], &b).is_err());
        assert!(compare(&[f64::NAN], &[f64::NAN], &b).is_ok());
        assert!(compare(&[f64::INFINITY], &[f64::NEG_INFINITY], &b).is_err());
    }

    #[test]
    fn naive_rule() {
        assert!(within_naive(&[1.0, 2.02], &[1.0, 2.0], &[1.0, 1.99]).is_ok());
        assert!(within_naive(&[1.0, 2.03], &[1.0, 2.0], &[1.0, 1.99]).is_err());
        assert!(within_naive(&[f64::NAN], &[1.0], &[1.0]).is_err());
    }
}
