//! Bitwise batch invariance, for backends that declare it
//! (`capabilities().batch_invariant`); others skip every case with
//! "backend does not declare batch invariance".
//!
//! A row's bits may not depend on what else is in the batch or on how its
//! sequence's tokens are chunked:
//!
//! * GEMM and quantised GEMM: rows computed alone (M = 1) and in a slice of
//!   5 equal the same rows computed in a batch of 33;
//! * paged attention: one sequence's output rows are the same whether it is
//!   prefilled in one call, in chunks of 13 / 19 / 13 tokens, decoded token
//!   by token, or run inside mixed batches with other sequences (as a whole
//!   prefill, as its last chunk, as its last decode step);
//! * RMS norm (with and without residual): rows alone equal rows batched.
//!
//! FP8 W8A8 runs with per-token dynamic scales: a per-tensor dynamic scale
//! depends on the whole batch by definition.

use super::kv_cache::{block_pool, build_batch, for_each_layout, upload_cache};
use super::lowp::{expect_attention, widened};
use super::paged_attention::{fill_cache, naive_paged, reference_paged, run_paged};
use super::quant_gemm::{budget, desc, pack, random_weights, Format};
use super::{
    case, concat, dt, expect, expect_same_bits, inv_sqrt, op_failed, random, refused, rows, sweep,
    CaseResult, Refusable,
};
use crate::conformance::{Budget, Case, Harness, Outcome, Rng};
use crate::{
    reference, ActivationScale, AttentionParams, DType, GemmArgs, GgufType, HostTensor,
    KvCacheSpec, KvLayout, OpDesc, PackedWeight, Precision, QuantGemmArgs, RmsNormArgs,
    ScaleGranularity,
};

use DType::{BF16, F16, F32};

/// Rows of the big batch.
const BATCH: usize = 33;
/// `(start, len)` of the sub-batches compared with the big batch.
const SUBSETS: [(usize, usize); 4] = [(0, 1), (16, 1), (32, 1), (11, 5)];

/// `Some(Skip)` unless the backend declares batch invariance.
fn not_declared(h: &Harness<'_>) -> Option<Outcome> {
    (!h.device.capabilities().batch_invariant)
        .then(|| Outcome::Skip("backend does not declare batch invariance".into()))
}

/// The batch-invariance cases.
pub(super) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (i, dtype) in [F32, F16, BF16].into_iter().enumerate() {
        let seed = 0xb1_0000 + i as u64;
        v.push(case(
            format!("gemm_{}_rows_alone_vs_batch", dt(dtype)),
            move |h| gemm_invariance(h, dtype, seed),
        ));
    }
    let formats = [
        Format::Gguf(GgufType::Q4_0),
        Format::Gguf(GgufType::Q4_1),
        Format::Gguf(GgufType::Q8_0),
        Format::Awq(128),
        Format::Gptq(4, 128, true, false),
        Format::Gptq(8, 64, false, false),
        Format::Fp8(
            ScaleGranularity::PerChannel,
            ActivationScale::DynamicPerToken,
            false,
        ),
        Format::Fp8(ScaleGranularity::PerTensor, ActivationScale::Static, false),
    ];
    for (i, format) in formats.into_iter().enumerate() {
        let seed = 0xb2_0000 + i as u64;
        v.push(case(
            format!("quant_gemm_{}_rows_alone_vs_batch", format.name()),
            move |h| quant_invariance(h, format, seed),
        ));
    }
    for (i, dtype) in [F32, F16, BF16].into_iter().enumerate() {
        let seed = 0xb3_0000 + i as u64;
        v.push(case(
            format!("paged_attention_{}_prefill_chunked_decode_mixed", dt(dtype)),
            move |h| paged_invariance(h, dtype, seed),
        ));
    }
    for (i, (dtype, residual)) in [(F32, false), (F16, true), (BF16, true), (BF16, false)]
        .into_iter()
        .enumerate()
    {
        let seed = 0xb4_0000 + i as u64;
        v.push(case(
            format!(
                "rms_norm_{}{}_rows_alone_vs_batch",
                dt(dtype),
                if residual { "_residual" } else { "" }
            ),
            move |h| norm_invariance(h, dtype, residual, seed),
        ));
    }
    v
}

