//! AutoAWQ "GEMM" layout (4-bit, zero points, groups along K).
//!
//! * `qweight` i32 `[K, N/8]`: word `c` of row `k` packs columns `8c..8c+8`;
//!   nibble `i` (bits `4i..4i+4`) holds logical column `8c + ORDER[i]` with
//!   `ORDER = [0, 2, 4, 6, 1, 3, 5, 7]`.
//! * `qzeros` i32 `[K/G, N/8]`: the zero point of group `g`, packed the same way.
//! * `scales` f16 `[K/G, N]`.
//! * `W[n, k] = (q[k, n] − z[k/G, n]) · s[k/G, n]`.

use half::f16;

/// Logical column offset held by nibble `i` of a packed word.
pub const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
/// Nibble index holding logical column offset `j` (inverse of [`ORDER`]).
pub const INVERSE_ORDER: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// The 4-bit value of logical column `col` from a packed row `words` (`N/8` words).
pub fn unpack(words: &[i32], col: usize) -> u32 {
    let word = words[col / 8] as u32;
    (word >> (4 * INVERSE_ORDER[col % 8])) & 0xF
}

/// Pack a row of `N` 4-bit values (each 0..16) into `N/8` words.
pub fn pack_row(values: &[u8]) -> Vec<i32> {
    values
        .chunks(8)
        .map(|chunk| {
            let mut w = 0u32;
            for (j, &v) in chunk.iter().enumerate() {
                w |= ((v & 0xF) as u32) << (4 * INVERSE_ORDER[j]);
            }
            w as i32
        })
        .collect()
}

/// Element `W[row, col]` (`row` < N, `col` < K).
pub fn weight(
    group_size: usize,
    n: usize,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
    row: usize,
    col: usize,
) -> f64 {
    let words = n / 8;
    let g = col / group_size;
    let q = unpack(&qweight[col * words..(col + 1) * words], row) as f64;
    let z = unpack(&qzeros[g * words..(g + 1) * words], row) as f64;
    let s = scales[g * n + row].to_f64();
    (q - z) * s
}

/// Check shapes.
pub fn validate(
    group_size: usize,
    n: usize,
    k: usize,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
) -> Result<(), String> {
    if group_size == 0 || !k.is_multiple_of(group_size) {
        return Err(format!(
            "awq: K = {k} is not a multiple of group_size {group_size}"
        ));
    }
    if !n.is_multiple_of(8) {
        return Err(format!("awq: N = {n} is not a multiple of 8"));
    }
    let groups = k / group_size;
    for (name, len, want) in [
        ("qweight", qweight.len(), k * n / 8),
        ("qzeros", qzeros.len(), groups * n / 8),
        ("scales", scales.len(), groups * n),
    ] {
        if len != want {
            return Err(format!(
                "awq: {name} has {len} elements, expected {want} for K={k}, N={n}, G={group_size}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-packed word: nibble i = i + 1, so column 8c+ORDER[i] = i + 1.
    #[test]
    fn nibble_order_by_hand() {
        let word = 0x8765_4321u32 as i32;
        // nibble 0 = 1 -> col 0; nibble 1 = 2 -> col 2; nibble 4 = 5 -> col 1.
        assert_eq!(unpack(&[word], 0), 1);
        assert_eq!(unpack(&[word], 2), 2);
        assert_eq!(unpack(&[word], 4), 3);
        assert_eq!(unpack(&[word], 6), 4);
        assert_eq!(unpack(&[word], 1), 5);
        assert_eq!(unpack(&[word], 3), 6);
        assert_eq!(unpack(&[word], 5), 7);
        assert_eq!(unpack(&[word], 7), 8);
        assert_eq!(pack_row(&[1, 5, 2, 6, 3, 7, 4, 8]), vec![word]);
    }

    #[test]
    fn weight_by_hand() {
        // K = 2, N = 8, G = 1 (two groups).
        let qweight = vec![
            pack_row(&[0, 1, 2, 3, 4, 5, 6, 7])[0],
            pack_row(&[15; 8])[0],
        ];
        let qzeros = vec![pack_row(&[8; 8])[0], pack_row(&[0; 8])[0]];
        let scales: Vec<f16> = (0..16)
            .map(|i| f16::from_f32(if i < 8 { 0.5 } else { 2.0 }))
            .collect();
        assert_eq!(
            weight(1, 8, &qweight, &qzeros, &scales, 3, 0),
            (3.0 - 8.0) * 0.5
        );
        assert_eq!(weight(1, 8, &qweight, &qzeros, &scales, 7, 1), 15.0 * 2.0);
        validate(1, 8, 2, &qweight, &qzeros, &scales).unwrap();
    }
}
