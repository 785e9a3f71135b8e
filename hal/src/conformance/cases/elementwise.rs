//! The small ops: RMS norm (with and without the fused residual add, whose
//! updated residual is checked too; f32 and same-dtype weights), RoPE
//! (NeoX and GPT-J pairing, partial rotary, different query and key head
//! counts), SiLU-and-mul, embedding lookup (dense tables and packed GGUF
//! tables, out-of-range ids giving zero rows) and add (with and without a
//! broadcast row). RMS norm, SiLU-and-mul and add also run with a NaN and
//! an Inf injected into input rows and must reproduce the reference's
//! NaN/Inf pattern exactly.

use super::quant_gemm::{pack, random_weights, Format};
use super::{case, dt, expect, op_failed, random, refused, CaseResult};
use crate::conformance::{Budget, Case, Harness, Outcome, Rng};
use crate::reference::{self, Table};
use crate::rope_table::cos_sin_table;
use crate::{
    AddArgs, DType, EmbeddingArgs, EmbeddingTable, GgufType, HostTensor, OpDesc, QuantSpec,
    RmsNormArgs, RopeArgs, RopeStyle, SiluAndMulArgs, TableFormat,
};

use DType::{BF16, F16, F32};

/// The elementwise cases.
pub(super) fn cases() -> Vec<Case> {
    let mut v = rms_norm_cases();
    v.extend(rope_cases());
    v.extend(silu_cases());
    v.extend(embedding_cases());
    v.extend(add_cases());
    v
}

// ---------------------------------------------------------------------------
// RMS norm

#[derive(Clone, Copy, Debug)]
struct NormCase {
    dtype: DType,
    weight: DType,
    rows: usize,
    hidden: usize,
    residual: bool,
    /// A NaN in row 1 and an Inf in row 2 of `x`.
    poison: bool,
    seed: u64,
}

fn rms_norm_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let grid: &[(DType, DType, usize, usize, bool, bool)] = &[
        // dtype, weight, rows, hidden, residual, poison
        (F32, F32, 7, 1000, false, false),
        (F32, F32, 3, 33, true, false),
        (F16, F16, 33, 576, true, false),
        (F16, F32, 17, 1000, false, false),
        (BF16, F32, 5, 4096, true, false),
        (BF16, BF16, 9, 64, false, false),
        (F32, F32, 5, 100, true, true),
        (F16, F16, 4, 256, false, true),
        (BF16, BF16, 4, 96, true, true),
    ];
    grid.iter()
        .enumerate()
        .map(|(i, &(dtype, weight, rows, hidden, residual, poison))| {
            let c = NormCase {
                dtype,
                weight,
                rows,
                hidden,
                residual,
                poison,
                seed: 0x4e_0000 + i as u64,
            };
            let name = format!(
                "rms_norm_{}_w{}_t{rows}_h{hidden}{}{}",
                dt(dtype),
                dt(weight),
                if residual { "_residual" } else { "" },
                if poison { "_nan_inf_rows" } else { "" }
            );
            case(name, move |h| run_rms_norm(h, &c))
        })
        .collect()
}

/// RMS norm inputs: `x`, the residual, and a weight near 1.
fn norm_inputs(c: &NormCase) -> (HostTensor, HostTensor, HostTensor) {
    let mut rng = Rng::new(c.seed);
    let shape = [c.rows, c.hidden];
    let mut x = random(&mut rng, c.dtype, &shape, 2.0);
    let residual = random(&mut rng, c.dtype, &shape, 1.0);
    let w: Vec<f64> = rng.normals(c.hidden, 0.2).iter().map(|v| 1.0 + v).collect();
    if c.poison {
        x.set(c.hidden + 5, f64::NAN);
        x.set(2 * c.hidden + 3, f64::INFINITY);
    }
    (x, residual, HostTensor::from_f64(c.weight, &[c.hidden], &w))
}

