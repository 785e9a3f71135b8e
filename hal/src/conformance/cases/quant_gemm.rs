//! Quantised GEMM: every format, packed with the checkpoint rules, against
//! `x̂ · dequant(W)ᵀ` from the reference — and, per format, a weight built
//! by hand whose dequantised values are written out in this file, so a
//! packing mistake the reference shares (a nibble order, a zero offset, a
//! sign) still fails.
//!
//! Random weights come from random *logical* integers and scales, packed
//! with [`awq::pack_row`], [`gptq::pack_qweight`] / [`gptq::pack_qzeros`],
//! [`gguf::quantize_row`] and [`f32_to_e4m3`]. N and K are not multiples of
//! any tile (N = 72 / 130 / 136; K = 96 … 384, multiples of the group), group
//! sizes 32 / 64 / 128, GPTQ act-order, M ∈ {1, 5, 33}, x in f32 / f16 /
//! bf16, with and without bias, in both precision modes. Budgets:
//! [`Budget::quant_weights`] (exact activations),
//! [`Budget::int8_activations`], [`Budget::fp8_w8a8`].

use half::f16;

use super::{case, dt, expect, op_failed, random, refused, CaseResult, Refusable};
use crate::conformance::{Budget, Case, Harness, Outcome, Rng};
use crate::fp8::f32_to_e4m3;
use crate::quant::{awq, gguf, gptq};
use crate::{
    reference, ActivationScale, DType, GgufType, HostTensor, OpDesc, Precision, QuantGemmArgs,
    QuantWeights, ScaleGranularity,
};

use DType::{BF16, F16, F32};

/// A quantised weight format with the parameters a case varies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Format {
    /// AWQ with this group size.
    Awq(usize),
    /// GPTQ: bits, group size, act-order (random `g_idx` permutation),
    /// explicit trivial `g_idx`.
    Gptq(u8, usize, bool, bool),
    /// A GGUF block type.
    Gguf(GgufType),
    /// FP8 W8A8: weight scale layout, activation scaling; a static input
    /// scale small enough that some activations saturate at ±448.
    Fp8(ScaleGranularity, ActivationScale, bool),
}

impl Format {
    /// Name prefix for cases (`awq_g128`, `gptq4_g64_act_order`, `q4_0`,
    /// `fp8_channel_dyn_token`).
    pub(super) fn name(&self) -> String {
        match *self {
            Format::Awq(g) => format!("awq_g{g}"),
            Format::Gptq(bits, g, act, trivial) => format!(
                "gptq{bits}_g{g}{}{}",
                if act { "_act_order" } else { "" },
                if trivial { "_gidx_trivial" } else { "" }
            ),
            Format::Gguf(ty) => ty.name().to_string(),
            Format::Fp8(w, a, sat) => format!(
                "fp8_{}_{}{}",
                match w {
                    ScaleGranularity::PerTensor => "tensor",
                    ScaleGranularity::PerChannel => "channel",
                },
                match a {
                    ActivationScale::Static => "static",
                    ActivationScale::DynamicPerTensor => "dyn_tensor",
                    ActivationScale::DynamicPerToken => "dyn_token",
                },
                if sat { "_saturating" } else { "" }
            ),
        }
    }
}

