//! The shared conformance suite on `wgpu:0` (lavapipe where there is no GPU).
//! Without an adapter each family prints why it was skipped.

hal::conformance_suite!(kernels_wgpu::open_default);
