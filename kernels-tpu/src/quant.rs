//! Quantised weights. `pack` uploads a checkpoint's tensors exactly as it
//! stores them (layout `"checkpoint"`): GGUF blocks as one byte buffer;
//! AWQ and GPTQ as `qweight`, `qzeros`, `scales` and the group of each input
//! row. `quant_gemm` unpacks and scales them inside the program (nibbles
//! with `shift_right_logical` / `and`, f16 scales with `bitcast_convert`)
//! and multiplies with one f32 `dot_general`. With
//! [`Precision::Int8Activations`] the activations are first quantised to
//! int8 in blocks of 32 along K, exactly as llama.cpp does.

use hal::{
    Backend, DeviceBuffer, GgufType, HalError, PackedWeight, Precision, QuantGemmArgs, QuantSpec,
    QuantWeights, Result,
};

use crate::device::{load, TpuDevice};
use crate::elementwise::{el_of, load_f32, store_as, take_rows, vk};
use crate::hlo::{BResult, Builder, Cmp, El, Reduce, Ty, Val};

/// Name of the physical layout of packed weights: the checkpoint's own.
pub(crate) const LAYOUT: &str = "checkpoint";

/// Part `i` of a packed weight made by this backend.
pub(crate) fn part<'w>(
    dev: &TpuDevice,
    op: &'static str,
    w: &'w PackedWeight,
    i: usize,
) -> Result<&'w DeviceBuffer> {
    if w.layout != LAYOUT {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!("packed weight has layout {:?}, not {LAYOUT:?}", w.layout),
        ));
    }
    w.parts
        .get(i)
        .ok_or_else(|| HalError::invalid(dev.name(), op, format!("packed weight lacks part {i}")))
}

