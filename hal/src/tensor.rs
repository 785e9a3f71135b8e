//! Tensors and views over opaque device buffers, and host tensors.
//!
//! Shapes are listed outermost first (`[num_tokens, num_heads, head_dim]`);
//! strides and offsets count elements, not bytes. Every op in this HAL takes
//! row-major contiguous views (a view may start at an offset into its buffer,
//! e.g. rows `a..b` of a larger tensor); [`Layout::is_contiguous`] is checked
//! by the argument validators.

use crate::{Backend, DType, DeviceBuffer, HalError, Result};

/// Shape, strides (elements) and starting offset (elements) of a view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// Row-major contiguous layout of `shape`, starting at element 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        let mut strides = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        Layout {
            shape: shape.to_vec(),
            strides,
            offset: 0,
        }
    }

    /// A general strided layout.
    pub fn strided(shape: &[usize], strides: &[usize], offset: usize) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        }
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Whether the elements are row-major and dense.
    pub fn is_contiguous(&self) -> bool {
        *self
            == Layout {
                offset: self.offset,
                ..Layout::contiguous(&self.shape)
            }
    }

    /// One past the last element touched, in elements from the buffer start.
    pub fn end(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(d, s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Rows `start..start+len` of the outermost dimension.
    pub fn narrow(&self, start: usize, len: usize) -> Option<Layout> {
        let d0 = *self.shape.first()?;
        if start.checked_add(len)? > d0 {
            return None;
        }
        let mut shape = self.shape.clone();
        shape[0] = len;
        Some(Layout {
            shape,
            strides: self.strides.clone(),
            offset: self.offset + start * self.strides[0],
        })
    }

    /// Same elements, new shape (contiguous layouts only).
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if !self.is_contiguous() || shape.iter().product::<usize>() != self.numel() {
            return None;
        }
        Some(Layout {
            offset: self.offset,
            ..Layout::contiguous(shape)
        })
    }
}

/// A read-only view of a device tensor.
#[derive(Clone, Debug)]
pub struct View<'a> {
    /// The buffer the elements live in.
    pub buffer: &'a DeviceBuffer,
    /// Element type.
    pub dtype: DType,
    /// Shape, strides and offset.
    pub layout: Layout,
}

/// A writable view of a device tensor.
#[derive(Debug)]
pub struct ViewMut<'a> {
    /// The buffer the elements live in.
    pub buffer: &'a mut DeviceBuffer,
    /// Element type.
    pub dtype: DType,
    /// Shape, strides and offset.
    pub layout: Layout,
}

/// What a validator needs to know about a view; shared by [`View`] and [`ViewMut`].
pub trait ViewInfo {
    /// Element type.
    fn dtype(&self) -> DType;
    /// Layout.
    fn layout(&self) -> &Layout;
    /// Length of the underlying buffer in bytes.
    fn buffer_len(&self) -> usize;
    /// Dimensions.
    fn shape(&self) -> &[usize] {
        self.layout().shape()
    }
    /// Byte offset of the first element.
    fn byte_offset(&self) -> usize {
        self.dtype().bytes_for(self.layout().offset())
    }
    /// Bytes spanned from the first element.
    fn byte_len(&self) -> usize {
        self.dtype().bytes_for(self.layout().numel())
    }
}

impl ViewInfo for View<'_> {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn layout(&self) -> &Layout {
        &self.layout
    }
    fn buffer_len(&self) -> usize {
        self.buffer.len()
    }
}

impl ViewInfo for ViewMut<'_> {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn layout(&self) -> &Layout {
        &self.layout
    }
    fn buffer_len(&self) -> usize {
        self.buffer.len()
    }
}

impl<'a> View<'a> {
    /// A contiguous view of the whole buffer prefix holding `shape`.
    pub fn new(buffer: &'a DeviceBuffer, dtype: DType, shape: &[usize]) -> Self {
        View {
            buffer,
            dtype,
            layout: Layout::contiguous(shape),
        }
    }
}

impl<'a> ViewMut<'a> {
    /// A contiguous writable view of the buffer prefix holding `shape`.
    pub fn new(buffer: &'a mut DeviceBuffer, dtype: DType, shape: &[usize]) -> Self {
        ViewMut {
            buffer,
            dtype,
            layout: Layout::contiguous(shape),
        }
    }

    /// Reborrow as a read-only view.
    pub fn as_view(&self) -> View<'_> {
        View {
            buffer: self.buffer,
            dtype: self.dtype,
            layout: self.layout.clone(),
        }
    }

    /// Reborrow mutably (for passing a view into an op and using it again).
    pub fn reborrow(&mut self) -> ViewMut<'_> {
        ViewMut {
            buffer: self.buffer,
            dtype: self.dtype,
            layout: self.layout.clone(),
        }
    }
}

/// A device tensor that owns its buffer.
#[derive(Debug)]
pub struct Tensor {
    /// The buffer.
    pub buffer: DeviceBuffer,
    /// Element type.
    pub dtype: DType,
    /// Layout (contiguous from offset 0 unless built otherwise).
    pub layout: Layout,
}

