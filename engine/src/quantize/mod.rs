//! `kiln quantize`: write a model's linear layers in a published quantised
//! layout — AWQ, GPTQ and FP8 as Hugging Face directories, Q4_0 / Q8_0 as
//! GGUF files — from an unquantised or GGUF checkpoint.
//!
//! Round-to-nearest is the baseline for every format. With a calibration
//! text, GPTQ runs the Hessian-based algorithm ([`gptq`], with act-order)
//! and AWQ searches activation-aware scales ([`awq`]); FP8 with static
//! activation scales takes them from the calibration inputs' largest
//! magnitude. Calibration runs the source model itself on the CPU backend
//! and observes each linear layer's input ([`calibrate`]).

pub mod awq;
pub mod calibrate;
pub mod gptq;
pub mod host_model;
pub mod linalg;
pub mod rtn;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hal::{ActivationScale, GgufType, QuantWeights};
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::model::gguf::{GgmlType, GgufFile, GgufValue, GgufWriter};
use crate::model::llama::LinearSite;
use crate::model::{synthetic, Checkpoint, HostWeight, LoadError};

use self::calibrate::{Stats, Wants};
use self::gptq::GptqParams;
use self::host_model::{HostModel, Proj};
use self::rtn::IntQuant;

/// Why quantisation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The source model could not be read.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The CPU backend failed.
    #[error("{0}")]
    Device(#[from] hal::HalError),
    /// A file could not be read or written.
    #[error("{file}: {error}")]
    Io {
        /// The file.
        file: String,
        /// The error.
        error: std::io::Error,
    },
    /// Shapes or options that do not fit the format.
    #[error("{0}")]
    Shape(String),
    /// The calibration run failed.
    #[error("calibration: {0}")]
    Calibration(String),
}

impl QuantizeError {
    fn io(file: &Path, error: std::io::Error) -> Self {
        QuantizeError::Io {
            file: file.display().to_string(),
            error,
        }
    }
}

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// AutoAWQ GEMM, 4-bit, zero points.
    Awq,
    /// AutoGPTQ v1, 4 or 8 bit.
    Gptq,
    /// FP8 e4m3 weights, per-tensor scales.
    Fp8,
    /// GGUF Q4_0.
    Q4_0,
    /// GGUF Q8_0.
    Q8_0,
    /// Unquantised, f16 (a dense Hugging Face directory).
    F16,
    /// Unquantised, f32 (a dense Hugging Face directory).
    F32,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "awq" => Ok(Method::Awq),
            "gptq" => Ok(Method::Gptq),
            "fp8" => Ok(Method::Fp8),
            "q4_0" => Ok(Method::Q4_0),
            "q8_0" => Ok(Method::Q8_0),
            "f16" => Ok(Method::F16),
            "f32" => Ok(Method::F32),
            other => Err(format!(
                "unknown method {other:?} (awq, gptq, fp8, q4_0, q8_0, f16, f32)"
            )),
        }
    }
}

/// How to quantise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Output format.
    pub method: Method,
    /// GPTQ bits (4 or 8); AWQ is always 4.
    pub bits: u8,
    /// Input rows per group (AWQ, GPTQ); `None`: 128, or the largest of 64
    /// and 32 that divides every layer's input width.
    pub group_size: Option<usize>,
    /// GPTQ: symmetric grids.
    pub sym: bool,
    /// GPTQ with calibration: act-order (`desc_act`).
    pub act_order: bool,
    /// GPTQ: dampening as a fraction of the Hessian's mean diagonal.
    pub damp: f64,
    /// FP8: static (calibrated) or dynamic per-tensor activation scales.
    pub fp8_static: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: Method::Gptq,
            bits: 4,
            group_size: None,
            sym: false,
            act_order: true,
            damp: 0.1,
            fp8_static: false,
        }
    }
}

