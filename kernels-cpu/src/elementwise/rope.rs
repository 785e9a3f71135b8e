//! Rotary position embedding in place on `q` `[num_tokens, num_heads,
//! head_dim]` and `k` `[num_tokens, num_kv_heads, head_dim]`, tokens in
//! parallel.
//!
//! `cos_sin_cache[p]` holds `rotary_dim / 2` cosines then `rotary_dim / 2`
//! sines (f32). Pair `i` becomes `(a·cos − b·sin, b·cos + a·sin)` in f32,
//! rounded once to the dtype; NeoX pairs `(i, i + rotary_dim/2)`, GPT-J
//! pairs `(2i, 2i + 1)`. Elements `rotary_dim..head_dim` are not touched,
//! nor are the rows of a token whose position lies outside the table.

use hal::{Backend, Result, RopeArgs, RopeStyle};
use rayon::prelude::*;

use super::rows_per_task;
use crate::{convert, CpuBackend};

const OP: &str = "rope";

/// Run [`RopeArgs`] on the CPU.
pub(super) fn rope(cpu: &CpuBackend, args: RopeArgs<'_>) -> Result<()> {
    let (tokens, d, rot) = args.validate(cpu.name())?;
    cpu.check(&args.desc())?;
    let access = cpu.access();
    let isa = cpu.isa();
    let positions: &[i64] = access.read(OP, &args.positions)?;
    let table: &[f32] = access.read(OP, &args.cos_sin_cache)?;
    let max_pos = args.cos_sin_cache.layout.shape()[0];
    let (hq, hk) = (args.q.layout.shape()[1], args.k.layout.shape()[1]);
    let (dtype, style) = (args.q.dtype, args.style);
    let es = dtype.bytes_for(1);
    let q: &mut [u8] = access.write(OP, args.q)?;
    let k: &mut [u8] = access.write(OP, args.k)?;
    if tokens == 0 || d == 0 {
        return Ok(());
    }
    let half = rot / 2;
    let rotate_heads = |rows: &mut [u8], cs: &[f32], x: &mut Vec<f32>| {
        let (cos, sin) = cs.split_at(half);
        for head in rows.chunks_exact_mut(d * es) {
            let part = &mut head[..rot * es];
            convert::to_f32(isa, dtype, part, x);
            for i in 0..half {
                let (ia, ib) = match style {
                    RopeStyle::Neox => (i, i + half),
                    RopeStyle::Gptj => (2 * i, 2 * i + 1),
                };
                let (a, b) = (x[ia], x[ib]);
                x[ia] = a * cos[i] - b * sin[i];
                x[ib] = b * cos[i] + a * sin[i];
            }
            convert::from_f32(isa, dtype, x, part);
        }
    };
    cpu.pool().install(|| {
        for (x, heads) in [(q, hq), (k, hk)] {
            if heads == 0 {
                continue;
            }
            x.par_chunks_mut(heads * d * es)
                .zip(positions.par_iter())
                .with_min_len(rows_per_task(heads * d))
                .for_each_init(
                    || vec![0f32; rot],
                    |buf, (rows, &p)| {
                        if p >= 0 && (p as usize) < max_pos {
                            rotate_heads(rows, &table[p as usize * rot..][..rot], buf);
                        }
                    },
                );
        }
    });
    Ok(())
}
