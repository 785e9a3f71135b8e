//! Dense GEMM: `out[M, N] = x[M, K] · w[N, K]ᵀ + bias[N]`.
//!
//! Shapes whose N and K are not multiples of any tile size, M from a single
//! row to a small batch, every input dtype, mixed output and bias dtypes,
//! and NaN/Inf parity: a NaN in one row of `x` must make exactly that output
//! row NaN, an Inf exactly ±Inf.

use super::{case, dt, expect, inv_sqrt, op_failed, random, refused, CaseResult};
use crate::conformance::{Budget, Harness, Outcome, Rng};
use crate::{reference, DType, GemmArgs, HostTensor};

use DType::{BF16, F16, F32};

/// One GEMM case.
#[derive(Clone, Copy, Debug)]
struct GemmCase {
    /// Dtype of `x` and `w`.
    input: DType,
    /// Dtype of `out`.
    output: DType,
    /// Dtype of the bias, if any.
    bias: Option<DType>,
    m: usize,
    n: usize,
    k: usize,
    /// Put a NaN in row 1 and an Inf in row 2 of `x` (needs `m ≥ 3`).
    poison: bool,
    seed: u64,
}

impl GemmCase {
    fn name(&self) -> String {
        let mut s = format!("{}_m{}_n{}_k{}", dt(self.input), self.m, self.n, self.k);
        if self.output != self.input {
            s += &format!("_to_{}", dt(self.output));
        }
        match self.bias {
            Some(b) if b == self.output => s += "_bias",
            Some(b) => s += &format!("_bias_{}", dt(b)),
            None => {}
        }
        if self.poison {
            s += "_nan_inf_rows";
        }
        s
    }
}

/// The GEMM cases.
pub(super) fn cases() -> Vec<crate::conformance::Case> {
    /// input, output, bias, m, n, k, poison
    type Row = (DType, DType, Option<DType>, usize, usize, usize, bool);
    #[rustfmt::skip]
    let grid: &[Row] = &[
        (F32, F32, None, 1, 72, 300, false),
        (F32, F32, Some(F32), 33, 130, 100, false),
        (F32, F32, None, 64, 200, 300, false),
        (F32, F32, Some(F32), 7, 1, 513, false),
        (F16, F16, Some(F16), 33, 130, 100, false),
        (F16, F16, None, 1, 257, 33, false),
        (F16, F32, Some(F32), 5, 136, 264, false),
        (BF16, BF16, None, 64, 200, 300, false),
        (BF16, BF16, Some(F32), 5, 72, 96, false),
        (BF16, F32, None, 33, 65, 129, false),
        (F32, BF16, Some(BF16), 3, 48, 17, false),
        (F32, F32, Some(F32), 9, 40, 70, true),
        (F16, F16, None, 9, 40, 70, true),
        (BF16, BF16, Some(BF16), 5, 33, 64, true),
    ];
    grid.iter()
        .enumerate()
        .map(|(i, &(input, output, bias, m, n, k, poison))| {
            let c = GemmCase {
                input,
                output,
                bias,
                m,
                n,
                k,
                poison,
                seed: 0x6e_0000 + i as u64,
            };
            case(c.name(), move |h| run(h, &c))
        })
        .collect()
}

/// Random `x [M, K]` (with NaN/Inf rows when asked), `w [N, K]` scaled so
/// outputs stay near unit size, and an optional bias.
fn inputs(c: &GemmCase) -> (HostTensor, HostTensor, Option<HostTensor>) {
    let mut rng = Rng::new(c.seed);
    let mut x = random(&mut rng, c.input, &[c.m, c.k], 1.0);
    let w = random(&mut rng, c.input, &[c.n, c.k], inv_sqrt(c.k));
    let bias = c.bias.map(|d| random(&mut rng, d, &[c.n], 1.0));
    if c.poison {
        x.set(c.k + c.k / 2, f64::NAN);
        x.set(2 * c.k + 1, f64::INFINITY);
    }
    (x, w, bias)
}

fn run(h: &Harness<'_>, c: &GemmCase) -> CaseResult {
    let (x, w, bias) = inputs(c);
    let xd = h.upload(&x)?;
    let wd = h.upload(&w)?;
    let bd = bias.as_ref().map(|b| h.upload(b)).transpose()?;
    let mut out = h.output(c.output, &[c.m, c.n])?;
    let args = GemmArgs {
        x: xd.view(),
        w: wd.view(),
        bias: bd.as_ref().map(|b| b.view()),
        out: out.view_mut(),
    };
    if let Some(skip) = refused(h, &args.desc()) {
        return Ok(skip);
    }
    h.device.gemm(args).map_err(|e| op_failed("gemm", e))?;
    let got = h.read(&out)?;
    let want = reference::gemm(&x, &w, bias.as_ref(), c.output);
    expect("out", &got, &want, &Budget::for_dtype(c.output))?;
    Ok(Outcome::Pass)
}
