//! WGSL assembly: the bindings, typed element accessors and shared helpers
//! every kernel is built from.
//!
//! A kernel names its storage bindings with an element type ([`Elem`]); the
//! generated source declares them as `array<u32>` (read-only) or
//! `array<atomic<u32>>` (written), and emits `ld_<name>(i) -> f32` /
//! `st_<name>(i, v)` for float elements so one kernel body serves f32, f16,
//! bf16 and FP8 tensors. 16- and 8-bit stores update their half or byte of a
//! word with `atomicAnd` / `atomicOr`, so neighbouring elements written by
//! other invocations are never clobbered. f16 is read with
//! `unpack2x16float` and written with an exact round-to-nearest-even
//! conversion, so no `SHADER_F16` feature is needed.
//!
//! Binding 0 is a uniform block of 32 words (`pu(i)` as u32, `pf(i)` as
//! f32), bound with a dynamic offset into the per-submission parameter ring.

use hal::DType;

/// Element type of a storage binding as the shader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Elem {
    /// f32, one per word.
    F32,
    /// IEEE half, two per word (element 0 in the low half).
    F16,
    /// bfloat16, two per word.
    Bf16,
    /// FP8 E4M3, four per word (element 0 in the low byte).
    F8,
    /// Raw words: indices, packed quantised weights (no accessors).
    Word,
}

impl Elem {
    /// The element type of an activation or cache dtype (`Word` for integers).
    pub(crate) fn of(d: DType) -> Elem {
        match d {
            DType::F32 => Elem::F32,
            DType::F16 => Elem::F16,
            DType::BF16 => Elem::Bf16,
            DType::F8E4M3 => Elem::F8,
            _ => Elem::Word,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::Bf16 => "bf16",
            Elem::F8 => "f8",
            Elem::Word => "u32",
        }
    }
}

/// One storage binding of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Binding {
    /// WGSL name.
    pub(crate) name: &'static str,
    /// Element type.
    pub(crate) elem: Elem,
    /// Written by the kernel (`read_write`, atomic words).
    pub(crate) write: bool,
}

/// A read-only binding.
pub(crate) fn ro(name: &'static str, elem: Elem) -> Binding {
    Binding {
        name,
        elem,
        write: false,
    }
}

/// A written binding.
pub(crate) fn rw(name: &'static str, elem: Elem) -> Binding {
    Binding {
        name,
        elem,
        write: true,
    }
}

/// A kernel variant: its body, bindings and workgroup size. `key()` names the
/// pipeline in the cache.
#[derive(Clone, Debug)]
pub(crate) struct KernelSpec {
    /// Kernel name (also the pipeline label).
    pub(crate) name: &'static str,
    /// WGSL defining `@compute fn main` (uses `WG`, `pu`, `pf`, accessors).
    pub(crate) body: String,
    /// Storage bindings 1.. in order.
    pub(crate) bindings: Vec<Binding>,
    /// Invocations per workgroup (`const WG`).
    pub(crate) workgroup: u32,
    /// Extra variant tag (format, layout, …) that changes `body`.
    pub(crate) variant: String,
}

impl KernelSpec {
    /// The pipeline-cache key.
    pub(crate) fn key(&self) -> String {
        let mut k = format!("{}/{}/wg{}", self.name, self.variant, self.workgroup);
        for b in &self.bindings {
            k.push_str(&format!(
                "/{}:{}{}",
                b.name,
                b.elem.tag(),
                if b.write { "w" } else { "" }
            ));
        }
        k
    }

    /// The complete WGSL module.
    pub(crate) fn source(&self) -> String {
        let mut s = String::with_capacity(8192);
        s.push_str(PRELUDE);
        s.push_str(&format!("const WG: u32 = {}u;\n", self.workgroup));
        for (i, b) in self.bindings.iter().enumerate() {
            let slot = i + 1;
            if b.write {
                s.push_str(&format!(
                    "@group(0) @binding({slot}) var<storage, read_write> {}: array<atomic<u32>>;\n",
                    b.name
                ));
            } else {
                s.push_str(&format!(
                    "@group(0) @binding({slot}) var<storage, read> {}: array<u32>;\n",
                    b.name
                ));
            }
            s.push_str(&accessors(b));
        }
        s.push_str(&self.body);
        s
    }
}