/// A calibration run: the source model loaded on a device, and the tokens.
pub struct Calibration<'a> {
    /// The source model (f32 activations, exact precision).
    pub engine: &'a mut Engine,
    /// Calibration tokens.
    pub tokens: Vec<u32>,
    /// Tokens per forward pass.
    pub window: usize,
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The algorithm that ran, in words.
    pub algorithm: String,
    /// The file or directory written.
    pub path: PathBuf,
    /// Bytes of weights written.
    pub bytes: u64,
    /// Group size used (AWQ, GPTQ).
    pub group_size: Option<usize>,
    /// Lines worth showing (per-site AWQ ratios, calibration size, …).
    pub notes: Vec<String>,
    /// Seconds spent.
    pub seconds: f64,
}

/// The group size `opts` asks for, or the default for these input widths.
fn group_size(opts: &Options, widths: &[usize]) -> Result<usize, QuantizeError> {
    match opts.group_size {
        Some(0) => Err(QuantizeError::Shape("--group-size must be positive".into())),
        Some(g) => {
            if opts.method == Method::Awq && widths.iter().any(|w| !w.is_multiple_of(g)) {
                return Err(QuantizeError::Shape(format!(
                    "group size {g} does not divide every layer's input width {widths:?} (AWQ needs it to)"
                )));
            }
            Ok(g)
        }
        None => [128, 64, 32]
            .into_iter()
            .find(|g| widths.iter().all(|w| w.is_multiple_of(*g)))
            .ok_or_else(|| {
                QuantizeError::Shape(format!(
                    "no group size of 128, 64 or 32 divides the input widths {widths:?}: pass --group-size"
                ))
            }),
    }
}

