//! The case tables, one module per family, and the few helpers they share.
//!
//! Every case follows the same steps:
//!
//! 1. draw inputs from [`Rng::new`] with a fixed seed (so a failure
//!    reproduces on every machine) and round them to the input dtype, so
//!    the reference sees exactly what the device sees;
//! 2. describe the op ([`crate::OpDesc`], normally `args.desc()`) and return
//!    [`Outcome::Skip`] with the backend's reason when `supports` refuses;
//! 3. upload the inputs, allocate every output with [`Harness::output`] or
//!    [`Harness::in_out`] (guard bytes around it, contents NaN until
//!    written), run the op, read back with [`Harness::read`] (which
//!    synchronizes and checks the guards);
//! 4. compare with [`crate::reference`] under a [`Budget`] — NaN/Inf
//!    positions must match exactly.
//!
//! An error from an op that `supports` accepted is a failure
//! ([`op_failed`]), as is any error on the way (upload, download, guards).

mod batch_invariance;
mod elementwise;
mod flash_attention;
mod gemm;
mod kv_cache;
mod lowp;
mod paged_attention;
mod quant_gemm;

use super::harness::op_failed;
use super::{compare, Budget, Case, Family, Harness, Outcome, Rng};
use crate::{DType, HostTensor, OpDesc};

/// The cases of one family.
pub(crate) fn for_family(family: Family) -> Vec<Case> {
    match family {
        Family::Gemm => gemm::cases(),
        Family::QuantGemm => quant_gemm::cases(),
        Family::KvCache => kv_cache::cases(),
        Family::PagedAttention => paged_attention::cases(),
        Family::FlashAttention => flash_attention::cases(),
        Family::Elementwise => elementwise::cases(),
        Family::BatchInvariance => batch_invariance::cases(),
    }
}

/// What a case body returns: its outcome, or `Err(message)` for a failure
/// found on the way (the `?` operator turns every step's error into one).
type CaseResult = Result<Outcome, String>;

/// A device result that may be refused: `Ok(Err(skip))` when the backend
/// refused the op through `supports`, `Err(message)` on a failure.
type Refusable<T> = Result<Result<T, Outcome>, String>;

/// A case named `name` running `body`; an `Err` becomes [`Outcome::Fail`].
fn case(name: impl Into<String>, body: impl Fn(&Harness<'_>) -> CaseResult + 'static) -> Case {
    Case {
        name: name.into(),
        run: Box::new(move |h| body(h).unwrap_or_else(Outcome::Fail)),
    }
}

/// Run `body` once per item: the first failure fails the case (prefixed
/// with the item's label), and the case is skipped only when every item
/// was (the reasons joined); otherwise it passes.
fn sweep<T>(
    items: impl IntoIterator<Item = T>,
    label: impl Fn(&T) -> String,
    mut body: impl FnMut(&T) -> CaseResult,
) -> CaseResult {
    let (mut ran, mut skips) = (0, Vec::new());
    for item in items {
        match body(&item) {
            Ok(Outcome::Pass) => ran += 1,
            Ok(Outcome::Skip(r)) => skips.push(format!("{}: {r}", label(&item))),
            Ok(Outcome::Fail(m)) | Err(m) => {
                return Ok(Outcome::Fail(format!("{}: {m}", label(&item))))
            }
        }
    }
    Ok(if ran > 0 {
        Outcome::Pass
    } else if skips.is_empty() {
        Outcome::Skip("the backend's capabilities leave nothing to sweep here".into())
    } else {
        Outcome::Skip(skips.join("; "))
    })
}

/// Rows `start..start + len` of a tensor (along its first dimension).
fn rows(t: &HostTensor, start: usize, len: usize) -> HostTensor {
    let row: usize = t.shape[1..].iter().product();
    let size = t.dtype.bytes_for(1);
    let mut shape = t.shape.clone();
    shape[0] = len;
    HostTensor {
        dtype: t.dtype,
        shape,
        data: t.data[start * row * size..(start + len) * row * size].to_vec(),
    }
}

/// Tensors of one dtype stacked along their first dimension.
fn concat(parts: &[&HostTensor]) -> HostTensor {
    let mut shape = parts[0].shape.clone();
    shape[0] = parts.iter().map(|t| t.shape[0]).sum();
    HostTensor {
        dtype: parts[0].dtype,
        shape,
        data: parts.iter().flat_map(|t| t.data.iter().copied()).collect(),
    }
}

/// `Some(Skip)` with the backend's reason when it refuses `desc`.
fn refused(h: &Harness<'_>, desc: &OpDesc) -> Option<Outcome> {
    h.skip_unless_supported(desc)
}

/// Normal random values with standard deviation `std`, rounded to `dtype`.
fn random(rng: &mut Rng, dtype: DType, shape: &[usize], std: f64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::from_f64(dtype, shape, &rng.normals(n, std))
}

/// Compare `got` with `want` under `budget`, naming the output on failure.
fn expect(what: &str, got: &HostTensor, want: &HostTensor, budget: &Budget) -> Result<(), String> {
    compare(&got.to_f64(), &want.to_f64(), budget)
        .map(|_| ())
        .map_err(|e| format!("{what}: {e}"))
}

/// Bitwise equality of two tensors of the same dtype and shape; the message
/// names the first differing element as `row` of `row_len` elements.
fn expect_same_bits(
    what: &str,
    got: &HostTensor,
    want: &HostTensor,
    row_len: usize,
) -> Result<(), String> {
    if got.dtype != want.dtype || got.data.len() != want.data.len() {
        return Err(format!(
            "{what}: {} {:?} vs {} {:?}",
            got.dtype, got.shape, want.dtype, want.shape
        ));
    }
    let size = got.dtype.bytes_for(1).max(1);
    match got
        .data
        .chunks(size)
        .zip(want.data.chunks(size))
        .position(|(a, b)| a != b)
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: not bitwise equal at row {}, element {}: {} vs {}",
            i / row_len.max(1),
            i % row_len.max(1),
            got.get(i),
            want.get(i)
        )),
    }
}

/// `1 / sqrt(n)`, the weight scale that keeps a length-`n` dot product of
/// unit-variance inputs near unit variance.
fn inv_sqrt(n: usize) -> f64 {
    1.0 / (n.max(1) as f64).sqrt()
}

/// Short dtype name for case names.
fn dt(d: DType) -> &'static str {
    d.name()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Names are unique within each family (and `HAL_CASE` can pick any one).
    #[test]
    fn case_names_are_unique() {
        for family in Family::ALL {
            let cases = for_family(family);
            assert!(!cases.is_empty(), "{family:?} has no cases");
            let mut seen = HashSet::new();
            for c in &cases {
                assert!(seen.insert(c.name.clone()), "duplicate case {}", c.name);
            }
        }
    }
}
