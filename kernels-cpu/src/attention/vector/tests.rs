//! Exactness of the loads and conversions, `exp` accuracy, and
//! `sum_each` ≡ `sum`.

use super::*;

#[test]
fn e4m3_decode_is_exact() {
    for b in 0..=255u8 {
        let (got, want) = (E4m3(b).to_f32(), hal::fp8::e4m3_to_f32(b));
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{b:#x}"
        );
    }
}

/// Every level's loads against the scalar conversion, full and partial.
#[cfg(target_arch = "x86_64")]
fn check_loads<S: Simd, E: Load<S> + Load<Scalar>>(codes: &[E]) {
    let mut out = [0f32; MAX_LANES];
    for chunk in codes.chunks(S::LANES) {
        for n in [chunk.len(), chunk.len() / 2] {
            // SAFETY: the caller checked the level is available; `n` elements are readable.
            let v = unsafe {
                if n == S::LANES {
                    <E as Load<S>>::load(chunk.as_ptr())
                } else {
                    <E as Load<S>>::load_partial(chunk.as_ptr(), n)
                }
            };
            // SAFETY: `out` holds MAX_LANES ≥ LANES floats.
            unsafe { S::store(out.as_mut_ptr(), v) };
            for i in 0..S::LANES {
                let want = if i < n { chunk[i].to_f32() } else { 0.0 };
                let got = out[i];
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "lane {i}: {got} vs {want}"
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_loads_are_exact() {
    let e4m3: Vec<E4m3> = (0..=255u8).map(E4m3).collect();
    let mut s = 0x2545_F491u32;
    let mut bits = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as u16
    };
    let f16s: Vec<f16> = (0..4096).map(|_| f16::from_bits(bits())).collect();
    let bf16s: Vec<bf16> = (0..4096).map(|_| bf16::from_bits(bits())).collect();
    let levels = crate::Isa::available();
    if levels.contains(&crate::Isa::Avx2) {
        check_loads::<Avx2, E4m3>(&e4m3);
        check_loads::<Avx2, f16>(&f16s);
        check_loads::<Avx2, bf16>(&bf16s);
    }
    if levels.contains(&crate::Isa::Avx512) {
        check_loads::<Avx512, E4m3>(&e4m3);
        check_loads::<Avx512, f16>(&f16s);
        check_loads::<Avx512, bf16>(&bf16s);
    }
}

#[cfg(target_arch = "x86_64")]
fn check_exp<S: Simd>() {
    let mut out = [0f32; MAX_LANES];
    let mut worst = 0f64;
    let mut x = -100.0f32;
    while x < 100.0 {
        let xs: Vec<f32> = (0..S::LANES).map(|i| x + i as f32 * 1e-3).collect();
        // SAFETY: the caller checked the level; `xs` and `out` hold LANES floats.
        unsafe { S::store(out.as_mut_ptr(), S::exp(S::load(xs.as_ptr()))) };
        for (i, &v) in xs.iter().enumerate() {
            let want = (v as f64).exp();
            if v < -87.336_54 {
                assert_eq!(out[i], 0.0, "exp({v})");
            } else if v > 88.3763 {
                assert_eq!(out[i], f32::INFINITY, "exp({v})");
            } else {
                worst = worst.max(((out[i] as f64 - want) / want).abs());
            }
        }
        x += 0.0371;
    }
    assert!(worst < 3e-7, "relative error {worst}");
    let specials = [
        f32::NAN,
        f32::NEG_INFINITY,
        f32::INFINITY,
        0.0,
        -0.0,
        -87.0,
        88.0,
        1e-30,
        -1e-30,
    ];
    for &v in &specials {
        let xs = [v; MAX_LANES];
        // SAFETY: as above.
        unsafe { S::store(out.as_mut_ptr(), S::exp(S::load(xs.as_ptr()))) };
        let want = v.exp();
        assert!(
            (v.is_nan() && out[0].is_nan())
                || out[0] == want
                || (out[0] - want).abs() <= want.abs() * 3e-7,
            "exp({v}) = {} want {want}",
            out[0]
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_exp_is_accurate() {
    let levels = crate::Isa::available();
    if levels.contains(&crate::Isa::Avx2) {
        check_exp::<Avx2>();
    }
    if levels.contains(&crate::Isa::Avx512) {
        check_exp::<Avx512>();
    }
}

/// `sum_each` over `LANES` vectors is bit for bit `sum` of each.
#[cfg(target_arch = "x86_64")]
fn check_sum_each<S: Simd>() {
    let mut s = 0x1357_9BDFu32;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        // Wide exponent range so rounding differences would show.
        f32::from_bits((s & 0x807F_FFFF) | (((s >> 23) % 40 + 107) << 23))
    };
    for _ in 0..200 {
        let data: Vec<f32> = (0..S::LANES * S::LANES).map(|_| next()).collect();
        // SAFETY: the caller checked the level; `data` holds LANES² floats.
        let v: Vec<S::V> = data
            .chunks(S::LANES)
            .map(|c| unsafe { S::load(c.as_ptr()) })
            .collect();
        let mut got = [0f32; MAX_LANES];
        // SAFETY: as above.
        unsafe { S::sum_each(&v, &mut got[..S::LANES]) };
        for (i, &x) in v.iter().enumerate() {
            // SAFETY: as above.
            let want = unsafe { S::sum(x) };
            assert_eq!(got[i].to_bits(), want.to_bits(), "vector {i}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn sum_each_is_sum() {
    let levels = crate::Isa::available();
    if levels.contains(&crate::Isa::Avx2) {
        check_sum_each::<Avx2>();
    }
    if levels.contains(&crate::Isa::Avx512) {
        check_sum_each::<Avx512>();
    }
}

#[test]
fn e4m3_encode_matches_hal() {
    let mut s: u32 = 0x9E37_79B9;
    let check = |x: f32| {
        let (got, want) = (e4m3_encode(x), hal::fp8::f32_to_e4m3(x));
        assert_eq!(got, want, "x = {x:e} ({:#x})", x.to_bits());
    };
    for b in 0..=255u8 {
        let v = hal::fp8::e4m3_to_f32(b);
        check(v);
        // Midpoints to the next code: ties to even.
        let next = hal::fp8::e4m3_to_f32(b.wrapping_add(1));
        if v.is_finite() && next.is_finite() {
            check((v + next) / 2.0);
            check(f32::from_bits(((v + next) / 2.0).to_bits() + 1));
            check(f32::from_bits(((v + next) / 2.0).to_bits().wrapping_sub(1)));
        }
    }
    for x in [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        448.0,
        464.0,
        465.0,
        1e-30,
        2f32.powi(-10),
    ] {
        check(x);
    }
    for _ in 0..200_000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        check(f32::from_bits(s));
        check(f32::from_bits(
            (s & 0x807F_FFFF) | (((s >> 23) % 24 + 113) << 23),
        ));
    }
}
