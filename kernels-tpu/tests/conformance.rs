//! The shared conformance suite on `tpu:0` (XLA's CPU plugin where there is
//! no TPU). Without a PJRT plugin each family prints why it was skipped.

hal::conformance_suite!(kernels_tpu::open_default);
