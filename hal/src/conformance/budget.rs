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
}
