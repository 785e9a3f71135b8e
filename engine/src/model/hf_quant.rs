//! Quantised Hugging Face checkpoints: the `quantization_config` of
//! `config.json` and the tensors each method publishes, turned into
//! [`hal::QuantWeights`] unchanged in meaning.
//!
//! | `quant_method` | tensors of a linear layer `…proj` | becomes |
//! |---|---|---|
//! | `awq` (AutoAWQ GEMM, 4-bit, zero point) | `qweight` i32 `[K, N/8]`, `qzeros` i32 `[K/G, N/8]`, `scales` f16 `[K/G, N]` | [`QuantWeights::Awq`] |
//! | `gptq` (AutoGPTQ v1, 4/8-bit, `desc_act`, `sym`) | `qweight` i32 `[K·b/32, N]`, `qzeros` i32 `[G, N·b/32]`, `scales` f16 `[G, N]`, `g_idx` i32 `[K]` | [`QuantWeights::Gptq`] |
//! | `fp8` (e4m3, `activation_scheme` static / dynamic) | `weight` F8_E4M3 `[N, K]`, `weight_scale` f32 `[]`/`[1]`/`[N]`/`[N, 1]`, `input_scale` f32 | [`QuantWeights::Fp8`] |
//! | `compressed-tensors`, `float-quantized` (W8A8-FP8) | as `fp8` | [`QuantWeights::Fp8`] |
//! | `compressed-tensors`, `pack-quantized` (W4A16, symmetric) | `weight_packed` i32 `[N, K/8]` (value + 8, packed along K), `weight_scale` `[N, K/G]` | [`QuantWeights::Gptq`] (zero point 8; the packed words transposed, which is GPTQ's layout) |
//!
//! Layers the method left unquantised (embeddings, `lm_head`, norms, a
//! compressed-tensors `ignore` list) stay dense and load as usual.

use hal::{ActivationScale, QuantWeights};
use half::{bf16, f16};
use safetensors::Dtype as StDtype;
use serde_json::Value;

use super::hf::SafetensorsSource;
use super::{HostWeight, LoadError, WeightSource};

/// A checkpoint's quantisation method, from `quantization_config`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HfQuant {
    /// AutoAWQ GEMM, 4-bit with zero points.
    Awq {
        /// Rows of K per group.
        group_size: usize,
    },
    /// AutoGPTQ v1 layout.
    Gptq {
        /// 4 or 8.
        bits: u8,
        /// Rows of K per group (K when the config says -1).
        group_size: Option<usize>,
    },
    /// FP8 e4m3 weights with activation scaling (`fp8`, or compressed-tensors
    /// `float-quantized`).
    Fp8 {
        /// How activations are scaled.
        activation: ActivationScale,
    },
    /// compressed-tensors `pack-quantized` symmetric int4 (W4A16).
    PackedInt4 {
        /// Rows of K per group (K for `channel` strategy).
        group_size: Option<usize>,
    },
}

