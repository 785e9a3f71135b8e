//! Quantised GEMM `out[M, N] = x[M, K] · dequant(w)[N, K]ᵀ + bias[N]`, with
//! the weights dequantised in registers, 32 elements of K at a time, and fed
//! to the batch-invariant dot-product engine of [`crate::simd`].
//!
//! Layouts after [`hal::QuantGemm::pack`] (all parts are CPU buffers):
//!
//! | format | layout | parts |
//! |---|---|---|
//! | GGUF Q4_0 / Q4_1 / Q8_0 | `"cpu-gguf-strips16"` | see [`gguf`]: the checkpoint's blocks regrouped by 16 output rows, `[N/16, K/32]` records of 16 × 18 / 20 / 34 B |
//! | AWQ, GPTQ 4/8-bit, groups of K's natural blocks | `"cpu-grouped-strips16"` | see [`grouped`]: the GGUF strips of 16 columns × 32 elements (Q4 / Q8_0 byte order), f16 scales and i8 zero offsets per 16 columns and group |
//! | AWQ, GPTQ 4/8-bit, act-order or ragged groups | `"cpu-grouped"` | see [`grouped`]: K regrouped (act-order) and padded, 32-element blocks per row, `(scale, −zero·scale)` per row and group |
//! | FP8 E4M3 W8A8 | `"cpu-fp8"` | e4m3 bytes `[N, K]`; f32 `[N]` weight scales × 256 |
//!
//! Precision: [`hal::Precision::Exact`] for every format (activations used
//! as given; FP8 fake-quantises them to E4M3 exactly as its format
//! defines), and [`hal::Precision::Int8Activations`] for the GGUF, AWQ and
//! GPTQ formats (llama.cpp's activation quantisation and integer dot
//! products, see [`gguf`]; AWQ/GPTQ weights in the row layout take the
//! quantised activations `q · d` through the f32 kernels).

mod fp8;
mod gguf;
mod grouped;

use hal::{
    DeviceBuffer, HalError, OpDesc, PackedWeight, Precision, QuantGemmArgs, QuantSpec,
    QuantWeights, Result, Unsupported,
};

use crate::memory::Access;
use crate::simd::{self, Epilogue};
use crate::CpuBackend;

/// Which descriptions this module runs: every format and dtype the
/// capabilities list (the capability check refuses the rest) in exact
/// precision, and the GGUF, AWQ and GPTQ formats with int8 activations.
pub(crate) fn supports(op: &OpDesc) -> Result<(), Unsupported> {
    match op {
        OpDesc::QuantGemm {
            spec,
            precision: Precision::Int8Activations,
            ..
        } => match spec {
            QuantSpec::Gguf(_) | QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } => Ok(()),
            QuantSpec::Fp8 { .. } => Err(Unsupported::new(
                op.name(),
                "FP8 W8A8 casts activations to E4M3 as its format defines; the int8-activation \
                 mode applies to the GGUF, AWQ and GPTQ formats only: use Precision::Exact",
            )),
        },
        OpDesc::QuantGemm { .. } => Ok(()),
        _ => Err(Unsupported::new(op.name(), "not a quant_gemm")),
    }
}

impl hal::QuantGemm for CpuBackend {
    fn pack(&self, w: &QuantWeights) -> Result<PackedWeight> {
        w.validate()
            .map_err(|m| HalError::invalid("cpu", "pack", m))?;
        if !hal::Backend::capabilities(self)
            .quant_formats
            .contains(&w.spec().format())
        {
            return Err(HalError::unsupported(
                "cpu",
                Unsupported::new(
                    "quant_gemm",
                    format!("quant format {} not supported", w.spec().format().name()),
                ),
            ));
        }
        match w {
            QuantWeights::Gguf { ty, n, k, data } => gguf::pack(self, *ty, *n, *k, data),
            QuantWeights::Awq { .. } | QuantWeights::Gptq { .. } => grouped::pack(self, w),
            QuantWeights::Fp8 { .. } => fp8::pack(self, w),
        }
    }

