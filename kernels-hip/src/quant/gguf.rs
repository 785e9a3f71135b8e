//! GGUF Q4_0 / Q4_1 / Q8_0, layout `"hip-gguf"` (kernels in
//! the CUDA backend's `quant_gguf.cu`).
//!
//! The checkpoint's blocks with their headers split off, `nb = K / 32`:
//! * part 0 `qs`: bytes `[N, nb, 16]` (Q4_0 / Q4_1: byte `i` holds element
//!   `i` in its low and element `i + 16` in its high nibble, as in the
//!   checkpoint) or `[N, nb, 32]` (Q8_0: int8 element `j` at byte `j`);
//! * part 1 `dm`: f16 `d` `[N, nb]` (Q4_0, Q8_0) or `(d, m)` f16 pairs
//!   `[N, nb, 2]` (Q4_1).
//!
//! Every 16 / 32-byte block is one aligned vector load. A matvec over Q4_1
//! reads `N · K · 5/8` bytes (Q4_0 `9/16`, Q8_0 `17/16`) plus x.

use hal::{Backend, DType, GgufType, HalError, PackedWeight, QuantSpec, Result};

use super::{
    blocks, launch_matvec, matvec_plan, part, suffix, vector_aligned, Call, MatvecKernel,
    MATVEC_MAX_M,
};
use crate::device::{Arg, HipDevice};
use crate::sources::QUANT_GGUF;

/// Layout name.
pub(crate) const LAYOUT: &str = "hip-gguf";

/// Quant bytes per 32-element block.
fn qs_bytes(ty: GgufType) -> usize {
    match ty {
        GgufType::Q8_0 => 32,
        _ => 16,
    }
}

/// Header (`d`, or `d` and `m`) bytes per block.
fn header_bytes(ty: GgufType) -> usize {
    match ty {
        GgufType::Q4_1 => 4,
        _ => 2,
    }
}

fn name(ty: GgufType) -> &'static str {
    ty.name()
}

/// Split checkpoint blocks (`n` rows of `k / 32` blocks) into `(qs, dm)`.
pub(crate) fn repack(ty: GgufType, n: usize, k: usize, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nblocks = n * (k / 32);
    let (hb, qb, bb) = (header_bytes(ty), qs_bytes(ty), ty.block_bytes());
    let mut qs = Vec::with_capacity(nblocks * qb);
    let mut dm = Vec::with_capacity(nblocks * hb);
    for block in data.chunks_exact(bb).take(nblocks) {
        dm.extend_from_slice(&block[..hb]);
        qs.extend_from_slice(&block[hb..hb + qb]);
    }
    (qs, dm)
}

/// Repack and upload a GGUF weight.
pub(crate) fn pack(
    dev: &HipDevice,
    ty: GgufType,
    n: usize,
    k: usize,
    data: &[u8],
) -> Result<PackedWeight> {
    let (qs, dm) = repack(ty, n, k, data);
    Ok(PackedWeight {
        spec: QuantSpec::Gguf(ty),
        n,
        k,
        layout: LAYOUT,
        parts: vec![
            dev.upload_bytes("pack", &qs)?,
            dev.upload_bytes("pack", &dm)?,
        ],
        scalars: Vec::new(),
    })
}

/// The `(qs, dm)` addresses of a packed GGUF weight.
fn parts(dev: &HipDevice, op: &'static str, ty: GgufType, w: &PackedWeight) -> Result<(u64, u64)> {
    let nblocks = w.n * (w.k / 32);
    Ok((
        part(dev, op, w, 0, nblocks * qs_bytes(ty))?,
        part(dev, op, w, 1, nblocks * header_bytes(ty))?,
    ))
}

