//! Kiln's NVIDIA backend (CUDA through cudarc + NVRTC).
//!
//! The crate is registered (kind `cuda`) so `kiln devices` lists it and
//! opening it gives a clear "not implemented yet" error; its kernels are not
//! written yet, and it ships no stand-in kernels.

hal::not_implemented_backend! {
    kind: "cuda",
    description: "NVIDIA GPUs: CUDA kernels via NVRTC, cuBLAS/cuBLASLt",
    why: "the CUDA kernels are not written yet",
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        let f = super::factory();
        assert_eq!(f.kind, "cuda");
        assert!(matches!(
            (f.probe)(),
            hal::Probe::Unavailable(hal::Unavailable::NotImplemented(_))
        ));
        assert!((f.open)(0).is_err());
    }
}
