//! AWQ and GPTQ (4- and 8-bit, act-order), repacked on the host into one
//! row per output feature so a column's weights are contiguous:
//!
//! * part 0: q bytes `[N, K·bits/8]` (4-bit: element 2i in the low nibble);
//! * part 1: f32 scales `[N, groups]`;
//! * part 2: f32 zero points `[N, groups]` (GPTQ's stored `z − 1` + 1);
//! * part 3: i32 group of each k `[K]` (`g_idx`, or `k / group_size`);
//!
//! scalars: `[bits, groups]`. `w[n, k] = (q − zero[n, g]) · scale[n, g]`.

use hal::quant::{awq, gptq};
use hal::{PackedWeight, QuantGemmArgs, QuantWeights, Result};

use crate::device::{dtype_code, Arg, OpenClDevice};
use crate::sources::QUANT_INT;

/// Layout name of a repacked AWQ / GPTQ weight.
pub(crate) const LAYOUT: &str = "int-rows";

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Store q (each < 2^bits) of row-major `[N, K]` as the kernel's bytes.
fn pack_q(bits: u8, n: usize, k: usize, q: impl Fn(usize, usize) -> u32) -> Vec<u8> {
    if bits == 4 {
        let mut out = vec![0u8; n * k / 2];
        for r in 0..n {
            for c in (0..k).step_by(2) {
                out[r * k / 2 + c / 2] = (q(r, c) as u8 & 0xf) | ((q(r, c + 1) as u8 & 0xf) << 4);
            }
        }
        out
    } else {
        let mut out = vec![0u8; n * k];
        for r in 0..n {
            for c in 0..k {
                out[r * k + c] = q(r, c) as u8;
            }
        }
        out
    }
}

/// Repack and upload.
pub(crate) fn pack(d: &OpenClDevice, w: &QuantWeights) -> Result<PackedWeight> {
    let op = "quant_gemm";
    let (bits, n, k, groups, q, scales, zeros, g_idx) = match w {
        QuantWeights::Awq {
            group_size,
            n,
            k,
            qweight,
            qzeros,
            scales,
        } => {
            let (n, k, gs) = (*n, *k, *group_size);
            let groups = k / gs;
            let words = n / 8;
            let q = pack_q(4, n, k, |r, c| {
                awq::unpack(&qweight[c * words..(c + 1) * words], r)
            });
            let mut s = vec![0f32; n * groups];
            let mut z = vec![0f32; n * groups];
            for g in 0..groups {
                for r in 0..n {
                    s[r * groups + g] = scales[g * n + r].to_f32();
                    z[r * groups + g] = awq::unpack(&qzeros[g * words..(g + 1) * words], r) as f32;
                }
            }
            let g_idx: Vec<i32> = (0..k).map(|c| (c / gs) as i32).collect();
            (4u8, n, k, groups, q, s, z, g_idx)
        }
        QuantWeights::Gptq {
            bits,
            group_size,
            n,
            k,
            qweight,
            qzeros,
            scales,
            g_idx,
        } => {
            let (bits, n, k, gs) = (*bits, *n, *k, *group_size);
            let p = 32 / bits as usize;
            let mask = (1u32 << bits) - 1;
            let groups = gptq::num_groups(k, gs);
            let q = pack_q(bits, n, k, |r, c| {
                (qweight[(c / p) * n + r] as u32 >> (bits as usize * (c % p))) & mask
            });
            let mut s = vec![0f32; n * groups];
            let mut z = vec![0f32; n * groups];
            for g in 0..groups {
                for r in 0..n {
                    s[r * groups + g] = scales[g * n + r].to_f32();
                    let zw = qzeros[g * (n / p) + r / p] as u32;
                    z[r * groups + g] = (((zw >> (bits as usize * (r % p))) & mask) + 1) as f32;
                }
            }
            let g_idx: Vec<i32> = match g_idx {
                Some(g) => g.clone(),
                None => (0..k).map(|c| gptq::default_group(c, gs) as i32).collect(),
            };
            (bits, n, k, groups, q, s, z, g_idx)
        }
        _ => return Err(d.err(op, "not an AWQ or GPTQ weight")),
    };
    Ok(PackedWeight {
        spec: w.spec(),
        n,
        k,
        layout: LAYOUT,
        parts: vec![
            d.upload_bytes(op, &q)?,
            d.upload_bytes(op, &f32_bytes(&scales))?,
            d.upload_bytes(op, &f32_bytes(&zeros))?,
            d.upload_bytes(op, &i32_bytes(&g_idx))?,
        ],
        scalars: vec![bits as f32, groups as f32],
    })
}

/// `out = x · Wᵀ (+ bias)` on a repacked AWQ / GPTQ weight.
pub(crate) fn gemm(
    d: &OpenClDevice,
    args: &QuantGemmArgs<'_>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let op = "quant_gemm";
    let w = args.w;
    let ([qw, sc, zp, gi], [bits, groups]) = (w.parts.as_slice(), w.scalars.as_slice()) else {
        return Err(super::foreign_layout(d, w));
    };
    if w.layout != LAYOUT {
        return Err(super::foreign_layout(d, w));
    }
    let [x, x_off] = d.view(op, &args.x)?;
    let [b, b_off] = d.opt_view(op, args.bias.as_ref())?;
    let [o, o_off] = d.view_mut(op, &args.out)?;
    let tpc = super::threads_per_column(d, k);
    d.launch(
        op,
        &QUANT_INT,
        "int_gemm",
        super::grid(n, m, tpc),
        [super::GROUP, 1, 1],
        &[
            x,
            x_off,
            Arg::I32(dtype_code(args.x.dtype)),
            d.buf(op, qw)?,
            d.buf(op, sc)?,
            d.buf(op, zp)?,
            d.buf(op, gi)?,
            Arg::I32(*bits as i32),
            Arg::I32(*groups as i32),
            b,
            b_off,
            Arg::I32(args.bias.as_ref().map_or(0, |b| dtype_code(b.dtype))),
            Arg::I32(args.bias.is_some() as i32),
            o,
            o_off,
            Arg::I32(dtype_code(args.out.dtype)),
            Arg::I32(m as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
            Arg::I32(tpc as i32),
        ],
    )
}
