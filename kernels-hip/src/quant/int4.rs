//! AWQ and GPTQ (4- and 8-bit, act-order included), layout `"hip-int4"`
//! (kernels in the CUDA backend's `quant_int4.cu`).
//!
//! At pack time the input features are ordered by group (stable, so without
//! act-order the order is unchanged) and every group is padded with zero
//! weights to a multiple of 32, giving `Kp` positions and `nb = Kp / 32`
//! blocks per output row, each inside one group:
//! * part 0 `qs`: bytes `[N, nb, 16]` (4-bit: byte `i` holds position `i` in
//!   its low and `i + 16` in its high nibble) or `[N, nb, 32]` (8-bit);
//! * part 1 `sz`: u32 `[N, G]`, f16 scale in the low and the zero point as
//!   f16 in the high 16 bits;
//! * part 2 `gtab`: u32 `[nb]`, the group of each block;
//! * part 3 `perm`: i32 `[Kp]`, the input feature at each position (−1 for
//!   padding).
//!
//! Scalars: `[Kp, G, gather]`. When `gather` is 1 (act-order or padding) the
//! activations are first gathered through `perm` into an f32 `[M, Kp]`
//! scratch. `W[n, perm[p]] = (q[n, p] − z[n, g]) · s[n, g]`. A matvec reads
//! `N · Kp / 2` (4-bit) or `N · Kp` (8-bit) bytes plus `4 · N · G` of scales.

use hal::{Backend, DType, HalError, PackedWeight, QuantWeights, Result};
use half::f16;

use super::{
    blocks, launch_matvec, matvec_plan, part, scalar_usize, suffix, vector_aligned, Call,
    MatvecKernel, MATVEC_MAX_M,
};
use crate::device::{Arg, HipDevice};
use crate::sources::QUANT_INT4;

/// Layout name.
pub(crate) const LAYOUT: &str = "hip-int4";

/// A weight in the `"hip-int4"` layout, on the host.
#[derive(Debug)]
pub(crate) struct Repacked {
    /// 4 or 8.
    pub bits: u8,
    /// Padded K.
    pub kp: usize,
    /// Number of groups.
    pub groups: usize,
    /// Quant bytes `[N, Kp / 32, 16 or 32]`.
    pub qs: Vec<u8>,
    /// `(scale, zero)` f16 pairs `[N, groups]`.
    pub sz: Vec<u32>,
    /// Group of each block `[Kp / 32]`.
    pub gtab: Vec<u32>,
    /// Input feature at each position, −1 for padding `[Kp]`.
    pub perm: Vec<i32>,
    /// Whether `perm` differs from the identity on `0..K` (activations must
    /// be gathered).
    pub gather: bool,
}

/// The logical integer weight, zero point, scale and group of a checkpoint.
struct Source<'a> {
    w: &'a QuantWeights,
    bits: u8,
    n: usize,
    k: usize,
    groups: usize,
}

impl Source<'_> {
    fn new(w: &QuantWeights) -> Option<Source<'_>> {
        match w {
            QuantWeights::Awq {
                group_size, n, k, ..
            } => Some(Source {
                w,
                bits: 4,
                n: *n,
                k: *k,
                groups: k / group_size,
            }),
            QuantWeights::Gptq {
                bits,
                group_size,
                n,
                k,
                ..
            } => Some(Source {
                w,
                bits: *bits,
                n: *n,
                k: *k,
                groups: hal::quant::gptq::num_groups(*k, *group_size),
            }),
            _ => None,
        }
    }

    /// Group of input feature `kk`.
    fn group(&self, kk: usize) -> usize {
        match self.w {
            QuantWeights::Awq { group_size, .. } => kk / group_size,
            QuantWeights::Gptq {
                group_size, g_idx, ..
            } => match g_idx {
                Some(g) => g[kk] as usize,
                None => kk / group_size,
            },
            _ => 0,
        }
    }

    /// Quantised value `q[kk, nn]`.
    fn q(&self, kk: usize, nn: usize) -> u8 {
        match self.w {
            QuantWeights::Awq { n, qweight, .. } => {
                let words = n / 8;
                hal::quant::awq::unpack(&qweight[kk * words..(kk + 1) * words], nn) as u8
            }
            QuantWeights::Gptq {
                bits, n, qweight, ..
            } => {
                let p = 32 / *bits as usize;
                let word = qweight[(kk / p) * n + nn] as u32;
                ((word >> (*bits as usize * (kk % p))) & ((1u32 << bits) - 1)) as u8
            }
            _ => 0,
        }
    }

    /// True zero point and scale of group `g`, column `nn`.
    fn zero_scale(&self, g: usize, nn: usize) -> (u32, f16) {
        match self.w {
            QuantWeights::Awq {
                n, qzeros, scales, ..
            } => {
                let words = n / 8;
                let z = hal::quant::awq::unpack(&qzeros[g * words..(g + 1) * words], nn);
                (z, scales[g * n + nn])
            }
            QuantWeights::Gptq {
                bits,
                n,
                qzeros,
                scales,
                ..
            } => {
                let p = 32 / *bits as usize;
                let zword = qzeros[g * (n / p) + nn / p] as u32;
                let z = ((zword >> (*bits as usize * (nn % p))) & ((1u32 << bits) - 1)) + 1;
                (z, scales[g * n + nn])
            }
            _ => (0, f16::ZERO),
        }
    }
}

