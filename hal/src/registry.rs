//! The backend registry: the one place a device name becomes a device.
//!
//! Every backend crate exports a [`BackendFactory`]; a binary registers the
//! factories it was built with (the only per-backend list in Kiln) and opens
//! devices by name. An out-of-tree backend registers its factory the same way.
//!
//! # Versioning policy
//!
//! [`API_VERSION`] is the version of the traits in this crate. A factory
//! records the version it was compiled against and the registry refuses a
//! factory it cannot call safely:
//!
//! * `major` changes on any breaking change to a trait, argument struct or
//!   error type; factories must match it exactly.
//! * `minor` changes when something is added in a compatible way (a new op
//!   trait method with a default body, a new `OpDesc` variant that old
//!   backends refuse through `supports`). A registry accepts a factory whose
//!   minor is ≤ its own.
//! * While `major` is 0 every minor change may break: the minor must match
//!   exactly.

use std::fmt;
use std::sync::Arc;

use crate::device_name::{is_valid_kind, DeviceName};
use crate::{Device, HalError, Result, Unavailable};

/// A version of the HAL's traits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    /// Breaking changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version of this crate's traits.
pub const API_VERSION: ApiVersion = ApiVersion { major: 0, minor: 1 };

impl ApiVersion {
    /// Whether a registry at `self` can load a factory built against `other`.
    pub fn accepts(self, other: ApiVersion) -> bool {
        if self.major == 0 {
            self == other
        } else {
            self.major == other.major && other.minor <= self.minor
        }
    }
}

/// One device a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device index (the `N` in `kind:N`).
    pub index: usize,
    /// Human-readable description.
    pub description: String,
}

/// What a factory's probe found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// These devices can be opened.
    Available(Vec<DeviceInfo>),
    /// None can, and why.
    Unavailable(Unavailable),
}

/// How a backend crate makes its devices.
#[derive(Clone, Copy)]
pub struct BackendFactory {
    /// Device kind (`"cuda"`): lower-case letters, digits, `-`, `_`.
    pub kind: &'static str,
    /// The crate implementing it.
    pub crate_name: &'static str,
    /// One line for `kiln devices`.
    pub description: &'static str,
    /// HAL version the factory was built against (use [`API_VERSION`]).
    pub api_version: ApiVersion,
    /// List devices without opening them; must not panic when the driver or
    /// hardware is missing.
    pub probe: fn() -> Probe,
    /// Open device `index`.
    pub open: fn(index: usize) -> Result<Arc<dyn Device>>,
}

impl fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendFactory")
            .field("kind", &self.kind)
            .field("crate_name", &self.crate_name)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

/// Registered factories, in registration order.
#[derive(Debug, Default)]
pub struct Registry {
    factories: Vec<BackendFactory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Add a factory. Refuses a malformed kind, a duplicate kind, or an
    /// incompatible API version (see the module's versioning policy).
    pub fn register(&mut self, factory: BackendFactory) -> Result<()> {
        if !is_valid_kind(factory.kind) {
            return Err(HalError::Registry(format!(
                "{}: kind {:?} must be lower-case letters, digits, '-' or '_'",
                factory.crate_name, factory.kind
            )));
        }
        if let Some(existing) = self.get(factory.kind) {
            return Err(HalError::Registry(format!(
                "kind {:?} is already registered by {}",
                factory.kind, existing.crate_name
            )));
        }
        if !API_VERSION.accepts(factory.api_version) {
            return Err(HalError::Registry(format!(
                "{} was built against HAL API {}, this build has {}; rebuild it against this HAL",
                factory.crate_name, factory.api_version, API_VERSION
            )));
        }
        self.factories.push(factory);
        Ok(())
    }

    /// Registered factories.
    pub fn factories(&self) -> &[BackendFactory] {
        &self.factories
    }

    /// The factory for `kind`.
    pub fn get(&self, kind: &str) -> Option<&BackendFactory> {
        self.factories.iter().find(|f| f.kind == kind)
    }

