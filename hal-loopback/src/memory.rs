//! Device memory of the loopback backend: private to this crate, reachable
//! from outside only through `download`.

use std::sync::{Arc, Mutex, MutexGuard};

use hal::{DType, HostTensor};

/// Queued work; an `Err` surfaces at `synchronize`.
pub(crate) type Command = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// One allocation.
pub(crate) struct Memory {
    state: Mutex<State>,
}

struct State {
    bytes: Vec<u8>,
    /// Queued commands that will still write this buffer.
    pending_writes: usize,
}

impl Memory {
    pub(crate) fn new(len: usize) -> Self {
        Memory {
            state: Mutex::new(State {
                bytes: vec![0xA5; len],
                pending_writes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a queued op panicked mid-write; the bytes
        // are still memory, as on a device after a faulting kernel.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Host read for `download`: refused while queued work still writes here.
    pub(crate) fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<(), String> {
        let s = self.lock();
        if s.pending_writes > 0 {
            return Err(format!(
                "{} queued op(s) still write this buffer: call synchronize() before download()",
                s.pending_writes
            ));
        }
        dst.copy_from_slice(&s.bytes[offset..offset + dst.len()]);
        Ok(())
    }
}

/// A byte range of one allocation, captured by a queued command.
#[derive(Clone)]
pub(crate) struct Region {
    mem: Arc<Memory>,
    offset: usize,
    len: usize,
}

impl Region {
    pub(crate) fn new(mem: Arc<Memory>, offset: usize, len: usize) -> Self {
        Region { mem, offset, len }
    }

    /// Mark that a queued command will write this region.
    pub(crate) fn begin_write(&self) {
        self.mem.lock().pending_writes += 1;
    }

    /// The queued write has happened.
    pub(crate) fn end_write(&self) {
        let mut s = self.mem.lock();
        s.pending_writes = s.pending_writes.saturating_sub(1);
    }

    pub(crate) fn read_bytes(&self) -> Vec<u8> {
        self.mem.lock().bytes[self.offset..self.offset + self.len].to_vec()
    }

    pub(crate) fn write_bytes(&self, data: &[u8]) {
        let n = data.len().min(self.len);
        self.mem.lock().bytes[self.offset..self.offset + n].copy_from_slice(&data[..n]);
    }
}

/// A captured input tensor.
pub(crate) struct Input {
    pub region: Region,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Input {
    pub(crate) fn read(&self) -> HostTensor {
        HostTensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: self.region.read_bytes(),
        }
    }

    pub(crate) fn read_i32(&self) -> Vec<i32> {
        self.read().to_i32().unwrap_or_default()
    }

    pub(crate) fn read_i64(&self) -> Vec<i64> {
        self.read().to_i64().unwrap_or_default()
    }
}

/// A captured output (or in-out) tensor; counted as a pending write until
/// the command that writes it has run.
pub(crate) struct Output(pub Input);

impl Output {
    pub(crate) fn new(input: Input) -> Self {
        input.region.begin_write();
        Output(input)
    }

    pub(crate) fn read(&self) -> HostTensor {
        self.0.read()
    }

    /// Write the result and retire the pending write.
    pub(crate) fn write(self, t: &HostTensor) {
        self.0.region.write_bytes(&t.data);
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.0.region.end_write();
    }
}