/// A random weight `[n, k]` of `format`, from random logical values packed
/// with the format's own rules.
pub(super) fn random_weights(rng: &mut Rng, format: Format, n: usize, k: usize) -> QuantWeights {
    let uniform_f16 = |rng: &mut Rng, len: usize, lo: f64, hi: f64| -> Vec<f16> {
        (0..len)
            .map(|_| f16::from_f64(rng.uniform(lo, hi)))
            .collect()
    };
    match format {
        Format::Awq(g) => {
            let groups = k / g;
            let q: Vec<u8> = (0..k * n).map(|_| rng.below(16) as u8).collect();
            let z: Vec<u8> = (0..groups * n).map(|_| rng.below(16) as u8).collect();
            QuantWeights::Awq {
                group_size: g,
                n,
                k,
                qweight: q.chunks(n).flat_map(awq::pack_row).collect(),
                qzeros: z.chunks(n).flat_map(awq::pack_row).collect(),
                scales: uniform_f16(rng, groups * n, 0.002, 0.02),
            }
        }
        Format::Gptq(bits, g, act_order, trivial) => {
            let groups = gptq::num_groups(k, g);
            let levels = 1usize << bits;
            let q: Vec<u8> = (0..k * n).map(|_| rng.below(levels) as u8).collect();
            // True zero points in 1..levels (stored minus one).
            let z: Vec<u8> = (0..groups * n)
                .map(|_| 1 + rng.below(levels - 1) as u8)
                .collect();
            let smax = if bits == 4 { 0.02 } else { 0.0015 };
            let g_idx = if act_order {
                // Every group keeps its size; which rows belong to it is shuffled.
                let perm = rng.permutation(k);
                Some(perm.iter().map(|&p| (p / g) as i32).collect())
            } else if trivial {
                Some((0..k).map(|i| (i / g) as i32).collect())
            } else {
                None
            };
            QuantWeights::Gptq {
                bits,
                group_size: g,
                n,
                k,
                qweight: gptq::pack_qweight(bits, k, n, &q),
                qzeros: gptq::pack_qzeros(bits, groups, n, &z),
                scales: uniform_f16(rng, groups * n, smax / 10.0, smax),
                g_idx,
            }
        }
        Format::Gguf(ty) => {
            let std = 1.0 / (k as f64).sqrt();
            let data = (0..n)
                .flat_map(|_| {
                    let row: Vec<f32> = rng.normals(k, std).iter().map(|&v| v as f32).collect();
                    gguf::quantize_row(ty, &row)
                })
                .collect();
            QuantWeights::Gguf { ty, n, k, data }
        }
        Format::Fp8(granularity, activation, saturating) => {
            let weight = rng
                .normals(n * k, 1.0)
                .iter()
                .map(|&v| f32_to_e4m3(v as f32))
                .collect();
            let weight_scale = match granularity {
                ScaleGranularity::PerTensor => vec![0.02],
                ScaleGranularity::PerChannel => {
                    (0..n).map(|_| rng.uniform(0.005, 0.04) as f32).collect()
                }
            };
            QuantWeights::Fp8 {
                n,
                k,
                weight,
                weight_scale,
                activation,
                // x ~ N(0, 1): |x| / 0.02 stays below 448; / 0.004 does not.
                input_scale: (activation == ActivationScale::Static).then_some(if saturating {
                    0.004
                } else {
                    0.02
                }),
            }
        }
    }
}

/// The budget of a format in a precision mode, for an output dtype.
pub(super) fn budget(format: Format, precision: Precision, out: DType) -> Budget {
    match (format, precision) {
        (Format::Fp8(..), _) => Budget::fp8_w8a8(out),
        (_, Precision::Int8Activations) => Budget::int8_activations(out),
        (_, Precision::Exact) => Budget::quant_weights(out),
    }
}

/// One random quantised-GEMM case.
#[derive(Clone, Copy, Debug)]
struct QuantCase {
    format: Format,
    x: DType,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    precision: Precision,
    seed: u64,
}

impl QuantCase {
    fn name(&self) -> String {
        let mut s = format!(
            "{}_{}_m{}_n{}_k{}",
            self.format.name(),
            dt(self.x),
            self.m,
            self.n,
            self.k
        );
        if self.bias {
            s += "_bias";
        }
        if self.precision == Precision::Int8Activations {
            s += "_int8";
        }
        s
    }
}

