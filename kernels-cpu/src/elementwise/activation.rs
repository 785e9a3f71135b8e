//! SiLU-and-mul (`out = silu(x[:, :I]) · x[:, I:]`) and add (`out = a + b`,
//! `b` optionally one broadcast row), rows in parallel. Each element is
//! computed in f32 and rounded once; `a + b` rounded from f32 is the
//! correctly rounded sum for f32, f16 and bf16 operands.

use hal::{AddArgs, Backend, Result, SiluAndMulArgs};
use rayon::prelude::*;

use super::{row_silu_mul, rows_per_task};
use crate::{convert, CpuBackend};

/// Run [`SiluAndMulArgs`] on the CPU.
pub(super) fn silu_and_mul(cpu: &CpuBackend, args: SiluAndMulArgs<'_>) -> Result<()> {
    const OP: &str = "silu_and_mul";
    let (rows, inter) = args.validate(cpu.name())?;
    cpu.check(&args.desc())?;
    if rows == 0 || inter == 0 {
        return Ok(());
    }
    let access = cpu.access();
    let (isa, dtype) = (cpu.isa(), args.x.dtype);
    let x = access.read_bytes(OP, &args.x)?;
    let out: &mut [u8] = access.write(OP, args.out)?;
    let half = dtype.bytes_for(inter);
    cpu.pool().install(|| {
        out.par_chunks_mut(half)
            .zip(x.par_chunks(2 * half))
            .with_min_len(rows_per_task(2 * inter))
            .for_each_init(
                || (vec![0f32; inter], vec![0f32; inter]),
                |(a, b), (dst, src)| {
                    let (gate, up) = src.split_at(half);
                    convert::to_f32(isa, dtype, gate, a);
                    convert::to_f32(isa, dtype, up, b);
                    row_silu_mul(isa, a, b);
                    convert::from_f32(isa, dtype, a, dst);
                },
            )
    });
    Ok(())
}

/// Run [`AddArgs`] on the CPU.
pub(super) fn add(cpu: &CpuBackend, args: AddArgs<'_>) -> Result<()> {
    const OP: &str = "add";
    let (rows, n) = args.validate(cpu.name())?;
    cpu.check(&args.desc())?;
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let access = cpu.access();
    let (isa, dtype) = (cpu.isa(), args.a.dtype);
    let broadcast = args.b.layout.rank() == 1;
    let a = access.read_bytes(OP, &args.a)?;
    let b = access.read_bytes(OP, &args.b)?;
    let out: &mut [u8] = access.write(OP, args.out)?;
    let row = dtype.bytes_for(n);
    // The broadcast row, converted once.
    let mut b_row = Vec::new();
    if broadcast {
        b_row = vec![0f32; n];
        convert::to_f32(isa, dtype, b, &mut b_row);
    }
    let b_row = &b_row;
    cpu.pool().install(|| {
        out.par_chunks_mut(row)
            .zip(a.par_chunks(row))
            .enumerate()
            .with_min_len(rows_per_task(n))
            .for_each_init(
                || (vec![0f32; n], vec![0f32; n]),
                |(x, y), (i, (dst, ar))| {
                    convert::to_f32(isa, dtype, ar, x);
                    let y: &[f32] = if broadcast {
                        b_row
                    } else {
                        convert::to_f32(isa, dtype, &b[i * row..][..row], y);
                        y
                    };
                    for (p, &q) in x.iter_mut().zip(y) {
                        *p += q;
                    }
                    convert::from_f32(isa, dtype, x, dst);
                },
            )
    });
    Ok(())
}
