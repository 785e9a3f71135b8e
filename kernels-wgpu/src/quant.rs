//! Quantised weights: `pack` into this backend's layouts and the WGSL
//! decoders (`w_at(n, k)`) the GEMM and embedding kernels call.
//!
//! | format | parts | element `(n, k)` |
//! |---|---|---|
//! | GGUF Q4_0 / Q8_0 | `wq`: block quants as words (4 / 8 words per block), `ws`: f32 `d` per block | `(q − 8)·d` / `q·d` |
//! | GGUF Q4_1 | `wq` as Q4_0, `ws`: f32 `(d, m)` per block | `q·d + m` |
//! | AWQ, GPTQ 4/8-bit | `wq`: `[N, ⌈K / (32/bits)⌉]` words, `k`-th field of row `n`; `ws`: f32 scale `[G, N]`; `wz`: zero point `[G, N]` (GPTQ's stored `z − 1` already incremented); `gidx`: group of each `k` | `(q − z)·s` |
//! | FP8 E4M3 | `wq`: `[N, K]` bytes, `ws`: f32 scale per row | `e4m3(q)·s` |
//!
//! The quantised values stay packed on the device; only the per-block or
//! per-group scales are widened to f32 (exactly) at pack time.

use hal::quant::{awq, gguf, gptq};
use hal::{
    ActivationScale, Backend, GgufType, HalError, PackedWeight, QuantSpec, QuantWeights, Result,
};
use half::f16;

use crate::buffer::WgpuBuffer;
use crate::shader::{ro, Binding, Elem};
use crate::WgpuDevice;

/// First parameter word the decoders read (the kernels use the ones below).
pub(crate) const P_BASE: usize = 24;

/// A format's WGSL decoder and its bindings.
pub(crate) struct Decoder {
    /// WGSL defining `fn w_at(n: u32, k: u32) -> f32`.
    pub(crate) source: String,
    /// The packed parts, in `PackedWeight::parts` order.
    pub(crate) bindings: Vec<Binding>,
    /// Pipeline-cache tag.
    pub(crate) variant: String,
}

const GGUF_Q4_0: &str = r#"
fn w_at(n: u32, k: u32) -> f32 {
    let b = n * pu(25u) + k / 32u;
    let j = k % 32u;
    let jb = j % 16u;
    let byte = (wq[b * 4u + jb / 4u] >> (8u * (jb % 4u))) & 0xffu;
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return (f32(q) - 8.0) * bitcast<f32>(ws[b]);
}
"#;

const GGUF_Q4_1: &str = r#"
fn w_at(n: u32, k: u32) -> f32 {
    let b = n * pu(25u) + k / 32u;
    let j = k % 32u;
    let jb = j % 16u;
    let byte = (wq[b * 4u + jb / 4u] >> (8u * (jb % 4u))) & 0xffu;
    let q = select(byte & 15u, byte >> 4u, j >= 16u);
    return f32(q) * bitcast<f32>(ws[2u * b]) + bitcast<f32>(ws[2u * b + 1u]);
}
"#;

const GGUF_Q8_0: &str = r#"
fn w_at(n: u32, k: u32) -> f32 {
    let b = n * pu(25u) + k / 32u;
    let j = k % 32u;
    let byte = (wq[b * 8u + j / 4u] >> (8u * (j % 4u))) & 0xffu;
    return f32(bitcast<i32>(byte << 24u) >> 24u) * bitcast<f32>(ws[b]);
}
"#;

const INT: &str = r#"
fn w_at(n: u32, k: u32) -> f32 {
    let bits = pu(27u);
    let per = 32u / bits;
    let q = (wq[n * pu(28u) + k / per] >> (bits * (k % per))) & ((1u << bits) - 1u);
    let zi = gidx[k] * pu(26u) + n;
    return (f32(q) - f32(wz[zi])) * bitcast<f32>(ws[zi]);
}
"#;

