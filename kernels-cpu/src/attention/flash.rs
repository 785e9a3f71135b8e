//! Dense varlen flash attention (the FlashAttention-2 API): sequence `b`'s
//! queries are rows `cu_seqlens_q[b]..cu_seqlens_q[b+1]` of `q`
//! `[total_q, num_heads, head_dim]`, its keys and values rows
//! `cu_seqlens_k[b]..cu_seqlens_k[b+1]` of `k` / `v` `[total_k,
//! num_kv_heads, head_dim]`. Causal masks are bottom-right aligned; a query
//! that sees no key gets a zero row.

use std::ops::Range;

use hal::{DType, FlashAttentionArgs, HalError, Result};
use half::{bf16, f16};

use super::softmax::{Geometry, KvRows};
use super::vector::KvElem;
use super::{dispatch, AnyLoad, Call, QueryRow};
use crate::CpuBackend;

const OP: &str = "flash_attention";

/// One sequence's keys and values: rows `start..` of dense `k` / `v`.
struct DenseRows<'a, E> {
    key: &'a [E],
    value: &'a [E],
    start: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl<E: KvElem> KvRows<E> for DenseRows<'_, E> {
    #[inline(always)]
    fn gather<'s>(
        &'s self,
        h: usize,
        js: Range<usize>,
        keys: &mut [&'s [E]],
        values: &mut [&'s [E]],
    ) {
        if js.is_empty() {
            return;
        }
        let d = self.head_dim;
        let stride = self.num_kv_heads * d;
        let base = (self.start + js.start) * stride + h * d;
        let span = base..base + (js.len() - 1) * stride + d;
        let (k, v) = (&self.key[span.clone()], &self.value[span]);
        for (i, (kr, vr)) in k.chunks(stride).zip(v.chunks(stride)).enumerate() {
            keys[i] = &kr[..d];
            values[i] = &vr[..d];
        }
    }
}

fn invalid(msg: String) -> HalError {
    HalError::invalid("cpu", OP, msg)
}

/// Check `cu` (`[batch + 1]`) starts ≥ 0, never decreases and ends ≤ `total`.
fn check_cu(name: &str, cu: &[i32], total: usize) -> Result<()> {
    let ok = cu.first().is_none_or(|&c| c >= 0)
        && cu.windows(2).all(|w| w[0] <= w[1])
        && cu.last().is_none_or(|&c| c as usize <= total);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name} must start at 0 or more, never decrease and end at most at {total}"
        )))
    }
}

/// The visible keys `lo..hi` of query `i` of `lq` against `lk` keys.
fn key_range(
    i: usize,
    lq: usize,
    lk: usize,
    causal: bool,
    window: Option<usize>,
) -> (usize, usize) {
    let aligned = i as isize + lk as isize - lq as isize;
    let start = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
    if causal {
        if aligned < 0 {
            (0, 0)
        } else {
            let p = aligned as usize;
            (start(p), p + 1)
        }
    } else {
        let lo = if aligned >= 0 {
            start(aligned as usize)
        } else {
            0
        };
        (lo, lk)
    }
}

/// Run [`FlashAttentionArgs`] on the CPU.
pub(super) fn run(cpu: &CpuBackend, args: FlashAttentionArgs<'_>) -> Result<()> {
    let (total_q, total_k, batch) = args.validate("cpu")?;
    cpu.check(&args.desc())?;
    let access = cpu.access();
    let cu_q: &[i32] = access.read(OP, &args.cu_seqlens_q)?;
    let cu_k: &[i32] = access.read(OP, &args.cu_seqlens_k)?;
    check_cu("cu_seqlens_q", cu_q, total_q)?;
    check_cu("cu_seqlens_k", cu_k, total_k)?;
    let (h, d) = (args.q.layout.shape()[1], args.q.layout.shape()[2]);
    let hk = args.k.layout.shape()[1];
    let mut rows = Vec::with_capacity(total_q);
    for b in 0..batch {
        let (q0, q1) = (cu_q[b] as usize, cu_q[b + 1] as usize);
        let lk = (cu_k[b + 1] - cu_k[b]) as usize;
        let lq = q1 - q0;
        for i in 0..lq {
            let (lo, hi) = key_range(i, lq, lk, args.causal, args.params.sliding_window);
            rows.push(QueryRow {
                token: q0 + i,
                seq: b,
                lo,
                hi,
            });
        }
    }
    let call = Call {
        op: OP,
        dtype: args.q.dtype,
        q: access.read_bytes(OP, &args.q)?,
        num_kv_heads: hk,
        geometry: Geometry {
            group: h / hk,
            d,
            dp: Geometry::padded(d),
            score_scale: args.params.scale,
            softcap: args.params.softcap,
            v_scale: 1.0,
        },
        rows,
        decode: false,
    };
    let key = access.read_bytes(OP, &args.k)?;
    let value = access.read_bytes(OP, &args.v)?;
    let out: &mut [u8] = access.write(OP, args.out)?;
    let starts: Vec<usize> = cu_k.iter().take(batch).map(|&c| c as usize).collect();
    match args.q.dtype {
        DType::F32 => run_typed::<f32>(cpu, &call, &starts, (hk, d), key, value, out),
        DType::F16 => run_typed::<f16>(cpu, &call, &starts, (hk, d), key, value, out),
        DType::BF16 => run_typed::<bf16>(cpu, &call, &starts, (hk, d), key, value, out),
        other => Err(invalid(format!("dtype {other} is not supported"))),
    }
}

fn run_typed<E: AnyLoad>(
    cpu: &CpuBackend,
    call: &Call<'_>,
    starts: &[usize],
    (num_kv_heads, head_dim): (usize, usize),
    key: &[u8],
    value: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let cast = |b| {
        bytemuck::try_cast_slice::<u8, E>(b)
            .map_err(|e| invalid(format!("misaligned k / v: {e:?}")))
    };
    let (key, value) = (cast(key)?, cast(value)?);
    let sources: Vec<DenseRows<'_, E>> = starts
        .iter()
        .map(|&start| DenseRows {
            key,
            value,
            start,
            num_kv_heads,
            head_dim,
        })
        .collect();
    dispatch::<E, DenseRows<'_, E>>(cpu, call, &sources, out)
}

#[cfg(test)]
mod tests {
    use super::key_range;

    #[test]
    fn causal_is_bottom_right() {
        // 3 queries, 5 keys: query 0 sees keys 0..=2.
        assert_eq!(key_range(0, 3, 5, true, None), (0, 3));
        assert_eq!(key_range(2, 3, 5, true, None), (0, 5));
        // More queries than keys: the first ones see nothing.
        assert_eq!(key_range(0, 5, 3, true, None), (0, 0));
        assert_eq!(key_range(2, 5, 3, true, None), (0, 1));
        assert_eq!(key_range(4, 5, 5, true, Some(2)), (3, 5));
        assert_eq!(key_range(1, 2, 6, false, Some(3)), (3, 6));
        assert_eq!(key_range(0, 4, 2, false, Some(3)), (0, 2));
    }
}
