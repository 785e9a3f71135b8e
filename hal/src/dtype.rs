//! Element types.

use std::fmt;
use std::str::FromStr;

use half::{bf16, f16};

use crate::fp8;

/// The element type of a tensor.
///
/// `U4` is packed unsigned 4-bit: two elements per byte, element `2i` in the
/// low nibble of byte `i`. Quantised weight formats (AWQ, GPTQ, GGUF blocks)
/// are not dtypes: they are described by [`crate::QuantSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// OCP FP8 E4M3 (`e4m3fn`: no inf, max ±448).
    F8E4M3,
    /// OCP FP8 E5M2 (max finite ±57344).
    F8E5M2,
    /// Signed 8-bit integer.
    I8,
    /// Signed 32-bit integer (token ids, sequence metadata, packed quant words).
    I32,
    /// Signed 64-bit integer (slot mappings, positions).
    I64,
    /// Unsigned 8-bit integer (raw bytes, e.g. GGUF blocks).
    U8,
    /// Packed unsigned 4-bit integer, two per byte.
    U4,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I8,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U4,
    ];

    /// Size of one element in bits.
    pub const fn size_bits(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 32,
            DType::F16 | DType::BF16 => 16,
            DType::F8E4M3 | DType::F8E5M2 | DType::I8 | DType::U8 => 8,
            DType::I64 => 64,
            DType::U4 => 4,
        }
    }

    /// Bytes needed to store `n` elements (rounded up for packed types).
    pub const fn bytes_for(self, n: usize) -> usize {
        (n * self.size_bits()).div_ceil(8)
    }

    /// Whether the dtype is a floating-point type.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2
        )
    }

    /// The dtypes activations may have: F32, F16, BF16.
    pub const fn is_activation(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Canonical lower-case name (`"f32"`, `"bf16"`, `"f8e4m3"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8e4m3",
            DType::F8E5M2 => "f8e5m2",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U4 => "u4",
        }
    }

    /// Decode element `i` of a little-endian byte slice as `f64`.
    ///
    /// Integer types convert exactly. Panics only if `i` is out of range of
    /// `bytes` (callers check lengths first).
    pub fn read_f64(self, bytes: &[u8], i: usize) -> f64 {
        match self {
            DType::F32 => f32::from_le_bytes(le4(bytes, i)) as f64,
            DType::F16 => f16::from_le_bytes(le2(bytes, i)).to_f64(),
            DType::BF16 => bf16::from_le_bytes(le2(bytes, i)).to_f64(),
            DType::F8E4M3 => fp8::e4m3_to_f32(bytes[i]) as f64,
            DType::F8E5M2 => fp8::e5m2_to_f32(bytes[i]) as f64,
            DType::I8 => bytes[i] as i8 as f64,
            DType::I32 => i32::from_le_bytes(le4(bytes, i)) as f64,
            DType::I64 => i64::from_le_bytes(le8(bytes, i)) as f64,
            DType::U8 => bytes[i] as f64,
            DType::U4 => ((bytes[i / 2] >> ((i % 2) * 4)) & 0xF) as f64,
        }
    }

    /// Encode `v` into element `i` of a little-endian byte slice, rounding to
    /// nearest (ties to even) for floats and saturating for FP8 and integers.
    pub fn write_f64(self, bytes: &mut [u8], i: usize, v: f64) {
        match self {
            DType::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => bytes[2 * i..2 * i + 2].copy_from_slice(&f64_to_f16(v).to_le_bytes()),
            DType::BF16 => bytes[2 * i..2 * i + 2].copy_from_slice(&f64_to_bf16(v).to_le_bytes()),
            DType::F8E4M3 => bytes[i] = fp8::f32_to_e4m3(round_f64_to_f32(v)),
            DType::F8E5M2 => bytes[i] = fp8::f32_to_e5m2(round_f64_to_f32(v)),
            DType::I8 => bytes[i] = v.round().clamp(-128.0, 127.0) as i8 as u8,
            DType::I32 => bytes[4 * i..4 * i + 4].copy_from_slice(
                &(v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32).to_le_bytes(),
            ),
            DType::I64 => {
                bytes[8 * i..8 * i + 8].copy_from_slice(&(v.round() as i64).to_le_bytes())
            }
            DType::U8 => bytes[i] = v.round().clamp(0.0, 255.0) as u8,
            DType::U4 => {
                let q = v.round().clamp(0.0, 15.0) as u8;
                let shift = (i % 2) * 4;
                bytes[i / 2] = (bytes[i / 2] & !(0xF << shift)) | (q << shift);
            }
        }
    }
}

/// `f64` → f16, correctly rounded (nearest, ties to even).
pub fn f64_to_f16(v: f64) -> f16 {
    f16::from_bits(round_f64_to_16bit(
        v,
        |f| f16::from_f32(f).to_bits(),
        |b| f16::from_bits(b).to_f64(),
    ))
}

/// `f64` → bf16, correctly rounded (nearest, ties to even).
pub fn f64_to_bf16(v: f64) -> bf16 {
    bf16::from_bits(round_f64_to_16bit(
        v,
        |f| bf16::from_f32(f).to_bits(),
        |b| bf16::from_bits(b).to_f64(),
    ))
}

/// Round `v` to a 16-bit float format without double-rounding errors:
/// `v → f32 → 16-bit` can land one unit off when the f32 rounding creates a
/// tie (and `half`'s direct f64 conversions have the same flaw), so take the
/// f32 route's result and its neighbour on `v`'s side, and keep the nearer
/// (ties to the even encoding).
fn round_f64_to_16bit(v: f64, from_f32: impl Fn(f32) -> u16, to_f64: impl Fn(u16) -> f64) -> u16 {
    let r = from_f32(v as f32);
    let a = to_f64(r);
    if !v.is_finite() || a == v || !a.is_finite() {
        return r;
    }
    let (sign, mag) = (r & 0x8000, r & 0x7fff);
    let neighbour = if v.abs() > a.abs() {
        mag + 1
    } else if mag == 0 {
        return r;
    } else {
        mag - 1
    };
    let b = sign | neighbour;
    let bv = to_f64(b);
    let (da, db) = ((v - a).abs(), (v - bv).abs());
    if db < da || (db == da && b & 1 == 0) {
        b
    } else {
        r
    }
}

/// `f64 → f32` rounding used before FP8 encoding. Double rounding through
/// f32 is exact for FP8 targets except in astronomically rare ties, which the
/// reference accepts (an FP8 kernel rounds from f32 too).
fn round_f64_to_f32(v: f64) -> f32 {
    v as f32
}

fn le2(b: &[u8], i: usize) -> [u8; 2] {
    [b[2 * i], b[2 * i + 1]]
}

fn le4(b: &[u8], i: usize) -> [u8; 4] {
    [b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]
}

fn le8(b: &[u8], i: usize) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[8 * i..8 * i + 8]);
    out
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when a dtype name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dtype {0:?}; expected one of f32, f16, bf16, f8e4m3, f8e5m2, i8, i32, i64, u8, u4"
)]
pub struct ParseDTypeError(pub String);

impl FromStr for DType {
    type Err = ParseDTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "float32" | "float" => "f32",
            "float16" | "half" | "fp16" => "f16",
            "bfloat16" => "bf16",
            "fp8" | "fp8_e4m3" | "float8_e4m3fn" | "e4m3" => "f8e4m3",
            "fp8_e5m2" | "float8_e5m2" | "e5m2" => "f8e5m2",
            other => other,
        };
        DType::ALL
            .into_iter()
            .find(|d| d.name() == alias)
            .ok_or_else(|| ParseDTypeError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>(), Ok(d));
        }
        assert_eq!("bfloat16".parse::<DType>(), Ok(DType::BF16));
        assert!("f7".parse::<DType>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::U4.bytes_for(3), 2);
        assert_eq!(DType::BF16.bytes_for(3), 6);
        assert_eq!(DType::I64.bytes_for(2), 16);
    }

    #[test]
    fn sixteen_bit_rounding_is_correct_from_f64() {
        // Just above a bf16 tie: must round up (half's from_f64 truncates).
        let v = f32::from_bits(0x9460_8005) as f64;
        assert_eq!(f64_to_bf16(v).to_bits(), 0x9461);
        // An exact f32 tie still goes to even.
        assert_eq!(
            f64_to_bf16(f32::from_bits(0x3f80_8000) as f64).to_bits(),
            0x3f80
        );
        // Agreement with the f32 conversions wherever v is an f32.
        let mut x = 0x1234_5678u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let f = f32::from_bits(x);
            if f.is_finite() {
                assert_eq!(f64_to_bf16(f as f64), bf16::from_f32(f), "{x:#x}");
                assert_eq!(f64_to_f16(f as f64), f16::from_f32(f), "{x:#x}");
            }
        }
        // Between two f16 values just above the midpoint: rounds up.
        let lo = f16::from_f32(1.0).to_f64();
        let hi = f16::from_bits(0x3c01).to_f64();
        assert_eq!(f64_to_f16((lo + hi) / 2.0 + 1e-12).to_bits(), 0x3c01);
        assert_eq!(f64_to_f16((lo + hi) / 2.0).to_bits(), 0x3c00);
    }

    #[test]
    fn read_write_round_trip() {
        for d in DType::ALL {
            let mut buf = vec![0u8; d.bytes_for(4)];
            for (i, v) in [1.0, 2.0, 3.0, 4.0].into_iter().enumerate() {
                d.write_f64(&mut buf, i, v);
            }
            for (i, v) in [1.0, 2.0, 3.0, 4.0].into_iter().enumerate() {
                assert_eq!(d.read_f64(&buf, i), v, "{d}");
            }
        }
    }
}
