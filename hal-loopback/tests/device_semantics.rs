//! The loopback behaves like a device: opaque buffers, deferred work,
//! ownership checks, clean errors.

use hal::{Backend, DType, Elementwise, HalError, HostTensor, SiluAndMulArgs, Tensor};
use hal_loopback::LoopbackBackend;

#[test]
fn work_runs_only_at_synchronize() {
    let dev = LoopbackBackend::open_default().unwrap();
    let x = Tensor::from_host(
        &dev,
        &HostTensor::from_f32(DType::F32, &[1, 4], &[1.0, 2.0, 3.0, 4.0]),
    )
    .unwrap();
    let mut out = Tensor::alloc(&dev, DType::F32, &[1, 2]).unwrap();
    dev.silu_and_mul(SiluAndMulArgs {
        x: x.view(),
        out: out.view_mut(),
    })
    .unwrap();
    // Nothing has run yet: reading the output must be refused, not stale.
    let err = out.to_host(&dev).unwrap_err();
    assert!(err.to_string().contains("synchronize"), "{err}");
    dev.synchronize().unwrap();
    let got = out.to_host(&dev).unwrap().to_f32();
    let silu = |a: f32| a / (1.0 + (-a).exp());
    assert!((got[0] - silu(1.0) * 3.0).abs() < 1e-6);
    assert!((got[1] - silu(2.0) * 4.0).abs() < 1e-6);
}

#[test]
fn fresh_buffers_hold_garbage() {
    let dev = LoopbackBackend::open_default().unwrap();
    let buf = dev.alloc(8).unwrap();
    let mut bytes = [0u8; 8];
    dev.download(&buf, 0, &mut bytes).unwrap();
    assert_eq!(bytes, [0xA5; 8]);
}

#[test]
fn buffers_of_another_instance_are_refused() {
    let a = LoopbackBackend::open_default().unwrap();
    let b = LoopbackBackend::open_default().unwrap();
    let buf = a.alloc(16).unwrap();
    let mut out = [0u8; 16];
    assert!(matches!(
        b.download(&buf, 0, &mut out),
        Err(HalError::ForeignBuffer { .. })
    ));
}

#[test]
fn out_of_range_transfers_are_errors() {
    let dev = LoopbackBackend::open_default().unwrap();
    let mut buf = dev.alloc(8).unwrap();
    assert!(dev.upload(&mut buf, 4, &[0u8; 8]).is_err());
    let mut out = [0u8; 8];
    assert!(dev.download(&buf, 1, &mut out).is_err());
}

#[test]
fn bad_shapes_are_refused_before_queueing() {
    let dev = LoopbackBackend::open_default().unwrap();
    let x = Tensor::alloc(&dev, DType::F32, &[2, 5]).unwrap();
    let mut out = Tensor::alloc(&dev, DType::F32, &[2, 2]).unwrap();
    let err = dev
        .silu_and_mul(SiluAndMulArgs {
            x: x.view(),
            out: out.view_mut(),
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("loopback:0: silu_and_mul"),
        "{err}"
    );
}

#[test]
fn registry_opens_it_by_name() {
    let mut r = hal::Registry::new();
    r.register(hal_loopback::factory()).unwrap();
    let dev = r.open("loopback").unwrap();
    assert_eq!(dev.name(), "loopback:0");
    assert!(dev.capabilities().batch_invariant);
    assert!(r.open("loopback:1").is_err());
}
