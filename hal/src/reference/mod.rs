//! The reference oracle: a naive, obviously-right implementation of every
//! HAL op on host tensors, accumulating in f64 and rounding once to the
//! output dtype. Not optimised; the conformance suite compares every backend
//! against it, and the device-like test backend delegates to it.
//!
//! Functions take and return [`HostTensor`]s (and plain slices for integer
//! metadata) and mirror the op argument structs one for one. They assume the
//! arguments passed the op's `validate` (shapes and dtypes); they do not
//! re-check them and may panic on inconsistent shapes.

mod attention;
mod elementwise;
mod gemm;
mod kv_cache;

pub use attention::{flash_attention, paged_attention};
pub use elementwise::{add, embedding, rms_norm, rope, silu_and_mul, Table};
pub use gemm::{gemm, int8_activation_row, quant_gemm};
pub use kv_cache::{copy_blocks, write_kv, HostKvCache};

use crate::{DType, HostTensor};

/// Round every value to `dtype` and wrap it as a tensor of `shape`.
pub(crate) fn round_to(dtype: DType, shape: &[usize], values: &[f64]) -> HostTensor {
    HostTensor::from_f64(dtype, shape, values)
}

#[cfg(test)]
mod tests;
