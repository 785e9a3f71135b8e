//! Host data for the cases, and uploading it to a device.
//!
//! Values are uniform in `[-1, 1)` from a fixed seed; large operands (KV
//! caches, embedding tables) tile one random chunk so that building a
//! 300 MiB working set takes a fraction of a second. Tiling changes nothing
//! a kernel can exploit: every byte is still read from its own address.

use hal::{DType, Device, HalError, HostTensor, Result, Tensor};
use half::{bf16, f16};

use crate::rng::Rng;

/// Bytes of `values` in `dtype` (F32, F16 or BF16; little-endian).
///
/// # Panics
///
/// For any other dtype: the cases only ever ask for activation dtypes.
pub fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        other => panic!("bench::data::encode: {other} is not an activation dtype"),
    }
}

/// `numel` random values in `[-1, 1)` as `dtype` bytes.
pub fn random_bytes(dtype: DType, numel: usize, seed: u64) -> Vec<u8> {
    encode(dtype, &Rng::new(seed).signed_units(numel))
}

/// Upload `bytes` into a new contiguous tensor of `dtype` and `shape`.
pub fn upload(dev: &dyn Device, dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
    let mut t = Tensor::alloc(dev, dtype, shape)?;
    if t.buffer.len() != bytes.len() {
        return Err(HalError::invalid(
            dev.name(),
            "bench upload",
            format!(
                "{} bytes for a {dtype} tensor of shape {shape:?} ({} bytes)",
                bytes.len(),
                t.buffer.len()
            ),
        ));
    }
    dev.upload(&mut t.buffer, 0, bytes)?;
    Ok(t)
}

/// A random `[-1, 1)` tensor of `dtype` and `shape` on `dev`.
pub fn random(dev: &dyn Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    upload(dev, dtype, shape, &random_bytes(dtype, n, seed))
}

/// An uninitialised output tensor.
pub fn output(dev: &dyn Device, dtype: DType, shape: &[usize]) -> Result<Tensor> {
    Tensor::alloc(dev, dtype, shape)
}

/// An I32 tensor.
pub fn i32s(dev: &dyn Device, shape: &[usize], values: &[i32]) -> Result<Tensor> {
    Tensor::from_host(dev, &HostTensor::from_i32(shape, values))
}

/// An I64 tensor.
pub fn i64s(dev: &dyn Device, shape: &[usize], values: &[i64]) -> Result<Tensor> {
    Tensor::from_host(dev, &HostTensor::from_i64(shape, values))
}

/// Fill `len` bytes of `buf` by tiling `chunk` (uploads of at most
/// `chunk.len()` bytes each).
pub fn fill_tiled(
    dev: &dyn Device,
    buf: &mut hal::DeviceBuffer,
    len: usize,
    chunk: &[u8],
) -> Result<()> {
    if chunk.is_empty() {
        return Err(HalError::invalid(
            dev.name(),
            "bench fill",
            "empty fill chunk",
        ));
    }
    let mut offset = 0;
    while offset < len {
        let n = chunk.len().min(len - offset);
        dev.upload(buf, offset, &chunk[..n])?;
        offset += n;
    }
    Ok(())
}

/// Bytes per random chunk that large operands tile (1 MiB).
pub const TILE_BYTES: usize = 1 << 20;

/// `len` bytes repeating `chunk` (zeros if `chunk` is empty).
pub fn tile(chunk: &[u8], len: usize) -> Vec<u8> {
    if chunk.is_empty() {
        return vec![0; len];
    }
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = chunk.len().min(len - out.len());
        out.extend_from_slice(&chunk[..n]);
    }
    out
}
