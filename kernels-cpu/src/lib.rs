//! Kiln's CPU backend.
//!
//! The crate is registered (kind `cpu`) so `kiln devices` lists it and
//! opening it gives a clear "not implemented yet" error; its kernels are not
//! written yet, and it ships no stand-in kernels.

hal::not_implemented_backend! {
    kind: "cpu",
    description: "CPU: SIMD kernels with run-time ISA detection (AVX-512, AVX2, scalar)",
    why: "the optimised CPU kernels are not written yet; use --device loopback for the reference oracle",
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        let f = super::factory();
        assert_eq!(f.kind, "cpu");
        assert!(matches!(
            (f.probe)(),
            hal::Probe::Unavailable(hal::Unavailable::NotImplemented(_))
        ));
        assert!((f.open)(0).is_err());
    }
}
