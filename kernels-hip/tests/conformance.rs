//! The shared conformance suite on `hip:0`. Without a HIP runtime and an
//! AMD GPU each family prints why it was skipped ("no HIP runtime" / "no
//! HIP device"); `kiln conformance --device hip` runs the same cases from
//! the release binary.

hal::conformance_suite!(kernels_hip::open_default);