impl HfQuant {
    /// Read `quantization_config`; `file` names `config.json` in errors.
    pub fn parse(file: &str, q: &Value) -> Result<HfQuant, LoadError> {
        let key = "quantization_config";
        let bad = |what: String| LoadError::Unsupported {
            file: file.to_string(),
            what,
        };
        let method = q
            .get("quant_method")
            .and_then(Value::as_str)
            .ok_or_else(|| LoadError::metadata(file, key, "quant_method is missing"))?;
        let int = |k: &str| q.get(k).and_then(Value::as_i64);
        match method {
            "awq" => {
                let bits = int("bits").or_else(|| int("w_bit")).unwrap_or(4);
                let group = int("group_size").or_else(|| int("q_group_size"));
                let version = q
                    .get("version")
                    .and_then(Value::as_str)
                    .unwrap_or("gemm")
                    .to_ascii_lowercase();
                let zero_point = q.get("zero_point").and_then(Value::as_bool).unwrap_or(true);
                if bits != 4 {
                    return Err(bad(format!("awq with {bits}-bit weights (4-bit only)")));
                }
                if version != "gemm" {
                    return Err(bad(format!(
                        "awq version {version:?} (the GEMM layout is supported; GEMV and Marlin exports are not)"
                    )));
                }
                if !zero_point {
                    return Err(bad("awq without zero points".into()));
                }
                match group {
                    Some(g) if g > 0 => Ok(HfQuant::Awq {
                        group_size: g as usize,
                    }),
                    other => Err(LoadError::metadata(
                        file,
                        key,
                        &format!("awq group_size {other:?} must be a positive integer"),
                    )),
                }
            }
            "gptq" => {
                let bits = int("bits").unwrap_or(4);
                if bits != 4 && bits != 8 {
                    return Err(bad(format!("gptq with {bits}-bit weights (4 or 8)")));
                }
                let format = q
                    .get("checkpoint_format")
                    .and_then(Value::as_str)
                    .unwrap_or("gptq");
                if format != "gptq" {
                    return Err(bad(format!(
                        "gptq checkpoint_format {format:?} (the v1 \"gptq\" layout is supported)"
                    )));
                }
                let group_size = match int("group_size") {
                    Some(-1) => None,
                    Some(g) if g > 0 => Some(g as usize),
                    other => {
                        return Err(LoadError::metadata(
                            file,
                            key,
                            &format!("gptq group_size {other:?} must be positive or -1"),
                        ))
                    }
                };
                Ok(HfQuant::Gptq {
                    bits: bits as u8,
                    group_size,
                })
            }
            "fp8" => {
                let fmt = q.get("fmt").and_then(Value::as_str).unwrap_or("e4m3");
                if fmt != "e4m3" {
                    return Err(bad(format!("fp8 format {fmt:?} (e4m3 only)")));
                }
                if q.get("weight_block_size").is_some_and(|v| !v.is_null()) {
                    return Err(bad("fp8 with block-wise weight scales".into()));
                }
                let activation = match q
                    .get("activation_scheme")
                    .and_then(Value::as_str)
                    .unwrap_or("dynamic")
                {
                    "static" => ActivationScale::Static,
                    "dynamic" => ActivationScale::DynamicPerTensor,
                    other => return Err(bad(format!("fp8 activation_scheme {other:?}"))),
                };
                Ok(HfQuant::Fp8 { activation })
            }
            "compressed-tensors" => Self::parse_compressed_tensors(file, q),
            other => Err(bad(format!(
                "quant_method {other:?} (supported: awq, gptq, fp8, compressed-tensors)"
            ))),
        }
    }

    fn parse_compressed_tensors(file: &str, q: &Value) -> Result<HfQuant, LoadError> {
        let bad = |what: String| LoadError::Unsupported {
            file: file.to_string(),
            what: format!("compressed-tensors {what}"),
        };
        let format = q.get("format").and_then(Value::as_str).unwrap_or("");
        let groups = q
            .get("config_groups")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                LoadError::metadata(file, "quantization_config.config_groups", "missing")
            })?;
        if groups.len() != 1 {
            return Err(bad(format!(
                "with {} config groups (one scheme for every layer is supported)",
                groups.len()
            )));
        }
        let Some(group) = groups.values().next() else {
            return Err(bad("with no config group".into()));
        };
        let w = group
            .get("weights")
            .ok_or_else(|| LoadError::metadata(file, "config_groups.weights", "missing"))?;
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let bits = w.get("num_bits").and_then(Value::as_u64).unwrap_or(0);
        let strategy = s(w, "strategy");
        match format {
            "float-quantized" => {
                if bits != 8 || s(w, "type") != "float" {
                    return Err(bad(format!("float-quantized with {bits}-bit weights")));
                }
                if strategy != "tensor" && strategy != "channel" {
                    return Err(bad(format!("FP8 weight strategy {strategy:?}")));
                }
                let a =
                    match group.get("input_activations") {
                        Some(a) if !a.is_null() => a,
                        _ => return Err(bad(
                            "FP8 weight-only (W8A16): Kiln's FP8 GEMM quantises activations too"
                                .into(),
                        )),
                    };
                let dynamic = a.get("dynamic").and_then(Value::as_bool).unwrap_or(false);
                let activation = match (dynamic, s(a, "strategy").as_str()) {
                    (false, "tensor") => ActivationScale::Static,
                    (true, "tensor") => ActivationScale::DynamicPerTensor,
                    (true, "token") => ActivationScale::DynamicPerToken,
                    (d, st) => {
                        return Err(bad(format!(
                            "FP8 activations with strategy {st:?}, dynamic {d}"
                        )))
                    }
                };
                Ok(HfQuant::Fp8 { activation })
            }
            "pack-quantized" => {
                if bits != 4 || s(w, "type") != "int" {
                    return Err(bad(format!("pack-quantized with {bits}-bit weights")));
                }
                if w.get("symmetric").and_then(Value::as_bool) != Some(true) {
                    return Err(bad("asymmetric pack-quantized weights".into()));
                }
                if w.get("actorder").is_some_and(|v| !v.is_null()) {
                    return Err(bad("pack-quantized weights with actorder".into()));
                }
                let group_size = match strategy.as_str() {
                    "channel" => None,
                    "group" => match w.get("group_size").and_then(Value::as_u64) {
                        Some(g) if g > 0 => Some(g as usize),
                        _ => return Err(bad("group strategy without a group_size".into())),
                    },
                    other => return Err(bad(format!("weight strategy {other:?}"))),
                };
                Ok(HfQuant::PackedInt4 { group_size })
            }
            other => Err(bad(format!(
                "format {other:?} (float-quantized and pack-quantized are supported)"
            ))),
        }
    }
}

