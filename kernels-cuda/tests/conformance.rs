//! The shared conformance suite on `cuda:0`. Without an NVIDIA driver and
//! GPU each family prints why it was skipped; `kiln conformance --device
//! cuda` runs the same cases from the release binary.

hal::conformance_suite!(kernels_cuda::open_default);