/// Repack a validated AWQ / GPTQ weight; `None` for other formats.
pub(crate) fn repack(w: &QuantWeights) -> Option<Repacked> {
    let src = Source::new(w)?;
    let (n, k, groups) = (src.n, src.k, src.groups);
    // Positions: each group's input features in order, padded to 32.
    let mut members: Vec<Vec<i32>> = vec![Vec::new(); groups];
    for kk in 0..k {
        members[src.group(kk)].push(kk as i32);
    }
    let mut perm = Vec::with_capacity(k + 32 * groups);
    let mut gtab = Vec::new();
    for (g, mem) in members.iter().enumerate() {
        let padded = mem.len().div_ceil(32) * 32;
        perm.extend_from_slice(mem);
        perm.resize(perm.len() + padded - mem.len(), -1);
        gtab.extend(std::iter::repeat_n(g as u32, padded / 32));
    }
    let kp = perm.len();
    let gather = kp != k || perm.iter().enumerate().any(|(i, &p)| p != i as i32);
    let nb = kp / 32;
    let block_bytes = if src.bits == 4 { 16 } else { 32 };
    let mut qs = vec![0u8; n * nb * block_bytes];
    let mut column = vec![0u8; kp];
    for nn in 0..n {
        for (p, &kk) in perm.iter().enumerate() {
            column[p] = if kk >= 0 { src.q(kk as usize, nn) } else { 0 };
        }
        let row = &mut qs[nn * nb * block_bytes..(nn + 1) * nb * block_bytes];
        for b in 0..nb {
            let vals = &column[b * 32..(b + 1) * 32];
            let out = &mut row[b * block_bytes..(b + 1) * block_bytes];
            if src.bits == 4 {
                for i in 0..16 {
                    out[i] = (vals[i] & 0xf) | ((vals[i + 16] & 0xf) << 4);
                }
            } else {
                out.copy_from_slice(vals);
            }
        }
    }
    let mut sz = Vec::with_capacity(n * groups);
    for nn in 0..n {
        for g in 0..groups {
            let (z, s) = src.zero_scale(g, nn);
            let zb = f16::from_f32(z as f32).to_bits() as u32;
            sz.push(s.to_bits() as u32 | (zb << 16));
        }
    }
    Some(Repacked {
        bits: src.bits,
        kp,
        groups,
        qs,
        sz,
        gtab,
        perm,
        gather,
    })
}