/// Compare `got` (the rows `start..` of the batch, computed in a smaller
/// batch) bit for bit with those rows of `batch`.
fn same_rows(what: &str, got: &HostTensor, batch: &HostTensor, start: usize) -> Result<(), String> {
    let row: usize = got.shape[1..].iter().product();
    let want = rows(batch, start, got.shape[0]);
    expect_same_bits(
        &format!("{what} (row 0 = batch row {start})"),
        got,
        &want,
        row,
    )
}

// ---------------------------------------------------------------------------
// GEMM

fn gemm_invariance(h: &Harness<'_>, dtype: DType, seed: u64) -> CaseResult {
    if let Some(skip) = not_declared(h) {
        return Ok(skip);
    }
    let (n, k) = (72, 200);
    let mut rng = Rng::new(seed);
    let x = random(&mut rng, dtype, &[BATCH, k], 1.0);
    let w = random(&mut rng, dtype, &[n, k], inv_sqrt(k));
    let bias = random(&mut rng, dtype, &[n], 1.0);
    let (wd, bd) = (h.upload(&w)?, h.upload(&bias)?);
    let run = |x: &HostTensor| -> Refusable<HostTensor> {
        let xd = h.upload(x)?;
        let mut out = h.output(dtype, &[x.shape[0], n])?;
        let args = GemmArgs {
            x: xd.view(),
            w: wd.view(),
            bias: Some(bd.view()),
            out: out.view_mut(),
        };
        if let Some(skip) = refused(h, &args.desc()) {
            return Ok(Err(skip));
        }
        h.device.gemm(args).map_err(|e| op_failed("gemm", e))?;
        Ok(Ok(h.read(&out)?))
    };
    let full = match run(&x)? {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    let want = reference::gemm(&x, &w, Some(&bias), dtype);
    expect("batch of 33", &full, &want, &Budget::for_dtype(dtype))?;
    for (start, len) in SUBSETS {
        let got = run(&rows(&x, start, len))?.map_err(|_| "refused a smaller batch")?;
        same_rows(&format!("gemm M = {len}"), &got, &full, start)?;
    }
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// Quantised GEMM

fn quant_invariance(h: &Harness<'_>, format: Format, seed: u64) -> CaseResult {
    if let Some(skip) = not_declared(h) {
        return Ok(skip);
    }
    let (n, k) = (72, 256);
    let mut rng = Rng::new(seed);
    let w = random_weights(&mut rng, format, n, k);
    let x32 = random(&mut rng, F32, &[BATCH, k], 1.0);
    let precisions: Vec<Precision> = match format {
        // The precision mode does not apply to FP8 W8A8.
        Format::Fp8(..) => vec![Precision::Exact],
        _ => h.device.capabilities().precisions.clone(),
    };
    let combos: Vec<(DType, Precision)> = [F32, F16, BF16]
        .into_iter()
        .flat_map(|d| precisions.iter().map(move |&p| (d, p)))
        .collect();
    let mut packed: Option<PackedWeight> = None;
    sweep(
        combos,
        |&(d, p)| format!("x {d}, {}", p.name()),
        |&(dtype, precision)| {
            if let Some(skip) = refused(h, &desc(&w, dtype, dtype, precision)) {
                return Ok(skip);
            }
            if packed.is_none() {
                packed = Some(pack(h, &w)?);
            }
            let pw = packed.as_ref().ok_or("no packed weight")?;
            let x = HostTensor::from_f64(dtype, &[BATCH, k], &x32.to_f64());
            let full = quant_rows(h, pw, &x, precision)?;
            let want = reference::quant_gemm(&x, &w, None, precision, dtype);
            expect(
                "batch of 33",
                &full,
                &want,
                &budget(format, precision, dtype),
            )?;
            for (start, len) in SUBSETS {
                let got = quant_rows(h, pw, &rows(&x, start, len), precision)?;
                same_rows(&format!("quant_gemm M = {len}"), &got, &full, start)?;
            }
            Ok(Outcome::Pass)
        },
    )
}

/// `x · w` on the device, out in the dtype of `x`.
fn quant_rows(
    h: &Harness<'_>,
    w: &PackedWeight,
    x: &HostTensor,
    precision: Precision,
) -> Result<HostTensor, String> {
    let xd = h.upload(x)?;
    let mut out = h.output(x.dtype, &[x.shape[0], w.n])?;
    let args = QuantGemmArgs {
        x: xd.view(),
        w,
        bias: None,
        out: out.view_mut(),
        precision,
    };
    h.device
        .quant_gemm(args)
        .map_err(|e| op_failed("quant_gemm", e))?;
    h.read(&out)
}

// ---------------------------------------------------------------------------
// Paged attention

/// Tokens of the sequence under test (ends mid-block).
const SEQ: usize = 45;

fn paged_invariance(h: &Harness<'_>, dtype: DType, seed: u64) -> CaseResult {
    if let Some(skip) = not_declared(h) {
        return Ok(skip);
    }
    for_each_layout(h, dtype, |layout| paged_layout(h, dtype, layout, seed))
}

fn paged_layout(h: &Harness<'_>, dtype: DType, layout: KvLayout, seed: u64) -> CaseResult {
    let (bs, kv, group, hd) = (16, 2, 4, 64);
    let heads = kv * group;
    let spec = KvCacheSpec {
        num_blocks: 16,
        block_size: bs,
        num_kv_heads: kv,
        head_dim: hd,
        dtype,
        layout,
    };
    if let Err(m) = spec.validate() {
        return Ok(Outcome::Skip(m));
    }
    let params = AttentionParams::for_head_dim(hd);
    let desc = OpDesc::PagedAttention {
        dtype,
        num_heads: heads,
        cache: spec,
        sliding_window: false,
        softcap: false,
    };
    if let Some(skip) = refused(h, &desc) {
        return Ok(skip);
    }
    let mut rng = Rng::new(seed);
    let pool = block_pool(&mut rng, spec.num_blocks);
    // The sequence under test, then two others: one decoding at 30 tokens,
    // one prefilling its last 7 of 20.
    let filled = fill_cache(&mut rng, spec, 1.0, 1.0, &[SEQ, 30, 20], &pool)?;
    let blocks = &filled.blocks;
    let q = random(&mut rng, dtype, &[SEQ, heads, hd], 1.5);
    let q_decode = random(&mut rng, dtype, &[1, heads, hd], 1.5);
    let q_chunk = random(&mut rng, dtype, &[7, heads, hd], 1.5);
    let cache = upload_cache(h, &filled.host)?;

    // Run a batch of (sequence index, query_len, seq_len) with queries `q`.
    let run = |seqs: &[(usize, usize, usize)], q: &HostTensor| -> Result<HostTensor, String> {
        let shape: Vec<(usize, usize)> = seqs.iter().map(|&(_, ql, l)| (ql, l)).collect();
        let b: Vec<Vec<u32>> = seqs.iter().map(|&(s, _, _)| blocks[s].clone()).collect();
        let batch = build_batch(&shape, &b, bs)?;
        run_paged(h, &cache, q, &batch, params)
    };

    // The whole prefill in one call: the rows every other variant must match.
    let whole = run(&[(0, SEQ, SEQ)], &q)?;
    let batch = build_batch(&[(SEQ, SEQ)], &blocks[..1], bs)?;
    let want = reference_paged(&q, &filled.host, &batch, &params);
    expect_attention(&whole, &want, || {
        (
            reference_paged(&widened(&q), &filled.host, &batch, &params).to_f64(),
            naive_paged(&q, &filled.host, &batch, &params),
        )
    })?;

    // Chunked prefill.
    for (s, e) in [(0, 13), (13, 32), (32, SEQ)] {
        let got = run(&[(0, e - s, e)], &rows(&q, s, e - s))?;
        same_rows(&format!("chunk {s}..{e}"), &got, &whole, s)?;
    }
    // Token-by-token decode.
    for p in 0..SEQ {
        let got = run(&[(0, 1, p + 1)], &rows(&q, p, 1))?;
        same_rows(&format!("decode of token {p}"), &got, &whole, p)?;
    }
    // Inside mixed batches.
    let got = run(
        &[(1, 1, 30), (0, SEQ, SEQ), (2, 7, 20)],
        &concat(&[&q_decode, &q, &q_chunk]),
    )?;
    same_rows(
        "whole prefill in a mixed batch",
        &rows(&got, 1, SEQ),
        &whole,
        0,
    )?;
    let got = run(
        &[(2, 7, 20), (0, 13, SEQ), (1, 1, 30)],
        &concat(&[&q_chunk, &rows(&q, 32, 13), &q_decode]),
    )?;
    same_rows(
        "last chunk in a mixed batch",
        &rows(&got, 7, 13),
        &whole,
        32,
    )?;
    let got = run(
        &[(2, 7, 20), (0, 1, SEQ), (1, 1, 30)],
        &concat(&[&q_chunk, &rows(&q, SEQ - 1, 1), &q_decode]),
    )?;
    same_rows(
        "last decode step in a mixed batch",
        &rows(&got, 7, 1),
        &whole,
        SEQ - 1,
    )?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// RMS norm

fn norm_invariance(h: &Harness<'_>, dtype: DType, residual: bool, seed: u64) -> CaseResult {
    const EPS: f32 = 1e-5;
    if let Some(skip) = not_declared(h) {
        return Ok(skip);
    }
    let hidden = 1000;
    let mut rng = Rng::new(seed);
    let x = random(&mut rng, dtype, &[BATCH, hidden], 2.0);
    let res = random(&mut rng, dtype, &[BATCH, hidden], 1.0);
    let w = random(&mut rng, F32, &[hidden], 1.0);
    let wd = h.upload(&w)?;
    // Out and updated residual of `x` rows with `res` rows.
    let run = |x: &HostTensor, res: &HostTensor| -> Refusable<(HostTensor, HostTensor)> {
        let xd = h.upload(x)?;
        let mut rd = h.in_out(res)?;
        let mut out = h.output(dtype, &x.shape)?;
        let args = RmsNormArgs {
            x: xd.view(),
            residual: residual.then(|| rd.view_mut()),
            weight: wd.view(),
            eps: EPS,
            out: out.view_mut(),
        };
        if let Some(skip) = refused(h, &args.desc()) {
            return Ok(Err(skip));
        }
        h.device
            .rms_norm(args)
            .map_err(|e| op_failed("rms_norm", e))?;
        Ok(Ok((h.read(&out)?, h.read(&rd)?)))
    };
    let (full, full_res) = match run(&x, &res)? {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    let mut want_res = res.clone();
    let want = reference::rms_norm(&x, residual.then_some(&mut want_res), &w, EPS);
    expect("batch of 33", &full, &want, &Budget::for_dtype(dtype))?;
    for (start, len) in SUBSETS {
        let (got, got_res) = run(&rows(&x, start, len), &rows(&res, start, len))?
            .map_err(|_| "refused a smaller batch")?;
        same_rows(&format!("rms_norm M = {len}"), &got, &full, start)?;
        same_rows(
            &format!("updated residual M = {len}"),
            &got_res,
            &full_res,
            start,
        )?;
    }
    Ok(Outcome::Pass)
}