/// Quantise `checkpoint` into `out` (a directory for AWQ/GPTQ/FP8, a
/// `.gguf` file for Q4_0/Q8_0).
pub fn quantize(
    checkpoint: &Checkpoint,
    opts: &Options,
    calibration: Option<Calibration<'_>>,
    out: &Path,
) -> Result<Report, QuantizeError> {
    let t0 = Instant::now();
    let mut report = match opts.method {
        Method::Q4_0 => quantize_gguf(checkpoint, GgufType::Q4_0, out)?,
        Method::Q8_0 => quantize_gguf(checkpoint, GgufType::Q8_0, out)?,
        _ => quantize_hf(checkpoint, opts, calibration, out)?,
    };
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn quantize_hf(
    checkpoint: &Checkpoint,
    opts: &Options,
    calibration: Option<Calibration<'_>>,
    out: &Path,
) -> Result<Report, QuantizeError> {
    let mut model = HostModel::read(checkpoint)?;
    let c = model.config.clone();
    let widths = [c.hidden_size, c.num_heads * c.head_dim, c.intermediate_size];
    let mut notes = Vec::new();
    let group = match opts.method {
        Method::Awq | Method::Gptq => Some(group_size(opts, &widths)?),
        _ => None,
    };
    if opts.method == Method::Gptq && opts.bits != 4 && opts.bits != 8 {
        return Err(QuantizeError::Shape(format!(
            "GPTQ with {} bits: 4 or 8",
            opts.bits
        )));
    }
    if opts.method == Method::Fp8 && opts.fp8_static && calibration.is_none() {
        return Err(QuantizeError::Shape(
            "FP8 with static activation scales needs a calibration text (--calibration)".into(),
        ));
    }
    let wants = match opts.method {
        Method::Gptq => Wants {
            hessian: true,
            sample_rows: 0,
        },
        Method::Awq => Wants {
            hessian: false,
            sample_rows: 512,
        },
        _ => Wants::default(),
    };
    let stats: Option<Stats> = match calibration {
        Some(cal) => {
            let s = calibrate::calibrate(cal.engine, &cal.tokens, cal.window, wants)?;
            notes.push(format!(
                "calibration: {} tokens in windows of {}",
                cal.tokens.len(),
                cal.window
            ));
            Some(s)
        }
        None => None,
    };
    let site_stats = |layer: usize, site: LinearSite| {
        stats
            .as_ref()
            .and_then(|s| s.get(&(layer, site)))
            .ok_or_else(|| {
                QuantizeError::Calibration(format!("no inputs seen for layer {layer} {site:?}"))
            })
    };

    let mut quantised: BTreeMap<(usize, Proj), QuantWeights> = BTreeMap::new();
    let (algorithm, config) = match opts.method {
        Method::Awq => {
            let g = group.unwrap_or(128);
            let calibrated = stats.is_some();
            if calibrated {
                let gemm = linalg::HostGemm::new()?;
                let mut ratios = Vec::new();
                for layer in 0..c.num_layers {
                    for site in LinearSite::ALL {
                        if let Some(r) =
                            apply_awq(&gemm, &mut model, layer, site, site_stats(layer, site)?, g)?
                        {
                            ratios.push((site, r));
                        }
                    }
                }
                for site in LinearSite::ALL {
                    let r: Vec<f32> = ratios
                        .iter()
                        .filter(|x| x.0 == site)
                        .map(|x| x.1.ratio)
                        .collect();
                    let gain: Vec<f64> = ratios
                        .iter()
                        .filter(|x| x.0 == site)
                        .map(|x| x.1.loss / x.1.loss_rtn.max(f64::MIN_POSITIVE))
                        .collect();
                    if !r.is_empty() {
                        notes.push(format!(
                            "AWQ {site:?}: mean α {:.2}, output MSE {:.2}× of α = 0 ({} layers)",
                            r.iter().sum::<f32>() / r.len() as f32,
                            gain.iter().sum::<f64>() / gain.len() as f64,
                            r.len()
                        ));
                    }
                }
                if c.num_kv_heads != c.num_heads {
                    notes.push("AWQ: o_proj not scaled (GQA: v_proj's outputs do not match o_proj's inputs), as AutoAWQ".into());
                }
            }
            for ((layer, p), w) in &model.linears {
                quantised.insert((*layer, *p), IntQuant::rtn(w, 4, g, false, 0).to_awq());
            }
            (
                if calibrated {
                    "AWQ (activation-aware scale search) + round-to-nearest"
                } else {
                    "round-to-nearest (AWQ layout)"
                },
                json!({
                    "quant_method": "awq",
                    "bits": 4,
                    "group_size": g,
                    "zero_point": true,
                    "version": "gemm",
                    "modules_to_not_convert": null
                }),
            )
        }
        Method::Gptq => {
            let g = group.unwrap_or(128);
            let calibrated = stats.is_some();
            let act_order = calibrated && opts.act_order;
            let params = GptqParams {
                bits: opts.bits,
                group_size: g,
                sym: opts.sym,
                act_order,
                damp: opts.damp,
            };
            for ((layer, p), w) in &model.linears {
                let q = if calibrated {
                    let s = site_stats(*layer, p.site())?;
                    gptq::quantize(w, &s.hessian, &params).map_err(|m| {
                        QuantizeError::Calibration(format!("layer {layer} {p:?}: {m}"))
                    })?
                } else {
                    IntQuant::rtn(w, opts.bits, g, opts.sym, 1)
                };
                quantised.insert((*layer, *p), q.to_gptq());
            }
            (
                if calibrated {
                    "GPTQ (Hessian-based error feedback)"
                } else {
                    "round-to-nearest (GPTQ layout)"
                },
                json!({
                    "quant_method": "gptq",
                    "bits": opts.bits,
                    "group_size": g,
                    "desc_act": act_order,
                    "sym": opts.sym,
                    "damp_percent": opts.damp,
                    "static_groups": false,
                    "true_sequential": false,
                    "checkpoint_format": "gptq"
                }),
            )
        }
        Method::Fp8 => {
            let activation = if opts.fp8_static {
                ActivationScale::Static
            } else {
                ActivationScale::DynamicPerTensor
            };
            for ((layer, p), w) in &model.linears {
                let input_scale = if opts.fp8_static {
                    let m = site_stats(*layer, p.site())?.abs_max;
                    Some(if m > 0.0 { m / 448.0 } else { 1.0 })
                } else {
                    None
                };
                quantised.insert((*layer, *p), rtn::fp8(w, activation, input_scale));
            }
            (
                "per-tensor FP8 e4m3 (max-abs scales)",
                json!({
                    "quant_method": "fp8",
                    "fmt": "e4m3",
                    "activation_scheme": if opts.fp8_static { "static" } else { "dynamic" }
                }),
            )
        }
        Method::F16 | Method::F32 => ("unquantised", Value::Null),
        Method::Q4_0 | Method::Q8_0 => {
            return Err(QuantizeError::Shape(
                "GGUF formats are written by quantize_gguf".into(),
            ))
        }
    };
    let dense = if opts.method == Method::F32 {
        write::DenseDtype::F32
    } else {
        write::DenseDtype::F16
    };
    let bytes = write::write_hf(out, checkpoint, &model, &quantised, config, dense)?;
    Ok(Report {
        algorithm: algorithm.into(),
        path: out.to_path_buf(),
        bytes,
        group_size: group,
        notes,
        seconds: 0.0,
    })
}

/// Search and fold AWQ scales for the weights reading `site` of `layer`.
/// `None` where the site is left alone (o_proj under GQA).
fn apply_awq(
    gemm: &linalg::HostGemm,
    model: &mut HostModel,
    layer: usize,
    site: LinearSite,
    stats: &calibrate::InputStats,
    group: usize,
) -> Result<Option<awq::AwqScales>, QuantizeError> {
    let projs: &[Proj] = match site {
        LinearSite::Qkv => &[Proj::Q, Proj::K, Proj::V],
        LinearSite::O => &[Proj::O],
        LinearSite::GateUp => &[Proj::Gate, Proj::Up],
        LinearSite::Down => &[Proj::Down],
    };
    if site == LinearSite::O
        && model.linear(layer, Proj::V)?.rows != model.linear(layer, Proj::O)?.cols
    {
        return Ok(None);
    }
    let x = stats.sample_mat();
    let x_mean = stats.abs_mean();
    let ws: Vec<&linalg::Mat> = projs
        .iter()
        .map(|p| model.linear(layer, *p))
        .collect::<Result<_, _>>()?;
    let found = awq::search(gemm, &ws, &x, &x_mean, group)?;
    let s = &found.scales;
    for p in projs {
        let m = model.linear_mut(layer, *p)?;
        *m = awq::scale_columns(m, s);
    }
    // The op feeding the input divides by the scales.
    match site {
        LinearSite::Qkv => div(&mut model.attn_norm[layer], s),
        LinearSite::GateUp => div(&mut model.ffn_norm[layer], s),
        LinearSite::O => {
            awq::unscale_rows(model.linear_mut(layer, Proj::V)?, s);
            if let Some(b) = model.biases.get_mut(&(layer, Proj::V)) {
                div(b, s);
            }
        }
        LinearSite::Down => awq::unscale_rows(model.linear_mut(layer, Proj::Up)?, s),
    }
    Ok(Some(found))
}

fn div(v: &mut [f32], s: &[f32]) {
    for (x, f) in v.iter_mut().zip(s) {
        *x /= f;
    }
}

/// The GGUF file behind a checkpoint (a `.gguf` path or a synthetic model).
fn source_gguf(checkpoint: &Checkpoint) -> Result<GgufFile, QuantizeError> {
    let path = &checkpoint.path;
    let name = path.display().to_string();
    let bad = |msg: String| QuantizeError::Shape(format!("{name}: {msg}"));
    if let Some(spec) = name.strip_prefix("synthetic:") {
        let spec = synthetic::SyntheticSpec::parse(spec).map_err(bad)?;
        let bytes = synthetic::build_gguf(&spec).map_err(|e| bad(e.to_string()))?;
        return GgufFile::from_bytes(&name, bytes).map_err(|e| bad(e.to_string()));
    }
    if path.is_dir() {
        return Err(bad(
            "Q4_0 / Q8_0 are written as GGUF and take their tokenizer and metadata from a GGUF source; quantise a .gguf file".into(),
        ));
    }
    GgufFile::open(path).map_err(|e| bad(e.to_string()))
}

/// Rewrite a GGUF checkpoint with every 2-D weight (linear layers, the
/// embedding and output tables) in `ty`; metadata and 1-D tensors are
/// copied.
fn quantize_gguf(
    checkpoint: &Checkpoint,
    ty: GgufType,
    out: &Path,
) -> Result<Report, QuantizeError> {
    let file = source_gguf(checkpoint)?;
    let mut w = GgufWriter::new();
    let werr = |e: crate::model::gguf::GgufError| QuantizeError::Shape(e.to_string());
    let file_type = match ty {
        GgufType::Q4_0 => 2,
        GgufType::Q4_1 => 3,
        GgufType::Q8_0 => 7,
    };
    for (key, value) in file.metadata() {
        match key.as_str() {
            "general.alignment" => {
                if let Some(a) = value.as_u64() {
                    w.set_alignment(a as u32).map_err(werr)?;
                }
            }
            "general.file_type" => {}
            _ => {
                w.add_metadata(key.clone(), value.clone()).map_err(werr)?;
            }
        }
    }
    w.add_metadata("general.file_type", GgufValue::U32(file_type))
        .map_err(werr)?;
    let ggml = match ty {
        GgufType::Q4_0 => GgmlType::Q4_0,
        GgufType::Q4_1 => GgmlType::Q4_1,
        GgufType::Q8_0 => GgmlType::Q8_0,
    };
    let source = checkpoint.source.as_ref();
    let mut converted = 0;
    for info in file.tensors() {
        let two_d = info.dims.len() == 2 && info.dims[0] % 32 == 0;
        if two_d && info.name.ends_with(".weight") {
            let hw = source.require(&info.name)?;
            let values: Vec<f32> = match &hw {
                HostWeight::Dense { .. } => hw.to_f32().ok_or_else(|| {
                    QuantizeError::Shape(format!("{}: not a float tensor", info.name))
                })?,
                HostWeight::Quant(q) => q.dequantize().into_iter().map(|v| v as f32).collect(),
            };
            let shape = hw.shape();
            let m = linalg::Mat::new(shape[0], shape[1], values);
            let QuantWeights::Gguf { data, .. } =
                rtn::gguf(&m, ty).map_err(QuantizeError::Shape)?
            else {
                return Err(QuantizeError::Shape("expected GGUF blocks".into()));
            };
            w.add_tensor(info.name.clone(), &info.dims, ggml, data)
                .map_err(werr)?;
            converted += 1;
        } else {
            w.add_tensor(
                info.name.clone(),
                &info.dims,
                info.ggml_type,
                file.tensor_data(info).to_vec(),
            )
            .map_err(werr)?;
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| QuantizeError::io(dir, e))?;
    }
    w.write_file(out).map_err(werr)?;
    let bytes = std::fs::metadata(out)
        .map_err(|e| QuantizeError::io(out, e))?
        .len();
    Ok(Report {
        algorithm: format!(
            "round-to-nearest (llama.cpp's reference {} rounding)",
            ty.name()
        ),
        path: out.to_path_buf(),
        bytes,
        group_size: Some(32),
        notes: vec![format!("{converted} tensors converted to {}", ty.name())],
        seconds: 0.0,
    })
}

/// `quantization_config` as written, for tests and reports.
pub fn read_quantization_config(dir: &Path) -> Result<Value, QuantizeError> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| QuantizeError::io(&p, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| QuantizeError::Shape(e.to_string()))?;
    Ok(v.get("quantization_config").cloned().unwrap_or(Value::Null))
}
