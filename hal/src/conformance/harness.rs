//! What a case uses to talk to the device under test: uploads, guarded
//! outputs, and turning op results into outcomes.

use super::Outcome;
use crate::{
    DType, Device, DeviceBuffer, HalError, HostTensor, Layout, OpDesc, Tensor, View, ViewMut,
};

/// Bytes of guard before and after every output (a multiple of every
/// element size).
pub const GUARD_BYTES: usize = 64;
/// The guard pattern.
pub const GUARD_BYTE: u8 = 0xCD;
/// What an output's own bytes hold before the op runs: 0xFF is NaN in every
/// float dtype, so an element the op forgets to write fails the comparison.
pub const UNWRITTEN_BYTE: u8 = 0xFF;

/// The device under test, with helpers for cases.
pub struct Harness<'d> {
    /// The device.
    pub device: &'d dyn Device,
}

/// A device tensor surrounded by guard bytes.
pub struct Guarded {
    buffer: DeviceBuffer,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
}

impl<'d> Harness<'d> {
    /// Wrap a device.
    pub fn new(device: &'d dyn Device) -> Self {
        Harness { device }
    }

    /// `Some(Skip)` when the device refuses `desc`.
    pub fn skip_unless_supported(&self, desc: &OpDesc) -> Option<Outcome> {
        self.device
            .supports(desc)
            .err()
            .map(|u| Outcome::Skip(u.to_string()))
    }

    /// Upload a host tensor.
    pub fn upload(&self, host: &HostTensor) -> Result<Tensor, String> {
        Tensor::from_host(self.device, host).map_err(|e| format!("upload: {e}"))
    }

    /// An output tensor of `dtype` / `shape`, its bytes all
    /// `UNWRITTEN_BYTE` (0xFF, NaN in every float dtype), inside guard bytes.
    pub fn output(&self, dtype: DType, shape: &[usize]) -> Result<Guarded, String> {
        let n = dtype.bytes_for(shape.iter().product());
        self.guarded_bytes(dtype, shape, &vec![UNWRITTEN_BYTE; n])
    }

    /// An in-out tensor holding `init`, inside guard bytes.
    pub fn in_out(&self, init: &HostTensor) -> Result<Guarded, String> {
        self.guarded_bytes(init.dtype, &init.shape, &init.data)
    }

    fn guarded_bytes(
        &self,
        dtype: DType,
        shape: &[usize],
        inner: &[u8],
    ) -> Result<Guarded, String> {
        let mut bytes = vec![GUARD_BYTE; GUARD_BYTES];
        bytes.extend_from_slice(inner);
        bytes.extend(std::iter::repeat_n(GUARD_BYTE, GUARD_BYTES));
        let mut buffer = self
            .device
            .alloc(bytes.len())
            .map_err(|e| format!("alloc: {e}"))?;
        self.device
            .upload(&mut buffer, 0, &bytes)
            .map_err(|e| format!("upload: {e}"))?;
        Ok(Guarded {
            buffer,
            dtype,
            shape: shape.to_vec(),
        })
    }

    /// Synchronize, download a guarded tensor, check its guards, return its contents.
    pub fn read(&self, g: &Guarded) -> Result<HostTensor, String> {
        self.sync()?;
        let mut bytes = vec![0u8; g.buffer.len()];
        self.device
            .download(&g.buffer, 0, &mut bytes)
            .map_err(|e| format!("download: {e}"))?;
        let inner_len = g.dtype.bytes_for(g.shape.iter().product());
        let (head, rest) = bytes.split_at(GUARD_BYTES);
        let (inner, tail) = rest.split_at(inner_len);
        if let Some(i) = head.iter().position(|&b| b != GUARD_BYTE) {
            return Err(format!("wrote {} bytes before the output", GUARD_BYTES - i));
        }
        if let Some(i) = tail.iter().rposition(|&b| b != GUARD_BYTE) {
            return Err(format!("wrote {} bytes past the end of the output", i + 1));
        }
        Ok(HostTensor {
            dtype: g.dtype,
            shape: g.shape.clone(),
            data: inner.to_vec(),
        })
    }

    /// Synchronize the device.
    pub fn sync(&self) -> Result<(), String> {
        self.device
            .synchronize()
            .map_err(|e| format!("synchronize: {e}"))
    }

    /// Download a whole plain tensor after synchronizing.
    pub fn read_tensor(&self, t: &Tensor) -> Result<HostTensor, String> {
        self.sync()?;
        t.to_host(self.device).map_err(|e| format!("download: {e}"))
    }
}

impl Guarded {
    fn layout(&self) -> Layout {
        let offset = GUARD_BYTES * 8 / self.dtype.size_bits();
        Layout::strided(
            &self.shape,
            Layout::contiguous(&self.shape).strides(),
            offset,
        )
    }

    /// Read-only view of the guarded contents.
    pub fn view(&self) -> View<'_> {
        View {
            buffer: &self.buffer,
            dtype: self.dtype,
            layout: self.layout(),
        }
    }

    /// Writable view of the guarded contents.
    pub fn view_mut(&mut self) -> ViewMut<'_> {
        let layout = self.layout();
        ViewMut {
            buffer: &mut self.buffer,
            dtype: self.dtype,
            layout,
        }
    }
}

/// Turn an op's error into a failure message (the backend accepted the op
/// in `supports`, so it must run).
pub fn op_failed(op: &str, e: HalError) -> String {
    if e.is_unsupported() {
        format!("{op}: supports() accepted the op but it returned: {e}")
    } else {
        format!("{op}: {e}")
    }
}
