//! Embedding lookup: `out[t] = table[ids[t]]` (`out` `[num_tokens,
//! hidden]`), from a dense F32 / F16 / BF16 table or a packed GGUF table
//! (rows dequantised by the quantised-GEMM module). An id outside
//! `0..vocab` gives a row of zeros and reads nothing.

use hal::{Backend, EmbeddingArgs, EmbeddingTable, HalError, Result};
use rayon::prelude::*;

use super::rows_per_task;
use crate::{convert, quant_gemm, CpuBackend};

const OP: &str = "embedding";

/// Run [`EmbeddingArgs`] on the CPU.
pub(super) fn embedding(cpu: &CpuBackend, args: EmbeddingArgs<'_>) -> Result<()> {
    let (tokens, vocab, hidden) = args.validate(cpu.name())?;
    cpu.check(&args.desc())?;
    if tokens == 0 || hidden == 0 {
        return Ok(());
    }
    let access = cpu.access();
    let isa = cpu.isa();
    let ids: &[i32] = access.read(OP, &args.ids)?;
    let out_dtype = args.out.dtype;
    let row = out_dtype.bytes_for(hidden);
    let out: &mut [u8] = access.write(OP, args.out)?;
    let lookup = |id: i32| (id >= 0 && (id as usize) < vocab).then_some(id as usize);
    match args.table {
        EmbeddingTable::Dense(table) => {
            let tdt = table.dtype;
            let trow = tdt.bytes_for(hidden);
            let tab = access.read_bytes(OP, &table)?;
            cpu.pool().install(|| {
                out.par_chunks_mut(row)
                    .zip(ids.par_iter())
                    .with_min_len(rows_per_task(hidden))
                    .for_each_init(
                        || vec![0f32; hidden],
                        |x, (dst, &id)| match lookup(id) {
                            None => dst.fill(0),
                            Some(r) if tdt == out_dtype => {
                                dst.copy_from_slice(&tab[r * trow..][..trow])
                            }
                            Some(r) => {
                                convert::to_f32(isa, tdt, &tab[r * trow..][..trow], x);
                                convert::from_f32(isa, out_dtype, x, dst);
                            }
                        },
                    )
            });
            Ok(())
        }
        EmbeddingTable::Quant(w) => {
            if w.k != hidden {
                return Err(HalError::invalid(
                    cpu.name(),
                    OP,
                    format!("packed table rows hold {} values, out rows {hidden}", w.k),
                ));
            }
            cpu.pool().install(|| {
                out.par_chunks_mut(row)
                    .zip(ids.par_iter())
                    .with_min_len(rows_per_task(hidden))
                    .try_for_each_init(
                        || vec![0f32; hidden],
                        |x, (dst, &id)| {
                            match lookup(id) {
                                None => dst.fill(0),
                                Some(r) => {
                                    quant_gemm::dequantize_row(access, w, r, x)?;
                                    convert::from_f32(isa, out_dtype, x, dst);
                                }
                            }
                            Ok(())
                        },
                    )
            })
        }
    }
}
