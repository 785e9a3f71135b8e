//! Quantised weights: `pack` keeps GGUF blocks exactly as the checkpoint
//! stores them (one byte buffer, layout `"gguf-blocks"`); `quant_gemm`
//! unpacks and scales them inside the program (nibbles with `and` /
//! `shift_right_logical`, f16 scales and minimums with `bitcast_convert`)
//! and multiplies with one f32 `dot_general`.

use hal::{
    Backend, DeviceBuffer, GgufType, HalError, PackedWeight, QuantGemmArgs, QuantSpec,
    QuantWeights, Result,
};

use crate::device::{load, TpuDevice};
use crate::elementwise::{el_of, load_f32, store_as, vk};
use crate::gemm::matmul_t;
use crate::hlo::{BResult, Builder, El, Ty, Val};

/// Name of the physical layout of packed GGUF weights.
pub(crate) const GGUF_LAYOUT: &str = "gguf-blocks";

/// Part `i` of a packed weight made by this backend.
pub(crate) fn part<'w>(
    dev: &TpuDevice,
    op: &'static str,
    w: &'w PackedWeight,
    i: usize,
) -> Result<&'w DeviceBuffer> {
    if w.layout != GGUF_LAYOUT {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!(
                "packed weight has layout {:?}, not {GGUF_LAYOUT:?}",
                w.layout
            ),
        ));
    }
    w.parts
        .get(i)
        .ok_or_else(|| HalError::invalid(dev.name(), op, format!("packed weight lacks part {i}")))
}

pub(crate) fn pack(dev: &TpuDevice, w: &QuantWeights) -> Result<PackedWeight> {
    w.validate()
        .map_err(|m| HalError::invalid(dev.name(), "quant_gemm", m))?;
    let spec = w.spec();
    let desc = hal::OpDesc::QuantGemm {
        spec,
        input: hal::DType::F32,
        output: hal::DType::F32,
        precision: hal::Precision::Exact,
        n: w.n(),
        k: w.k(),
    };
    dev.check(&desc)?;
    match w {
        QuantWeights::Gguf { n, k, data, .. } => {
            let buf = DeviceBuffer::new(
                dev.id,
                data.len(),
                crate::device::Mem::bytes(dev.buffer_from("quant_gemm", data)?, data.len()),
            );
            Ok(PackedWeight {
                spec,
                n: *n,
                k: *k,
                layout: GGUF_LAYOUT,
                parts: vec![buf],
                scalars: Vec::new(),
            })
        }
        other => Err(dev.refuse(hal::Unsupported::new(
            "quant_gemm",
            format!("{:?} weights are not lowered yet", other.spec()),
        ))),
    }
}

/// Dequantise GGUF rows: `rows` is `ui8 [R, row_bytes]` (whole rows of
/// `k` elements); returns f32 `[R, k]`.
pub(crate) fn dequant_gguf_rows(
    b: &mut Builder,
    rows: &Val,
    ty: GgufType,
    k: usize,
) -> BResult<Val> {
    let r = rows.dims()[0];
    let nb = k / 32;
    let bb = ty.block_bytes();
    let blocks = b.reshape(rows, &[r, nb, bb])?;
    let f16_at = |b: &mut Builder, off: usize| -> BResult<Val> {
        let s = b.slice(&blocks, &[0, 0, off], &[r, nb, off + 2])?;
        let h = b.bitcast(&s, El::F16)?;
        let f = b.convert(&h, El::F32);
        b.broadcast(&f, &[r, nb, 32], &[0, 1])
    };
    let d = f16_at(b, 0)?;
    let q = match ty {
        GgufType::Q8_0 => {
            let s = b.slice(&blocks, &[0, 0, 2], &[r, nb, 34])?;
            let i = b.bitcast(&s, El::I8)?;
            b.convert(&i, El::F32)
        }
        GgufType::Q4_0 | GgufType::Q4_1 => {
            let off = if ty == GgufType::Q4_0 { 2 } else { 4 };
            let s = b.slice(&blocks, &[0, 0, off], &[r, nb, off + 16])?;
            let mask = b.splat(Ty::new(&[r, nb, 16], El::U8), 15.0);
            let four = b.splat(Ty::new(&[r, nb, 16], El::U8), 4.0);
            let lo = b.and(&s, &mask)?;
            let hi = b.shr(&s, &four)?;
            let q = b.concatenate(&[&lo, &hi], 2)?;
            let q = b.convert(&q, El::F32);
            if ty == GgufType::Q4_0 {
                let eight = b.splat(q.ty.clone(), 8.0);
                b.sub(&q, &eight)?
            } else {
                q
            }
        }
    };
    let mut w = b.mul(&q, &d)?;
    if ty == GgufType::Q4_1 {
        let m = f16_at(b, 2)?;
        w = b.add(&w, &m)?;
    }
    b.reshape(&w, &[r, k])
}

pub(crate) fn quant_gemm(dev: &TpuDevice, args: QuantGemmArgs<'_>) -> Result<()> {
    let (_m, n, k) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "quant_gemm";
    let ty = match args.w.spec {
        QuantSpec::Gguf(ty) => ty,
        other => {
            return Err(dev.refuse(hal::Unsupported::new(
                op,
                format!("{other:?} weights are not lowered yet"),
            )))
        }
    };
    let data = part(dev, op, args.w, 0)?;
    let xe = el_of(dev, op, args.x.dtype)?;
    let oe = el_of(dev, op, args.out.dtype)?;
    let be = match &args.bias {
        Some(bv) => Some(el_of(dev, op, bv.dtype)?),
        None => None,
    };
    let key = format!(
        "quant_gemm|{ty:?}|{n}x{k}|{}|{}|{}",
        vk(args.x.dtype, &args.x.layout),
        args.bias
            .as_ref()
            .map(|v| vk(v.dtype, &v.layout))
            .unwrap_or_default(),
        vk(args.out.dtype, &args.out.layout)
    );
    let (xl, ol) = (args.x.layout.clone(), args.out.layout.clone());
    let bl = args.bias.as_ref().map(|v| v.layout.clone());
    let mut inputs = vec![args.x.buffer, data];
    if let Some(bv) = &args.bias {
        inputs.push(bv.buffer);
    }
    let row_bytes = ty.row_bytes(k);
    dev.run(op, key, &inputs, &mut [args.out.buffer], |b, ins, outs| {
        let x = load_f32(b, &ins[0], xe, &xl)?;
        let rows = load(b, &ins[1], El::U8, 0, &[n, row_bytes])?;
        let w = dequant_gguf_rows(b, &rows, ty, k)?;
        let bias = match (&bl, be) {
            (Some(l), Some(e)) => Some(load_f32(b, &ins[2], e, l)?),
            _ => None,
        };
        let y = matmul_t(b, &x, &w, bias.as_ref())?;
        Ok(vec![store_as(b, &outs[0], oe, &ol, &y)?])
    })
}
