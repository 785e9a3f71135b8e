//! The shared conformance suite on `opencl:0` (PoCL on a machine without a
//! GPU). Without an OpenCL platform each family prints why it was skipped;
//! `kiln conformance --device opencl` runs the same cases.

hal::conformance_suite!(kernels_sycl::open_default);