const FP8: &str = r#"
fn w_at(n: u32, k: u32) -> f32 {
    let i = n * pu(24u) + k;
    return e4m3_to_f32((wq[i / 4u] >> (8u * (i % 4u))) & 0xffu) * bitcast<f32>(ws[n]);
}
"#;

/// The decoder of `w` and its device buffers.
pub(crate) fn decoder<'a>(
    dev: &WgpuDevice,
    op: &'static str,
    w: &'a PackedWeight,
) -> Result<(Decoder, Vec<&'a WgpuBuffer>)> {
    let (source, names, variant): (&str, &[&'static str], &str) = match w.spec {
        QuantSpec::Gguf(GgufType::Q4_0) => (GGUF_Q4_0, &["wq", "ws"], "q4_0"),
        QuantSpec::Gguf(GgufType::Q4_1) => (GGUF_Q4_1, &["wq", "ws"], "q4_1"),
        QuantSpec::Gguf(GgufType::Q8_0) => (GGUF_Q8_0, &["wq", "ws"], "q8_0"),
        QuantSpec::Awq { .. } | QuantSpec::Gptq { .. } => (INT, &["wq", "ws", "wz", "gidx"], "int"),
        QuantSpec::Fp8 { .. } => (FP8, &["wq", "ws"], "fp8"),
    };
    if w.parts.len() != names.len() {
        return Err(HalError::invalid(
            &dev.name,
            op,
            format!(
                "packed weight has {} parts, expected {} (was it packed by this backend?)",
                w.parts.len(),
                names.len()
            ),
        ));
    }
    let parts = w
        .parts
        .iter()
        .map(|p| dev.buf(op, p))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        Decoder {
            source: source.to_string(),
            bindings: names.iter().map(|n| ro(n, Elem::Word)).collect(),
            variant: variant.to_string(),
        },
        parts,
    ))
}

/// Fill the decoder's parameter words: 24 K, 25 K/32, 26 N, 27 bits, 28
/// words per row.
pub(crate) fn set_params(params: &mut [u32], w: &PackedWeight) {
    let bits = match w.spec {
        QuantSpec::Gptq { bits, .. } => bits as u32,
        _ => 4,
    };
    params[P_BASE] = w.k as u32;
    params[P_BASE + 1] = (w.k / gguf::BLOCK) as u32;
    params[P_BASE + 2] = w.n as u32;
    params[P_BASE + 3] = bits;
    params[P_BASE + 4] = w.k.div_ceil(32 / bits as usize) as u32;
}