fn words_to_bytes(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Repack and upload an AWQ / GPTQ weight.
pub(crate) fn pack(dev: &HipDevice, w: &QuantWeights) -> Result<PackedWeight> {
    let r = repack(w)
        .ok_or_else(|| HalError::invalid(dev.name(), "pack", "not an AWQ or GPTQ weight"))?;
    if r.kp >= 1 << 24 || r.groups >= 1 << 24 {
        return Err(HalError::invalid(
            dev.name(),
            "pack",
            format!("padded K = {} or {} groups is too large", r.kp, r.groups),
        ));
    }
    let block_bytes = if r.bits == 4 { 16 } else { 32 };
    if r.qs.len() != w.n() * (r.kp / 32) * block_bytes {
        return Err(HalError::invalid(
            dev.name(),
            "pack",
            "repacked weight has an inconsistent size",
        ));
    }
    let perm: Vec<u8> = r.perm.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok(PackedWeight {
        spec: w.spec(),
        n: w.n(),
        k: w.k(),
        layout: LAYOUT,
        parts: vec![
            dev.upload_bytes("pack", &r.qs)?,
            dev.upload_bytes("pack", &words_to_bytes(&r.sz))?,
            dev.upload_bytes("pack", &words_to_bytes(&r.gtab))?,
            dev.upload_bytes("pack", &perm)?,
        ],
        scalars: vec![
            r.kp as f32,
            r.groups as f32,
            if r.gather { 1.0 } else { 0.0 },
        ],
    })
}

/// `out = x · dequant(w)ᵀ + bias`.
pub(crate) fn run(dev: &HipDevice, w: &PackedWeight, c: &Call) -> Result<()> {
    let op = "quant_gemm";
    let bits = match w.spec {
        hal::QuantSpec::Gptq { bits: 8, .. } => 8usize,
        _ => 4,
    };
    let kp = scalar_usize(dev, w, 0)?;
    let groups = scalar_usize(dev, w, 1)?;
    let gather = scalar_usize(dev, w, 2)? != 0;
    if kp % 32 != 0 || kp < c.k {
        return Err(HalError::invalid(
            dev.name(),
            op,
            format!("packed weight has padded K = {kp} for K = {}", c.k),
        ));
    }
    let nb = kp / 32;
    let qs = part(dev, op, w, 0, c.n * nb * bits * 4)?;
    let sz = part(dev, op, w, 1, c.n * groups * 4)?;
    let gtab = part(dev, op, w, 2, nb * 4)?;
    let perm = part(dev, op, w, 3, kp * 4)?;
    let mut x = c.x;
    let mut xdt = c.x_dtype;
    let _staged = if gather || !vector_aligned(c.x, c.x_dtype) {
        let total = c.m * kp;
        let s = dev.scratch(op, total * 4)?;
        let f = dev.function(&QUANT_INT4, &format!("int4_gather_{}", suffix(c.x_dtype)))?;
        dev.launch(
            op,
            &f,
            (dev.stride_grid(total), 1, 1),
            (256, 1, 1),
            0,
            &[
                Arg::Ptr(c.x),
                Arg::Ptr(perm),
                Arg::Ptr(s.ptr()),
                Arg::I32(c.m as i32),
                Arg::I32(c.k as i32),
                Arg::I32(kp as i32),
            ],
        )?;
        x = s.ptr();
        xdt = DType::F32;
        Some(s)
    } else {
        None
    };
    let args = [
        Arg::Ptr(qs),
        Arg::Ptr(sz),
        Arg::Ptr(gtab),
        Arg::I32(groups as i32),
        Arg::Ptr(x),
        Arg::Ptr(c.bias),
        Arg::I32(c.bias_dt),
        Arg::Ptr(c.out),
        Arg::I32(c.out_dt),
        Arg::I32(c.m as i32),
        Arg::I32(c.n as i32),
        Arg::I32(kp as i32),
    ];
    if c.m <= MATVEC_MAX_M {
        let plan = matvec_plan(c.m, c.n, nb, dev.num_sms());
        launch_matvec(
            dev,
            &MatvecKernel {
                src: &QUANT_INT4,
                name: &format!("int{bits}_mv_{}_m{}", suffix(xdt), plan.mr),
                reduce: "int4_mv_reduce",
            },
            &[
                Arg::Ptr(qs),
                Arg::Ptr(sz),
                Arg::Ptr(gtab),
                Arg::I32(groups as i32),
            ],
            x,
            c,
            kp,
            &plan,
        )
    } else {
        let f = dev.function(&QUANT_INT4, &format!("int{bits}_mm_{}", suffix(xdt)))?;
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
    use hal::quant::{awq, gptq};

    use super::*;

    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    /// Element `W[row, col]` read from the repacked layout the way the kernels
    /// read it, with `pos` the position of input feature `col`.
    fn decode(r: &Repacked, pos: &[usize], row: usize, col: usize) -> f64 {
        let nb = r.kp / 32;
        let p = pos[col];
        let (b, j) = (p / 32, p % 32);
        let q = if r.bits == 4 {
            let byte = r.qs[(row * nb + b) * 16 + j % 16];
            if j < 16 {
                byte & 15
            } else {
                byte >> 4
            }
        } else {
            r.qs[(row * nb + b) * 32 + j]
        } as f64;
        let v = r.sz[row * r.groups + r.gtab[b] as usize];
        let s = f16::from_bits(v as u16).to_f64();
        let z = f16::from_bits((v >> 16) as u16).to_f64();
        (q - z) * s
    }

    fn check(w: &QuantWeights, expect_gather: bool) {
        w.validate().unwrap();
        let r = repack(w).unwrap();
        assert_eq!(r.gather, expect_gather, "{:?}", w.spec());
        assert_eq!(r.kp % 32, 0);
        assert_eq!(r.gtab.len(), r.kp / 32);
        let mut pos = vec![usize::MAX; w.k()];
        for (p, &kk) in r.perm.iter().enumerate() {
            if kk >= 0 {
                assert_eq!(pos[kk as usize], usize::MAX, "feature {kk} placed twice");
                pos[kk as usize] = p;
            } else if r.bits == 4 {
                // Padding holds q = 0 (x is gathered as 0 there).
                let nb = r.kp / 32;
                let (b, j) = (p / 32, p % 32);
                let byte = r.qs[b * 16 + j % 16];
                assert_eq!(if j < 16 { byte & 15 } else { byte >> 4 }, 0);
                let _ = nb;
            }
        }
        assert!(pos.iter().all(|&p| p != usize::MAX));
        for row in 0..w.n() {
            for col in 0..w.k() {
                assert_eq!(
                    decode(&r, &pos, row, col),
                    w.weight(row, col),
                    "{:?} [{row}, {col}]",
                    w.spec()
                );
            }
        }
    }

    fn scales(rng: &mut Lcg, len: usize) -> Vec<f16> {
        (0..len)
            .map(|_| f16::from_f32(0.001 + rng.below(1000) as f32 * 1e-4))
            .collect()
    }

    fn awq_weight(rng: &mut Lcg, g: usize, n: usize, k: usize) -> QuantWeights {
        let q: Vec<u8> = (0..k * n).map(|_| rng.below(16) as u8).collect();
        let z: Vec<u8> = (0..k / g * n).map(|_| rng.below(16) as u8).collect();
        QuantWeights::Awq {
            group_size: g,
            n,
            k,
            qweight: q.chunks(n).flat_map(awq::pack_row).collect(),
            qzeros: z.chunks(n).flat_map(awq::pack_row).collect(),
            scales: scales(rng, k / g * n),
        }
    }

    fn gptq_weight(
        rng: &mut Lcg,
        bits: u8,
        g: usize,
        n: usize,
        k: usize,
        act_order: bool,
    ) -> QuantWeights {
        let groups = gptq::num_groups(k, g);
        let levels = 1usize << bits;
        let q: Vec<u8> = (0..k * n).map(|_| rng.below(levels) as u8).collect();
        let z: Vec<u8> = (0..groups * n)
            .map(|_| 1 + rng.below(levels - 1) as u8)
            .collect();
        let g_idx = act_order.then(|| {
            let mut perm: Vec<usize> = (0..k).collect();
            for i in (1..k).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            perm.iter().map(|&p| (p / g) as i32).collect()
        });
        QuantWeights::Gptq {
            bits,
            group_size: g,
            n,
            k,
            qweight: gptq::pack_qweight(bits, k, n, &q),
            qzeros: gptq::pack_qzeros(bits, groups, n, &z),
            scales: scales(rng, groups * n),
            g_idx,
        }
    }

    #[test]
    fn repacked_layout_decodes_to_the_checkpoint() {
        let mut rng = Lcg(7);
        check(&awq_weight(&mut rng, 32, 72, 96), false);
        check(&awq_weight(&mut rng, 64, 16, 192), false);
        check(&awq_weight(&mut rng, 16, 8, 48), true);
        check(&gptq_weight(&mut rng, 4, 32, 72, 96, false), false);
        check(&gptq_weight(&mut rng, 4, 128, 16, 384, true), true);
        check(&gptq_weight(&mut rng, 4, 128, 8, 200, false), true);
        check(&gptq_weight(&mut rng, 8, 32, 8, 96, false), false);
        check(&gptq_weight(&mut rng, 8, 64, 12, 192, true), true);
        check(&gptq_weight(&mut rng, 8, 128, 4, 200, false), true);
    }

    #[test]
    fn trivial_g_idx_needs_no_gather() {
        let mut rng = Lcg(3);
        let mut w = gptq_weight(&mut rng, 4, 64, 16, 192, false);
        if let QuantWeights::Gptq { g_idx, .. } = &mut w {
            *g_idx = Some((0..192i32).map(|i| i / 64).collect());
        }
        check(&w, false);
    }
}
