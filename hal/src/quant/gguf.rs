//! GGUF block formats Q4_0, Q4_1 and Q8_0 (as llama.cpp defines them).
//!
//! A row of K weights is `K / 32` consecutive blocks:
//!
//! | type | bytes | layout | element `j` of the block (0 ≤ j < 32) |
//! |---|---|---|---|
//! | Q4_0 | 18 | `d: f16, qs: [u8; 16]` | `(q_j − 8) · d` |
//! | Q4_1 | 20 | `d: f16, m: f16, qs: [u8; 16]` | `q_j · d + m` |
//! | Q8_0 | 34 | `d: f16, qs: [i8; 32]` | `qs[j] · d` |
//!
//! For the 4-bit types `q_j = qs[j] & 0xF` for `j < 16` and
//! `q_j = qs[j − 16] >> 4` for `j ≥ 16` (low nibbles hold the first half).

use half::f16;

/// Elements per block.
pub const BLOCK: usize = 32;

/// A GGUF block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum GgufType {
    /// 4-bit, scale only.
    Q4_0,
    /// 4-bit, scale and minimum.
    Q4_1,
    /// 8-bit, scale only.
    Q8_0,
}

impl GgufType {
    /// Bytes per 32-element block.
    pub const fn block_bytes(self) -> usize {
        match self {
            GgufType::Q4_0 => 18,
            GgufType::Q4_1 => 20,
            GgufType::Q8_0 => 34,
        }
    }

    /// Bytes of one row of `k` elements.
    pub const fn row_bytes(self, k: usize) -> usize {
        k / BLOCK * self.block_bytes()
    }

    /// GGML type id in GGUF files.
    pub const fn ggml_type_id(self) -> u32 {
        match self {
            GgufType::Q4_0 => 2,
            GgufType::Q4_1 => 3,
            GgufType::Q8_0 => 8,
        }
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            GgufType::Q4_0 => "q4_0",
            GgufType::Q4_1 => "q4_1",
            GgufType::Q8_0 => "q8_0",
        }
    }
}

fn f16_at(b: &[u8], off: usize) -> f64 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f64()
}

/// Decode element `j` (0..32) of one block.
pub fn block_element(ty: GgufType, block: &[u8], j: usize) -> f64 {
    let d = f16_at(block, 0);
    match ty {
        GgufType::Q4_0 => {
            let byte = block[2 + j % 16];
            let q = if j < 16 { byte & 0xF } else { byte >> 4 };
            (q as f64 - 8.0) * d
        }
        GgufType::Q4_1 => {
            let m = f16_at(block, 2);
            let byte = block[4 + j % 16];
            let q = if j < 16 { byte & 0xF } else { byte >> 4 };
            q as f64 * d + m
        }
        GgufType::Q8_0 => block[2 + j] as i8 as f64 * d,
    }
}

/// Element `W[row, col]` of a `[N, K]` weight stored as GGUF blocks.
pub fn weight(ty: GgufType, k: usize, data: &[u8], row: usize, col: usize) -> f64 {
    let off = row * ty.row_bytes(k) + col / BLOCK * ty.block_bytes();
    block_element(ty, &data[off..off + ty.block_bytes()], col % BLOCK)
}

/// Check a weight's byte length.
pub fn validate(ty: GgufType, n: usize, k: usize, data: &[u8]) -> Result<(), String> {
    if !k.is_multiple_of(BLOCK) {
        return Err(format!(
            "{}: K = {k} is not a multiple of {BLOCK}",
            ty.name()
        ));
    }
    let want = n * ty.row_bytes(k);
    if data.len() != want {
        return Err(format!(
            "{}: weight data is {} bytes, expected {want} for [{n}, {k}]",
            ty.name(),
            data.len()
        ));
    }
    Ok(())
}

/// Quantise one row (`x.len()` a multiple of 32) the way ggml's reference
/// quantisers do (`quantize_row_q4_0_ref` etc.).
pub fn quantize_row(ty: GgufType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ty.row_bytes(x.len()));
    for blk in x.chunks(BLOCK) {
        match ty {
            GgufType::Q4_0 => {
                // The value of largest magnitude, with its sign, maps to -8.
                let max = blk
                    .iter()
                    .copied()
                    .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for j in 0..16 {
                    let q0 = ((blk[j] * id + 8.5) as i32).clamp(0, 15) as u8;
                    let q1 = ((blk[j + 16] * id + 8.5) as i32).clamp(0, 15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
            GgufType::Q4_1 => {
                let min = blk.iter().copied().fold(f32::INFINITY, f32::min);
                let max = blk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                for j in 0..16 {
                    let q0 = (((blk[j] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                    let q1 = (((blk[j + 16] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
            GgufType::Q8_0 => {
                let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for &v in blk {
                    out.push((v * id).round().clamp(-127.0, 127.0) as i8 as u8);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Q4_0 block built by hand: d = 0.5, nibbles 0..15 in the low halves
    /// and 15..0 in the high halves.
    #[test]
    fn q4_0_by_hand() {
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        for j in 0..16u8 {
            block.push(j | ((15 - j) << 4));
        }
        assert_eq!(block_element(GgufType::Q4_0, &block, 0), -4.0); // (0-8)*0.5
        assert_eq!(block_element(GgufType::Q4_0, &block, 3), -2.5); // (3-8)*0.5
        assert_eq!(block_element(GgufType::Q4_0, &block, 16), 3.5); // (15-8)*0.5
        assert_eq!(block_element(GgufType::Q4_0, &block, 31), -4.0); // (0-8)*0.5
    }

    #[test]
    fn q4_1_by_hand() {
        let mut block = f16::from_f32(0.25).to_le_bytes().to_vec();
        block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            block.push(j | (2 << 4));
        }
        assert_eq!(block_element(GgufType::Q4_1, &block, 5), 0.25); // 5*0.25-1
        assert_eq!(block_element(GgufType::Q4_1, &block, 20), -0.5); // 2*0.25-1
    }

    #[test]
    fn q8_0_by_hand() {
        let mut block = f16::from_f32(2.0).to_le_bytes().to_vec();
        for j in 0..32i8 {
            block.push((j - 16) as u8);
        }
        assert_eq!(block_element(GgufType::Q8_0, &block, 0), -32.0);
        assert_eq!(block_element(GgufType::Q8_0, &block, 31), 30.0);
    }

    #[test]
    fn quantize_round_trip_is_close() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 32.0) / 8.0)
            .collect();
        for ty in [GgufType::Q4_0, GgufType::Q4_1, GgufType::Q8_0] {
            let data = quantize_row(ty, &x);
            validate(ty, 1, 64, &data).unwrap();
            let max_err = (0..64)
                .map(|c| (weight(ty, 64, &data, 0, c) - x[c] as f64).abs())
                .fold(0f64, f64::max);
            // Q4_0 maps the largest magnitude to -8, so the opposite end clips by up to 1.5 d.
            let bound = if ty == GgufType::Q8_0 { 0.02 } else { 0.4 };
            assert!(max_err <= bound, "{ty:?}: {max_err}");
        }
    }
}
