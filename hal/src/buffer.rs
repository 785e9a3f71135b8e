//! Opaque device buffers.
//!
//! A [`DeviceBuffer`] is a handle to memory that belongs to one backend
//! instance. The host cannot see inside it: the handle's concrete type is
//! private to the backend crate that made it, so the only way to read its
//! bytes is [`crate::Backend::download`]. That is what lets a GPU backend keep
//! memory on the device and defer work until [`crate::Backend::synchronize`],
//! and what the device-like test backend (`hal-loopback`) enforces.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identity of one backend instance; buffers remember who made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendId(u64);

impl BackendId {
    /// A process-unique id. Call once per backend instance.
    pub fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        BackendId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An opaque handle to `len` bytes of device memory.
pub struct DeviceBuffer {
    owner: BackendId,
    len: usize,
    handle: Box<dyn Any + Send + Sync>,
}

impl DeviceBuffer {
    /// Wrap a backend's private handle. Only backends call this.
    pub fn new<T: Any + Send + Sync>(owner: BackendId, len: usize, handle: T) -> Self {
        DeviceBuffer {
            owner,
            len,
            handle: Box::new(handle),
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds zero bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend instance that allocated it.
    pub fn owner(&self) -> BackendId {
        self.owner
    }

    /// The backend's handle, if `owner` made this buffer and `T` is its type.
    pub fn handle<T: Any>(&self, owner: BackendId) -> Option<&T> {
        if self.owner != owner {
            return None;
        }
        self.handle.downcast_ref::<T>()
    }

    /// Mutable access to the backend's handle (see [`DeviceBuffer::handle`]).
    pub fn handle_mut<T: Any>(&mut self, owner: BackendId) -> Option<&mut T> {
        if self.owner != owner {
            return None;
        }
        self.handle.downcast_mut::<T>()
    }
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("owner", &self.owner)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