/// A [`SafetensorsSource`] whose quantised linear layers are read as
/// [`HostWeight::Quant`]: asking for `…proj.weight` of a quantised layer
/// assembles the method's tensors.
pub struct QuantizedSource {
    inner: SafetensorsSource,
    quant: HfQuant,
}

impl QuantizedSource {
    /// Wrap `inner`, read with `quant`.
    pub fn new(inner: SafetensorsSource, quant: HfQuant) -> Self {
        QuantizedSource { inner, quant }
    }

    /// The method.
    pub fn quant(&self) -> HfQuant {
        self.quant
    }

    fn int_tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>, LoadError> {
        let t = self
            .inner
            .raw(name)?
            .ok_or_else(|| LoadError::tensor(self.inner.origin(), name, "missing"))?;
        if t.dtype != StDtype::I32 || t.shape != shape {
            return Err(LoadError::tensor(
                t.file,
                name,
                format!("{:?} {:?}, expected I32 {shape:?}", t.dtype, t.shape),
            ));
        }
        Ok(t.bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// A float tensor of `numel` elements as f32 (F32, F16 or BF16); `shapes`
    /// lists the accepted shapes.
    fn float_tensor(&self, name: &str, shapes: &[Vec<usize>]) -> Result<Vec<f32>, LoadError> {
        let t = self
            .inner
            .raw(name)?
            .ok_or_else(|| LoadError::tensor(self.inner.origin(), name, "missing"))?;
        if !shapes.contains(&t.shape) {
            return Err(LoadError::tensor(
                t.file,
                name,
                format!("shape {:?}, expected one of {shapes:?}", t.shape),
            ));
        }
        let v = match t.dtype {
            StDtype::F32 => t
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            StDtype::F16 => t
                .bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StDtype::BF16 => t
                .bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(LoadError::tensor(
                    t.file,
                    name,
                    format!("dtype {other:?}, expected F32, F16 or BF16"),
                ))
            }
        };
        Ok(v)
    }

    /// Scales as f16 (the AWQ/GPTQ kernels' type); BF16 or F32 scales are
    /// converted and must be representable.
    fn f16_tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f16>, LoadError> {
        let v = self.float_tensor(name, &[shape.to_vec()])?;
        v.iter()
            .map(|&x| {
                let h = f16::from_f32(x);
                if x.is_finite() && !h.is_finite() {
                    Err(LoadError::tensor(
                        self.inner.origin(),
                        name,
                        format!("scale {x} does not fit in f16"),
                    ))
                } else {
                    Ok(h)
                }
            })
            .collect()
    }

    fn awq(&self, base: &str, group_size: usize) -> Result<HostWeight, LoadError> {
        let qw_name = format!("{base}.qweight");
        let (k, n8) = self.dims2(&qw_name)?;
        let n = n8 * 8;
        if group_size == 0 || !k.is_multiple_of(group_size) {
            return Err(LoadError::tensor(
                self.inner.origin(),
                &qw_name,
                format!("K = {k} is not a multiple of group_size {group_size}"),
            ));
        }
        let groups = k / group_size;
        Ok(HostWeight::Quant(QuantWeights::Awq {
            group_size,
            n,
            k,
            qweight: self.int_tensor(&qw_name, &[k, n8])?,
            qzeros: self.int_tensor(&format!("{base}.qzeros"), &[groups, n8])?,
            scales: self.f16_tensor(&format!("{base}.scales"), &[groups, n])?,
        }))
    }

    fn gptq(&self, base: &str, bits: u8, group: Option<usize>) -> Result<HostWeight, LoadError> {
        let qw_name = format!("{base}.qweight");
        let (kp, n) = self.dims2(&qw_name)?;
        let p = 32 / bits as usize;
        let k = kp * p;
        let group_size = group.unwrap_or(k);
        let groups = k.div_ceil(group_size.max(1));
        let g_name = format!("{base}.g_idx");
        let g_idx = if self.inner.contains(&g_name) {
            let g = self.int_tensor(&g_name, &[k])?;
            // A trivial g_idx is the default; keep it only when it permutes.
            (!hal::quant::gptq::is_trivial_g_idx(&g, group_size, k)).then_some(g)
        } else {
            None
        };
        Ok(HostWeight::Quant(QuantWeights::Gptq {
            bits,
            group_size,
            n,
            k,
            qweight: self.int_tensor(&qw_name, &[kp, n])?,
            qzeros: self.int_tensor(&format!("{base}.qzeros"), &[groups, n / p])?,
            scales: self.f16_tensor(&format!("{base}.scales"), &[groups, n])?,
            g_idx,
        }))
    }

    fn fp8(&self, base: &str, activation: ActivationScale) -> Result<HostWeight, LoadError> {
        let w_name = format!("{base}.weight");
        let Some(t) = self.inner.raw(&w_name)? else {
            return Err(LoadError::tensor(self.inner.origin(), &w_name, "missing"));
        };
        let [n, k] = t.shape[..] else {
            return Err(LoadError::tensor(
                t.file,
                &w_name,
                format!("shape {:?} is not 2-D", t.shape),
            ));
        };
        let weight = t.bytes.to_vec();
        let weight_scale = self.float_tensor(
            &format!("{base}.weight_scale"),
            &[vec![], vec![1], vec![n], vec![n, 1]],
        )?;
        let is_name = format!("{base}.input_scale");
        let input_scale = match activation {
            ActivationScale::Static => {
                let s = self.float_tensor(&is_name, &[vec![], vec![1]])?;
                Some(s[0])
            }
            _ => None,
        };
        Ok(HostWeight::Quant(QuantWeights::Fp8 {
            n,
            k,
            weight,
            weight_scale,
            activation,
            input_scale,
        }))
    }

    fn packed_int4(&self, base: &str, group: Option<usize>) -> Result<HostWeight, LoadError> {
        let p_name = format!("{base}.weight_packed");
        let (n, k8) = self.dims2(&p_name)?;
        let k = k8 * 8;
        let group_size = group.unwrap_or(k);
        if group_size == 0 || !k.is_multiple_of(group_size) || !n.is_multiple_of(8) {
            return Err(LoadError::tensor(
                self.inner.origin(),
                &p_name,
                format!("K = {k}, N = {n} do not fit group_size {group_size} and 8-row packing"),
            ));
        }
        let groups = k / group_size;
        let packed = self.int_tensor(&p_name, &[n, k8])?;
        let scale_name = format!("{base}.weight_scale");
        let scales_nk = self.f16_tensor(&scale_name, &[n, groups])?;
        // Packed along K in [N, K/8] words, low nibble first, value + 8:
        // GPTQ packs along K in [K/8, N] the same way, so the words transpose.
        let mut qweight = vec![0i32; k8 * n];
        for row in 0..n {
            for w in 0..k8 {
                qweight[w * n + row] = packed[row * k8 + w];
            }
        }
        let mut scales = vec![f16::ZERO; groups * n];
        for row in 0..n {
            for g in 0..groups {
                scales[g * n + row] = scales_nk[row * groups + g];
            }
        }
        // Zero point 8 everywhere, stored minus one.
        let qzeros = vec![0x7777_7777u32 as i32; groups * n / 8];
        Ok(HostWeight::Quant(QuantWeights::Gptq {
            bits: 4,
            group_size,
            n,
            k,
            qweight,
            qzeros,
            scales,
            g_idx: None,
        }))
    }

    /// `[rows, cols]` of a 2-D tensor that must exist.
    fn dims2(&self, name: &str) -> Result<(usize, usize), LoadError> {
        let t = self
            .inner
            .raw(name)?
            .ok_or_else(|| LoadError::tensor(self.inner.origin(), name, "missing"))?;
        match t.shape[..] {
            [rows, cols] => Ok((rows, cols)),
            _ => Err(LoadError::tensor(
                t.file,
                name,
                format!("shape {:?} is not 2-D", t.shape),
            )),
        }
    }

    /// The base name (`…q_proj`) of `name` when it is a quantised linear
    /// weight of this checkpoint.
    fn quantised_base<'n>(&self, name: &'n str) -> Result<Option<&'n str>, LoadError> {
        let Some(base) = name.strip_suffix(".weight") else {
            return Ok(None);
        };
        let found = match self.quant {
            HfQuant::Awq { .. } | HfQuant::Gptq { .. } => {
                self.inner.contains(&format!("{base}.qweight"))
            }
            HfQuant::PackedInt4 { .. } => self.inner.contains(&format!("{base}.weight_packed")),
            HfQuant::Fp8 { .. } => self
                .inner
                .raw(name)?
                .is_some_and(|t| t.dtype == StDtype::F8_E4M3),
        };
        Ok(found.then_some(base))
    }
}

