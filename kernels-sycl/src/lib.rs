//! Kiln's Intel backend: OpenCL C kernels (Intel GPUs run them through Intel's compute runtime; PoCL runs them on CPUs).
//!
//! The crate is registered (kind `opencl`) so `kiln devices` lists it and
//! opening it gives a clear "not implemented yet" error; its kernels are not
//! written yet, and it ships no stand-in kernels.

hal::not_implemented_backend! {
    kind: "opencl",
    description: "Intel GPUs (and any OpenCL 1.2 device): OpenCL C kernels",
    why: "the OpenCL C kernels are not written yet",
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        let f = super::factory();
        assert_eq!(f.kind, "opencl");
        assert!(matches!(
            (f.probe)(),
            hal::Probe::Unavailable(hal::Unavailable::NotImplemented(_))
        ));
        assert!((f.open)(0).is_err());
    }
}
