//! Quantised GEMM: AWQ, GPTQ, FP8 W8A8 and GGUF block formats.

use crate::check::{Check, ACTIVATIONS};
use crate::{Backend, OpDesc, PackedWeight, Precision, QuantWeights, Result, View, ViewMut};

/// `out[M, N] = x[M, K] · dequant(w)[N, K]ᵀ + bias[N]`.
///
/// `w` comes from [`QuantGemm::pack`] on the same backend. With
/// [`Precision::Int8Activations`] the activations are quantised first (see
/// there); FP8 W8A8 always casts activations to E4M3 as its format defines.
#[derive(Debug)]
pub struct QuantGemmArgs<'a> {
    /// Activations `[M, K]` (F32, F16 or BF16).
    pub x: View<'a>,
    /// Packed weight `[N, K]`.
    pub w: &'a PackedWeight,
    /// Optional bias `[N]`.
    pub bias: Option<View<'a>>,
    /// Output `[M, N]`.
    pub out: ViewMut<'a>,
    /// Activation precision.
    pub precision: Precision,
}

impl QuantGemmArgs<'_> {
    /// Check shapes, dtypes and bounds; returns `(m, n, k)`.
    pub fn validate(&self, backend: &str) -> Result<(usize, usize, usize)> {
        let c = Check::new(backend, "quant_gemm");
        c.view("x", &self.x, ACTIVATIONS)?;
        c.view("out", &self.out, ACTIVATIONS)?;
        let m = c.rank("x", &self.x, 2)?[0];
        let (n, k) = (self.w.n, self.w.k);
        c.shape("x", &self.x, &[m, k])?;
        c.shape("out", &self.out, &[m, n])?;
        if let Some(b) = &self.bias {
            c.view("bias", b, ACTIVATIONS)?;
            c.shape("bias", b, &[n])?;
        }
        Ok((m, n, k))
    }

    /// The op description for `supports`.
    pub fn desc(&self) -> OpDesc {
        OpDesc::QuantGemm {
            spec: self.w.spec,
            input: self.x.dtype,
            output: self.out.dtype,
            precision: self.precision,
            n: self.w.n,
            k: self.w.k,
        }
    }
}

/// Quantised GEMM.
pub trait QuantGemm: Backend {
    /// Repack a checkpoint's weight into this backend's layout (e.g. a
    /// Marlin-style tile order) and upload it. Callers validate `w` first
    /// ([`QuantWeights::validate`]); backends call it again. Default:
    /// unsupported.
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        let _ = w;
        Err(self.not_implemented("quant_gemm"))
    }

    /// Run [`QuantGemmArgs`]. Default: unsupported.
    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        let _ = args;
        Err(self.not_implemented("quant_gemm"))
    }
}
