//! Dense GEMM.

use crate::check::{Check, ACTIVATIONS};
use crate::{Backend, OpDesc, Result, View, ViewMut};

/// `out[M, N] = x[M, K] · w[N, K]ᵀ + bias[N]`, accumulated in f32 or wider.
///
/// `w` is row-major `[N, K]` like a PyTorch `nn.Linear` weight. `x` and `w`
/// share one dtype (F32, F16 or BF16); `out` and `bias` may have any
/// activation dtype.
#[derive(Debug)]
pub struct GemmArgs<'a> {
    /// Activations `[M, K]`.
    pub x: View<'a>,
    /// Weight `[N, K]`.
    pub w: View<'a>,
    /// Optional bias `[N]`.
    pub bias: Option<View<'a>>,
    /// Output `[M, N]`.
    pub out: ViewMut<'a>,
}

impl GemmArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(m, n, k)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize, usize)> {
        let c = Check::new(backend, "gemm");
        c.view("x", &self.x, ACTIVATIONS)?;
        c.view("w", &self.w, &[self.x.dtype])?;
        c.view("out", &self.out, ACTIVATIONS)?;
        let (m, k) = match c.rank("x", &self.x, 2)? {
            [m, k] => (*m, *k),
            _ => unreachable!("rank checked"),
        };
        let n = c.rank("w", &self.w, 2)?[0];
        c.shape("w", &self.w, &[n, k])?;
        c.shape("out", &self.out, &[m, n])?;
        if let Some(b) = &self.bias {
            c.view("bias", b, ACTIVATIONS)?;
            c.shape("bias", b, &[n])?;
        }
        Ok((m, n, k))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        let s = self.w.layout.shape();
        OpDesc::Gemm {
            input: self.x.dtype,
            output: self.out.dtype,
            n: s.first().copied().unwrap_or(0),
            k: s.get(1).copied().unwrap_or(0),
            bias: self.bias.is_some(),
        }
    }
}

/// Dense GEMM.
pub trait Gemm: Backend {
    /// Run [`GemmArgs`]. Default: unsupported.
    fn gemm(&self, args: GemmArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("gemm"))
    }
}
