//! Dense GEMM cases: `out[M, N] = x[M, K] · w[N, K]ᵀ`, all in one dtype.

use hal::{DType, Device, GemmArgs, KvLayout, OpDesc};

use crate::case::{Cost, Family, Op, Runner};
use crate::data;
use crate::shapes::{Linear, ModelShape, Workload};

/// FLOPs of an `[M, K] · [K, N]` product: `2·M·N·K`.
pub fn flops(m: usize, n: usize, k: usize) -> u64 {
    2 * (m * n * k) as u64
}

/// A dense GEMM on one linear layer.
pub struct GemmCase {
    /// Model the layer belongs to.
    pub model: ModelShape,
    /// The layer (`N`, `K`).
    pub layer: Linear,
    /// `M` comes from its token count.
    pub workload: Workload,
    /// Dtype of `x`, `w` and `out`.
    pub dtype: DType,
}

impl GemmCase {
    fn m(&self) -> usize {
        self.workload.num_tokens()
    }
}

impl Op for GemmCase {
    fn family(&self) -> Family {
        Family::Gemm
    }

    fn label(&self) -> String {
        format!(
            "{}/{}.{}/{}",
            self.dtype,
            self.model.name,
            self.layer.name,
            self.workload.tokens_label()
        )
    }

    fn desc(&self, _: KvLayout) -> OpDesc {
        OpDesc::Gemm {
            input: self.dtype,
            output: self.dtype,
            n: self.layer.n,
            k: self.layer.k,
            bias: false,
        }
    }

    /// `2·M·N·K` FLOPs; bytes: the weight `N·K`, `x` `M·K` and `out` `M·N`
    /// elements of the dtype.
    fn cost(&self) -> Cost {
        let (m, n, k) = (self.m(), self.layer.n, self.layer.k);
        Cost {
            flops: flops(m, n, k),
            bytes: self.dtype.bytes_for(n * k + m * k + m * n) as u64,
        }
    }

    fn has_cold_variant(&self) -> bool {
        matches!(self.workload, Workload::Decode { .. })
    }

    fn resident_bytes(&self) -> usize {
        self.dtype.bytes_for(self.layer.n * self.layer.k)
    }

    fn build<'d>(&self, dev: &'d dyn Device, copies: usize) -> hal::Result<Runner<'d>> {
        let (m, n, k) = (self.m(), self.layer.n, self.layer.k);
        let dtype = self.dtype;
        let w_host = data::random_bytes(dtype, n * k, 1);
        let ws = (0..copies)
            .map(|_| data::upload(dev, dtype, &[n, k], &w_host))
            .collect::<hal::Result<Vec<_>>>()?;
        drop(w_host);
        let x = data::random(dev, dtype, &[m, k], 2)?;
        let mut out = data::output(dev, dtype, &[m, n])?;
        let mut i = 0;
        Ok(Runner::new(move || {
            let w = &ws[i % ws.len()];
            i += 1;
            dev.gemm(GemmArgs {
                x: x.view(),
                w: w.view(),
                bias: None,
                out: out.view_mut(),
            })?;
            dev.synchronize()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::SMOLLM2_135M;

    #[test]
    fn gemm_cost() {
        let c = GemmCase {
            model: SMOLLM2_135M,
            layer: SMOLLM2_135M.mlp_down(),
            workload: Workload::Prefill { tokens: 512 },
            dtype: DType::F16,
        };
        let cost = c.cost();
        assert_eq!(cost.flops, 2 * 512 * 576 * 1536);
        assert_eq!(cost.bytes, 2 * (576 * 1536 + 512 * 1536 + 512 * 576));
        assert_eq!(c.resident_bytes(), 2 * 576 * 1536);
        assert_eq!(c.label(), "f16/smollm2-135m.mlp_down/prefill_512");
    }
}