fn upload_bytes(dev: &TpuDevice, data: &[u8]) -> Result<DeviceBuffer> {
    Ok(DeviceBuffer::new(
        dev.id,
        data.len(),
        crate::device::Mem::bytes(dev.buffer_from("quant_gemm", data)?, data.len()),
    ))
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[half::f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn pack(dev: &TpuDevice, w: &QuantWeights) -> Result<PackedWeight> {
    w.validate()
        .map_err(|m| HalError::invalid(dev.name(), "quant_gemm", m))?;
    let spec = w.spec();
    let desc = hal::OpDesc::QuantGemm {
        spec,
        input: hal::DType::F32,
        output: hal::DType::F32,
        precision: Precision::Exact,
        n: w.n(),
        k: w.k(),
    };
    dev.check(&desc)?;
    let parts = match w {
        QuantWeights::Gguf { data, .. } => vec![upload_bytes(dev, data)?],
        QuantWeights::Awq {
            qweight,
            qzeros,
            scales,
            ..
        } => vec![
            upload_bytes(dev, &i32_bytes(qweight))?,
            upload_bytes(dev, &i32_bytes(qzeros))?,
            upload_bytes(dev, &f16_bytes(scales))?,
        ],
        QuantWeights::Gptq {
            group_size,
            k,
            qweight,
            qzeros,
            scales,
            g_idx,
            ..
        } => {
            let groups: Vec<i32> = match g_idx {
                Some(g) => g.clone(),
                None => (0..*k)
                    .map(|kk| hal::quant::gptq::default_group(kk, *group_size) as i32)
                    .collect(),
            };
            vec![
                upload_bytes(dev, &i32_bytes(qweight))?,
                upload_bytes(dev, &i32_bytes(qzeros))?,
                upload_bytes(dev, &f16_bytes(scales))?,
                upload_bytes(dev, &i32_bytes(&groups))?,
            ]
        }
        QuantWeights::Fp8 {
            weight,
            weight_scale,
            ..
        } => {
            let ws: Vec<u8> = weight_scale.iter().flat_map(|x| x.to_le_bytes()).collect();
            vec![upload_bytes(dev, weight)?, upload_bytes(dev, &ws)?]
        }
    };
    let scalars = match w {
        QuantWeights::Fp8 {
            input_scale: Some(s),
            ..
        } => vec![*s],
        _ => Vec::new(),
    };
    Ok(PackedWeight {
        spec,
        n: w.n(),
        k: w.k(),
        layout: LAYOUT,
        parts,
        scalars,
    })
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

/// Unpack `bits`-bit fields of i32 words `[R, W]` along the last
/// dimension: `out[r, w·P + j] = (word[r, w] >> shifts[j]) & mask` with
/// `P = shifts.len()`; returns i32 `[R, W·P]`.
fn unpack_cols(b: &mut Builder, words: &Val, shifts: &[usize], bits: usize) -> BResult<Val> {
    let (r, w) = (words.dims()[0], words.dims()[1]);
    let p = shifts.len();
    let wide = b.broadcast(words, &[r, w, p], &[0, 1])?;
    let sh = b.const_i32(&[p], &shifts.iter().map(|&s| s as i32).collect::<Vec<_>>());
    let sh = b.broadcast(&sh, &[r, w, p], &[2])?;
    let v = b.shr(&wide, &sh)?;
    let m = b.splat(v.ty.clone(), ((1u64 << bits) - 1) as f64);
    let v = b.and(&v, &m)?;
    b.reshape(&v, &[r, w * p])
}

/// GPTQ: `qweight` `[K/P, N]` → f32 `w` `[K, N]` (input rows first).
fn dequant_gptq(
    b: &mut Builder,
    ins: &[Val],
    bits: usize,
    n: usize,
    k: usize,
    groups: usize,
) -> BResult<Val> {
    let p = 32 / bits;
    let qw = load(b, &ins[0], El::I32, 0, &[k / p, n])?;
    // Unpack along rows: transpose to [N, K/P], unpack columns, transpose back.
    let qt = b.transpose(&qw, &[1, 0])?;
    let shifts: Vec<usize> = (0..p).map(|j| bits * j).collect();
    let q = unpack_cols(b, &qt, &shifts, bits)?;
    let q = b.transpose(&q, &[1, 0])?;
    let qz = load(b, &ins[1], El::I32, 0, &[groups, n / p])?;
    let z = unpack_cols(b, &qz, &shifts, bits)?;
    let one = b.splat(z.ty.clone(), 1.0);
    let z = b.add(&z, &one)?;
    let s = load(b, &ins[2], El::F16, 0, &[groups, n])?;
    let s = b.convert(&s, El::F32);
    let g = load(b, &ins[3], El::I32, 0, &[k])?;
    let zk = take_rows(b, &z, &g)?;
    let sk = take_rows(b, &s, &g)?;
    let q = b.convert(&q, El::F32);
    let zk = b.convert(&zk, El::F32);
    let d = b.sub(&q, &zk)?;
    b.mul(&d, &sk)
}

/// AWQ: `qweight` `[K, N/8]` → f32 `w` `[K, N]`.
fn dequant_awq(b: &mut Builder, ins: &[Val], g: usize, n: usize, k: usize) -> BResult<Val> {
    let groups = k / g;
    let shifts: Vec<usize> = hal::quant::awq::INVERSE_ORDER
        .iter()
        .map(|&i| 4 * i)
        .collect();
    let qw = load(b, &ins[0], El::I32, 0, &[k, n / 8])?;
    let q = unpack_cols(b, &qw, &shifts, 4)?;
    let qz = load(b, &ins[1], El::I32, 0, &[groups, n / 8])?;
    let z = unpack_cols(b, &qz, &shifts, 4)?;
    let s = load(b, &ins[2], El::F16, 0, &[groups, n])?;
    let s = b.convert(&s, El::F32);
    let gidx = b.iota(Ty::new(&[k], El::I32), 0)?;
    let gs = b.splat(gidx.ty.clone(), g as f64);
    let gidx = b.div(&gidx, &gs)?;
    let zk = take_rows(b, &z, &gidx)?;
    let sk = take_rows(b, &s, &gidx)?;
    let q = b.convert(&q, El::F32);
    let zk = b.convert(&zk, El::F32);
    let d = b.sub(&q, &zk)?;
    b.mul(&d, &sk)
}

/// llama.cpp's int8 activation quantisation of `x` f32 `[M, K]`,
/// dequantised: blocks of 32 along K (the last may be shorter),
/// `d = amax / 127`, `q = round(x · (1/d))` half away from zero, clamped
/// to ±127, value `q · f16(d)`.
fn int8_activations(b: &mut Builder, x: &Val) -> BResult<Val> {
    let (m, k) = (x.dims()[0], x.dims()[1]);
    let kp = k.div_ceil(32) * 32;
    let xp = if kp > k {
        let z = b.splat(Ty::new(&[m, kp - k], El::F32), 0.0);
        b.concatenate(&[x, &z], 1)?
    } else {
        x.clone()
    };
    let nb = kp / 32;
    let blocks = b.reshape(&xp, &[m, nb, 32])?;
    let a = b.abs(&blocks);
    let amax = b.reduce(&a, &[2], Reduce::Max)?;
    let c127 = b.splat(amax.ty.clone(), 127.0);
    let d = b.div(&amax, &c127)?;
    let zero = b.splat(d.ty.clone(), 0.0);
    let one = b.splat(d.ty.clone(), 1.0);
    let nz = b.compare(&d, &zero, Cmp::Ne)?;
    let safe = b.select(&nz, &d, &one)?;
    let inv = b.div(&one, &safe)?;
    let id = b.select(&nz, &inv, &zero)?;
    let idb = b.broadcast(&id, &[m, nb, 32], &[0, 1])?;
    let v = b.mul(&blocks, &idb)?;
    let q = b.round_afz(&v);
    let hi = b.splat(q.ty.clone(), 127.0);
    let lo = b.splat(q.ty.clone(), -127.0);
    let q = b.min(&q, &hi)?;
    let q = b.max(&q, &lo)?;
    let d16 = b.convert(&d, El::F16);
    let d16 = b.convert(&d16, El::F32);
    let db = b.broadcast(&d16, &[m, nb, 32], &[0, 1])?;
    let y = b.mul(&q, &db)?;
    let y = b.reshape(&y, &[m, kp])?;
    b.slice(&y, &[0, 0], &[m, k])
}

/// Round f32 values to FP8 E4M3 (nearest even, saturating to ±448) and
/// back.
pub(crate) fn e4m3_round_trip(b: &mut Builder, x: &Val) -> BResult<Val> {
    let hi = b.splat(x.ty.clone(), 448.0);
    let lo = b.splat(x.ty.clone(), -448.0);
    let c = b.min(x, &hi)?;
    let c = b.max(&c, &lo)?;
    let f8 = b.convert(&c, El::F8E4M3);
    Ok(b.convert(&f8, El::F32))
}

/// FP8 W8A8 activations: `x̂ = e4m3(x / s) · s` with the static scale, or
/// `s = max(amax / 448, 1 / (448 · 512))` over the tensor or per row.
fn fp8_activations(
    b: &mut Builder,
    x: &Val,
    activation: hal::quant::ActivationScale,
    input_scale: Option<f32>,
) -> BResult<Val> {
    use hal::quant::ActivationScale;
    let (m, k) = (x.dims()[0], x.dims()[1]);
    let dynamic = |b: &mut Builder, amax: &Val| -> BResult<Val> {
        let c = b.splat(amax.ty.clone(), 448.0);
        let d = b.div(amax, &c)?;
        let lo = b.splat(amax.ty.clone(), hal::quant::fp8_w8a8::MIN_SCALE as f64);
        b.max(&d, &lo)
    };
    let s = match activation {
        ActivationScale::Static => {
            b.splat(Ty::new(&[m], El::F32), input_scale.unwrap_or(1.0) as f64)
        }
        ActivationScale::DynamicPerToken => {
            let a = b.abs(x);
            let amax = b.reduce(&a, &[1], Reduce::Max)?;
            dynamic(b, &amax)?
        }
        ActivationScale::DynamicPerTensor => {
            let a = b.abs(x);
            let amax = b.reduce(&a, &[0, 1], Reduce::Max)?;
            let s = dynamic(b, &amax)?;
            b.broadcast(&s, &[m], &[])?
        }
    };
    let sb = b.broadcast(&s, &[m, k], &[0])?;
    let v = b.div(x, &sb)?;
    let r = e4m3_round_trip(b, &v)?;
    b.mul(&r, &sb)
}

pub(crate) fn quant_gemm(dev: &TpuDevice, args: QuantGemmArgs<'_>) -> Result<()> {
    let (_m, n, k) = args.validate(dev.name())?;
    dev.check(&args.desc())?;
    let op = "quant_gemm";
    let spec = args.w.spec;
    let nparts = match spec {
        QuantSpec::Gguf(_) => 1,
        QuantSpec::Awq { .. } => 3,
        QuantSpec::Gptq { .. } => 4,
        QuantSpec::Fp8 { .. } => 2,
    };
    let input_scale = args.w.scalars.first().copied();
    let xe = el_of(dev, op, args.x.dtype)?;
    let oe = el_of(dev, op, args.out.dtype)?;
    let be = match &args.bias {
        Some(bv) => Some(el_of(dev, op, bv.dtype)?),
        None => None,
    };
    let precision = args.precision;
    let key = format!(
        "quant_gemm|{spec:?}|{precision:?}|{n}x{k}|{:?}|{}|{}|{}",
        input_scale.map(f32::to_bits),
        vk(args.x.dtype, &args.x.layout),
        args.bias
            .as_ref()
            .map(|v| vk(v.dtype, &v.layout))
            .unwrap_or_default(),
        vk(args.out.dtype, &args.out.layout)
    );
    let (xl, ol) = (args.x.layout.clone(), args.out.layout.clone());
    let bl = args.bias.as_ref().map(|v| v.layout.clone());
    let mut inputs = vec![args.x.buffer];
    for i in 0..nparts {
        inputs.push(part(dev, op, args.w, i)?);
    }
    if let Some(bv) = &args.bias {
        inputs.push(bv.buffer);
    }
    dev.run(op, key, &inputs, &mut [args.out.buffer], |b, ins, outs| {
        let mut x = load_f32(b, &ins[0], xe, &xl)?;
        if let QuantSpec::Fp8 { activation, .. } = spec {
            x = fp8_activations(b, &x, activation, input_scale)?;
        } else if precision == Precision::Int8Activations {
            x = int8_activations(b, &x)?;
        }
        let wins = &ins[1..1 + nparts];
        let y = match spec {
            QuantSpec::Gguf(ty) => {
                let rows = load(b, &wins[0], El::U8, 0, &[n, ty.row_bytes(k)])?;
                let w = dequant_gguf_rows(b, &rows, ty, k)?;
                b.dot_general(&x, &w, (&[], &[]), (&[1], &[1]), El::F32)?
            }
            QuantSpec::Awq { group_size } => {
                let w = dequant_awq(b, wins, group_size, n, k)?;
                b.dot_general(&x, &w, (&[], &[]), (&[1], &[0]), El::F32)?
            }
            QuantSpec::Gptq {
                bits, group_size, ..
            } => {
                let groups = k.div_ceil(group_size);
                let w = dequant_gptq(b, wins, bits as usize, n, k, groups)?;
                b.dot_general(&x, &w, (&[], &[]), (&[1], &[0]), El::F32)?
            }
            QuantSpec::Fp8 { weight_scale, .. } => {
                let wb = load(b, &wins[0], El::U8, 0, &[n, k])?;
                let w8 = b.bitcast(&wb, El::F8E4M3)?;
                let w = b.convert(&w8, El::F32);
                let count = match weight_scale {
                    hal::quant::ScaleGranularity::PerChannel => n,
                    hal::quant::ScaleGranularity::PerTensor => 1,
                };
                let ws = load(b, &wins[1], El::F32, 0, &[count])?;
                let ws = if count == 1 {
                    let r = b.reshape(&ws, &[])?;
                    b.broadcast(&r, &[n, k], &[])?
                } else {
                    b.broadcast(&ws, &[n, k], &[0])?
                };
                let w = b.mul(&w, &ws)?;
                b.dot_general(&x, &w, (&[], &[]), (&[1], &[1]), El::F32)?
            }
        };
        let y = match (&bl, be) {
            (Some(l), Some(e)) => {
                let bias = load_f32(b, &ins[1 + nparts], e, l)?;
                let bb = b.broadcast(&bias, y.dims(), &[1])?;
                b.add(&y, &bb)?
            }
            _ => y,
        };
        Ok(vec![store_as(b, &outs[0], oe, &ol, &y)?])
    })
}
