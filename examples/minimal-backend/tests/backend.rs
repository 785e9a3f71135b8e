//! What the conformance suite does not cover: the factory, device names,
//! buffer ownership and bounds, and the honesty of `supports`.

use hal::{
    Backend, DType, Gemm, GemmArgs, HalError, HostTensor, OpDesc, Probe, Registry, RopeStyle,
    Tensor, Unavailable,
};
use minimal_backend::{factory, MinimalBackend};

#[test]
fn registers_and_opens_by_name() {
    let mut registry = Registry::new();
    registry.register(factory()).unwrap();
    assert!(matches!((factory().probe)(), Probe::Available(d) if d.len() == 1));
    let device = registry.open("minimal").unwrap();
    assert_eq!(device.name(), "minimal:0");
    match registry.open("minimal:1") {
        Err(HalError::Unavailable {
            reason: Unavailable::NoDevice(_),
            ..
        }) => {}
        Err(e) => panic!("expected NoDevice, got {e}"),
        Ok(_) => panic!("minimal:1 should not exist"),
    }
}

#[test]
fn buffers_belong_to_one_instance() {
    let a = MinimalBackend::open_default().unwrap();
    let b = MinimalBackend::open_default().unwrap();
    let mut buf = a.alloc(16).unwrap();
    a.upload(&mut buf, 4, &[1, 2, 3, 4]).unwrap();
    let mut back = [0u8; 4];
    a.download(&buf, 4, &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);
    assert!(matches!(
        b.download(&buf, 0, &mut back),
        Err(HalError::ForeignBuffer { .. })
    ));
    assert!(matches!(
        a.upload(&mut buf, 14, &[0; 4]),
        Err(HalError::InvalidArgument { .. })
    ));
    assert!(matches!(
        a.download(&buf, usize::MAX, &mut back),
        Err(HalError::InvalidArgument { .. })
    ));
}

#[test]
fn refuses_what_it_has_no_kernel_for() {
    let dev = MinimalBackend::open_default().unwrap();
    let rope = OpDesc::Rope {
        dtype: DType::F32,
        head_dim: 64,
        rotary_dim: 64,
        style: RopeStyle::Neox,
    };
    let why = dev.supports(&rope).unwrap_err();
    assert!(why.reason.contains("not implemented"), "{why}");
    let f16_gemm = OpDesc::Gemm {
        input: DType::F16,
        output: DType::F16,
        n: 8,
        k: 8,
        bias: false,
    };
    assert!(dev.supports(&f16_gemm).is_err());
    // The op agrees with `supports`.
    let x = Tensor::from_host(&dev, &HostTensor::zeros(DType::F16, &[2, 8])).unwrap();
    let w = Tensor::from_host(&dev, &HostTensor::zeros(DType::F16, &[8, 8])).unwrap();
    let mut out = Tensor::alloc(&dev, DType::F16, &[2, 8]).unwrap();
    let err = dev
        .gemm(GemmArgs {
            x: x.view(),
            w: w.view(),
            bias: None,
            out: out.view_mut(),
        })
        .unwrap_err();
    assert!(err.is_unsupported(), "{err}");
}

#[test]
fn gemm_with_a_foreign_weight_fails_cleanly() {
    let dev = MinimalBackend::open_default().unwrap();
    let other = MinimalBackend::open_default().unwrap();
    let x = Tensor::from_host(&dev, &HostTensor::zeros(DType::F32, &[2, 4])).unwrap();
    let w = Tensor::from_host(&other, &HostTensor::zeros(DType::F32, &[3, 4])).unwrap();
    let mut out = Tensor::alloc(&dev, DType::F32, &[2, 3]).unwrap();
    let err = dev
        .gemm(GemmArgs {
            x: x.view(),
            w: w.view(),
            bias: None,
            out: out.view_mut(),
        })
        .unwrap_err();
    assert!(matches!(err, HalError::ForeignBuffer { .. }), "{err}");
}