/// The quantised-GEMM cases.
pub(super) fn cases() -> Vec<Case> {
    use ActivationScale::{DynamicPerTensor as DynT, DynamicPerToken as DynTok, Static};
    use Precision::{Exact, Int8Activations as Int8};
    use ScaleGranularity::{PerChannel as Chan, PerTensor as Tens};
    let (q40, q41, q80) = (GgufType::Q4_0, GgufType::Q4_1, GgufType::Q8_0);
    #[rustfmt::skip]
    let grid: &[(Format, DType, usize, usize, usize, bool, Precision)] = &[
        // format, x, m, n, k, bias, precision
        (Format::Awq(32), F16, 1, 72, 96, false, Exact),
        (Format::Awq(64), F32, 5, 136, 192, true, Exact),
        (Format::Awq(128), BF16, 33, 72, 384, false, Exact),
        (Format::Awq(128), F16, 33, 136, 384, true, Int8),
        (Format::Gptq(4, 32, false, false), F32, 1, 72, 96, false, Exact),
        (Format::Gptq(4, 64, false, false), F16, 33, 136, 192, true, Exact),
        (Format::Gptq(4, 128, true, false), F16, 5, 72, 384, false, Exact),
        (Format::Gptq(4, 64, true, false), BF16, 33, 136, 192, false, Int8),
        (Format::Gptq(4, 128, false, true), F32, 5, 72, 256, false, Exact),
        // K = 200 with G = 128: the last group is partial (K/G rounds up).
        (Format::Gptq(4, 128, false, false), F16, 5, 72, 200, true, Exact),
        (Format::Gptq(8, 32, false, false), F16, 5, 72, 96, false, Exact),
        (Format::Gptq(8, 128, false, false), F32, 33, 136, 384, true, Exact),
        (Format::Gptq(8, 64, true, false), BF16, 1, 72, 192, false, Exact),
        (Format::Gptq(8, 128, false, false), F16, 33, 72, 256, false, Int8),
        (Format::Gguf(q40), F32, 1, 72, 96, false, Exact),
        (Format::Gguf(q40), F16, 33, 130, 160, true, Exact),
        (Format::Gguf(q40), F32, 33, 72, 256, false, Int8),
        (Format::Gguf(q41), F32, 5, 130, 96, false, Exact),
        (Format::Gguf(q41), BF16, 33, 72, 160, true, Exact),
        (Format::Gguf(q41), F32, 5, 72, 96, false, Int8),
        (Format::Gguf(q80), F16, 1, 130, 160, false, Exact),
        (Format::Gguf(q80), F32, 33, 72, 96, true, Exact),
        (Format::Gguf(q80), F16, 5, 72, 256, false, Int8),
        (Format::Fp8(Tens, Static, false), F16, 5, 72, 256, false, Exact),
        (Format::Fp8(Chan, Static, false), BF16, 33, 136, 100, true, Exact),
        (Format::Fp8(Tens, DynT, false), F32, 33, 72, 256, false, Exact),
        (Format::Fp8(Chan, DynTok, false), F16, 1, 136, 256, true, Exact),
        (Format::Fp8(Chan, DynTok, false), BF16, 33, 72, 100, false, Exact),
        (Format::Fp8(Tens, Static, true), F32, 5, 72, 256, false, Exact),
        (Format::Fp8(Chan, DynT, false), F16, 5, 130, 96, true, Exact),
        (Format::Fp8(Tens, DynTok, false), F32, 33, 72, 160, false, Exact),
    ];
    let mut out: Vec<Case> = grid
        .iter()
        .enumerate()
        .map(|(i, &(format, x, m, n, k, bias, precision))| {
            let c = QuantCase {
                format,
                x,
                m,
                n,
                k,
                bias,
                precision,
                seed: 0x9a_0000 + i as u64,
            };
            case(c.name(), move |h| run(h, &c))
        })
        .collect();
    out.extend(by_hand_cases());
    out
}

/// Pack `w` on the device, mapping errors to failure messages.
pub(super) fn pack(h: &Harness<'_>, w: &QuantWeights) -> Result<crate::PackedWeight, String> {
    w.validate()
        .map_err(|e| format!("case built an invalid weight: {e}"))?;
    h.device.pack(w).map_err(|e| op_failed("pack", e))
}

/// The [`OpDesc`] of a quantised GEMM (asked before `pack`, which needs support).
pub(super) fn desc(w: &QuantWeights, x: DType, out: DType, precision: Precision) -> OpDesc {
    OpDesc::QuantGemm {
        spec: w.spec(),
        input: x,
        output: out,
        precision,
        n: w.n(),
        k: w.k(),
    }
}

