//! Errors: every variant names the backend and, where there is one, the op.

use std::fmt;

/// Why a backend cannot run an op (answered by [`crate::Backend::supports`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// The op family that was asked about (`"paged_attention"`, …).
    pub op: &'static str,
    /// A sentence a person can act on (`"head_dim 80 not in [64, 128]"`).
    pub reason: String,
}

impl Unsupported {
    /// Build a reason for `op`.
    pub fn new(op: &'static str, reason: impl Into<String>) -> Self {
        Unsupported {
            op,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.reason)
    }
}

/// Why a registered backend has no usable device on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// The vendor's driver / runtime library could not be loaded.
    NoDriver(String),
    /// The runtime loaded but reported no device (or not the index asked for).
    NoDevice(String),
    /// A required plugin (e.g. a PJRT plugin) was not found.
    NoPlugin(String),
    /// The backend's crate exists but its kernels are not written yet.
    NotImplemented(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoDriver(s) => write!(f, "no driver: {s}"),
            Unavailable::NoDevice(s) => write!(f, "no device: {s}"),
            Unavailable::NoPlugin(s) => write!(f, "no plugin: {s}"),
            Unavailable::NotImplemented(s) => write!(f, "not implemented yet: {s}"),
        }
    }
}

/// The one error type of the HAL.
#[derive(Debug, thiserror::Error)]
pub enum HalError {
    /// The backend does not implement this op for these arguments.
    #[error("{backend}: {unsupported}")]
    Unsupported {
        /// Backend name (`"cuda:0"`).
        backend: String,
        /// Op and reason.
        unsupported: Unsupported,
    },
    /// An argument has the wrong shape, dtype or value.
    #[error("{backend}: {op}: invalid argument: {msg}")]
    InvalidArgument {
        /// Backend name.
        backend: String,
        /// Op name.
        op: &'static str,
        /// What is wrong and how to fix it.
        msg: String,
    },
    /// A buffer made by another backend (or another instance) was passed in.
    #[error("{backend}: {op}: buffer was allocated by another backend ({owner})")]
    ForeignBuffer {
        /// Backend name.
        backend: String,
        /// Op name.
        op: &'static str,
        /// Owner description of the offending buffer.
        owner: String,
    },
    /// Allocation failed.
    #[error("{backend}: out of device memory allocating {bytes} bytes")]
    OutOfMemory {
        /// Backend name.
        backend: String,
        /// Bytes requested.
        bytes: usize,
    },
    /// The device cannot be used on this machine.
    #[error("{backend}: unavailable: {reason}")]
    Unavailable {
        /// Backend or device name.
        backend: String,
        /// Why.
        reason: Unavailable,
    },
    /// The backend's driver or runtime reported a failure.
    #[error("{backend}: {op}: device error: {msg}")]
    Device {
        /// Backend name.
        backend: String,
        /// Op name.
        op: &'static str,
        /// The runtime's message.
        msg: String,
    },
    /// A device name that does not follow `kind[:index]`.
    #[error("invalid device name {name:?}: {msg}")]
    InvalidDeviceName {
        /// What was given.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// No backend is registered for this kind.
    #[error("unknown device kind {kind:?}; registered kinds: {registered}")]
    UnknownDevice {
        /// The kind asked for.
        kind: String,
        /// Comma-separated registered kinds.
        registered: String,
    },
    /// The registry refused a factory.
    #[error("registry: {0}")]
    Registry(String),
}

impl HalError {
    /// Shorthand for [`HalError::InvalidArgument`].
    pub fn invalid(backend: &str, op: &'static str, msg: impl Into<String>) -> Self {
        HalError::InvalidArgument {
            backend: backend.to_string(),
            op,
            msg: msg.into(),
        }
    }

    /// Shorthand for [`HalError::Unsupported`].
    pub fn unsupported(backend: &str, unsupported: Unsupported) -> Self {
        HalError::Unsupported {
            backend: backend.to_string(),
            unsupported,
        }
    }

    /// Shorthand for [`HalError::Device`].
    pub fn device(backend: &str, op: &'static str, msg: impl Into<String>) -> Self {
        HalError::Device {
            backend: backend.to_string(),
            op,
            msg: msg.into(),
        }
    }

    /// Whether this error says the op is not supported (as opposed to failed).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, HalError::Unsupported { .. })
    }
}

/// Result with [`HalError`].
pub type Result<T, E = HalError> = std::result::Result<T, E>;
