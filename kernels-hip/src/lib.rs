//! Kiln's AMD backend (HIP through a run-time libamdhip64 binding).
//!
//! The crate is registered (kind `hip`) so `kiln devices` lists it and
//! opening it gives a clear "not implemented yet" error; its kernels are not
//! written yet, and it ships no stand-in kernels.

hal::not_implemented_backend! {
    kind: "hip",
    description: "AMD GPUs: HIP kernels via hiprtc",
    why: "the HIP kernels are not written yet",
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        let f = super::factory();
        assert_eq!(f.kind, "hip");
        assert!(matches!(
            (f.probe)(),
            hal::Probe::Unavailable(hal::Unavailable::NotImplemented(_))
        ));
        assert!((f.open)(0).is_err());
    }
}