fn words_of_bytes(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(b.len().div_ceil(4) * 4, 0);
    v
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: impl IntoIterator<Item = u32>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Pack `w` into this backend's layout and upload it.
pub(crate) fn pack(dev: &WgpuDevice, w: &QuantWeights) -> Result<PackedWeight> {
    const OP: &str = "quant_gemm";
    w.validate()
        .map_err(|m| HalError::invalid(&dev.name, OP, m))?;
    let (n, k) = (w.n(), w.k());
    let mut scalars = Vec::new();
    let (layout, host): (&'static str, Vec<Vec<u8>>) = match w {
        QuantWeights::Gguf { ty, data, .. } => {
            let bb = ty.block_bytes();
            let blocks = data.len() / bb;
            let (head, qbytes) = match ty {
                GgufType::Q4_0 => (2, 16),
                GgufType::Q4_1 => (4, 16),
                GgufType::Q8_0 => (2, 32),
            };
            let mut qs = Vec::with_capacity(blocks * qbytes);
            let mut sc = Vec::with_capacity(blocks * head / 2);
            for blk in data.chunks_exact(bb) {
                sc.push(f16::from_le_bytes([blk[0], blk[1]]).to_f32());
                if *ty == GgufType::Q4_1 {
                    sc.push(f16::from_le_bytes([blk[2], blk[3]]).to_f32());
                }
                qs.extend_from_slice(&blk[head..head + qbytes]);
            }
            ("wgpu-gguf", vec![qs, f32_bytes(sc)])
        }
        QuantWeights::Awq {
            group_size,
            qweight,
            qzeros,
            scales,
            ..
        } => {
            let words = n / 8;
            let groups = k / group_size;
            let q =
                |row: usize, col: usize| awq::unpack(&qweight[col * words..(col + 1) * words], row);
            let z = (0..groups * n)
                .map(|i| awq::unpack(&qzeros[(i / n) * words..(i / n + 1) * words], i % n));
            let gidx = (0..k).map(|c| (c / group_size) as u32);
            (
                "wgpu-int",
                vec![
                    int_rows(n, k, 4, q),
                    f32_bytes(scales.iter().map(|s| s.to_f32())),
                    u32_bytes(z),
                    u32_bytes(gidx),
                ],
            )
        }
        QuantWeights::Gptq {
            bits,
            group_size,
            qweight,
            qzeros,
            scales,
            g_idx,
            ..
        } => {
            let b = *bits as usize;
            let p = 32 / b;
            let mask = (1u32 << b) - 1;
            let q = |row: usize, col: usize| {
                (qweight[(col / p) * n + row] as u32 >> (b * (col % p))) & mask
            };
            let groups = scales.len() / n;
            let z = (0..groups * n).map(|i| {
                let (g, row) = (i / n, i % n);
                ((qzeros[g * (n / p) + row / p] as u32 >> (b * (row % p))) & mask) + 1
            });
            let gidx: Vec<u32> = match g_idx {
                Some(g) => g.iter().map(|&v| v as u32).collect(),
                None => (0..k)
                    .map(|c| gptq::default_group(c, *group_size) as u32)
                    .collect(),
            };
            (
                "wgpu-int",
                vec![
                    int_rows(n, k, b, q),
                    f32_bytes(scales.iter().map(|s| s.to_f32())),
                    u32_bytes(z),
                    u32_bytes(gidx),
                ],
            )
        }
        QuantWeights::Fp8 {
            weight,
            weight_scale,
            input_scale,
            ..
        } => {
            let per_row: Vec<f32> = if weight_scale.len() == n && n != 1 {
                weight_scale.clone()
            } else {
                vec![weight_scale.first().copied().unwrap_or(1.0); n]
            };
            scalars.push(input_scale.unwrap_or(1.0));
            ("wgpu-fp8", vec![words_of_bytes(weight), f32_bytes(per_row)])
        }
    };
    let mut parts = Vec::with_capacity(host.len());
    for bytes in host {
        let mut b = dev.alloc(bytes.len())?;
        dev.upload(&mut b, 0, &bytes)?;
        parts.push(b);
    }
    Ok(PackedWeight {
        spec: w.spec(),
        n,
        k,
        layout,
        parts,
        scalars,
    })
}

/// `[N, ⌈K / (32/bits)⌉]` words holding `q(n, k)` in field `k % (32/bits)`.
fn int_rows(n: usize, k: usize, bits: usize, q: impl Fn(usize, usize) -> u32) -> Vec<u8> {
    let per = 32 / bits;
    let kw = k.div_ceil(per);
    let mut out = vec![0u32; n * kw];
    for row in 0..n {
        for col in 0..k {
            out[row * kw + col / per] |= q(row, col) << (bits * (col % per));
        }
    }
    u32_bytes(out)
}

/// How the FP8 activation scales are produced: 0 none, 1 static, 2 per
/// token, 3 per tensor.
pub(crate) fn fp8_mode(spec: &QuantSpec) -> u32 {
    match spec {
        QuantSpec::Fp8 { activation, .. } => match activation {
            ActivationScale::Static => 1,
            ActivationScale::DynamicPerToken => 2,
            ActivationScale::DynamicPerTensor => 3,
        },
        _ => 0,
    }
}
