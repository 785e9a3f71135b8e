//! Whole-step capture and replay with CUDA graphs ([`hal::StepCapture`]).
//!
//! A step shape ([`StepKey`]) runs eagerly the first time it is seen (so
//! every kernel is compiled and loaded), is recorded by stream capture the
//! second time (the ops are captured, not run; `end_step` instantiates the
//! graph and launches it), and is replayed with one `cuGraphLaunch` from then
//! on. Per-op scratch allocated during the capture becomes graph-owned
//! memory (`cuMemAllocAsync` / `cuMemFreeAsync` nodes). At most
//! [`MAX_GRAPHS`] graphs are kept, least recently used evicted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, MutexGuard};

use cudarc::driver::{result, sys, CudaContext};
use hal::{Backend, HalError, Result, StepKey, StepMode};

use crate::device::CudaDevice;

/// Graphs kept per device.
pub(crate) const MAX_GRAPHS: usize = 64;

/// Times a key is seen before it is recorded (the first run compiles and
/// loads the kernels, which capture must not do).
const RECORD_AFTER: u32 = 1;

struct Exec(sys::CUgraphExec);

// SAFETY: an instantiated graph is an immutable handle used only under the
// state's mutex, with the context bound.
unsafe impl Send for Exec {}

/// The recorded steps of one device.
pub(crate) struct Graphs {
    ctx: Arc<CudaContext>,
    seen: HashMap<StepKey, u32>,
    execs: HashMap<StepKey, Exec>,
    /// Least recently used first.
    order: VecDeque<StepKey>,
    recording: Option<StepKey>,
}

impl Graphs {
    pub(crate) fn new(ctx: Arc<CudaContext>) -> Graphs {
        Graphs {
            ctx,
            seen: HashMap::new(),
            execs: HashMap::new(),
            order: VecDeque::new(),
            recording: None,
        }
    }

    fn touch(&mut self, key: &StepKey) {
        if let Some(i) = self.order.iter().position(|k| k == key) {
            self.order.remove(i);
        }
        self.order.push_back(*key);
    }

    fn evict_to(&mut self, keep: usize) {
        while self.execs.len() > keep {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.execs.remove(&old) {
                destroy(&self.ctx, e);
            }
        }
    }

    fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
        for (_, e) in self.execs.drain() {
            destroy(&self.ctx, e);
        }
    }
}

fn destroy(ctx: &Arc<CudaContext>, e: Exec) {
    if ctx.bind_to_thread().is_ok() {
        // SAFETY: instantiated once, destroyed once.
        let _ = unsafe { result::graph::exec_destroy(e.0) };
    }
}

impl Drop for Graphs {
    fn drop(&mut self) {
        self.clear();
    }
}

impl CudaDevice {
    fn graphs(&self, op: &'static str) -> Result<MutexGuard<'_, Graphs>> {
        self.graphs
            .lock()
            .map_err(|_| HalError::device(self.name(), op, "graph cache poisoned"))
    }

    /// See [`hal::StepCapture::begin_step`].
    pub(crate) fn begin_step_impl(&self, key: &StepKey) -> Result<StepMode> {
        let op = "begin_step";
        let mut g = self.graphs(op)?;
        if g.execs.contains_key(key) {
            g.touch(key);
            return Ok(StepMode::Replay);
        }
        let n = g.seen.entry(*key).or_insert(0);
        *n = n.saturating_add(1);
        if *n <= RECORD_AFTER {
            return Ok(StepMode::Eager);
        }
        g.evict_to(MAX_GRAPHS - 1);
        self.bind(op)?;
        // SAFETY: the stream is this device's; relaxed mode lets other
        // threads use the driver meanwhile (nothing of theirs is captured).
        unsafe {
            result::stream::begin_capture(
                self.cu_stream(),
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            )
        }
        .map_err(|e| self.driver_err(op, "beginning stream capture", e))?;
        g.recording = Some(*key);
        Ok(StepMode::Record)
    }

    /// See [`hal::StepCapture::end_step`]: after a recorded step, end the
    /// capture, instantiate the graph and launch it (the recorded ops have
    /// not run yet). A capture that failed is discarded and its key never
    /// recorded again; the caller then runs the step eagerly.
    pub(crate) fn end_step_impl(&self, key: &StepKey) -> Result<()> {
        let op = "end_step";
        let mut g = self.graphs(op)?;
        if g.recording != Some(*key) {
            return Ok(());
        }
        g.recording = None;
        self.bind(op)?;
        // SAFETY: the stream is capturing (begun in begin_step).
        let graph = unsafe { result::stream::end_capture(self.cu_stream()) };
        let graph = match graph {
            Ok(graph) if !graph.is_null() => graph,
            Ok(_) => {
                g.seen.insert(*key, u32::MAX);
                return Err(HalError::device(
                    self.name(),
                    op,
                    "stream capture produced no graph",
                ));
            }
            Err(e) => {
                g.seen.insert(*key, u32::MAX);
                return Err(self.driver_err(op, "ending stream capture", e));
            }
        };
        // SAFETY: `graph` is the captured graph, destroyed after instantiation.
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        // SAFETY: as above; the exec keeps what it needs.
        let _ = unsafe { result::graph::destroy(graph) };
        let exec = match exec {
            Ok(e) => Exec(e),
            Err(e) => {
                g.seen.insert(*key, u32::MAX);
                return Err(self.driver_err(op, "instantiating the step graph", e));
            }
        };
        // SAFETY: a freshly instantiated graph on this device's stream.
        unsafe { result::graph::launch(exec.0, self.cu_stream()) }
            .map_err(|e| self.driver_err(op, "launching the step graph", e))?;
        g.execs.insert(*key, exec);
        g.touch(key);
        Ok(())
    }

    /// See [`hal::StepCapture::replay_step`].
    pub(crate) fn replay_step_impl(&self, key: &StepKey) -> Result<()> {
        let op = "replay_step";
        let g = self.graphs(op)?;
        let Some(exec) = g.execs.get(key) else {
            return Err(HalError::invalid(
                self.name(),
                op,
                format!("no step recorded for {key:?}"),
            ));
        };
        self.bind(op)?;
        // SAFETY: a live graph of this device, launched on its stream.
        unsafe { result::graph::launch(exec.0, self.cu_stream()) }
            .map_err(|e| self.driver_err(op, "launching the step graph", e))
    }

    /// See [`hal::StepCapture::invalidate_steps`].
    pub(crate) fn invalidate_steps_impl(&self) -> Result<()> {
        self.graphs("invalidate_steps")?.clear();
        Ok(())
    }
}
