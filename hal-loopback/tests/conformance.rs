//! The shared conformance suite against the device-like backend.

hal::conformance_suite!(hal_loopback::LoopbackBackend::open_default);