/// Run `x · w` on the device: pack, upload, run, read back `[M, N]` in the
/// dtype of `x`. `None` when the backend refuses the op.
pub(super) fn run_on_device(
    h: &Harness<'_>,
    w: &QuantWeights,
    x: &HostTensor,
    bias: Option<&HostTensor>,
    precision: Precision,
) -> Refusable<HostTensor> {
    let d = desc(w, x.dtype, x.dtype, precision);
    if let Some(skip) = refused(h, &d) {
        return Ok(Err(skip));
    }
    let packed = pack(h, w)?;
    if packed.spec != w.spec() || packed.n != w.n() || packed.k != w.k() {
        return Err(format!(
            "pack returned spec {:?} [{}, {}] for a {:?} [{}, {}] weight",
            packed.spec,
            packed.n,
            packed.k,
            w.spec(),
            w.n(),
            w.k()
        ));
    }
    let xd = h.upload(x)?;
    let bd = bias.map(|b| h.upload(b)).transpose()?;
    let m = x.shape[0];
    let mut out = h.output(x.dtype, &[m, w.n()])?;
    let args = QuantGemmArgs {
        x: xd.view(),
        w: &packed,
        bias: bd.as_ref().map(|b| b.view()),
        out: out.view_mut(),
        precision,
    };
    if args.desc() != d {
        return Err(format!(
            "args.desc() {:?} differs from the weight's {d:?}",
            args.desc()
        ));
    }
    h.device
        .quant_gemm(args)
        .map_err(|e| op_failed("quant_gemm", e))?;
    Ok(Ok(h.read(&out)?))
}

fn run(h: &Harness<'_>, c: &QuantCase) -> CaseResult {
    let mut rng = Rng::new(c.seed);
    let w = random_weights(&mut rng, c.format, c.n, c.k);
    let x = random(&mut rng, c.x, &[c.m, c.k], 1.0);
    let bias = c.bias.then(|| random(&mut rng, c.x, &[c.n], 0.5));
    let got = match run_on_device(h, &w, &x, bias.as_ref(), c.precision)? {
        Ok(t) => t,
        Err(skip) => return Ok(skip),
    };
    let want = reference::quant_gemm(&x, &w, bias.as_ref(), c.precision, c.x);
    expect("out", &got, &want, &budget(c.format, c.precision, c.x))?;
    Ok(Outcome::Pass)
}

// ---------------------------------------------------------------------------
// Weights built by hand.
//
// Each builder writes the packed words / bytes literally and states the
// dequantised values they encode, worked out from the layout rules in
// `crate::quant`. The case multiplies one-hot rows of x (row i selects input
// feature `picks[i]`), so `out[i, n] = W[n, picks[i]]`, and compares with
// those hand-written numbers — not with the reference. Columns repeat with a
// short period so any N a tile needs is covered by the same few numbers.

/// A weight built by hand and what it must decode to.
struct HandWeight {
    w: QuantWeights,
    /// Input features the one-hot rows select.
    picks: Vec<usize>,
    /// `expected[i][n % period]` is `W[n, picks[i]]`.
    expected: Vec<Vec<f64>>,
}

fn f16s(v: f32, len: usize) -> Vec<f16> {
    vec![f16::from_f32(v); len]
}

/// AWQ, K = 128, N = 64, G = 64. Word `0x76543210`: nibble i holds i, i.e.
/// logical columns `8c + [0,2,4,6,1,3,5,7]` hold 0..8, so columns 0..8 read
/// `q = [0,4,1,5,2,6,3,7]`; `0xFEDCBA98` likewise reads
/// `[8,12,9,13,10,14,11,15]`. Even rows of K use the first, odd rows the
/// second. Zeros: group 0 word `0x01234567` (nibble i = 7 − i) reads
/// `z = [7,3,6,2,5,1,4,0]`; group 1 word
/// `0x88888888`, z = 8. Scales 0.5 (group 0) and 0.25 (group 1).
fn awq_by_hand() -> HandWeight {
    let (k, n, g) = (128, 64, 64);
    let words = n / 8;
    let qweight = (0..k)
        .flat_map(|kk| {
            let w = if kk % 2 == 0 {
                0x7654_3210u32
            } else {
                0xFEDC_BA98
            };
            vec![w as i32; words]
        })
        .collect();
    let mut qzeros = vec![0x0123_4567i32; words];
    qzeros.extend(vec![0x8888_8888u32 as i32; words]);
    let mut scales = f16s(0.5, n);
    scales.extend(f16s(0.25, n));
    HandWeight {
        w: QuantWeights::Awq {
            group_size: g,
            n,
            k,
            qweight,
            qzeros,
            scales,
        },
        picks: vec![0, 1, 64, 127],
        expected: vec![
            // k = 0: ([0,4,1,5,2,6,3,7] − [7,3,6,2,5,1,4,0]) · 0.5
            vec![-3.5, 0.5, -2.5, 1.5, -1.5, 2.5, -0.5, 3.5],
            // k = 1: ([8,12,9,13,10,14,11,15] − z) · 0.5
            vec![0.5, 4.5, 1.5, 5.5, 2.5, 6.5, 3.5, 7.5],
            // k = 64: ([0,4,1,5,2,6,3,7] − 8) · 0.25
            vec![-2.0, -1.0, -1.75, -0.75, -1.5, -0.5, -1.25, -0.25],
            // k = 127: ([8,12,9,13,10,14,11,15] − 8) · 0.25
            vec![0.0, 1.0, 0.25, 1.25, 0.5, 1.5, 0.75, 1.75],
        ],
    }
}

