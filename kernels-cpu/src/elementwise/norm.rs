//! RMS norm with the optional fused residual add (vLLM's
//! `fused_add_rms_norm`), rows `[num_tokens, hidden]` in parallel.
//!
//! With a residual: `r = x + residual` is computed in f32, rounded once to
//! the residual's dtype and stored back; the *stored* `r` is normalised
//! (exactly the reference's semantics: the sum of two f16 / bf16 / f32
//! values rounded from f32 is the correctly rounded sum). Then
//! `out = r · (1 / sqrt(Σr² / hidden + eps)) · weight`, with `Σr²` reduced in
//! an order fixed by `hidden` alone.

use hal::{Backend, Result, RmsNormArgs};
use rayon::prelude::*;

use super::{row_sum_squares, rows_per_task};
use crate::{convert, CpuBackend};

const OP: &str = "rms_norm";

/// Run [`RmsNormArgs`] on the CPU.
pub(super) fn rms_norm(cpu: &CpuBackend, args: RmsNormArgs<'_>) -> Result<()> {
    let (rows, hidden) = args.validate(cpu.name())?;
    cpu.check(&args.desc())?;
    if rows == 0 || hidden == 0 {
        return Ok(());
    }
    let access = cpu.access();
    let isa = cpu.isa();
    let dtype = args.x.dtype;
    let row_bytes = dtype.bytes_for(hidden);
    let x = access.read_bytes(OP, &args.x)?;
    let mut weight = vec![0f32; hidden];
    convert::to_f32(
        isa,
        args.weight.dtype,
        access.read_bytes(OP, &args.weight)?,
        &mut weight,
    );
    let eps = args.eps;
    let out: &mut [u8] = access.write(OP, args.out)?;
    let residual: Option<&mut [u8]> = args.residual.map(|r| access.write(OP, r)).transpose()?;
    let per_task = rows_per_task(hidden);
    let weight = &weight;
    // One row: `r` and `s` are f32 scratch rows of `hidden`.
    let norm_row = move |(r, s): &mut (Vec<f32>, Vec<f32>),
                         xr: &[u8],
                         res: Option<&mut [u8]>,
                         dst: &mut [u8]| {
        convert::to_f32(isa, dtype, xr, r);
        if let Some(res) = res {
            convert::to_f32(isa, dtype, res, s);
            for (a, b) in r.iter_mut().zip(s.iter()) {
                *a += *b;
            }
            convert::from_f32(isa, dtype, r, res);
            convert::to_f32(isa, dtype, res, r);
        }
        let inv = 1.0 / (row_sum_squares(isa, r) / hidden as f32 + eps).sqrt();
        for (a, &w) in r.iter_mut().zip(weight) {
            *a = *a * inv * w;
        }
        convert::from_f32(isa, dtype, r, dst);
    };
    let scratch = || (vec![0f32; hidden], vec![0f32; hidden]);
    cpu.pool().install(|| match residual {
        Some(res) => out
            .par_chunks_mut(row_bytes)
            .zip(x.par_chunks(row_bytes))
            .zip(res.par_chunks_mut(row_bytes))
            .with_min_len(per_task)
            .for_each_init(scratch, |s, ((dst, xr), res)| {
                norm_row(s, xr, Some(res), dst)
            }),
        None => out
            .par_chunks_mut(row_bytes)
            .zip(x.par_chunks(row_bytes))
            .with_min_len(per_task)
            .for_each_init(scratch, |s, (dst, xr)| norm_row(s, xr, None, dst)),
    });
    Ok(())
}
