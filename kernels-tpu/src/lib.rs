//! Kiln's TPU backend (StableHLO programs through a PJRT plugin).
//!
//! The crate is registered (kind `tpu`) so `kiln devices` lists it and
//! opening it gives a clear "not implemented yet" error; its kernels are not
//! written yet, and it ships no stand-in kernels.

hal::not_implemented_backend! {
    kind: "tpu",
    description: "TPUs (and XLA's CPU plugin): StableHLO through PJRT",
    why: "the StableHLO lowerings and PJRT binding are not written yet",
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        let f = super::factory();
        assert_eq!(f.kind, "tpu");
        assert!(matches!(
            (f.probe)(),
            hal::Probe::Unavailable(hal::Unavailable::NotImplemented(_))
        ));
        assert!((f.open)(0).is_err());
    }
}