/// GPTQ 4-bit, K = 128, N = 64, G = 64. qweight word `[r, n]` packs
/// `q[8r..8r+8, n]` along K, low nibble first: `0x76543210` (even n) gives
/// q = k % 8, `0xFEDCBA98` (odd n) q = 8 + k % 8. qzeros group 0 word
/// `0x01234567` stores z − 1 = 7 − j for column 8c + j, so z = 8 − n % 8;
/// group 1 word 0 stores z − 1 = 0, z = 1. Scales 0.5 and 0.125.
fn gptq4_by_hand() -> HandWeight {
    let (k, n, g) = (128, 64, 64);
    let qweight = (0..k / 8)
        .flat_map(|_| {
            (0..n).map(|nn| {
                if nn % 2 == 0 {
                    0x7654_3210u32
                } else {
                    0xFEDC_BA98
                }
            })
        })
        .map(|w| w as i32)
        .collect();
    let mut qzeros = vec![0x0123_4567i32; n / 8];
    qzeros.extend(vec![0i32; n / 8]);
    let mut scales = f16s(0.5, n);
    scales.extend(f16s(0.125, n));
    HandWeight {
        w: QuantWeights::Gptq {
            bits: 4,
            group_size: g,
            n,
            k,
            qweight,
            qzeros,
            scales,
            g_idx: None,
        },
        picks: vec![3, 14, 69],
        expected: vec![
            // k = 3: q = [3,11,3,11,3,11,3,11], z = [8,7,6,5,4,3,2,1], s = 0.5
            vec![-2.5, 2.0, -1.5, 3.0, -0.5, 4.0, 0.5, 5.0],
            // k = 14: q = [6,14,…], same z and s
            vec![-1.0, 3.5, 0.0, 4.5, 1.0, 5.5, 2.0, 6.5],
            // k = 69 (group 1): q = [5,13,…], z = 1, s = 0.125
            vec![0.5, 1.5],
        ],
    }
}

/// GPTQ 8-bit, K = 128, N = 64, G = 64. qweight word `[r, n]` packs
/// `q[4r..4r+4, n]`, low byte first: `0x30201000` (even n) gives
/// q = [0,16,32,48][k % 4], `0xF0E0D0C0` (odd n) q = [192,208,224,240][k % 4].
/// qzeros group 0 word `0x7F7E7D7C` stores `z − 1 = [124,125,126,127]` for
/// column 4c + j, so `z = [125,126,127,128]`; group 1 word `0x80808080`,
/// z = 129. Scales 0.25 and 0.5.
fn gptq8_by_hand() -> HandWeight {
    let (k, n, g) = (128, 64, 64);
    let qweight = (0..k / 4)
        .flat_map(|_| {
            (0..n).map(|nn| {
                if nn % 2 == 0 {
                    0x3020_1000u32
                } else {
                    0xF0E0_D0C0
                }
            })
        })
        .map(|w| w as i32)
        .collect();
    let mut qzeros = vec![0x7F7E_7D7Ci32; n / 4];
    qzeros.extend(vec![0x8080_8080u32 as i32; n / 4]);
    let mut scales = f16s(0.25, n);
    scales.extend(f16s(0.5, n));
    HandWeight {
        w: QuantWeights::Gptq {
            bits: 8,
            group_size: g,
            n,
            k,
            qweight,
            qzeros,
            scales,
            g_idx: None,
        },
        picks: vec![1, 2, 67],
        expected: vec![
            // k = 1: q = [16,208,16,208] − z [125,126,127,128] = [−109,82,−111,80], · 0.25
            vec![-27.25, 20.5, -27.75, 20.0],
            // k = 2: q = [32,224,32,224] − z = [−93,98,−95,96], · 0.25
            vec![-23.25, 24.5, -23.75, 24.0],
            // k = 67 (group 1): q = [48,240] − 129 = [−81,111], · 0.5
            vec![-40.5, 55.5],
        ],
    }
}

