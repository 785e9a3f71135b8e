//! # Kiln engine
//!
//! The thin layer over the HAL: today the registry of in-tree backends
//! ([`backends`]) and the `kiln` command line ([`cli`]); the KV-cache manager,
//! scheduler, model runner, sampler and server come next.
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
pub mod cli;
