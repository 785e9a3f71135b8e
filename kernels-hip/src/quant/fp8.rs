//! FP8 E4M3 W8A8, layout `"hip-fp8"` (kernels: the CUDA backend's `quant_fp8.cu`).
//!
//! * part 0: e4m3 bytes `[N, Kp]`, `Kp = K` rounded up to 32, zero-padded;
//! * part 1: f32 weight scales `[N]` (a per-tensor scale repeated);
//! * scalars: `[input_scale]` (0 without a static scale).
//!
//! A call scales the activations (static; dynamic per tensor: row maxima
//! then one reduction; dynamic per token: row maxima), writes
//! `e4m3(x / s)` as f32 into an `[M, Kp]` scratch, then runs the GEMM,
//! which reads `N · Kp` weight bytes once for M ≤ 16 (matvec) or once per 64
//! activation rows (tiled).

use hal::quant::fp8_w8a8::MIN_SCALE;
use hal::{ActivationScale, Backend, HalError, PackedWeight, QuantWeights, Result};

use super::{blocks, launch_matvec, matvec_plan, part, suffix, Call, MatvecKernel, MATVEC_MAX_M};
use crate::device::{Arg, HipDevice};
use crate::sources::QUANT_FP8;

/// Layout name.
pub(crate) const LAYOUT: &str = "hip-fp8";

/// `k` rounded up to a whole number of 32-byte blocks.
fn padded(k: usize) -> usize {
    k.div_ceil(32) * 32
}

/// The padded weight bytes and per-row scales of a validated FP8 weight.
pub(crate) fn repack(
    n: usize,
    k: usize,
    weight: &[u8],
    weight_scale: &[f32],
) -> (Vec<u8>, Vec<f32>) {
    let kp = padded(k);
    let mut bytes = vec![0u8; n * kp];
    if k > 0 {
        for (dst, src) in bytes.chunks_exact_mut(kp).zip(weight.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
        }
    }
    let scales = if weight_scale.len() == n {
        weight_scale.to_vec()
    } else {
        vec![weight_scale.first().copied().unwrap_or(1.0); n]
    };
    (bytes, scales)
}

/// Repack and upload an FP8 weight.
pub(crate) fn pack(dev: &HipDevice, w: &QuantWeights) -> Result<PackedWeight> {
    let QuantWeights::Fp8 {
        n,
        k,
        weight,
        weight_scale,
        input_scale,
        ..
    } = w
    else {
        return Err(HalError::invalid(dev.name(), "pack", "not an FP8 weight"));
    };
    let (bytes, scales) = repack(*n, *k, weight, weight_scale);
    let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    Ok(PackedWeight {
        spec: w.spec(),
        n: *n,
        k: *k,
        layout: LAYOUT,
        parts: vec![
            dev.upload_bytes("pack", &bytes)?,
            dev.upload_bytes("pack", &scale_bytes)?,
        ],
        scalars: vec![input_scale.unwrap_or(0.0)],
    })
}