/// A GGUF weight `[64, 64]` whose rows alternate between two hand-made row
/// encodings (`even`, `odd`), each two 32-element blocks.
fn gguf_rows(ty: GgufType, even: Vec<u8>, odd: Vec<u8>) -> QuantWeights {
    let (n, k) = (64, 64);
    let data = (0..n)
        .flat_map(|r| {
            if r % 2 == 0 {
                even.clone()
            } else {
                odd.clone()
            }
        })
        .collect();
    QuantWeights::Gguf { ty, n, k, data }
}

/// One 4-bit GGUF block: header bytes then `qs[i] = lo(i) | hi(i) << 4`.
fn nibble_block(header: &[f32], lo: impl Fn(u8) -> u8, hi: impl Fn(u8) -> u8) -> Vec<u8> {
    let mut b: Vec<u8> = header
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    b.extend((0..16u8).map(|i| lo(i) | (hi(i) << 4)));
    b
}

/// Q4_0: element j < 16 is the low nibble of `qs[j]`, j ≥ 16 the high
/// nibble of `qs[j − 16]`; value `(q − 8) · d`. Block 0 has `qs[i] = i |
/// (15 − i) << 4`, so element j reads q = j (j < 16) or 31 − j (j ≥ 16);
/// d = 0.5 on even rows, 0.25 on odd rows. Block 1 has `qs[i] = (15 − i) |
/// i << 4` and d = 1 on every row.
fn q4_0_by_hand() -> HandWeight {
    let block1 = nibble_block(&[1.0], |i| 15 - i, |i| i);
    let row = |d: f32| {
        let mut r = nibble_block(&[d], |i| i, |i| 15 - i);
        r.extend(&block1);
        r
    };
    HandWeight {
        w: gguf_rows(GgufType::Q4_0, row(0.5), row(0.25)),
        picks: vec![3, 17, 30, 37],
        expected: vec![
            vec![-2.5, -1.25], // k = 3: q = 3, (3 − 8) · d
            vec![3.0, 1.5],    // k = 17: high nibble of qs[1] = 14, (14 − 8) · d
            vec![-3.5, -1.75], // k = 30: high nibble of qs[14] = 1, (1 − 8) · d
            vec![2.0],         // k = 37: block 1, low nibble of qs[5] = 10, (10 − 8) · 1
        ],
    }
}

/// Q4_1: value `q · d + m`. One block pattern `qs[i] = i | (15 − i) << 4`
/// (q = j for j < 16, 31 − j for j ≥ 16); even rows d = 0.25, m = −1; odd
/// rows d = 0.5, m = 0.5. Block 1 has d = 1, m = −8 and `qs[i] = 15 − i | i << 4`.
fn q4_1_by_hand() -> HandWeight {
    let block1 = nibble_block(&[1.0, -8.0], |i| 15 - i, |i| i);
    let row = |d: f32, m: f32| {
        let mut r = nibble_block(&[d, m], |i| i, |i| 15 - i);
        r.extend(&block1);
        r
    };
    HandWeight {
        w: gguf_rows(GgufType::Q4_1, row(0.25, -1.0), row(0.5, 0.5)),
        picks: vec![3, 17, 30, 52],
        expected: vec![
            vec![-0.25, 2.0], // k = 3: q = 3
            vec![2.5, 7.5],   // k = 17: q = 14
            vec![-0.75, 1.0], // k = 30: q = 1
            vec![-4.0],       // k = 52: block 1, j = 20, high nibble of qs[4] = 4, 4 − 8
        ],
    }
}

