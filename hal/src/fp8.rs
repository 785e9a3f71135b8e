//! Exact, saturating conversions between `f32` and the two OCP FP8 formats.
//!
//! * **E4M3** (`float8_e4m3fn`): 1 sign, 4 exponent (bias 7), 3 mantissa bits;
//!   no infinities, NaN is `S.1111.111`; largest finite value ±448, smallest
//!   subnormal 2⁻⁹.
//! * **E5M2** (`float8_e5m2`): 1 sign, 5 exponent (bias 15), 2 mantissa bits;
//!   IEEE-like with ±inf; largest finite value ±57344, smallest subnormal 2⁻¹⁶.
//!
//! Encoding rounds to nearest, ties to even, and **saturates**: a finite value
//! beyond the largest finite one becomes ±max (never NaN or inf). NaN stays
//! NaN. Infinity becomes ±448 in E4M3 (which has no inf) and stays ±inf in
//! E5M2. Decoding is exact.

/// Parameters of one FP8 format.
#[derive(Clone, Copy, Debug)]
struct Format {
    man_bits: u32,
    bias: i32,
    /// Largest finite magnitude.
    max: f64,
    /// Bit pattern (without sign) of the largest finite value.
    max_bits: u8,
    /// Bit pattern (without sign) of the canonical NaN.
    nan_bits: u8,
    /// Bit pattern of +inf, if the format has one.
    inf_bits: Option<u8>,
}

const E4M3: Format = Format {
    man_bits: 3,
    bias: 7,
    max: 448.0,
    max_bits: 0x7E,
    nan_bits: 0x7F,
    inf_bits: None,
};

const E5M2: Format = Format {
    man_bits: 2,
    bias: 15,
    max: 57344.0,
    max_bits: 0x7B,
    nan_bits: 0x7F,
    inf_bits: Some(0x7C),
};

/// Exponent of a positive, finite, normal f64 (`floor(log2(a))`), exactly.
fn exponent_of(a: f64) -> i32 {
    (((a.to_bits() >> 52) & 0x7ff) as i32) - 1023
}

fn encode(x: f32, f: Format) -> u8 {
    let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return sign | f.nan_bits;
    }
    if x.is_infinite() {
        return sign | f.inf_bits.unwrap_or(f.max_bits);
    }
    let a = (x as f64).abs();
    if a == 0.0 {
        return sign;
    }
    if a >= f.max {
        return sign | f.max_bits;
    }
    let min_normal_exp = 1 - f.bias;
    let e = exponent_of(a).max(min_normal_exp);
    let quantum = 2f64.powi(e - f.man_bits as i32);
    let q = (a / quantum).round_ties_even() * quantum;
    if q >= f.max {
        return sign | f.max_bits;
    }
    if q == 0.0 {
        return sign;
    }
    let qe = exponent_of(q);
    if qe < min_normal_exp {
        // Subnormal: exponent field 0, mantissa counts quanta of 2^(1-bias-m).
        let m = q / 2f64.powi(min_normal_exp - f.man_bits as i32);
        sign | (m as u8)
    } else {
        let m = q / 2f64.powi(qe - f.man_bits as i32) - 2f64.powi(f.man_bits as i32);
        let exp_field = (qe + f.bias) as u8;
        sign | (exp_field << f.man_bits) | (m as u8)
    }
}

fn decode(b: u8, f: Format) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let mag = b & 0x7F;
    if mag == f.nan_bits || (f.inf_bits.is_some() && mag > f.max_bits && Some(mag) != f.inf_bits) {
        return f32::NAN;
    }
    if Some(mag) == f.inf_bits {
        return sign as f32 * f32::INFINITY;
    }
    let exp_field = (mag >> f.man_bits) as i32;
    let man = (mag & ((1 << f.man_bits) - 1)) as f64;
    let v = if exp_field == 0 {
        man * 2f64.powi(1 - f.bias - f.man_bits as i32)
    } else {
        (1.0 + man / 2f64.powi(f.man_bits as i32)) * 2f64.powi(exp_field - f.bias)
    };
    (sign * v) as f32
}

