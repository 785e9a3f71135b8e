//! # hal-loopback: a device-like test backend
//!
//! `loopback` behaves like a GPU from the HAL's point of view while running
//! every op with the reference oracle ([`hal::reference`]):
//!
//! * **opaque buffers** — memory lives behind a private handle type; the only
//!   way for anyone else to see it is [`Backend::download`];
//! * **deferred work** — uploads and ops are queued and run only at
//!   [`Backend::synchronize`]; downloading a buffer that queued work still
//!   writes is an error, so a caller that forgets to synchronize fails loudly
//!   instead of reading stale bytes;
//! * **garbage on allocation** — fresh buffers hold `0xA5` bytes, so nothing
//!   can rely on zeroed memory.
//!
//! It is registered exactly like an out-of-tree vendor backend ([`factory`]),
//! passes the conformance suite, and with a [`PlantedFault`] it becomes a
//! buggy copy the suite must catch (see `tests/planted_faults.rs`).

mod memory;
mod ops;

use std::sync::{Arc, Mutex};

use hal::{
    Backend, BackendFactory, BackendId, Capabilities, DType, Device, DeviceBuffer, DeviceInfo,
    HalError, KvLayout, OpDesc, Precision, Probe, QuantFormat, Result, StepCapture, Unavailable,
    Unsupported, API_VERSION,
};

use memory::Memory;

/// A deliberate bug, for proving the conformance suite catches real mistakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedFault {
    /// Paged attention walks the block table one entry too far
    /// (`block_tables[b, j / block_size + 1]`).
    BlockTableOffByOne,
    /// AWQ weights are unpacked in natural nibble order instead of AWQ's
    /// `[0, 2, 4, 6, 1, 3, 5, 7]`.
    AwqNaturalNibbleOrder,
    /// Paged attention reads one token past `seq_len`.
    ReadPastSeqLen,
}

/// The device-like test backend.
pub struct LoopbackBackend {
    id: BackendId,
    name: String,
    caps: Capabilities,
    queue: Mutex<Vec<memory::Command>>,
    fault: Option<PlantedFault>,
}

impl LoopbackBackend {
    /// Device `index` (any index opens; each is an independent instance).
    pub fn open(index: usize) -> Result<Self> {
        Ok(LoopbackBackend {
            id: BackendId::fresh(),
            name: format!("loopback:{index}"),
            caps: capabilities(),
            queue: Mutex::new(Vec::new()),
            fault: None,
        })
    }

    /// `loopback:0`.
    pub fn open_default() -> Result<Self> {
        Self::open(0)
    }

    /// A copy with a planted bug (for testing the conformance suite).
    pub fn with_fault(fault: PlantedFault) -> Result<Self> {
        let mut b = Self::open(0)?;
        b.fault = Some(fault);
        Ok(b)
    }

    /// The planted fault, if any.
    pub fn fault(&self) -> Option<PlantedFault> {
        self.fault
    }

    /// Queue work to run at the next `synchronize`.
    fn enqueue(&self, cmd: memory::Command) -> Result<()> {
        self.queue
            .lock()
            .map_err(|_| HalError::device(&self.name, "enqueue", "queue lock poisoned"))?
            .push(cmd);
        Ok(())
    }

    fn memory<'b>(&self, op: &'static str, buf: &'b DeviceBuffer) -> Result<&'b Arc<Memory>> {
        buf.handle::<Arc<Memory>>(self.id)
            .ok_or_else(|| HalError::ForeignBuffer {
                backend: self.name.clone(),
                op,
                owner: format!("{:?}", buf.owner()),
            })
    }
}

fn capabilities() -> Capabilities {
    Capabilities {
        device: "loopback: deferred, opaque-buffer device running the f64 reference oracle".into(),
        memory_bytes: None,
        activation_dtypes: vec![DType::F32, DType::F16, DType::BF16],
        kv_cache_dtypes: vec![DType::F32, DType::F16, DType::BF16, DType::F8E4M3],
        kv_layouts: vec![
            KvLayout::Nhd,
            KvLayout::VllmSplitX { x: 4 },
            KvLayout::VllmSplitX { x: 8 },
            KvLayout::VllmSplitX { x: 16 },
        ],
        head_dims: Vec::new(),
        block_sizes: Vec::new(),
        quant_formats: QuantFormat::ALL.to_vec(),
        precisions: vec![Precision::Exact, Precision::Int8Activations],
        batch_invariant: true,
        step_capture: false,
    }
}

impl Backend for LoopbackBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &OpDesc) -> std::result::Result<(), Unsupported> {
        self.caps.check(op)
    }

    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer> {
        Ok(DeviceBuffer::new(
            self.id,
            bytes,
            Arc::new(Memory::new(bytes)),
        ))
    }

    fn upload(&self, dst: &mut DeviceBuffer, offset: usize, src: &[u8]) -> Result<()> {
        let mem = self.memory("upload", dst)?;
        let end = offset
            .checked_add(src.len())
            .filter(|&e| e <= dst.len())
            .ok_or_else(|| {
                HalError::invalid(
                    &self.name,
                    "upload",
                    format!(
                        "{} bytes at offset {offset} overflow a {}-byte buffer",
                        src.len(),
                        dst.len()
                    ),
                )
            })?;
        let target = memory::Region::new(mem.clone(), offset, end - offset);
        let data = src.to_vec();
        target.begin_write();
        self.enqueue(Box::new(move || {
            target.write_bytes(&data);
            target.end_write();
            Ok(())
        }))
    }

    fn download(&self, src: &DeviceBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mem = self.memory("download", src)?;
        if offset.checked_add(dst.len()).is_none_or(|e| e > src.len()) {
            return Err(HalError::invalid(
                &self.name,
                "download",
                format!(
                    "{} bytes at offset {offset} overflow a {}-byte buffer",
                    dst.len(),
                    src.len()
                ),
            ));
        }
        mem.read_into(offset, dst)
            .map_err(|m| HalError::invalid(&self.name, "download", m))
    }

    fn synchronize(&self) -> Result<()> {
        let cmds = std::mem::take(
            &mut *self
                .queue
                .lock()
                .map_err(|_| HalError::device(&self.name, "synchronize", "queue lock poisoned"))?,
        );
        let mut first_error = None;
        for cmd in cmds {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cmd))
                .unwrap_or_else(|_| Err("a queued op panicked (inconsistent metadata?)".into()));
            if let (Err(m), None) = (r, &first_error) {
                first_error = Some(m);
            }
        }
        match first_error {
            None => Ok(()),
            Some(m) => Err(HalError::device(&self.name, "synchronize", m)),
        }
    }
}

impl StepCapture for LoopbackBackend {}

/// The registry factory for kind `loopback`.
pub fn factory() -> BackendFactory {
    fn probe() -> Probe {
        Probe::Available(vec![DeviceInfo {
            index: 0,
            description: capabilities().device,
        }])
    }
    fn open(index: usize) -> Result<Arc<dyn Device>> {
        if index != 0 {
            return Err(HalError::Unavailable {
                backend: format!("loopback:{index}"),
                reason: Unavailable::NoDevice("loopback has one device, loopback:0".into()),
            });
        }
        Ok(Arc::new(LoopbackBackend::open(index)?))
    }
    BackendFactory {
        kind: "loopback",
        crate_name: env!("CARGO_PKG_NAME"),
        description: "device-like test backend: opaque buffers, deferred work, reference kernels",
        api_version: API_VERSION,
        probe,
        open,
    }
}