impl WeightSource for QuantizedSource {
    fn origin(&self) -> &str {
        self.inner.origin()
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
            || name.strip_suffix(".weight").is_some_and(|base| {
                self.inner.contains(&format!("{base}.qweight"))
                    || self.inner.contains(&format!("{base}.weight_packed"))
            })
    }

    fn load(&self, name: &str) -> Result<Option<HostWeight>, LoadError> {
        let Some(base) = self.quantised_base(name)? else {
            return self.inner.load(name);
        };
        let w = match self.quant {
            HfQuant::Awq { group_size } => self.awq(base, group_size)?,
            HfQuant::Gptq { bits, group_size } => self.gptq(base, bits, group_size)?,
            HfQuant::Fp8 { activation } => self.fp8(base, activation)?,
            HfQuant::PackedInt4 { group_size } => self.packed_int4(base, group_size)?,
        };
        if let HostWeight::Quant(q) = &w {
            q.validate()
                .map_err(|m| LoadError::tensor(self.inner.origin(), name, m))?;
        }
        Ok(Some(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<HfQuant, LoadError> {
        HfQuant::parse("config.json", &v)
    }

    #[test]
    fn methods_parse() {
        assert_eq!(
            parse(json!({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true, "version": "gemm"})).unwrap(),
            HfQuant::Awq { group_size: 128 }
        );
        assert_eq!(
            parse(json!({"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": true, "sym": false})).unwrap(),
            HfQuant::Gptq { bits: 8, group_size: None }
        );
        assert_eq!(
            parse(json!({"quant_method": "fp8", "activation_scheme": "static"})).unwrap(),
            HfQuant::Fp8 {
                activation: ActivationScale::Static
            }
        );
        let ct = json!({
            "quant_method": "compressed-tensors",
            "format": "float-quantized",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true, "dynamic": false},
                "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}
            }},
            "ignore": ["lm_head"]
        });
        assert_eq!(
            parse(ct).unwrap(),
            HfQuant::Fp8 {
                activation: ActivationScale::DynamicPerToken
            }
        );
        let w4 = json!({
            "quant_method": "compressed-tensors",
            "format": "pack-quantized",
            "config_groups": {"group_0": {
                "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 64, "symmetric": true}
            }}
        });
        assert_eq!(
            parse(w4).unwrap(),
            HfQuant::PackedInt4 {
                group_size: Some(64)
            }
        );
    }

