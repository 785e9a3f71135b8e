//! hipBLAS, loaded at run time, for dense GEMM (`hipblasGemmEx`, f32
//! accumulation; rocBLAS / Tensile pick MFMA kernels on CDNA).
//!
//! `hipblasGemmEx` changed its type arguments across ROCm releases, with no
//! change of symbol name in two of them:
//!
//! | hipBLAS (ROCm) | entry point | data types | compute type |
//! |---|---|---|---|
//! | ≤ 1.x (ROCm 5) | `hipblasGemmEx` | `hipblasDatatype_t` (150 f16, 151 f32, 168 bf16) | `hipblasDatatype_t` |
//! | 2.x (ROCm 6) | `hipblasGemmEx_v2` | `hipDataType` (2 f16, 0 f32, 14 bf16) | `hipblasComputeType_t` (2 = 32F) |
//! | ≥ 3 (ROCm 7) | `hipblasGemmEx` | `hipDataType` | `hipblasComputeType_t` |
//!
//! [`Blas::load`] picks the `_v2` entry point where it exists, else reads the
//! HIP runtime's major version to tell ROCm 5 from ROCm 7. Set
//! `KILN_HIP_BLAS=0` to use the crate's own GEMM kernel instead.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use libloading::Library;

use crate::sys::{open_first, sym, HipStream};

/// Library names tried for hipBLAS, in order.
const BLAS_LIBS: &[&str] = &[
    "libhipblas.so",
    "libhipblas.so.3",
    "libhipblas.so.2",
    "libhipblas.so.1",
    "libhipblas.so.0",
];

/// `hipblasOperation_t`.
const OP_N: c_int = 111;
const OP_T: c_int = 112;
/// `hipblasGemmAlgo_t::HIPBLAS_GEMM_DEFAULT`.
const GEMM_DEFAULT: c_int = 160;

/// Element types of a GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
    BF16,
}

/// Which `hipblasGemmEx` type enums the loaded library takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeApi {
    /// `hipblasDatatype_t` for data and compute types (hipBLAS ≤ 1.x).
    Legacy,
    /// `hipDataType` data types and `hipblasComputeType_t` (hipBLAS ≥ 2).
    HipDataType,
}

impl TypeApi {
    /// The data-type argument for `e`.
    pub(crate) fn data_type(self, e: Elem) -> c_int {
        match (self, e) {
            (TypeApi::Legacy, Elem::F16) => 150,
            (TypeApi::Legacy, Elem::F32) => 151,
            (TypeApi::Legacy, Elem::BF16) => 168,
            (TypeApi::HipDataType, Elem::F32) => 0,
            (TypeApi::HipDataType, Elem::F16) => 2,
            (TypeApi::HipDataType, Elem::BF16) => 14,
        }
    }

    /// The compute-type argument for f32 accumulation.
    pub(crate) fn compute_f32(self) -> c_int {
        match self {
            TypeApi::Legacy => 151,
            TypeApi::HipDataType => 2,
        }
    }
}

/// The `TypeApi` of a library that does (`has_v2`) or does not export
/// `hipblasGemmEx_v2`, next to a HIP runtime of `runtime_version`
/// (`hipRuntimeGetVersion`).
pub(crate) fn type_api(has_v2: bool, runtime_version: i32) -> TypeApi {
    if has_v2 || runtime_version >= 70_000_000 {
        TypeApi::HipDataType
    } else {
        TypeApi::Legacy
    }
}

type GemmEx = unsafe extern "C" fn(
    *mut c_void,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *const c_void,
    *const c_void,
    c_int,
    c_int,
    *const c_void,
    c_int,
    c_int,
    *const c_void,
    *mut c_void,
    c_int,
    c_int,
    c_int,
    c_int,
) -> c_int;

struct Handle(*mut c_void);

// SAFETY: the handle is used only under the mutex.
unsafe impl Send for Handle {}

/// A hipBLAS handle bound to one device's stream.
pub(crate) struct Blas {
    handle: Mutex<Handle>,
    gemm_ex: GemmEx,
    destroy: unsafe extern "C" fn(*mut c_void) -> c_int,
    api: TypeApi,
    /// The library name that loaded.
    pub lib_name: String,
    _lib: Library,
}

impl std::fmt::Debug for Blas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blas")
            .field("lib", &self.lib_name)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// One `out = op(a) · op(b)` call in hipBLAS's column-major terms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmCall {
    /// Rows of `op(A)` and of the output.
    pub m: usize,
    /// Columns of `op(B)` and of the output.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `A` (device address), transposed (`op = T`) when `a_t`.
    pub a: u64,
    pub a_t: bool,
    pub lda: usize,
    /// `B` (device address), transposed when `b_t`.
    pub b: u64,
    pub b_t: bool,
    pub ldb: usize,
    /// Type of `A` and `B`.
    pub elem: Elem,
    /// The f32 output (column-major, leading dimension `ldc`).
    pub c: u64,
    pub ldc: usize,
}

