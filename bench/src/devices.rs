//! Which devices a run benchmarks.
//!
//! By default every device the registry's probes find, except the
//! `loopback` test backend (the f64 reference oracle: correct, not fast).
//! `KILN_BENCH_DEVICES=cpu,cuda:0` names devices instead (`loopback`
//! included, if named).

use std::sync::Arc;

use hal::{Device, Probe, Registry};

/// The environment variable naming devices (comma-separated).
pub const DEVICES_ENV: &str = "KILN_BENCH_DEVICES";

/// Device kinds skipped unless named explicitly.
pub const EXCLUDED_BY_DEFAULT: &[&str] = &["loopback"];

/// A registry of every in-tree backend (`cpu`, `cuda`, `hip`, `opencl`,
/// `wgpu`, `tpu`, `loopback`), and the registry's refusals, if any.
pub fn standard_registry() -> (Registry, Vec<String>) {
    let mut registry = Registry::new();
    let mut notes = Vec::new();
    for factory in [
        kernels_cpu::factory(),
        kernels_cuda::factory(),
        kernels_hip::factory(),
        kernels_sycl::factory(),
        kernels_wgpu::factory(),
        kernels_tpu::factory(),
        hal_loopback::factory(),
    ] {
        if let Err(e) = registry.register(factory) {
            notes.push(format!("backend {} not registered: {e}", factory.kind));
        }
    }
    (registry, notes)
}

/// Device names from [`DEVICES_ENV`], if set and not empty.
pub fn names_from_env() -> Option<Vec<String>> {
    let v = std::env::var(DEVICES_ENV).ok()?;
    let names = parse_names(&v);
    (!names.is_empty()).then_some(names)
}

/// `"cpu, cuda:0"` → `["cpu", "cuda:0"]`.
pub fn parse_names(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Open `names`, or (when empty) every available device except the
/// [`EXCLUDED_BY_DEFAULT`] kinds. Devices that fail to open, and kinds whose
/// probe finds nothing, become notes instead of errors.
pub fn open(registry: &Registry, names: &[String]) -> (Vec<Arc<dyn Device>>, Vec<String>) {
    let mut notes = Vec::new();
    let mut to_open = Vec::new();
    if names.is_empty() {
        for f in registry.factories() {
            if EXCLUDED_BY_DEFAULT.contains(&f.kind) {
                continue;
            }
            match (f.probe)() {
                Probe::Available(list) => {
                    to_open.extend(list.iter().map(|info| format!("{}:{}", f.kind, info.index)));
                }
                Probe::Unavailable(why) => notes.push(format!("{}: {why}", f.kind)),
            }
        }
    } else {
        to_open.extend(names.iter().cloned());
    }
    let mut devices = Vec::new();
    for name in to_open {
        match registry.open(&name) {
            Ok(d) => devices.push(d),
            Err(e) => notes.push(format!("{name} not opened: {e}")),
        }
    }
    (devices, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_selection_excludes_loopback() {
        let (registry, notes) = standard_registry();
        assert!(notes.is_empty(), "{notes:?}");
        let (devices, _) = open(&registry, &[]);
        assert!(devices.iter().all(|d| !d.name().starts_with("loopback")));
        let (devices, notes) = open(&registry, &parse_names(" loopback , nope:1,"));
        assert_eq!(devices.len(), 1, "{notes:?}");
        assert_eq!(devices[0].name(), "loopback:0");
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("nope:1 not opened"), "{notes:?}");
    }
}