impl Tensor {
    /// Allocate an uninitialised contiguous tensor.
    pub fn alloc<B: Backend + ?Sized>(
        backend: &B,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor> {
        let layout = Layout::contiguous(shape);
        let buffer = backend.alloc(dtype.bytes_for(layout.numel()))?;
        Ok(Tensor {
            buffer,
            dtype,
            layout,
        })
    }

    /// Allocate and fill from a host tensor.
    pub fn from_host<B: Backend + ?Sized>(backend: &B, host: &HostTensor) -> Result<Tensor> {
        let mut t = Tensor::alloc(backend, host.dtype, &host.shape)?;
        backend.upload(&mut t.buffer, 0, &host.data)?;
        Ok(t)
    }

    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Read-only view of the whole tensor.
    pub fn view(&self) -> View<'_> {
        View {
            buffer: &self.buffer,
            dtype: self.dtype,
            layout: self.layout.clone(),
        }
    }

    /// Writable view of the whole tensor.
    pub fn view_mut(&mut self) -> ViewMut<'_> {
        ViewMut {
            buffer: &mut self.buffer,
            dtype: self.dtype,
            layout: self.layout.clone(),
        }
    }

    /// Overwrite with `bytes` as a contiguous `dtype` tensor of `shape`,
    /// reusing the buffer when it is large enough and reallocating it (with
    /// 2× headroom) when not: per-step inputs without per-step allocation.
    pub fn refill<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        dtype: DType,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<()> {
        if self.buffer.len() < bytes.len() {
            self.buffer = backend.alloc((2 * bytes.len()).max(64))?;
        }
        self.dtype = dtype;
        self.layout = Layout::contiguous(shape);
        if !bytes.is_empty() {
            backend.upload(&mut self.buffer, 0, bytes)?;
        }
        Ok(())
    }

    /// Make room for a contiguous `dtype` tensor of `shape` (contents
    /// unspecified), reusing the buffer when it is large enough.
    pub fn reshape_for<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        dtype: DType,
        shape: &[usize],
    ) -> Result<()> {
        let layout = Layout::contiguous(shape);
        let bytes = dtype.bytes_for(layout.numel());
        if self.buffer.len() < bytes {
            self.buffer = backend.alloc((2 * bytes).max(64))?;
        }
        self.dtype = dtype;
        self.layout = layout;
        Ok(())
    }

    /// Copy to the host. Call [`Backend::synchronize`] first if ops that
    /// write this tensor may still be pending.
    pub fn to_host<B: Backend + ?Sized>(&self, backend: &B) -> Result<HostTensor> {
        download(backend, &self.view())
    }
}

/// Copy a contiguous view to the host.
pub fn download<B: Backend + ?Sized>(backend: &B, view: &View<'_>) -> Result<HostTensor> {
    if !view.layout.is_contiguous() {
        return Err(HalError::invalid(
            backend.name(),
            "download",
            "view is not contiguous",
        ));
    }
    let mut data = vec![0u8; view.byte_len()];
    backend.download(view.buffer, view.byte_offset(), &mut data)?;
    Ok(HostTensor {
        dtype: view.dtype,
        shape: view.layout.shape().to_vec(),
        data,
    })
}

/// A dense, row-major tensor in host memory (little-endian bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `dtype.bytes_for(numel)` bytes.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// All-zero bytes.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
        let n = shape.iter().product();
        HostTensor {
            dtype,
            shape: shape.to_vec(),
            data: vec![0; dtype.bytes_for(n)],
        }
    }

    /// Round each value to `dtype` (nearest, ties to even; saturating).
    pub fn from_f64(dtype: DType, shape: &[usize], values: &[f64]) -> Self {
        let mut t = HostTensor::zeros(dtype, shape);
        assert_eq!(
            values.len(),
            t.numel(),
            "HostTensor::from_f64: length does not match shape"
        );
        for (i, v) in values.iter().enumerate() {
            dtype.write_f64(&mut t.data, i, *v);
        }
        t
    }

    /// From `f32` values, converted to `dtype`.
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Self {
        let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        HostTensor::from_f64(dtype, shape, &v)
    }

    /// An `I32` tensor.
    pub fn from_i32(shape: &[usize], values: &[i32]) -> Self {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "HostTensor::from_i32: length does not match shape"
        );
        HostTensor {
            dtype: DType::I32,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// An `I64` tensor.
    pub fn from_i64(shape: &[usize], values: &[i64]) -> Self {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "HostTensor::from_i64: length does not match shape"
        );
        HostTensor {
            dtype: DType::I64,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// A `U8` tensor of raw bytes.
    pub fn from_bytes(shape: &[usize], bytes: Vec<u8>) -> Self {
        HostTensor {
            dtype: DType::U8,
            shape: shape.to_vec(),
            data: bytes,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element `i` (row-major) as `f64`.
    pub fn get(&self, i: usize) -> f64 {
        self.dtype.read_f64(&self.data, i)
    }

    /// Set element `i`, rounding to the dtype.
    pub fn set(&mut self, i: usize, v: f64) {
        self.dtype.write_f64(&mut self.data, i, v)
    }

    /// All elements as `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.numel()).map(|i| self.get(i)).collect()
    }

    /// All elements as `f32`.
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.numel()).map(|i| self.get(i) as f32).collect()
    }

    /// `I32` elements (exact); `None` for another dtype.
    pub fn to_i32(&self) -> Option<Vec<i32>> {
        (self.dtype == DType::I32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// `I64` elements (exact); `None` for another dtype.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        (self.dtype == DType::I64).then(|| {
            self.data
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect()
        })
    }
}