    fn quant_gemm(&self, args: QuantGemmArgs<'_>) -> Result<()> {
        let (m, n, k) = args.validate("cpu")?;
        self.check(&args.desc())?;
        let (isa, acc) = (self.isa(), self.access());
        let xb = acc.read_bytes("quant_gemm", &args.x)?;
        let x = Activations {
            dtype: args.x.dtype,
            bytes: xb,
            m,
            k,
        };
        if let QuantSpec::Gguf(_) | QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } = args.w.spec {
            let bias = match &args.bias {
                Some(b) => Some((b.dtype, acc.read_bytes("quant_gemm", b)?)),
                None => None,
            };
            let (w, precision, out_dtype) = (args.w, args.precision, args.out.dtype);
            let out = acc.write::<u8>("quant_gemm", args.out)?;
            return match w.spec {
                QuantSpec::Gguf(ty) => gguf::run(self, ty, w, &x, bias, precision, out_dtype, out),
                _ => grouped::run(self, w, &x, bias, precision, out_dtype, out),
            };
        }
        let bias = match &args.bias {
            Some(b) => Some(simd::vec_f32(
                isa,
                b.dtype,
                acc.read_bytes("quant_gemm", b)?,
                n,
            )),
            None => None,
        };
        let w = args.w;
        let out_dtype = args.out.dtype;
        let out = acc.write::<u8>("quant_gemm", args.out)?;
        let epi = Epilogue {
            post: None,
            bias: bias.as_deref(),
        };
        match w.spec {
            QuantSpec::Fp8 { activation, .. } => {
                fp8::run(self, activation, w, &x, epi, out_dtype, out)
            }
            // Returned above.
            QuantSpec::Gguf(_) | QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } => Ok(()),
        }
    }
}

/// The activations of one call: `m · k` elements of `dtype`, row-major.
pub(crate) struct Activations<'a> {
    dtype: hal::DType,
    bytes: &'a [u8],
    m: usize,
    k: usize,
}

/// A new CPU buffer holding `bytes`.
fn buffer(dev: &CpuBackend, bytes: &[u8]) -> Result<DeviceBuffer> {
    use hal::Backend;
    let mut b = dev.alloc(bytes.len())?;
    dev.upload(&mut b, 0, bytes)?;
    Ok(b)
}

/// Part `i` of a packed weight as bytes, checked to hold `len` bytes.
fn part<'w>(acc: &Access<'_>, w: &'w PackedWeight, i: usize, len: usize) -> Result<&'w [u8]> {
    let b = w.parts.get(i).ok_or_else(|| {
        HalError::invalid(
            "cpu",
            "quant_gemm",
            format!(
                "packed {:?} weight has {} parts, expected more than {i}",
                w.spec,
                w.parts.len()
            ),
        )
    })?;
    let bytes = acc.buffer_bytes("quant_gemm", b)?;
    if bytes.len() < len {
        return Err(HalError::invalid("cpu", "quant_gemm", format!("part {i} of a packed {:?} weight has {} bytes, expected {len}: was it packed by this backend?", w.spec, bytes.len())));
    }
    Ok(&bytes[..len])
}

/// Part `i` of a packed weight as `len` elements of `T`.
fn part_as<'w, T: bytemuck::Pod>(
    acc: &Access<'_>,
    w: &'w PackedWeight,
    i: usize,
    len: usize,
) -> Result<&'w [T]> {
    let bytes = part(acc, w, i, len * std::mem::size_of::<T>())?;
    bytemuck::try_cast_slice(bytes).map_err(|e| {
        HalError::invalid(
            "cpu",
            "quant_gemm",
            format!("misaligned packed part {i}: {e:?}"),
        )
    })
}

/// Row `row` of a packed GGUF weight (Q8_0, Q4_0, Q4_1), dequantised into
/// `out` (`w.k` f32): what the embedding lookup of a tied table reads.
///
/// Errors if `w` is not a GGUF weight of this backend, `row ≥ w.n`, or
/// `out.len() != w.k`.
// Called by the embedding op (elementwise), not by GEMM.
#[allow(dead_code)]
pub(crate) fn dequantize_row(
    access: Access<'_>,
    w: &PackedWeight,
    row: usize,
    out: &mut [f32],
) -> Result<()> {
    match w.spec {
        QuantSpec::Gguf(ty) => gguf::dequantize_row(&access, ty, w, row, out),
        other => Err(HalError::invalid("cpu", "embedding", format!("rows of a packed {other:?} weight cannot be read; embedding tables must be GGUF Q8_0, Q4_0 or Q4_1"))),
    }
}

#[cfg(test)]
mod tests;
