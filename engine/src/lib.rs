//! # Kiln engine
//!
//! The thin layer over the HAL, in the shape of vLLM's v1 engine:
//!
//! * [`model`] — checkpoints (GGUF, Hugging Face directories), the
//!   Llama-family configuration and the forward pass over HAL ops;
//! * [`tokenizer`], [`chat`] — tokenisation and chat templates;
//! * [`kv`] — the paged KV cache's block pool and prefix cache;
//! * [`scheduler`] — continuous batching with chunked prefill and
//!   preemption by recompute;
//! * [`runner`] — ragged batch metadata and the forward step;
//! * [`sampler`], [`detok`], [`stop`] — sampling, incremental
//!   detokenisation and stop conditions;
//! * [`engine`] — the step loop tying them together;
//! * [`server`] — `kiln serve`, the OpenAI-compatible HTTP server;
//! * [`backends`], [`cli`] — the registry of in-tree backends and the
//!   `kiln` command line.
//!
//! An out-of-tree backend ships its own `kiln` binary by adding its factory
//! to the default registry:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! # fn my_backend_factory() -> hal::BackendFactory { unimplemented!() }
//! fn main() -> ExitCode {
//!     let mut registry = kiln::backends::default_registry();
//!     registry
//!         .register(my_backend_factory())
//!         .expect("my backend was built against this HAL");
//!     kiln::cli::main_with(registry)
//! }
//! ```

#![warn(missing_docs)]

pub mod backends;
pub mod chat;
pub mod cli;
pub mod detok;
pub mod engine;
pub mod kv;
pub mod model;
pub mod perplexity;
pub mod quantize;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod server;
pub mod stop;
pub mod tokenizer;

pub use engine::{Engine, EngineConfig};
