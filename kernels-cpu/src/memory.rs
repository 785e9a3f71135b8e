//! Host memory behind the opaque `DeviceBuffer` handle, 64-byte aligned,
//! and typed access to views of it.

use bytemuck::{Pod, Zeroable};
use hal::tensor::ViewInfo;
use hal::{BackendId, DeviceBuffer, HalError, Result, View, ViewMut};

/// One cache line; buffers are vectors of these so every buffer starts
/// 64-byte aligned.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
pub(crate) struct Line([u8; 64]);

/// The private handle type of CPU buffers.
pub(crate) struct HostMem {
    lines: Vec<Line>,
    len: usize,
}

impl HostMem {
    pub(crate) fn new(len: usize) -> Self {
        HostMem {
            lines: vec![Line([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// Typed access to buffers of one backend instance.
#[derive(Clone, Copy)]
pub(crate) struct Access<'n> {
    pub id: BackendId,
    pub name: &'n str,
}

impl<'n> Access<'n> {
    pub(crate) fn mem<'b>(&self, op: &'static str, buf: &'b DeviceBuffer) -> Result<&'b HostMem> {
        buf.handle::<HostMem>(self.id)
            .ok_or_else(|| self.foreign(op, buf))
    }

    pub(crate) fn mem_mut<'b>(
        &self,
        op: &'static str,
        buf: &'b mut DeviceBuffer,
    ) -> Result<&'b mut HostMem> {
        let owner = buf.owner();
        buf.handle_mut::<HostMem>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.to_string(),
                op,
                owner: format!("{owner:?}"),
            })
    }

    fn foreign(&self, op: &'static str, buf: &DeviceBuffer) -> HalError {
        HalError::ForeignBuffer {
            backend: self.name.to_string(),
            op,
            owner: format!("{:?}", buf.owner()),
        }
    }

    fn cast<'a, T: Pod>(&self, op: &'static str, bytes: &'a [u8]) -> Result<&'a [T]> {
        bytemuck::try_cast_slice(bytes)
            .map_err(|e| HalError::invalid(self.name, op, format!("misaligned view: {e:?}")))
    }

    /// The elements of a (validated, contiguous) view.
    pub(crate) fn read<'a, T: Pod>(&self, op: &'static str, v: &View<'a>) -> Result<&'a [T]> {
        let bytes = self.mem(op, v.buffer)?.bytes();
        let (off, len) = (v.byte_offset(), v.byte_len());
        self.cast(op, &bytes[off..off + len])
    }

    /// The raw bytes of a (validated, contiguous) view.
    pub(crate) fn read_bytes<'a>(&self, op: &'static str, v: &View<'a>) -> Result<&'a [u8]> {
        let bytes = self.mem(op, v.buffer)?.bytes();
        let (off, len) = (v.byte_offset(), v.byte_len());
        Ok(&bytes[off..off + len])
    }

    /// The elements of a (validated, contiguous) writable view.
    pub(crate) fn write<'a, T: Pod>(
        &self,
        op: &'static str,
        v: ViewMut<'a>,
    ) -> Result<&'a mut [T]> {
        let (off, len) = (v.byte_offset(), v.byte_len());
        let bytes = self.mem_mut(op, v.buffer)?.bytes_mut();
        bytemuck::try_cast_slice_mut(&mut bytes[off..off + len])
            .map_err(|e| HalError::invalid(self.name, op, format!("misaligned view: {e:?}")))
    }

    /// Whole-buffer bytes (e.g. a KV cache).
    pub(crate) fn buffer_bytes<'a>(
        &self,
        op: &'static str,
        b: &'a DeviceBuffer,
    ) -> Result<&'a [u8]> {
        Ok(self.mem(op, b)?.bytes())
    }

    /// Whole-buffer bytes, writable.
    pub(crate) fn buffer_bytes_mut<'a>(
        &self,
        op: &'static str,
        b: &'a mut DeviceBuffer,
    ) -> Result<&'a mut [u8]> {
        Ok(self.mem_mut(op, b)?.bytes_mut())
    }
}
