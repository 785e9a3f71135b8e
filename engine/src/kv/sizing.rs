//! How big the KV cache is: a memory budget turned into a number of blocks.

use std::fmt;
use std::str::FromStr;

use hal::DType;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheDtype {
    /// 32-bit floats (exact; used to compare against references).
    F32,
    /// 16-bit floats (the default).
    F16,
    /// bfloat16.
    Bf16,
    /// FP8 E4M3 with per-tensor scales (half the memory of F16).
    Fp8,
}

impl CacheDtype {
    /// The HAL dtype stored.
    pub fn dtype(self) -> DType {
        match self {
            CacheDtype::F32 => DType::F32,
            CacheDtype::F16 => DType::F16,
            CacheDtype::Bf16 => DType::BF16,
            CacheDtype::Fp8 => DType::F8E4M3,
        }
    }
}

impl FromStr for CacheDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(CacheDtype::F32),
            "f16" | "fp16" | "float16" | "half" | "auto" => Ok(CacheDtype::F16),
            "bf16" | "bfloat16" => Ok(CacheDtype::Bf16),
            "fp8" | "fp8_e4m3" | "f8e4m3" => Ok(CacheDtype::Fp8),
            other => Err(format!(
                "unknown KV-cache dtype {other:?} (expected f16, bf16, f32 or fp8)"
            )),
        }
    }
}

impl fmt::Display for CacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheDtype::F32 => "f32",
            CacheDtype::F16 => "f16",
            CacheDtype::Bf16 => "bf16",
            CacheDtype::Fp8 => "fp8",
        })
    }
}

/// KV-cache settings chosen by the operator.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// Bytes for K and V over all layers.
    pub memory_bytes: u64,
    /// Tokens per block.
    pub block_size: usize,
    /// Element type.
    pub dtype: CacheDtype,
    /// Reuse full blocks of identical prefixes across requests.
    pub prefix_caching: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_bytes: 1 << 30,
            block_size: 16,
            dtype: CacheDtype::F16,
            prefix_caching: true,
        }
    }
}

impl CacheConfig {
    /// Bytes one block occupies over all layers (K and V).
    pub fn bytes_per_block(&self, num_layers: usize, num_kv_heads: usize, head_dim: usize) -> u64 {
        let per_token = 2 * self.dtype.dtype().bytes_for(num_kv_heads * head_dim);
        (per_token * self.block_size * num_layers) as u64
    }

    /// Blocks that fit the budget.
    pub fn num_blocks(&self, num_layers: usize, num_kv_heads: usize, head_dim: usize) -> usize {
        let per_block = self
            .bytes_per_block(num_layers, num_kv_heads, head_dim)
            .max(1);
        usize::try_from(self.memory_bytes / per_block).unwrap_or(usize::MAX)
    }
}

/// Parse a size such as `1GiB`, `512MiB`, `2G`, `300M`, `65536` (bytes).
/// Decimal (`G`, `GB`) and binary (`GiB`) suffixes are both accepted and
/// mean what they say.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit, e.g. 1GiB")
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || !(1.0..=1e18).contains(&bytes) {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn default_model_fits_tens_of_thousands_of_tokens_in_a_gib() {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64, f16.
        let c = CacheConfig::default();
        assert_eq!(c.bytes_per_block(30, 3, 64), 2 * 2 * 3 * 64 * 16 * 30);
        let blocks = c.num_blocks(30, 3, 64);
        assert_eq!(blocks, (1u64 << 30) as usize / (2 * 2 * 3 * 64 * 16 * 30));
        assert!(blocks * 16 > 40_000);
    }

    #[test]
    fn dtypes_parse() {
        assert_eq!("fp8".parse::<CacheDtype>().unwrap(), CacheDtype::Fp8);
        assert_eq!("F32".parse::<CacheDtype>().unwrap(), CacheDtype::F32);
        assert!("int4".parse::<CacheDtype>().is_err());
    }
}
