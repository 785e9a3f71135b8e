//! Kiln's portable GPU backend (WGSL through wgpu).
//!
//! The crate is registered (kind `wgpu`) so `kiln devices` lists it and
//! opening it gives a clear "not implemented yet" error; its kernels are not
//! written yet, and it ships no stand-in kernels.

hal::not_implemented_backend! {
    kind: "wgpu",
    description: "Portable GPUs (Vulkan, Metal, DX12): WGSL compute shaders",
    why: "the WGSL kernels are not written yet",
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_not_implemented() {
        let f = super::factory();
        assert_eq!(f.kind, "wgpu");
        assert!(matches!(
            (f.probe)(),
            hal::Probe::Unavailable(hal::Unavailable::NotImplemented(_))
        ));
        assert!((f.open)(0).is_err());
    }
}