    /// Open a device by name (`"cuda:1"`, `"cpu"`).
    pub fn open(&self, name: &str) -> Result<Arc<dyn Device>> {
        let dn: DeviceName = name.parse()?;
        let factory = self.get(&dn.kind).ok_or_else(|| HalError::UnknownDevice {
            kind: dn.kind.clone(),
            registered: self
                .factories
                .iter()
                .map(|f| f.kind)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let device = (factory.open)(dn.index)?;
        let reported: DeviceName = device.name().parse().map_err(|_| {
            HalError::Registry(format!(
                "{} opened {name} but named it {:?}, which is not a device name",
                factory.crate_name,
                device.name()
            ))
        })?;
        if reported != dn {
            return Err(HalError::Registry(format!(
                "{} opened {dn} but named it {reported}",
                factory.crate_name
            )));
        }
        Ok(device)
    }
}

/// Define `pub fn factory() -> hal::BackendFactory` for a backend crate whose
/// kernels are not written yet: its probe and `open` both answer
/// [`Unavailable::NotImplemented`] with `$why`, so `kiln devices` lists the
/// kind honestly and nothing pretends to run.
#[macro_export]
macro_rules! not_implemented_backend {
    (kind: $kind:literal, description: $desc:literal, why: $why:literal $(,)?) => {
        /// This crate's registry factory (kernels not implemented yet).
        pub fn factory() -> $crate::BackendFactory {
            fn probe() -> $crate::Probe {
                $crate::Probe::Unavailable($crate::Unavailable::NotImplemented($why.to_string()))
            }
            fn open(index: usize) -> $crate::Result<::std::sync::Arc<dyn $crate::Device>> {
                Err($crate::HalError::Unavailable {
                    backend: format!("{}:{}", $kind, index),
                    reason: $crate::Unavailable::NotImplemented($why.to_string()),
                })
            }
            $crate::BackendFactory {
                kind: $kind,
                crate_name: env!("CARGO_PKG_NAME"),
                description: $desc,
                api_version: $crate::API_VERSION,
                probe,
                open,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Probe {
        Probe::Unavailable(Unavailable::NotImplemented("test".into()))
    }

    fn open_fails(_: usize) -> Result<Arc<dyn Device>> {
        Err(HalError::Unavailable {
            backend: "dummy".into(),
            reason: Unavailable::NotImplemented("test".into()),
        })
    }

    fn factory(kind: &'static str, api_version: ApiVersion) -> BackendFactory {
        BackendFactory {
            kind,
            crate_name: "test",
            description: "test",
            api_version,
            probe: unavailable,
            open: open_fails,
        }
    }

    #[test]
    fn refuses_bad_factories() {
        let mut r = Registry::new();
        r.register(factory("dummy", API_VERSION)).unwrap();
        assert!(r.register(factory("dummy", API_VERSION)).is_err());
        assert!(r.register(factory("Bad Kind", API_VERSION)).is_err());
        let newer = ApiVersion {
            major: API_VERSION.major,
            minor: API_VERSION.minor + 1,
        };
        assert!(r.register(factory("newer", newer)).is_err());
    }

    #[test]
    fn open_reports_unknown_kinds_and_failures() {
        let mut r = Registry::new();
        r.register(factory("dummy", API_VERSION)).unwrap();
        let err = r.open("nope:0").err().unwrap().to_string();
        assert!(err.contains("registered kinds: dummy"), "{err}");
        assert!(matches!(r.open("dummy"), Err(HalError::Unavailable { .. })));
        assert!(matches!(
            r.open("dummy:x"),
            Err(HalError::InvalidDeviceName { .. })
        ));
    }

    #[test]
    fn version_policy() {
        let v = |major, minor| ApiVersion { major, minor };
        assert!(v(0, 1).accepts(v(0, 1)));
        assert!(!v(0, 2).accepts(v(0, 1)));
        assert!(v(1, 3).accepts(v(1, 2)));
        assert!(!v(1, 3).accepts(v(1, 4)));
        assert!(!v(2, 0).accepts(v(1, 0)));
    }
}
