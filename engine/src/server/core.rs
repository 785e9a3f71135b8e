//! The engine core loop, on its own thread. Handlers talk to it through a
//! command channel and receive each request's outputs on a channel of its
//! own; a closed output channel (the client went away) aborts the request
//! and frees its KV blocks at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tmpsc;

use super::metrics::Metrics;
use crate::engine::{Engine, EngineStats, RequestError, RequestOutput};
use crate::kv::RequestId;
use crate::sampler::SamplingParams;

/// What a request's channel carries.
#[derive(Debug)]
pub enum Event {
    /// A step's output.
    Output(RequestOutput),
    /// The engine failed; the request is lost.
    Failed(String),
}

/// A command to the core.
pub enum Command {
    /// Add a request; the reply says whether it was accepted (its id) and
    /// its outputs go to `events`.
    Add {
        /// Prompt token ids.
        prompt: Vec<u32>,
        /// Sampling parameters (`n == 1`).
        params: SamplingParams,
        /// Where the outputs go.
        events: tmpsc::UnboundedSender<Event>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<RequestId, RequestError>>,
    },
    /// Abort a request whose client went away.
    Abort(RequestId),
    /// Withdraw a request the handler no longer wants (e.g. a sibling
    /// choice was refused).
    Cancel(RequestId),
    /// Abort everything (shutdown after the drain timeout).
    AbortAll,
    /// Stop the loop.
    Stop,
}

/// Shared, lock-free view of the core's state for handlers.
#[derive(Debug, Default)]
pub struct CoreState {
    /// Requests added and not yet finished.
    pub in_flight: AtomicUsize,
    /// Requests waiting for their first step.
    pub waiting: AtomicUsize,
    /// Set once the engine failed for good.
    pub broken: AtomicBool,
}

/// Handle to the core thread.
#[derive(Clone)]
pub struct CoreHandle {
    tx: mpsc::Sender<Command>,
    /// Shared counters.
    pub state: Arc<CoreState>,
    /// Last engine stats snapshot.
    pub stats: Arc<Mutex<EngineStats>>,
}

impl CoreHandle {
    /// Send a command; `false` when the core has stopped.
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok()
    }
}

struct Live {
    events: tmpsc::UnboundedSender<Event>,
    arrival: Instant,
    last_token: Option<Instant>,
}

/// Start the core loop on a new thread.
pub fn spawn(
    mut engine: Engine,
    metrics: Arc<Metrics>,
) -> (CoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Command>();
    let state = Arc::new(CoreState::default());
    let stats = Arc::new(Mutex::new(engine.stats()));
    let handle = CoreHandle {
        tx,
        state: Arc::clone(&state),
        stats: Arc::clone(&stats),
    };
    let join = std::thread::Builder::new()
        .name("kiln-engine".into())
        .spawn(move || run(&mut engine, rx, &state, &stats, &metrics))
        .unwrap_or_else(|e| {
            // Thread creation only fails when the OS is out of resources.
            panic!("could not start the engine thread: {e}")
        });
    (handle, join)
}

fn run(
    engine: &mut Engine,
    rx: mpsc::Receiver<Command>,
    state: &CoreState,
    stats: &Mutex<EngineStats>,
    metrics: &Metrics,
) {
    let mut live: HashMap<RequestId, Live> = HashMap::new();
    loop {
        // Block for a command when idle; otherwise take what is queued.
        let first = if engine.has_unfinished() {
            match rx.try_recv() {
                Ok(c) => Some(c),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut commands: Vec<Command> = first.into_iter().collect();
        commands.extend(rx.try_iter());
        for cmd in commands {
            match cmd {
                Command::Add {
                    prompt,
                    params,
                    events,
                    reply,
                } => match engine.add_request(prompt, params) {
                    Ok(id) => {
                        live.insert(
                            id,
                            Live {
                                events,
                                arrival: Instant::now(),
                                last_token: None,
                            },
                        );
                        let _ = reply.send(Ok(id));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Command::Abort(id) => {
                    if live.contains_key(&id) {
                        metrics.aborted_disconnect.inc();
                    }
                    abort(engine, &mut live, id, metrics);
                }
                Command::Cancel(id) => abort(engine, &mut live, id, metrics),
                Command::AbortAll => {
                    let ids: Vec<RequestId> = live.keys().copied().collect();
                    for id in ids {
                        abort(engine, &mut live, id, metrics);
                    }
                }
                Command::Stop => {
                    let ids: Vec<RequestId> = live.keys().copied().collect();
                    for id in ids {
                        abort(engine, &mut live, id, metrics);
                    }
                    return;
                }
            }
        }
        // Clients that went away: abort before spending a step on them.
        let gone: Vec<RequestId> = live
            .iter()
            .filter(|(_, l)| l.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(l) = live.remove(&id) {
                drop(l);
                if engine.abort(id).is_some() {
                    metrics.aborted_disconnect.inc();
                    metrics.finished("abort");
                }
            }
        }
        if engine.has_unfinished() {
            match engine.step() {
                Ok(outputs) => {
                    let now = Instant::now();
                    for o in outputs {
                        dispatch(engine, &mut live, o, now, metrics);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "engine step failed; aborting every request");
                    state.broken.store(true, Ordering::SeqCst);
                    let ids: Vec<RequestId> = live.keys().copied().collect();
                    for id in ids {
                        engine.abort(id);
                        if let Some(l) = live.remove(&id) {
                            let _ = l.events.send(Event::Failed(e.to_string()));
                        }
                    }
                }
            }
        }
        let s = engine.stats();
        metrics.observe_engine(&s);
        if let Ok(mut g) = stats.lock() {
            *g = s;
        }
        state.in_flight.store(live.len(), Ordering::SeqCst);
        state.waiting.store(s.waiting, Ordering::SeqCst);
    }
}

fn abort(
    engine: &mut Engine,
    live: &mut HashMap<RequestId, Live>,
    id: RequestId,
    metrics: &Metrics,
) {
    if let Some(out) = engine.abort(id) {
        metrics.finished("abort");
        if let Some(l) = live.remove(&id) {
            let _ = l.events.send(Event::Output(out));
        }
    } else {
        live.remove(&id);
    }
}

fn dispatch(
    engine: &Engine,
    live: &mut HashMap<RequestId, Live>,
    o: RequestOutput,
    now: Instant,
    metrics: &Metrics,
) {
    let _ = engine;
    let id = o.id;
    let finished = o.finish.is_some();
    if let Some(l) = live.get_mut(&id) {
        if !o.tokens.is_empty() {
            match l.last_token {
                None => metrics.ttft.observe((now - l.arrival).as_secs_f64()),
                Some(t) => metrics.itl.observe((now - t).as_secs_f64()),
            }
            l.last_token = Some(now);
        }
        if finished {
            metrics.e2e.observe((now - l.arrival).as_secs_f64());
            metrics.finished(o.finish.as_ref().map_or("abort", |f| f.reason.as_str()));
        }
        let _ = l.events.send(Event::Output(o));
    }
    if finished {
        live.remove(&id);
    }
}