    /// Write `tensors` as `model.safetensors` in a fresh directory and read
    /// `name` back through a [`QuantizedSource`] with `quant`.
    fn load_by_hand(
        tensors: &[(&str, StDtype, Vec<usize>, Vec<u8>)],
        quant: HfQuant,
        name: &str,
    ) -> QuantWeights {
        let dir = tempfile::tempdir().unwrap();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let src = QuantizedSource::new(SafetensorsSource::open(dir.path()).unwrap(), quant);
        assert!(src.contains(name));
        match src.load(name).unwrap() {
            Some(HostWeight::Quant(q)) => q,
            other => panic!("{other:?}"),
        }
    }

    fn i32s(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f16s(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect()
    }

    /// `x · Wᵀ` for one row `x` on the CPU backend, from the packed weight.
    fn gemm_row(q: &QuantWeights, x: &[f32]) -> Vec<f32> {
        use hal::{DType, HostTensor, Precision, QuantGemmArgs, Tensor};
        let d = (kernels_cpu::factory().open)(0).unwrap();
        let d = d.as_ref();
        let p = d.pack(q).unwrap();
        let xt = Tensor::from_host(d, &HostTensor::from_f32(DType::F32, &[1, x.len()], x)).unwrap();
        let mut out = Tensor::alloc(d, DType::F32, &[1, q.n()]).unwrap();
        d.quant_gemm(QuantGemmArgs {
            x: xt.view(),
            w: &p,
            bias: None,
            out: out.view_mut(),
            precision: Precision::Exact,
        })
        .unwrap();
        d.synchronize().unwrap();
        out.to_host(d)
            .unwrap()
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// AutoAWQ GEMM, K = 2, N = 8, groups of 1, packed by hand: row 0 holds
    /// q = n in nibble order [0, 2, 4, 6, 1, 3, 5, 7], row 1 holds 15s;
    /// zeros 8 then 0, scales 0.5 then 2. So W[n] = [(n − 8)/2, 30] and
    /// x = [1, 1] gives y[n] = 26 + n/2.
    #[test]
    fn hand_made_awq_checkpoint() {
        let q = load_by_hand(
            &[
                (
                    "l.qweight",
                    StDtype::I32,
                    vec![2, 1],
                    i32s(&[0x7531_6420, 0xFFFF_FFFF]),
                ),
                (
                    "l.qzeros",
                    StDtype::I32,
                    vec![2, 1],
                    i32s(&[0x8888_8888, 0]),
                ),
                (
                    "l.scales",
                    StDtype::F16,
                    vec![2, 8],
                    f16s(&[[0.5; 8], [2.0; 8]].concat()),
                ),
            ],
            HfQuant::Awq { group_size: 1 },
            "l.weight",
        );
        assert_eq!((q.n(), q.k()), (8, 2));
        let want: Vec<f32> = (0..8).map(|n| 26.0 + n as f32 / 2.0).collect();
        assert_eq!(gemm_row(&q, &[1.0, 1.0]), want);
    }

    /// AutoGPTQ v1 4-bit with act-order, K = N = 8, groups of 4, by hand:
    /// q[k, n] = k (one word 0x76543210 per column), g_idx alternates 1, 0;
    /// group 0 has zero 8 (stored 7) and scale 1, group 1 zero 1 (stored 0)
    /// and scale 0.5. With x[k] = k + 1: even k give 0.5·(k − 1)·(k + 1),
    /// summing to 26; odd k give (k − 8)·(k + 1), summing to −60; y = −34.
    #[test]
    fn hand_made_gptq_act_order_checkpoint() {
        let q = load_by_hand(
            &[
                (
                    "l.qweight",
                    StDtype::I32,
                    vec![1, 8],
                    i32s(&[0x7654_3210; 8]),
                ),
                (
                    "l.qzeros",
                    StDtype::I32,
                    vec![2, 1],
                    i32s(&[0x7777_7777, 0]),
                ),
                (
                    "l.scales",
                    StDtype::F16,
                    vec![2, 8],
                    f16s(&[[1.0; 8], [0.5; 8]].concat()),
                ),
                (
                    "l.g_idx",
                    StDtype::I32,
                    vec![8],
                    i32s(&[1, 0, 1, 0, 1, 0, 1, 0]),
                ),
            ],
            HfQuant::Gptq {
                bits: 4,
                group_size: Some(4),
            },
            "l.weight",
        );
        assert!(matches!(
            q.spec(),
            hal::QuantSpec::Gptq {
                act_order: true,
                ..
            }
        ));
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        assert_eq!(gemm_row(&q, &x), vec![-34.0; 8]);
    }

    /// compressed-tensors W4A16: row n of `weight_packed` holds value + 8
    /// along K, low nibble first; W = (q − 8) · scale.
    #[test]
    fn hand_made_pack_quantized_checkpoint() {
        // N = 8 rows, K = 8: row n holds q = n + k (mod 16) in nibble k.
        let words: Vec<u32> = (0..8u32)
            .map(|n| (0..8u32).fold(0, |w, k| w | (((n + k) % 16) << (4 * k))))
            .collect();
        let q = load_by_hand(
            &[
                ("l.weight_packed", StDtype::I32, vec![8, 1], i32s(&words)),
                (
                    "l.weight_scale",
                    StDtype::BF16,
                    vec![8, 1],
                    (0..8)
                        .flat_map(|_| bf16::from_f32(0.25).to_le_bytes())
                        .collect(),
                ),
            ],
            HfQuant::PackedInt4 { group_size: None },
            "l.weight",
        );
        for n in 0..8 {
            for k in 0..8 {
                let want = 0.25 * (((n + k) % 16) as f64 - 8.0);
                assert_eq!(q.weight(n, k), want, "({n}, {k})");
            }
        }
    }

    /// FP8 gate and up projections with different per-tensor scales stack
    /// into one per-channel weight.
    #[test]
    fn fp8_parts_with_different_scales_stack_exactly() {
        let part = |scale: f32| {
            HostWeight::Quant(QuantWeights::Fp8 {
                n: 2,
                k: 2,
                weight: vec![0x38, 0x40, 0xB8, 0x00],
                weight_scale: vec![scale],
                activation: ActivationScale::DynamicPerTensor,
                input_scale: None,
            })
        };
        let HostWeight::Quant(stacked) = HostWeight::concat_rows(&[part(1.0), part(2.0)]).unwrap()
        else {
            panic!()
        };
        let (a, b) = (part(1.0), part(2.0));
        let (HostWeight::Quant(a), HostWeight::Quant(b)) = (a, b) else {
            panic!()
        };
        for k in 0..2 {
            for n in 0..2 {
                assert_eq!(stacked.weight(n, k), a.weight(n, k));
                assert_eq!(stacked.weight(n + 2, k), b.weight(n, k));
            }
        }
    }

    #[test]
    fn unsupported_methods_say_what() {
        for (v, want) in [
            (json!({"quant_method": "bitsandbytes"}), "bitsandbytes"),
            (
                json!({"quant_method": "awq", "bits": 3, "group_size": 128}),
                "3-bit",
            ),
            (
                json!({"quant_method": "awq", "group_size": 128, "version": "gemv"}),
                "gemv",
            ),
            (json!({"quant_method": "gptq", "bits": 3}), "3-bit"),
            (
                json!({"quant_method": "fp8", "weight_block_size": [128, 128]}),
                "block-wise",
            ),
            (
                json!({"quant_method": "gptq", "checkpoint_format": "marlin"}),
                "marlin",
            ),
        ] {
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let e = parse(json!({"bits": 4})).unwrap_err().to_string();
        assert!(e.contains("quant_method"), "{e}");
    }
}
