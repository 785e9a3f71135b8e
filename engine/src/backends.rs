//! The in-tree backends: the one place that lists the factory of every
//! backend crate Kiln is built with.
//!
//! Device kinds: `cpu` (`kernels-cpu`), `cuda` (`kernels-cuda`), `hip`
//! (`kernels-hip`), `opencl` (the Intel backend, `kernels-sycl`), `wgpu`
//! (`kernels-wgpu`), `tpu` (`kernels-tpu`) and `loopback` (`hal-loopback`,
//! the device-like test backend over the reference oracle).

use hal::{BackendFactory, Registry};

/// The factory of every in-tree backend crate, in the order `kiln devices`
/// lists them.
pub fn factories() -> Vec<BackendFactory> {
    vec![
        kernels_cpu::factory(),
        kernels_cuda::factory(),
        kernels_hip::factory(),
        kernels_sycl::factory(),
        kernels_wgpu::factory(),
        kernels_tpu::factory(),
        hal_loopback::factory(),
    ]
}

/// A registry holding every in-tree backend, or the registry's refusal of
/// one of them (a malformed or duplicate kind, another HAL API version).
pub fn try_default_registry() -> hal::Result<Registry> {
    let mut registry = Registry::new();
    for factory in factories() {
        registry.register(factory)?;
    }
    Ok(registry)
}

/// A registry holding every in-tree backend: what the `kiln` binary uses,
/// and what an out-of-tree backend's binary extends with
/// [`Registry::register`] before calling [`crate::cli::main_with`].
///
/// # Panics
///
/// If the registry refuses an in-tree factory, which is a build defect (two
/// crates claiming one kind) that this crate's tests catch;
/// [`try_default_registry`] returns it as an error instead.
pub fn default_registry() -> Registry {
    match try_default_registry() {
        Ok(registry) => registry,
        Err(e) => panic!("an in-tree backend was refused by the registry: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_in_tree_backend() {
        let registry = match try_default_registry() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let kinds: Vec<&str> = registry.factories().iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            ["cpu", "cuda", "hip", "opencl", "wgpu", "tpu", "loopback"]
        );
        let sycl = registry.get("opencl").map(|f| f.crate_name);
        assert_eq!(sycl, Some("kernels-sycl"));
    }
}
