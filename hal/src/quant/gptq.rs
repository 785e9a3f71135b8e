//! AutoGPTQ v1 layout (4 or 8 bit, zeros stored minus one, optional act-order).
//!
//! With `P = 32 / bits` values per word:
//! * `qweight` i32 `[K/P, N]`: value `q[k, n]` is bits `bits·(k % P)` of word
//!   `qweight[k / P, n]` (packed along K).
//! * `qzeros` i32 `[G, N/P]`: `z[g, n] − 1` is bits `bits·(n % P)` of word
//!   `qzeros[g, n / P]` (packed along N).
//! * `scales` f16 `[G, N]`; `g_idx` i32 `[K]` gives the group of each input row
//!   (default `k / group_size`; act-order checkpoints store a permutation).
//! * `W[n, k] = s[g_idx[k], n] · (q[k, n] − (stored_z[g_idx[k], n] + 1))`.

use half::f16;

fn per_word(bits: u8) -> usize {
    32 / bits as usize
}

fn mask(bits: u8) -> u32 {
    (1u32 << bits) - 1
}

/// Default group of input row `k`.
pub fn default_group(k: usize, group_size: usize) -> usize {
    k / group_size
}

/// Whether `g_idx` is exactly the default `k / group_size` (no act-order).
pub fn is_trivial_g_idx(g_idx: &[i32], group_size: usize, k: usize) -> bool {
    g_idx.len() == k
        && g_idx
            .iter()
            .enumerate()
            .all(|(i, &g)| g as usize == default_group(i, group_size))
}

/// Number of groups for `k` input rows.
pub fn num_groups(k: usize, group_size: usize) -> usize {
    k.div_ceil(group_size)
}

/// Element `W[row, col]` (`row` < N output, `col` < K input).
#[allow(clippy::too_many_arguments)]
pub fn weight(
    bits: u8,
    group_size: usize,
    n: usize,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
    g_idx: Option<&[i32]>,
    row: usize,
    col: usize,
) -> f64 {
    let p = per_word(bits);
    let g = match g_idx {
        Some(g) => g[col] as usize,
        None => default_group(col, group_size),
    };
    let word = qweight[(col / p) * n + row] as u32;
    let q = (word >> (bits as usize * (col % p))) & mask(bits);
    let zword = qzeros[g * (n / p) + row / p] as u32;
    let z = ((zword >> (bits as usize * (row % p))) & mask(bits)) + 1;
    scales[g * n + row].to_f64() * (q as f64 - z as f64)
}

/// Pack `q` (`[K, N]`, row-major, each < 2^bits) into `qweight` `[K/P, N]`.
pub fn pack_qweight(bits: u8, k: usize, n: usize, q: &[u8]) -> Vec<i32> {
    let p = per_word(bits);
    let mut out = vec![0u32; k / p * n];
    for kk in 0..k {
        for nn in 0..n {
            out[(kk / p) * n + nn] |=
                (q[kk * n + nn] as u32 & mask(bits)) << (bits as usize * (kk % p));
        }
    }
    out.into_iter().map(|w| w as i32).collect()
}

/// Pack true zero points `z` (`[G, N]`, each in 1..=2^bits) into `qzeros`
/// `[G, N/P]`, storing `z − 1` as AutoGPTQ v1 does.
pub fn pack_qzeros(bits: u8, groups: usize, n: usize, z: &[u8]) -> Vec<i32> {
    let p = per_word(bits);
    let mut out = vec![0u32; groups * (n / p)];
    for g in 0..groups {
        for nn in 0..n {
            let stored = (z[g * n + nn] as u32).wrapping_sub(1) & mask(bits);
            out[g * (n / p) + nn / p] |= stored << (bits as usize * (nn % p));
        }
    }
    out.into_iter().map(|w| w as i32).collect()
}