impl Blas {
    /// hipBLAS on `stream`, or `Err` saying why not (not installed,
    /// disabled by `KILN_HIP_BLAS=0`, or a call failed).
    pub(crate) fn load(stream: HipStream, runtime_version: i32) -> Result<Blas, String> {
        if std::env::var("KILN_HIP_BLAS").is_ok_and(|v| v == "0") {
            return Err("disabled by KILN_HIP_BLAS=0".into());
        }
        let (lib, lib_name) = open_first(BLAS_LIBS)?;
        // SAFETY: the types are the entry points' C signatures (the GEMM's
        // enum arguments are all C `int`s in every version).
        unsafe {
            let create: unsafe extern "C" fn(*mut *mut c_void) -> c_int =
                sym(&lib, "hipblasCreate")?;
            let destroy: unsafe extern "C" fn(*mut c_void) -> c_int = sym(&lib, "hipblasDestroy")?;
            let set_stream: unsafe extern "C" fn(*mut c_void, HipStream) -> c_int =
                sym(&lib, "hipblasSetStream")?;
            let v2: Option<GemmEx> = sym(&lib, "hipblasGemmEx_v2").ok();
            let api = type_api(v2.is_some(), runtime_version);
            let gemm_ex = match v2 {
                Some(f) => f,
                None => sym(&lib, "hipblasGemmEx")?,
            };
            let mut h: *mut c_void = std::ptr::null_mut();
            let status = create(&mut h);
            if status != 0 {
                return Err(format!("hipblasCreate failed (status {status})"));
            }
            let status = set_stream(h, stream);
            if status != 0 {
                let _ = destroy(h);
                return Err(format!("hipblasSetStream failed (status {status})"));
            }
            Ok(Blas {
                handle: Mutex::new(Handle(h)),
                gemm_ex,
                destroy,
                api,
                lib_name,
                _lib: lib,
            })
        }
    }

    /// Queue `c = op(a) · op(b)` (f32 accumulation, `alpha = 1`, `beta =
    /// 0`) on the handle's stream; `Err` carries hipBLAS's status.
    ///
    /// # Safety
    /// The addresses must be live device allocations holding the matrices
    /// the dimensions and leading dimensions describe.
    pub(crate) unsafe fn gemm(&self, g: &GemmCall) -> Result<(), String> {
        let dims = [g.m, g.n, g.k, g.lda, g.ldb, g.ldc];
        if dims.iter().any(|&d| d > i32::MAX as usize) {
            return Err("a dimension exceeds hipBLAS's 32-bit sizes".into());
        }
        let h = self
            .handle
            .lock()
            .map_err(|_| "hipBLAS handle poisoned".to_string())?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let ty = self.api.data_type(g.elem);
        let op = |t: bool| if t { OP_T } else { OP_N };
        // SAFETY: the caller guarantees the operands; alpha and beta are
        // host f32 (the default pointer mode) alive for the call.
        let status = unsafe {
            (self.gemm_ex)(
                h.0,
                op(g.a_t),
                op(g.b_t),
                g.m as c_int,
                g.n as c_int,
                g.k as c_int,
                (&alpha as *const f32).cast(),
                g.a as *const c_void,
                ty,
                g.lda as c_int,
                g.b as *const c_void,
                ty,
                g.ldb as c_int,
                (&beta as *const f32).cast(),
                g.c as *mut c_void,
                self.api.data_type(Elem::F32),
                g.ldc as c_int,
                self.api.compute_f32(),
                GEMM_DEFAULT,
            )
        };
        if status != 0 {
            return Err(format!("hipblasGemmEx failed (status {status})"));
        }
        Ok(())
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        if let Ok(h) = self.handle.lock() {
            // SAFETY: created in `load`, destroyed once.
            let _ = unsafe { (self.destroy)(h.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_enums_follow_the_library_version() {
        // ROCm 5: legacy enums; ROCm 6 (`_v2` present) and ROCm 7: hipDataType.
        assert_eq!(type_api(false, 50_221_153), TypeApi::Legacy);
        assert_eq!(type_api(true, 60_200_000), TypeApi::HipDataType);
        assert_eq!(type_api(false, 70_000_000), TypeApi::HipDataType);
        let legacy = TypeApi::Legacy;
        assert_eq!(
            [Elem::F16, Elem::F32, Elem::BF16].map(|e| legacy.data_type(e)),
            [150, 151, 168]
        );
        assert_eq!(legacy.compute_f32(), 151);
        let new = TypeApi::HipDataType;
        assert_eq!(
            [Elem::F16, Elem::F32, Elem::BF16].map(|e| new.data_type(e)),
            [2, 0, 14]
        );
        assert_eq!(new.compute_f32(), 2);
    }
}