/// `f32` → FP8 E4M3 bits (round to nearest even, saturating to ±448).
pub fn f32_to_e4m3(x: f32) -> u8 {
    encode(x, E4M3)
}

/// FP8 E4M3 bits → `f32` (exact; a table lookup).
pub fn e4m3_to_f32(b: u8) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| decode(i as u8, E4M3)))[b as usize]
}

/// `f32` → FP8 E5M2 bits (round to nearest even, saturating to ±57344).
pub fn f32_to_e5m2(x: f32) -> u8 {
    encode(x, E5M2)
}

/// FP8 E5M2 bits → `f32` (exact; a table lookup).
pub fn e5m2_to_f32(b: u8) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| decode(i as u8, E5M2)))[b as usize]
}

/// Largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;
/// Largest finite E5M2 magnitude.
pub const E5M2_MAX: f32 = 57344.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_known_values() {
        assert_eq!(f32_to_e4m3(0.0), 0x00);
        assert_eq!(f32_to_e4m3(1.0), 0x38);
        assert_eq!(f32_to_e4m3(-2.0), 0xC0);
        assert_eq!(f32_to_e4m3(448.0), 0x7E);
        assert_eq!(f32_to_e4m3(1e6), 0x7E);
        assert_eq!(f32_to_e4m3(-1e6), 0xFE);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7E);
        assert_eq!(f32_to_e4m3(2f32.powi(-9)), 0x01);
        assert_eq!(f32_to_e4m3(2f32.powi(-11)), 0x00); // rounds to zero (tie → even)
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(e4m3_to_f32(0x7F).is_nan());
        assert!(e4m3_to_f32(0xFF).is_nan());
        // 1.0625 lies halfway between 1.0 and 1.125: ties to even → 1.0.
        assert_eq!(e4m3_to_f32(f32_to_e4m3(1.0625)), 1.0);
        assert_eq!(e4m3_to_f32(f32_to_e4m3(1.1875)), 1.25);
    }

    #[test]
    fn e5m2_known_values() {
        assert_eq!(f32_to_e5m2(1.0), 0x3C);
        assert_eq!(f32_to_e5m2(57344.0), 0x7B);
        assert_eq!(f32_to_e5m2(1e9), 0x7B);
        assert_eq!(f32_to_e5m2(f32::INFINITY), 0x7C);
        assert_eq!(e5m2_to_f32(0x7C), f32::INFINITY);
        assert!(e5m2_to_f32(0x7D).is_nan());
        assert_eq!(e5m2_to_f32(0x01), 2f32.powi(-16));
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if v.is_nan() {
                assert!(e4m3_to_f32(f32_to_e4m3(v)).is_nan());
            } else if b != 0x80 {
                assert_eq!(f32_to_e4m3(v), b, "e4m3 {b:#04x} -> {v}");
            }
            let v = e5m2_to_f32(b);
            if v.is_nan() {
                assert!(e5m2_to_f32(f32_to_e5m2(v)).is_nan());
            } else if b != 0x80 {
                assert_eq!(f32_to_e5m2(v), b, "e5m2 {b:#04x} -> {v}");
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest() {
        // Every f32 on a fine grid lands on the nearest representable value.
        let codes: Vec<f32> = (0..=0x7Eu8).map(e4m3_to_f32).collect();
        for i in 0..20000 {
            let x = i as f32 * 0.0237;
            let got = e4m3_to_f32(f32_to_e4m3(x));
            let best = codes
                .iter()
                .map(|c| (c - x.min(448.0)).abs())
                .fold(f32::INFINITY, f32::min);
            assert!((got - x.min(448.0)).abs() <= best + 1e-6, "x={x} got={got}");
        }
    }
}
