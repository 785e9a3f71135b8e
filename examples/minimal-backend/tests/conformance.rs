hal::conformance_suite!(minimal_backend::MinimalBackend::open_default);