/// Q8_0: value `qs[j] as i8 · d`. Even rows `qs[j] = j − 16`, d = 0.5; odd
/// rows `qs[j] = 16 − j`, d = 0.25; block 1 is all −128 … −97 (`qs[j] = j −
/// 128`) with d = 0.125 on every row.
fn q8_0_by_hand() -> HandWeight {
    let block = |d: f32, q: &dyn Fn(i32) -> i32| {
        let mut b = f16::from_f32(d).to_le_bytes().to_vec();
        b.extend((0..32).map(|j| q(j) as i8 as u8));
        b
    };
    let block1 = block(0.125, &|j| j - 128);
    let mut even = block(0.5, &|j| j - 16);
    even.extend(&block1);
    let mut odd = block(0.25, &|j| 16 - j);
    odd.extend(&block1);
    HandWeight {
        w: gguf_rows(GgufType::Q8_0, even, odd),
        picks: vec![0, 20, 31, 32],
        expected: vec![
            vec![-8.0, 4.0],  // k = 0: −16 · 0.5, 16 · 0.25
            vec![2.0, -1.0],  // k = 20: 4 · 0.5, −4 · 0.25
            vec![7.5, -3.75], // k = 31: 15 · 0.5, −15 · 0.25
            vec![-16.0],      // k = 32: −128 · 0.125
        ],
    }
}

/// FP8 E4M3, K = 64, N = 64. Codes by `k % 8`: 0x38 = 1, 0x40 = 2, 0xC0 = −2,
/// 0x30 = 0.5, 0x44 = 3, 0xB8 = −1, 0x01 = 2⁻⁹ (subnormal), 0x7E = 448;
/// odd rows flip the sign bit. Per-channel scales 0.5 (even rows), 2 (odd
/// rows), or one per-tensor scale 0.25. Static input scale 0.5: a one-hot
/// 1 becomes e4m3(2) · 0.5 = 1 exactly.
fn fp8_by_hand(granularity: ScaleGranularity) -> HandWeight {
    const CODES: [u8; 8] = [0x38, 0x40, 0xC0, 0x30, 0x44, 0xB8, 0x01, 0x7E];
    let (n, k) = (64, 64);
    let weight = (0..n)
        .flat_map(|r| (0..k).map(move |c| CODES[c % 8] ^ (if r % 2 == 1 { 0x80 } else { 0 })))
        .collect();
    let (weight_scale, expected) = match granularity {
        ScaleGranularity::PerChannel => (
            (0..n).map(|r| if r % 2 == 0 { 0.5 } else { 2.0 }).collect(),
            vec![
                vec![1.0, -4.0],                 // k = 1: ±2 · (0.5, 2)
                vec![1.5, -6.0],                 // k = 4: ±3
                vec![0.0009765625, -0.00390625], // k = 6: ±2⁻⁹
                vec![224.0, -896.0],             // k = 7: ±448
                vec![-1.0, 4.0],                 // k = 10: ∓2
            ],
        ),
        ScaleGranularity::PerTensor => (
            vec![0.25],
            vec![
                vec![0.5, -0.5],
                vec![0.75, -0.75],
                vec![0.00048828125, -0.00048828125],
                vec![112.0, -112.0],
                vec![-0.5, 0.5],
            ],
        ),
    };
    HandWeight {
        w: QuantWeights::Fp8 {
            n,
            k,
            weight,
            weight_scale,
            activation: ActivationScale::Static,
            input_scale: Some(0.5),
        },
        picks: vec![1, 4, 6, 7, 10],
        expected,
    }
}

