//! Device names: `kind[:index]`, one scheme everywhere (CLI, `name()`, docs).
//!
//! Kinds of the in-tree backends: `cpu`, `cuda`, `hip`, `opencl` (the Intel
//! backend, crate `kernels-sycl`), `wgpu`, `tpu` (PJRT), and `loopback` (the
//! device-like test backend). The index defaults to 0.

use std::fmt;
use std::str::FromStr;

use crate::HalError;

/// A parsed device name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceName {
    /// Backend kind: lower-case ASCII letters, digits, `-` and `_`.
    pub kind: String,
    /// Device index (0 when not given).
    pub index: usize,
}

impl DeviceName {
    /// `kind:index`.
    pub fn new(kind: &str, index: usize) -> Self {
        DeviceName {
            kind: kind.to_string(),
            index,
        }
    }
}

/// Whether `kind` is a well-formed backend kind.
pub fn is_valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl FromStr for DeviceName {
    type Err = HalError;

    fn from_str(s: &str) -> Result<Self, HalError> {
        let bad = |msg: &str| HalError::InvalidDeviceName {
            name: s.to_string(),
            msg: msg.to_string(),
        };
        let (kind, index) = match s.split_once(':') {
            None => (s, 0),
            Some((k, i)) => {
                let idx = i.parse::<usize>().map_err(|_| {
                    bad("the index after ':' must be a non-negative integer, e.g. cuda:1")
                })?;
                (k, idx)
            }
        };
        let kind = kind.trim().to_ascii_lowercase();
        if !is_valid_kind(&kind) {
            return Err(bad(
                "expected kind[:index], e.g. cpu, cuda:0, opencl, wgpu:1, tpu",
            ));
        }
        Ok(DeviceName { kind, index })
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scheme() {
        assert_eq!(
            "cpu".parse::<DeviceName>().unwrap(),
            DeviceName::new("cpu", 0)
        );
        assert_eq!(
            "cuda:1".parse::<DeviceName>().unwrap(),
            DeviceName::new("cuda", 1)
        );
        assert_eq!(
            "OpenCL:2".parse::<DeviceName>().unwrap(),
            DeviceName::new("opencl", 2)
        );
        assert_eq!(DeviceName::new("tpu", 0).to_string(), "tpu:0");
        for bad in ["", "cuda:", "cuda:-1", "cuda:x", "9cuda", "cu da", ":1"] {
            assert!(
                bad.parse::<DeviceName>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }
}
