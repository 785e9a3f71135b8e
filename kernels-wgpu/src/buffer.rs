//! Device buffers: the private handle behind a [`hal::DeviceBuffer`].
//!
//! WGSL storage buffers are arrays of 32-bit words, so every allocation is
//! padded to a multiple of 4 bytes (and to at least 4); the padding is never
//! read back. Each buffer has a process-unique id, the key of the bind-group
//! cache; dropping a buffer records its id so cached bind groups that hold it
//! are evicted and its memory is released.

use std::sync::{Arc, Mutex};

/// Bytes of the allocation that holds `len` bytes of tensor data.
pub(crate) fn padded_len(len: usize) -> u64 {
    (len.max(4).div_ceil(4) * 4) as u64
}

/// One wgpu storage buffer owned by a [`crate::WgpuDevice`].
#[derive(Debug)]
pub(crate) struct WgpuBuffer {
    /// Process-unique id (key of the bind-group cache).
    pub(crate) id: u64,
    /// The buffer (`STORAGE | COPY_SRC | COPY_DST`), [`padded_len`] bytes.
    pub(crate) buffer: wgpu::Buffer,
    /// Ids of dropped buffers, drained by the bind-group cache.
    pub(crate) dropped: Arc<Mutex<Vec<u64>>>,
}

impl Drop for WgpuBuffer {
    fn drop(&mut self) {
        if let Ok(mut d) = self.dropped.lock() {
            d.push(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn allocations_are_whole_words() {
        assert_eq!(super::padded_len(0), 4);
        assert_eq!(super::padded_len(3), 4);
        assert_eq!(super::padded_len(8), 8);
        assert_eq!(super::padded_len(9), 12);
    }
}