fn accessors(b: &Binding) -> String {
    let n = b.name;
    let word = |idx: &str| {
        if b.write {
            format!("atomicLoad(&{n}[{idx}])")
        } else {
            format!("{n}[{idx}]")
        }
    };
    let load = match b.elem {
        Elem::Word => return String::new(),
        Elem::F32 => format!("return bitcast<f32>({});", word("i")),
        Elem::F16 => format!("return unpack2x16float({})[i & 1u];", word("i >> 1u")),
        Elem::Bf16 => format!(
            "return bitcast<f32>((({} >> ((i & 1u) * 16u)) & 0xffffu) << 16u);",
            word("i >> 1u")
        ),
        Elem::F8 => format!(
            "return e4m3_to_f32(({} >> ((i & 3u) * 8u)) & 0xffu);",
            word("i >> 2u")
        ),
    };
    let mut s = format!("fn ld_{n}(i: u32) -> f32 {{ {load} }}\n");
    if b.write {
        let put = |word: &str, shift: &str, mask: &str, bits: &str| {
            format!(
                "let w = {word}; let sh = {shift}; atomicAnd(&{n}[w], ~({mask} << sh)); \
                 atomicOr(&{n}[w], ({bits} & {mask}) << sh);"
            )
        };
        let store = match b.elem {
            Elem::Word => unreachable!("returned above"),
            Elem::F32 => format!("atomicStore(&{n}[i], bitcast<u32>(v));"),
            Elem::F16 => put("i >> 1u", "(i & 1u) * 16u", "0xffffu", "f32_to_f16(v)"),
            Elem::Bf16 => put("i >> 1u", "(i & 1u) * 16u", "0xffffu", "f32_to_bf16(v)"),
            Elem::F8 => put("i >> 2u", "(i & 3u) * 8u", "0xffu", "f32_to_e4m3(v)"),
        };
        s.push_str(&format!("fn st_{n}(i: u32, v: f32) {{ {store} }}\n"));
    }
    s
}

/// Parameters, number conversions and the sub-word store shared by all kernels.
const PRELUDE: &str = r#"
struct Params { a: array<vec4<u32>, 8> }
@group(0) @binding(0) var<uniform> p: Params;
fn pu(i: u32) -> u32 { return p.a[i / 4u][i % 4u]; }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
fn pi(i: u32) -> i32 { return bitcast<i32>(pu(i)); }

fn nan_f32() -> f32 { return bitcast<f32>(0x7fc00000u); }

// Linear workgroup index of a grid folded into x and y.
fn wg_linear(wg: vec3<u32>, nwg: vec3<u32>) -> u32 { return wg.x + wg.y * nwg.x; }

// f32 -> IEEE half bits, round to nearest even (overflow to inf, NaN kept).
fn f32_to_f16(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 16u) & 0x8000u;
    let ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) { return sign | 0x7e00u; }
    if (ax >= 0x477ff000u) { return sign | 0x7c00u; }
    if (ax >= 0x38800000u) {
        let r = ax + 0x0fffu + ((ax >> 13u) & 1u) - 0x38000000u;
        return sign | (r >> 13u);
    }
    if (ax < 0x33000000u) { return sign; }
    let e = ax >> 23u;
    let m = (ax & 0x7fffffu) | 0x800000u;
    let shift = 126u - e;
    let q = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    var r = q;
    if (rem > half || (rem == half && (q & 1u) == 1u)) { r = q + 1u; }
    return sign | r;
}

// f32 -> bfloat16 bits, round to nearest even.
fn f32_to_bf16(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    if ((x & 0x7fffffffu) > 0x7f800000u) { return (x >> 16u) | 0x40u; }
    return (x + 0x7fffu + ((x >> 16u) & 1u)) >> 16u;
}

// FP8 E4M3 (OCP, no infinities, NaN = S.1111.111) -> f32.
fn e4m3_to_f32(b: u32) -> f32 {
    let s = select(1.0, -1.0, (b & 0x80u) != 0u);
    let e = (b >> 3u) & 15u;
    let m = f32(b & 7u);
    if (e == 15u && (b & 7u) == 7u) { return nan_f32(); }
    if (e == 0u) { return s * m * 0.001953125; }
    return s * (1.0 + m * 0.125) * exp2(f32(e) - 7.0);
}

// f32 -> FP8 E4M3 bits, round to nearest even, saturating to +-448.
fn f32_to_e4m3(v: f32) -> u32 {
    let x = bitcast<u32>(v);
    let sign = (x >> 24u) & 0x80u;
    let ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) { return sign | 0x7fu; }
    let a = bitcast<f32>(ax);
    if (a >= 448.0) { return sign | 0x7eu; }
    if (a < 0.015625) {
        return sign | u32(round(a * 512.0));
    }
    let e = i32(ax >> 23u) - 127;
    let quantum = exp2(f32(e - 3));
    let q = round(a / quantum) * quantum;
    if (q >= 448.0) { return sign | 0x7eu; }
    let qb = bitcast<u32>(q);
    let qe = (qb >> 23u) - 120u;
    return sign | (qe << 3u) | ((qb >> 20u) & 7u);
}

// Whether an i64 (two words, little-endian) is negative.
fn i64_negative(hi: u32) -> bool { return (hi & 0x80000000u) != 0u; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(elem: Elem) -> KernelSpec {
        KernelSpec {
            name: "k",
            body: String::new(),
            bindings: vec![ro("x", elem), rw("out", elem)],
            workgroup: 64,
            variant: String::new(),
        }
    }

    #[test]
    fn variants_have_distinct_keys_and_typed_accessors() {
        let (a, b) = (spec(Elem::F16), spec(Elem::Bf16));
        assert_ne!(a.key(), b.key());
        let src = a.source();
        assert!(src.contains("fn ld_x(i: u32) -> f32"));
        assert!(src.contains("fn st_out(i: u32, v: f32)"));
        assert!(src.contains("var<storage, read_write> out: array<atomic<u32>>"));
        assert!(!src.contains("fn st_x("), "read-only bindings get no store");
    }
}
