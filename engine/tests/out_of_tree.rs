//! An out-of-tree backend's binary: the default registry plus its own
//! factory, run through `kiln::cli::run_from`.

use std::process::ExitCode;
use std::sync::Arc;

use hal::{BackendFactory, Device, HalError, Probe, Unavailable, API_VERSION};

fn no_driver() -> Probe {
    Probe::Unavailable(Unavailable::NoDriver("libacme.so not found".into()))
}

fn open_no_driver(index: usize) -> hal::Result<Arc<dyn Device>> {
    Err(HalError::Unavailable {
        backend: format!("acme:{index}"),
        reason: Unavailable::NoDriver("libacme.so not found".into()),
    })
}

fn panicking_probe() -> Probe {
    panic!("acme probe exploded")
}

fn factory(kind: &'static str, probe: fn() -> Probe) -> BackendFactory {
    BackendFactory {
        kind,
        crate_name: "acme-backend",
        description: "an out-of-tree test backend",
        api_version: API_VERSION,
        probe,
        open: open_no_driver,
    }
}

#[test]
fn an_out_of_tree_factory_extends_the_default_registry() {
    let mut registry = kiln::backends::default_registry();
    if let Err(e) = registry.register(factory("acme", no_driver)) {
        panic!("{e}");
    }
    assert!(registry.register(factory("cpu", no_driver)).is_err());
    let code = kiln::cli::run_from(registry, ["kiln", "conformance", "--device", "acme"]);
    assert_eq!(code, ExitCode::from(kiln::cli::EXIT_CANNOT_RUN));
}

#[test]
fn a_panicking_probe_is_reported_not_propagated() {
    let mut registry = kiln::backends::default_registry();
    if let Err(e) = registry.register(factory("acme", panicking_probe)) {
        panic!("{e}");
    }
    let code = kiln::cli::run_from(registry, ["kiln", "devices"]);
    assert_eq!(code, ExitCode::SUCCESS);
}
