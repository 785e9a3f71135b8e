//! Argument checks shared by every op's validator.
//!
//! Backends call `args.validate(self.name())` once at the top of an op; the
//! checks are O(rank) and never touch device memory.

use crate::tensor::ViewInfo;
use crate::{DType, HalError, Result};

/// A checker bound to one backend and op, so every message names both.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    /// Backend name.
    pub backend: &'a str,
    /// Op name.
    pub op: &'static str,
}

impl<'a> Check<'a> {
    /// A checker for `op` on `backend`.
    pub fn new(backend: &'a str, op: &'static str) -> Self {
        Check { backend, op }
    }

    /// An invalid-argument error with this backend and op.
    pub fn err(&self, msg: impl Into<String>) -> HalError {
        HalError::invalid(self.backend, self.op, msg)
    }

    /// Fail with `msg` unless `cond`.
    pub fn ensure(&self, cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
        if cond {
            Ok(())
        } else {
            Err(self.err(msg()))
        }
    }

    /// The view is contiguous, lies inside its buffer and has one of `dtypes`.
    pub fn view(&self, name: &str, v: &impl ViewInfo, dtypes: &[DType]) -> Result<()> {
        self.ensure(dtypes.contains(&v.dtype()), || {
            let names: Vec<_> = dtypes.iter().map(|d| d.name()).collect();
            format!(
                "{name} has dtype {}, expected one of [{}]",
                v.dtype(),
                names.join(", ")
            )
        })?;
        self.ensure(v.layout().is_contiguous(), || {
            format!(
                "{name} must be contiguous (shape {:?}, strides {:?})",
                v.shape(),
                v.layout().strides()
            )
        })?;
        let end = v.dtype().bytes_for(v.layout().end());
        self.ensure(end <= v.buffer_len(), || {
            format!(
                "{name} needs {end} bytes but its buffer holds {}",
                v.buffer_len()
            )
        })
    }

    /// The view has exactly `shape`.
    pub fn shape(&self, name: &str, v: &impl ViewInfo, shape: &[usize]) -> Result<()> {
        self.ensure(v.shape() == shape, || {
            format!("{name} has shape {:?}, expected {shape:?}", v.shape())
        })
    }

    /// The view has rank `rank`; returns its shape.
    pub fn rank<'v>(&self, name: &str, v: &'v impl ViewInfo, rank: usize) -> Result<&'v [usize]> {
        self.ensure(v.shape().len() == rank, || {
            format!("{name} must have rank {rank}, has shape {:?}", v.shape())
        })?;
        Ok(v.shape())
    }
}

/// Activation dtypes every op family accepts.
pub const ACTIVATIONS: &[DType] = &[DType::F32, DType::F16, DType::BF16];