fn run_rms_norm(h: &Harness<'_>, c: &NormCase) -> CaseResult {
    const EPS: f32 = 1e-5;
    let (x, mut residual, w) = norm_inputs(c);
    let (xd, wd) = (h.upload(&x)?, h.upload(&w)?);
    let mut res = h.in_out(&residual)?;
    let mut out = h.output(c.dtype, &x.shape)?;
    let args = RmsNormArgs {
        x: xd.view(),
        residual: c.residual.then(|| res.view_mut()),
        weight: wd.view(),
        eps: EPS,
        out: out.view_mut(),
    };
    if let Some(skip) = refused(h, &args.desc()) {
        return Ok(skip);
    }
    h.device
        .rms_norm(args)
        .map_err(|e| op_failed("rms_norm", e))?;
    let got = h.read(&out)?;
    let got_res = h.read(&res)?;
    let want = reference::rms_norm(&x, c.residual.then_some(&mut residual), &w, EPS);
    expect("out", &got, &want, &Budget::for_dtype(c.dtype))?;
    // The stored residual is `x + residual` rounded once: exact. Without a
    // residual the buffer must be untouched.
    expect("residual", &got_res, &residual, &Budget::EXACT)?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// RoPE

#[derive(Clone, Copy, Debug)]
struct RopeCase {
    dtype: DType,
    style: RopeStyle,
    tokens: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    seed: u64,
}

fn rope_cases() -> Vec<Case> {
    use RopeStyle::{Gptj, Neox};
    #[rustfmt::skip]
    let grid: &[(DType, RopeStyle, usize, usize, usize, usize, usize)] = &[
        // dtype, style, tokens, heads, kv_heads, head_dim, rotary_dim
        (F32, Neox, 7, 4, 2, 64, 64),
        (F32, Gptj, 7, 4, 2, 64, 64),
        (F16, Neox, 9, 8, 1, 128, 64),
        (BF16, Gptj, 5, 3, 3, 96, 32),
        (BF16, Neox, 33, 2, 1, 80, 80),
        (F16, Gptj, 4, 6, 2, 256, 128),
        (F32, Neox, 3, 5, 1, 128, 96),
        (F32, Gptj, 11, 2, 4, 80, 40),
    ];
    grid.iter()
        .enumerate()
        .map(
            |(i, &(dtype, style, tokens, heads, kv_heads, head_dim, rotary_dim))| {
                let c = RopeCase {
                    dtype,
                    style,
                    tokens,
                    heads,
                    kv_heads,
                    head_dim,
                    rotary_dim,
                    seed: 0x20_0000 + i as u64,
                };
                let name = format!(
                    "rope_{}_{}_t{tokens}_h{heads}_kv{kv_heads}_hd{head_dim}_rot{rotary_dim}",
                    match style {
                        Neox => "neox",
                        Gptj => "gptj",
                    },
                    dt(dtype)
                );
                case(name, move |h| run_rope(h, &c))
            },
        )
        .collect()
}

fn run_rope(h: &Harness<'_>, c: &RopeCase) -> CaseResult {
    const MAX_POSITION: usize = 2048;
    let mut rng = Rng::new(c.seed);
    let mut q = random(&mut rng, c.dtype, &[c.tokens, c.heads, c.head_dim], 1.0);
    let mut k = random(&mut rng, c.dtype, &[c.tokens, c.kv_heads, c.head_dim], 1.0);
    // Random positions, including the first and the last of the table.
    let mut pos: Vec<i64> = (0..c.tokens)
        .map(|_| rng.below(MAX_POSITION) as i64)
        .collect();
    pos[0] = 0;
    if c.tokens > 1 {
        pos[1] = MAX_POSITION as i64 - 1;
    }
    let table = cos_sin_table(c.rotary_dim, MAX_POSITION, 10_000.0, None);
    let cos_sin = HostTensor::from_f32(F32, &[MAX_POSITION, c.rotary_dim], &table);
    let positions = HostTensor::from_i64(&[c.tokens], &pos);
    let (pd, cd) = (h.upload(&positions)?, h.upload(&cos_sin)?);
    let (mut qd, mut kd) = (h.in_out(&q)?, h.in_out(&k)?);
    let args = RopeArgs {
        positions: pd.view(),
        q: qd.view_mut(),
        k: kd.view_mut(),
        cos_sin_cache: cd.view(),
        style: c.style,
    };
    if let Some(skip) = refused(h, &args.desc()) {
        return Ok(skip);
    }
    h.device.rope(args).map_err(|e| op_failed("rope", e))?;
    let (got_q, got_k) = (h.read(&qd)?, h.read(&kd)?);
    reference::rope(&pos, &mut q, &mut k, &cos_sin, c.style);
    expect("q", &got_q, &q, &Budget::for_dtype(c.dtype))?;
    expect("k", &got_k, &k, &Budget::for_dtype(c.dtype))?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// SiLU and mul

fn silu_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let grid: &[(DType, usize, usize, bool)] = &[
        // dtype, tokens, intermediate, poison
        (F32, 7, 300, false),
        (F16, 33, 128, false),
        (BF16, 5, 1000, false),
        (F32, 1, 11008, false),
        (F32, 4, 64, true),
        (BF16, 4, 64, true),
    ];
    grid.iter()
        .enumerate()
        .map(|(i, &(dtype, tokens, inter, poison))| {
            let name = format!(
                "silu_and_mul_{}_t{tokens}_i{inter}{}",
                dt(dtype),
                if poison { "_nan_inf_rows" } else { "" }
            );
            let seed = 0x51_0000 + i as u64;
            case(name, move |h| {
                run_silu(h, dtype, tokens, inter, poison, seed)
            })
        })
        .collect()
}

fn run_silu(
    h: &Harness<'_>,
    dtype: DType,
    tokens: usize,
    inter: usize,
    poison: bool,
    seed: u64,
) -> CaseResult {
    let mut rng = Rng::new(seed);
    // Gates spread wide enough to reach both tails of the sigmoid.
    let mut x = random(&mut rng, dtype, &[tokens, 2 * inter], 3.0);
    if poison {
        let w = 2 * inter;
        x.set(w + 2, f64::NAN); // gate NaN → NaN
        x.set(2 * w + 7, f64::INFINITY); // gate +Inf → ±Inf
        x.set(3 * w + inter + 1, f64::INFINITY); // up +Inf → ±Inf
    }
    let xd = h.upload(&x)?;
    let mut out = h.output(dtype, &[tokens, inter])?;
    let args = SiluAndMulArgs {
        x: xd.view(),
        out: out.view_mut(),
    };
    if let Some(skip) = refused(h, &args.desc()) {
        return Ok(skip);
    }
    h.device
        .silu_and_mul(args)
        .map_err(|e| op_failed("silu_and_mul", e))?;
    let got = h.read(&out)?;
    let want = reference::silu_and_mul(&x);
    expect("out", &got, &want, &Budget::for_dtype(dtype))?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// Embedding

/// Where an embedding case's table comes from.
#[derive(Clone, Copy, Debug)]
enum TableKind {
    Dense(DType),
    Gguf(GgufType),
}

fn embedding_cases() -> Vec<Case> {
    use TableKind::{Dense, Gguf};
    let grid: &[(TableKind, DType)] = &[
        (Dense(F32), F32),
        (Dense(F16), F16),
        (Dense(BF16), F32),
        (Dense(F32), BF16),
        (Gguf(GgufType::Q8_0), F32),
        (Gguf(GgufType::Q4_0), F16),
        (Gguf(GgufType::Q4_1), BF16),
    ];
    grid.iter()
        .enumerate()
        .map(|(i, &(table, out))| {
            let name = format!(
                "embedding_{}_to_{}_out_of_range_ids",
                match table {
                    Dense(d) => dt(d).to_string(),
                    Gguf(ty) => ty.name().to_string(),
                },
                dt(out)
            );
            let seed = 0xe3_0000 + i as u64;
            case(name, move |h| run_embedding(h, table, out, seed))
        })
        .collect()
}

fn run_embedding(h: &Harness<'_>, table: TableKind, out_dtype: DType, seed: u64) -> CaseResult {
    const VOCAB: usize = 50;
    const HIDDEN: usize = 96;
    let mut rng = Rng::new(seed);
    // Every row once in random order, the last row, and ids outside the
    // vocabulary (→ zero rows): VOCAB, −1 and i32::MAX.
    let mut ids: Vec<i32> = rng.permutation(VOCAB).iter().map(|&i| i as i32).collect();
    ids.extend([VOCAB as i32 - 1, VOCAB as i32, -1, i32::MAX, 0]);
    let idt = HostTensor::from_i32(&[ids.len()], &ids);
    let id_dev = h.upload(&idt)?;
    let mut out = h.output(out_dtype, &[ids.len(), HIDDEN])?;
    let want = match table {
        TableKind::Dense(d) => {
            let tab = random(&mut rng, d, &[VOCAB, HIDDEN], 1.0);
            let td = h.upload(&tab)?;
            let args = EmbeddingArgs {
                ids: id_dev.view(),
                table: EmbeddingTable::Dense(td.view()),
                out: out.view_mut(),
            };
            if let Some(skip) = refused(h, &args.desc()) {
                return Ok(skip);
            }
            h.device
                .embedding(args)
                .map_err(|e| op_failed("embedding", e))?;
            reference::embedding(&ids, Table::Dense(&tab), out_dtype)
        }
        TableKind::Gguf(ty) => {
            let w = random_weights(&mut rng, Format::Gguf(ty), VOCAB, HIDDEN);
            let desc = OpDesc::Embedding {
                table: TableFormat::Quant(QuantSpec::Gguf(ty)),
                output: out_dtype,
            };
            if let Some(skip) = refused(h, &desc) {
                return Ok(skip);
            }
            let packed = pack(h, &w)?;
            let args = EmbeddingArgs {
                ids: id_dev.view(),
                table: EmbeddingTable::Quant(&packed),
                out: out.view_mut(),
            };
            h.device
                .embedding(args)
                .map_err(|e| op_failed("embedding", e))?;
            reference::embedding(&ids, Table::Quant(&w), out_dtype)
        }
    };
    let got = h.read(&out)?;
    expect("out", &got, &want, &Budget::for_dtype(out_dtype))?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// Add

fn add_cases() -> Vec<Case> {
    #[rustfmt::skip]
    let grid: &[(DType, usize, usize, bool, bool)] = &[
        // dtype, rows, n, broadcast, poison
        (F32, 7, 300, false, false),
        (F16, 33, 128, true, false),
        (BF16, 5, 1000, false, false),
        (F32, 3, 77, true, false),
        (F32, 4, 64, false, true),
        (F16, 4, 64, true, true),
    ];
    grid.iter()
        .enumerate()
        .map(|(i, &(dtype, rows, n, broadcast, poison))| {
            let name = format!(
                "add_{}_r{rows}_n{n}{}{}",
                dt(dtype),
                if broadcast { "_broadcast" } else { "" },
                if poison { "_nan_inf_rows" } else { "" }
            );
            let seed = 0xadd_0000 + i as u64;
            case(name, move |h| {
                run_add(h, dtype, rows, n, broadcast, poison, seed)
            })
        })
        .collect()
}

fn run_add(
    h: &Harness<'_>,
    dtype: DType,
    rows: usize,
    n: usize,
    broadcast: bool,
    poison: bool,
    seed: u64,
) -> CaseResult {
    let mut rng = Rng::new(seed);
    let mut a = random(&mut rng, dtype, &[rows, n], 1.0);
    let b_shape: &[usize] = if broadcast { &[n] } else { &[rows, n] };
    let mut b = random(&mut rng, dtype, b_shape, 1.0);
    if poison {
        a.set(n + 3, f64::NAN); // NaN + x = NaN
        a.set(2 * n + 5, f64::NEG_INFINITY);
        b.set(4, f64::INFINITY); // x + Inf = Inf; broadcast: every row
        if !broadcast {
            b.set(2 * n + 5, f64::INFINITY); // −Inf + Inf = NaN
        }
    }
    let (ad, bd) = (h.upload(&a)?, h.upload(&b)?);
    let mut out = h.output(dtype, &[rows, n])?;
    let args = AddArgs {
        a: ad.view(),
        b: bd.view(),
        out: out.view_mut(),
    };
    if let Some(skip) = refused(h, &args.desc()) {
        return Ok(skip);
    }
    h.device.add(args).map_err(|e| op_failed("add", e))?;
    let got = h.read(&out)?;
    let want = reference::add(&a, &b);
    expect("out", &got, &want, &Budget::for_dtype(dtype))?;
    Ok(Outcome::Pass)
}