/// `out = x · dequant(w)ᵀ + bias`.
pub(crate) fn run(dev: &HipDevice, ty: GgufType, w: &PackedWeight, c: &Call) -> Result<()> {
    let op = "quant_gemm";
    let (qs, dm) = parts(dev, op, ty, w)?;
    // Unaligned activations are copied to an aligned f32 scratch first.
    let mut x = c.x;
    let mut xdt = c.x_dtype;
    let _staged = if vector_aligned(c.x, c.x_dtype) {
        None
    } else {
        let total = c.m * c.k;
        let s = dev.scratch(op, total * 4)?;
        let f = dev.function(&QUANT_GGUF, &format!("gguf_to_f32_{}", suffix(c.x_dtype)))?;
        dev.launch(
            op,
            &f,
            (dev.stride_grid(total), 1, 1),
            (256, 1, 1),
            0,
            &[Arg::Ptr(c.x), Arg::Ptr(s.ptr()), Arg::I64(total as i64)],
        )?;
        x = s.ptr();
        xdt = DType::F32;
        Some(s)
    };
    let args = [
        Arg::Ptr(qs),
        Arg::Ptr(dm),
        Arg::Ptr(x),
        Arg::Ptr(c.bias),
        Arg::I32(c.bias_dt),
        Arg::Ptr(c.out),
        Arg::I32(c.out_dt),
        Arg::I32(c.m as i32),
        Arg::I32(c.n as i32),
        Arg::I32(c.k as i32),
    ];
    if c.m <= MATVEC_MAX_M {
        let plan = matvec_plan(c.m, c.n, c.k / 32, dev.num_sms());
        launch_matvec(
            dev,
            &MatvecKernel {
                src: &QUANT_GGUF,
                name: &format!("gguf_mv_{}_{}_m{}", name(ty), suffix(xdt), plan.mr),
                reduce: "gguf_mv_reduce",
            },
            &[Arg::Ptr(qs), Arg::Ptr(dm)],
            x,
            c,
            c.k,
            &plan,
        )
    } else {
        let f = dev.function(
            &QUANT_GGUF,
            &format!("gguf_mm_{}_{}", name(ty), suffix(xdt)),
        )?;
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

/// Dequantised rows of a packed GGUF table; ids outside `0..n` give zeros.
pub(crate) fn embedding_rows(
    dev: &HipDevice,
    ids: u64,
    num_tokens: usize,
    table: &PackedWeight,
    out: u64,
    out_dtype: DType,
) -> Result<()> {
    let op = "embedding";
    let QuantSpec::Gguf(ty) = table.spec else {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!("quantised tables must be GGUF blocks, not {:?}", table.spec),
        ));
    };
    if table.layout != LAYOUT {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!(
                "packed table has layout {:?}, expected {LAYOUT:?}: pack it with this backend",
                table.layout
            ),
        ));
    }
    if super::dtype_code(out_dtype).is_none() {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!("output dtype {out_dtype:?} is not F32, F16 or BF16"),
        ));
    }
    if num_tokens == 0 || table.k == 0 {
        return Ok(());
    }
    if num_tokens > i32::MAX as usize || table.n > i32::MAX as usize || table.k > i32::MAX as usize
    {
        return Err(HalError::invalid(
            dev.name(),
            op,
            "token count or table shape exceeds 2^31",
        ));
    }
    let (qs, dm) = parts(dev, op, ty, table)?;
    let f = dev.function(
        &QUANT_GGUF,
        &format!("gguf_embed_{}_{}", name(ty), suffix(out_dtype)),
    )?;
    dev.launch(
        op,
        &f,
        (num_tokens as u32, 1, 1),
        (256, 1, 1),
        0,
        &[
            Arg::Ptr(qs),
            Arg::Ptr(dm),
            Arg::Ptr(ids),
            Arg::Ptr(out),
            Arg::I32(table.n as i32),
            Arg::I32(table.k as i32),
        ],
    )
}

#[cfg(test)]
mod tests {
    use hal::quant::gguf;
    use hal::QuantWeights;
    use half::f16;

    use super::*;

    /// Element `(row, col)` read from the packed parts the way the kernels
    /// read it: `fma(q - offset, d, m)`.
    fn decode(ty: GgufType, k: usize, qs: &[u8], dm: &[u8], row: usize, col: usize) -> f64 {
        let nb = k / 32;
        let (b, j) = (col / 32, col % 32);
        let blk = row * nb + b;
        let h = |off: usize| f16::from_le_bytes([dm[off], dm[off + 1]]).to_f64();
        match ty {
            GgufType::Q8_0 => qs[blk * 32 + j] as i8 as f64 * h(blk * 2),
            GgufType::Q4_0 | GgufType::Q4_1 => {
                let byte = qs[blk * 16 + j % 16];
                let q = if j < 16 { byte & 15 } else { byte >> 4 } as f64;
                if ty == GgufType::Q4_0 {
                    (q - 8.0) * h(blk * 2)
                } else {
                    q * h(blk * 4) + h(blk * 4 + 2)
                }
            }
        }
    }

    #[test]
    fn repacked_layout_decodes_to_the_checkpoint() {
        let (n, k) = (7, 96);
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        };
        for ty in [GgufType::Q4_0, GgufType::Q4_1, GgufType::Q8_0] {
            let data: Vec<u8> = (0..n)
                .flat_map(|_| {
                    let row: Vec<f32> = (0..k).map(|_| next()).collect();
                    gguf::quantize_row(ty, &row)
                })
                .collect();
            let w = QuantWeights::Gguf {
                ty,
                n,
                k,
                data: data.clone(),
            };
            w.validate().unwrap();
            let (qs, dm) = repack(ty, n, k, &data);
            assert_eq!(qs.len(), n * k / 32 * qs_bytes(ty));
            assert_eq!(dm.len(), n * k / 32 * header_bytes(ty));
            for row in 0..n {
                for col in 0..k {
                    assert_eq!(
                        decode(ty, k, &qs, &dm, row, col),
                        w.weight(row, col),
                        "{ty:?} [{row}, {col}]"
                    );
                }
            }
        }
    }

    /// The 2^23 magic-exponent conversion the kernels use for bytes.
    #[test]
    fn magic_byte_conversion() {
        for b in 0..=255u32 {
            let v = f32::from_bits(0x4b00_0000 | b);
            assert_eq!(v - 8_388_608.0, b as f32);
            assert_eq!(v - 8_388_616.0, b as f32 - 8.0);
            // Q8_0: the int8 byte xor 0x80, minus 2^23 + 128.
            let s = b as u8 as i8;
            let flipped = f32::from_bits(0x4b00_0000 | ((b ^ 0x80) & 0xff));
            assert_eq!(flipped - 8_388_736.0, s as f32);
        }
    }
}