/// Check shapes and `g_idx` range.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    bits: u8,
    group_size: usize,
    n: usize,
    k: usize,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
    g_idx: Option<&[i32]>,
) -> Result<(), String> {
    if bits != 4 && bits != 8 {
        return Err(format!(
            "gptq: {bits}-bit weights are not supported (4 or 8)"
        ));
    }
    let p = per_word(bits);
    if group_size == 0 {
        return Err("gptq: group_size is 0".into());
    }
    if !k.is_multiple_of(p) || !n.is_multiple_of(p) {
        return Err(format!(
            "gptq: K = {k} and N = {n} must be multiples of {p} for {bits}-bit"
        ));
    }
    let groups = num_groups(k, group_size);
    for (name, len, want) in [
        ("qweight", qweight.len(), k / p * n),
        ("qzeros", qzeros.len(), groups * n / p),
        ("scales", scales.len(), groups * n),
    ] {
        if len != want {
            return Err(format!("gptq: {name} has {len} elements, expected {want} for K={k}, N={n}, G={group_size}, {bits}-bit"));
        }
    }
    if let Some(g) = g_idx {
        if g.len() != k {
            return Err(format!(
                "gptq: g_idx has {} entries, expected K = {k}",
                g.len()
            ));
        }
        if let Some(bad) = g.iter().find(|&&v| v < 0 || v as usize >= groups) {
            return Err(format!("gptq: g_idx entry {bad} is outside 0..{groups}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_by_hand() {
        // K = 8, N = 8, one group. Row k of column n holds (k + n) % 16.
        let (k, n) = (8, 8);
        let q: Vec<u8> = (0..k * n).map(|i| ((i / n + i % n) % 16) as u8).collect();
        let qweight = pack_qweight(4, k, n, &q);
        // Word [0, 1] packs q[0..8, 1] = 1,2,...,8 along K, low nibble first.
        assert_eq!(qweight[1] as u32, 0x8765_4321);
        let qzeros = pack_qzeros(4, 1, n, &[8; 8]);
        assert_eq!(qzeros[0] as u32, 0x7777_7777); // stored z - 1
        let scales = vec![f16::from_f32(0.5); n];
        // W[n=1, k=2] = 0.5 * (3 - 8)
        assert_eq!(
            weight(4, 8, n, &qweight, &qzeros, &scales, None, 1, 2),
            -2.5
        );
        validate(4, 8, n, k, &qweight, &qzeros, &scales, None).unwrap();
    }

    #[test]
    fn act_order_uses_g_idx() {
        let (k, n) = (8, 8);
        let q = vec![10u8; k * n];
        let qweight = pack_qweight(4, k, n, &q);
        let mut z = vec![8u8; n];
        z.extend(vec![2u8; n]);
        let qzeros = pack_qzeros(4, 2, n, &z);
        let scales = vec![f16::from_f32(1.0); 2 * n];
        let g_idx = vec![1, 0, 1, 0, 1, 0, 1, 0];
        assert_eq!(
            weight(4, 4, n, &qweight, &qzeros, &scales, Some(&g_idx), 0, 0),
            8.0
        );
        assert_eq!(
            weight(4, 4, n, &qweight, &qzeros, &scales, Some(&g_idx), 0, 1),
            2.0
        );
        assert!(!is_trivial_g_idx(&g_idx, 4, k));
    }

    #[test]
    fn eight_bit_by_hand() {
        let (k, n) = (4, 4);
        let q: Vec<u8> = (0..16).map(|i| (i * 16) as u8).collect();
        let qweight = pack_qweight(8, k, n, &q);
        assert_eq!(qweight[0] as u32, 0xC0_80_40_00); // q[0..4, 0] = 0, 64, 128, 192
        let qzeros = pack_qzeros(8, 1, n, &[128; 4]);
        let scales = vec![f16::from_f32(0.25); n];
        assert_eq!(
            weight(8, 4, n, &qweight, &qzeros, &scales, None, 0, 3),
            0.25 * (192.0 - 128.0)
        );
    }
}