/// The hand-built cases, one per format (two for FP8's scale layouts).
fn by_hand_cases() -> Vec<Case> {
    type Builder = (&'static str, fn() -> HandWeight);
    let builders: [Builder; 8] = [
        ("awq_by_hand", awq_by_hand),
        ("gptq4_by_hand", gptq4_by_hand),
        ("gptq8_by_hand", gptq8_by_hand),
        ("q4_0_by_hand", q4_0_by_hand),
        ("q4_1_by_hand", q4_1_by_hand),
        ("q8_0_by_hand", q8_0_by_hand),
        ("fp8_channel_by_hand", || {
            fp8_by_hand(ScaleGranularity::PerChannel)
        }),
        ("fp8_tensor_by_hand", || {
            fp8_by_hand(ScaleGranularity::PerTensor)
        }),
    ];
    builders
        .into_iter()
        .map(|(name, build)| case(name, move |h| run_by_hand(h, &build())))
        .collect()
}

/// Run a hand-built weight with one-hot rows, in the first activation dtype
/// the backend accepts (f16, f32, bf16). The hand values are exact in all
/// three and every product is by 1 or 0, so the comparison is bit-exact.
fn run_by_hand(h: &Harness<'_>, hw: &HandWeight) -> CaseResult {
    let (n, k) = (hw.w.n(), hw.w.k());
    let mut last_skip = None;
    for x_dtype in [F16, F32, BF16] {
        let d = desc(&hw.w, x_dtype, x_dtype, Precision::Exact);
        if let Some(skip) = refused(h, &d) {
            last_skip = Some(skip);
            continue;
        }
        let m = hw.picks.len();
        let mut x = HostTensor::zeros(x_dtype, &[m, k]);
        for (i, &pick) in hw.picks.iter().enumerate() {
            x.set(i * k + pick, 1.0);
        }
        let got = match run_on_device(h, &hw.w, &x, None, Precision::Exact)? {
            Ok(t) => t,
            Err(skip) => return Ok(skip),
        };
        let want: Vec<f64> = (0..m * n)
            .map(|i| {
                let row = &hw.expected[i / n];
                row[(i % n) % row.len()]
            })
            .collect();
        let want = HostTensor::from_f64(x_dtype, &[m, n], &want);
        return expect(
            &format!("out (x {x_dtype}, one-hot rows at k = {:?})", hw.picks),
            &got,
            &want,
            &Budget::EXACT,
        )
        .map(|_| Outcome::Pass);
    }
    Ok(last_skip.unwrap_or_else(|| Outcome::Skip("no activation dtype accepted".into())))
}

/// The specs the hand-built weights claim, for a quick self-check in tests.
#[cfg(test)]
fn hand_weights() -> Vec<HandWeight> {
    vec![
        awq_by_hand(),
        gptq4_by_hand(),
        gptq8_by_hand(),
        q4_0_by_hand(),
        q4_1_by_hand(),
        q8_0_by_hand(),
        fp8_by_hand(ScaleGranularity::PerChannel),
        fp8_by_hand(ScaleGranularity::PerTensor),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuantSpec;

    /// The hand-written numbers agree with the format definitions in
    /// `crate::quant` (both were written independently).
    #[test]
    fn hand_values_match_the_format_rules() {
        for hw in hand_weights() {
            hw.w.validate().unwrap();
            for (i, &kk) in hw.picks.iter().enumerate() {
                for nn in 0..hw.w.n() {
                    let row = &hw.expected[i];
                    assert_eq!(
                        hw.w.weight(nn, kk),
                        row[nn % row.len()],
                        "{:?} W[{nn}, {kk}]",
                        hw.w.spec()
                    );
                }
            }
        }
    }

    #[test]
    fn random_weights_are_valid_with_their_spec() {
        let mut rng = Rng::new(1);
        let f = Format::Gptq(4, 32, true, false);
        let w = random_weights(&mut rng, f, 72, 96);
        w.validate().unwrap();
        assert!(matches!(
            w.spec(),
            QuantSpec::Gptq {
                act_order: true,
                ..
            }
        ));
        let w = random_weights(&mut rng, Format::Gptq(8, 64, false, true), 72, 192);
        assert!(matches!(
            w.spec(),
            QuantSpec::Gptq {
                act_order: false,
                ..
            }
        ));
        for f in [
            Format::Awq(32),
            Format::Gguf(GgufType::Q4_1),
            Format::Fp8(ScaleGranularity::PerChannel, ActivationScale::Static, false),
        ] {
            random_weights(&mut rng, f, 72, 96).validate().unwrap();
        }
    }
}
