//! # Kiln HAL
//!
//! The contract between Kiln's engine and its kernel crates:
//!
//! * [`DType`] and exact FP8 conversions ([`fp8`]);
//! * opaque device buffers ([`DeviceBuffer`]) with tensor views
//!   ([`View`], [`ViewMut`], [`Tensor`]) and host tensors ([`HostTensor`]);
//! * [`Backend`] (name, capabilities, `supports`, alloc / upload / download /
//!   synchronize) and one trait per op family: [`Gemm`], [`QuantGemm`],
//!   [`KvCacheOps`], [`PagedAttention`], [`FlashAttention`], [`Elementwise`],
//!   plus the whole-step hook [`StepCapture`]; [`Device`] is their sum;
//! * quantised formats exactly as checkpoints store them ([`quant`]);
//! * a [`Registry`] of backend factories with an API version;
//! * [`reference`](mod@reference), the f64 oracle, and [`conformance`], the suite every
//!   backend runs (`hal::conformance_suite!`).
//!
//! Shapes are written outermost first, e.g. `[num_tokens, num_heads, head_dim]`.

pub mod backend;
pub mod buffer;
pub mod check;
pub mod conformance;
pub mod device_name;
pub mod dtype;
pub mod error;
pub mod fp8;
pub mod kv;
pub mod ops;
pub mod quant;
pub mod reference;
pub mod registry;
pub mod rope_table;
pub mod tensor;

pub use backend::{Backend, Capabilities, Device, StepCapture, StepKey, StepMode};
pub use buffer::{BackendId, DeviceBuffer};
pub use device_name::DeviceName;
pub use dtype::DType;
pub use error::{HalError, Result, Unavailable, Unsupported};
pub use kv::{KvCache, KvCacheSpec, KvLayout};
pub use ops::*;
pub use quant::{
    ActivationScale, GgufType, PackedWeight, QuantFormat, QuantSpec, QuantWeights, ScaleGranularity,
};
pub use registry::{ApiVersion, BackendFactory, DeviceInfo, Probe, Registry, API_VERSION};
pub use tensor::{HostTensor, Layout, Tensor, View, ViewMut};