/// `out = fp8(x) · dequant(w)ᵀ + bias`.
pub(crate) fn run(
    dev: &HipDevice,
    activation: ActivationScale,
    w: &PackedWeight,
    c: &Call,
) -> Result<()> {
    let op = "quant_gemm";
    let kp = padded(c.k);
    let qw = part(dev, op, w, 0, c.n * kp)?;
    let ws = part(dev, op, w, 1, c.n * 4)?;
    let dt = suffix(c.x_dtype);
    // Scales: [amax (m floats) | scale (m floats)].
    let scales = dev.scratch(op, c.m * 8)?;
    let amax = scales.ptr();
    let sptr = amax + (c.m * 4) as u64;
    let (s_static, mode) = match activation {
        ActivationScale::Static => {
            let s = w.scalars.first().copied().unwrap_or(0.0);
            if !(s.is_finite() && s > 0.0) {
                return Err(HalError::invalid(
                    dev.name(),
                    op,
                    "packed FP8 weight lacks its static input scale",
                ));
            }
            (s, 0)
        }
        ActivationScale::DynamicPerTensor | ActivationScale::DynamicPerToken => {
            let per_token = activation == ActivationScale::DynamicPerToken;
            let f = dev.function(&QUANT_FP8, &format!("fp8_row_amax_{dt}"))?;
            dev.launch(
                op,
                &f,
                (c.m as u32, 1, 1),
                (256, 1, 1),
                0,
                &[
                    Arg::Ptr(c.x),
                    Arg::Ptr(amax),
                    Arg::Ptr(if per_token { sptr } else { 0 }),
                    Arg::I32(c.k as i32),
                    Arg::F32(MIN_SCALE),
                ],
            )?;
            if !per_token {
                let f = dev.function(&QUANT_FP8, "fp8_tensor_scale")?;
                dev.launch(
                    op,
                    &f,
                    (1, 1, 1),
                    (256, 1, 1),
                    0,
                    &[
                        Arg::Ptr(amax),
                        Arg::Ptr(sptr),
                        Arg::I32(c.m as i32),
                        Arg::F32(MIN_SCALE),
                    ],
                )?;
            }
            (0.0, if per_token { 2 } else { 1 })
        }
    };
    let total = c.m * kp;
    let xq = dev.scratch(op, total * 4)?;
    let f = dev.function(&QUANT_FP8, &format!("fp8_quant_x_{dt}"))?;
    dev.launch(
        op,
        &f,
        (dev.stride_grid(total), 1, 1),
        (256, 1, 1),
        0,
        &[
            Arg::Ptr(c.x),
            Arg::Ptr(sptr),
            Arg::F32(s_static),
            Arg::I32(mode),
            Arg::Ptr(xq.ptr()),
            Arg::I32(c.m as i32),
            Arg::I32(c.k as i32),
            Arg::I32(kp as i32),
        ],
    )?;
    let args = [
        Arg::Ptr(qw),
        Arg::Ptr(ws),
        Arg::Ptr(xq.ptr()),
        Arg::Ptr(sptr),
        Arg::F32(s_static),
        Arg::I32(mode),
        Arg::Ptr(c.bias),
        Arg::I32(c.bias_dt),
        Arg::Ptr(c.out),
        Arg::I32(c.out_dt),
        Arg::I32(c.m as i32),
        Arg::I32(c.n as i32),
        Arg::I32(kp as i32),
    ];
    if c.m <= MATVEC_MAX_M {
        let plan = matvec_plan(c.m, c.n, kp / 32, dev.num_sms());
        launch_matvec(
            dev,
            &MatvecKernel {
                src: &QUANT_FP8,
                name: &format!("fp8_mv_m{}", plan.mr),
                reduce: "fp8_mv_reduce",
            },
            &[
                Arg::Ptr(qw),
                Arg::Ptr(ws),
                Arg::Ptr(sptr),
                Arg::F32(s_static),
                Arg::I32(mode),
            ],
            xq.ptr(),
            c,
            kp,
            &plan,
        )
    } else {
        let f = dev.function(&QUANT_FP8, "fp8_mm")?;
        dev.launch(
            op,
            &f,
            (blocks(c.n, 64), blocks(c.m, 64), 1),
            (256, 1, 1),
            0,
            &args,
        )
    }
}

#[cfg(test)]
mod tests {
    use hal::fp8::e4m3_to_f32;
    use half::f16;

    use super::*;

    /// The kernels' E4M3 decode: the code's magnitude shifted into an f16 bit
    /// pattern reads as value · 2^-8, subnormals included.
    #[test]
    fn e4m3_via_f16_bits() {
        for code in 0..=255u8 {
            if code & 0x7f == 0x7f {
                continue;
            }
            let v = code as u32;
            let bits = ((v & 0x7f) << 7) | ((v & 0x80) << 8);
            let got = f16::from_bits(bits as u16).to_f32() * 256.0;
            assert_eq!(got, e4m3_to_f32(code), "code {code:#x}");
        }
    }

    #[test]
    fn rows_are_padded_with_zeros() {
        let weight: Vec<u8> = (0..2 * 40).map(|i| i as u8).collect();
        let (bytes, scales) = repack(2, 40, &weight, &[0.5]);
        assert_eq!(bytes.len(), 2 * 64);
        assert_eq!(&bytes[..40], &weight[..40]);
        assert!(bytes[40..64].iter().all(|&b| b == 0));
        assert_eq!(&bytes[64..104], &weight[40..80]);
        assert_eq!(scales, vec![0.5, 0.5]);
        let (_, scales) = repack(2, 40, &weight, &[0.5, 2.0]);
        assert_eq!(scales, vec![0.5, 2.0]);
    }
}
