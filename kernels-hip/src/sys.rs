//! A thin run-time binding to the HIP runtime (`libamdhip64`) and to hiprtc.
//!
//! Nothing is linked at build time: [`Runtime::get`] and [`Rtc::get`] open
//! the libraries with `dlopen` on first use, and a machine without ROCm gets
//! an `Err` naming the library, never a panic. Only the entry points Kiln
//! uses are bound, each with the C signature of the HIP headers (ROCm 5 and
//! 6 agree on all of them).
//!
//! Device properties are read with `hipDeviceGetAttribute`, whose
//! attribute numbers are stable, rather than through `hipDeviceProp_t`,
//! whose layout changed in ROCm 6. The one property no attribute gives, the
//! `gcnArchName` (e.g. `gfx90a:sramecc+:xnack-`), is found by [`arch_name`].
//!
//! hiprtc lives in `libhiprtc.so` from ROCm 6 on and inside `libamdhip64.so`
//! before that; [`Rtc::get`] tries both.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use libloading::Library;

/// `hipError_t`.
pub(crate) type HipError = c_int;
/// `hipDevice_t`.
pub(crate) type HipDeviceId = c_int;
/// `hipStream_t`.
pub(crate) type HipStream = *mut c_void;
/// `hipModule_t`.
pub(crate) type HipModule = *mut c_void;
/// `hipFunction_t`.
pub(crate) type HipFunction = *mut c_void;
/// `hiprtcProgram`.
pub(crate) type RtcProgram = *mut c_void;

/// `hipSuccess`.
pub(crate) const HIP_SUCCESS: HipError = 0;
/// `hipErrorOutOfMemory`.
pub(crate) const HIP_ERROR_OUT_OF_MEMORY: HipError = 2;
/// `hipErrorNotSupported`.
pub(crate) const HIP_ERROR_NOT_SUPPORTED: HipError = 801;
/// `hipErrorNoDevice`.
pub(crate) const HIP_ERROR_NO_DEVICE: HipError = 100;
/// `hipErrorInvalidDevice`.
pub(crate) const HIP_ERROR_INVALID_DEVICE: HipError = 101;

/// `hipDeviceAttribute_t` values Kiln reads (identical in ROCm 5 and 6).
pub(crate) mod attr {
    /// `hipDeviceAttributeMaxSharedMemoryPerBlock`: LDS bytes per workgroup.
    pub(crate) const MAX_SHARED_MEMORY_PER_BLOCK: i32 = 74;
    /// `hipDeviceAttributeMultiprocessorCount`: compute units.
    pub(crate) const MULTIPROCESSOR_COUNT: i32 = 63;
    /// `hipDeviceAttributeWarpSize`: lanes of a wavefront.
    pub(crate) const WARP_SIZE: i32 = 87;
}

/// Library names tried for the HIP runtime, in order.
pub(crate) const RUNTIME_LIBS: &[&str] = &[
    "libamdhip64.so",
    "libamdhip64.so.7",
    "libamdhip64.so.6",
    "libamdhip64.so.5",
];

/// Library names tried for hiprtc, in order (ROCm 5 ships it inside the
/// runtime library).
pub(crate) const RTC_LIBS: &[&str] = &[
    "libhiprtc.so",
    "libhiprtc.so.7",
    "libhiprtc.so.6",
    "libamdhip64.so",
    "libamdhip64.so.6",
    "libamdhip64.so.5",
];

/// Open the first of `names` that loads, with the name that did.
pub(crate) fn open_first(names: &[&str]) -> Result<(Library, String), String> {
    let mut last = String::from("no library names given");
    for name in names {
        // SAFETY: loading a HIP library runs only its constructors, which
        // register the runtime; no Rust state is touched.
        match unsafe { Library::new(*name) } {
            Ok(lib) => return Ok((lib, (*name).to_string())),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{} not found ({last})", names.join(", ")))
}

/// Copy a function pointer of type `T` named `name` out of `lib`.
///
/// # Safety
/// `T` must be the `extern "C"` function type the symbol has.
pub(crate) unsafe fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T, String> {
    // SAFETY: the caller gives the symbol's true type.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| format!("{name} missing: {e}"))
}

/// The HIP runtime entry points.
pub(crate) struct Runtime {
    _lib: Library,
    /// The library name that loaded.
    pub lib_name: String,
    pub init: unsafe extern "C" fn(c_uint) -> HipError,
    pub runtime_get_version: unsafe extern "C" fn(*mut c_int) -> HipError,
    pub get_device_count: unsafe extern "C" fn(*mut c_int) -> HipError,
    pub device_get: unsafe extern "C" fn(*mut HipDeviceId, c_int) -> HipError,
    pub device_get_name: unsafe extern "C" fn(*mut c_char, c_int, HipDeviceId) -> HipError,
    pub device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, HipDeviceId) -> HipError,
    pub device_total_mem: unsafe extern "C" fn(*mut usize, HipDeviceId) -> HipError,
    /// `hipGetDeviceProperties` (`…R0600` where it exists): used only to
    /// find the architecture name, see [`arch_name`].
    pub get_device_properties: unsafe extern "C" fn(*mut c_void, c_int) -> HipError,
    pub set_device: unsafe extern "C" fn(c_int) -> HipError,
    pub get_error_string: unsafe extern "C" fn(HipError) -> *const c_char,
    pub stream_create: unsafe extern "C" fn(*mut HipStream) -> HipError,
    pub stream_destroy: unsafe extern "C" fn(HipStream) -> HipError,
    pub stream_synchronize: unsafe extern "C" fn(HipStream) -> HipError,
    pub malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> HipError,
    pub free: unsafe extern "C" fn(*mut c_void) -> HipError,
    /// Stream-ordered allocation (ROCm 5.3+); `None` on older runtimes.
    pub malloc_async: Option<unsafe extern "C" fn(*mut *mut c_void, usize, HipStream) -> HipError>,
    /// Stream-ordered free, present with `malloc_async`.
    pub free_async: Option<unsafe extern "C" fn(*mut c_void, HipStream) -> HipError>,
    pub memcpy_htod_async:
        unsafe extern "C" fn(*mut c_void, *const c_void, usize, HipStream) -> HipError,
    pub memcpy_dtoh_async:
        unsafe extern "C" fn(*mut c_void, *mut c_void, usize, HipStream) -> HipError,
    pub memcpy_dtod_async:
        unsafe extern "C" fn(*mut c_void, *mut c_void, usize, HipStream) -> HipError,
    pub module_load_data: unsafe extern "C" fn(*mut HipModule, *const c_void) -> HipError,
    pub module_unload: unsafe extern "C" fn(HipModule) -> HipError,
    pub module_get_function:
        unsafe extern "C" fn(*mut HipFunction, HipModule, *const c_char) -> HipError,
    #[allow(clippy::type_complexity)]
    pub module_launch_kernel: unsafe extern "C" fn(
        HipFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        HipStream,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> HipError,
}

impl Runtime {
    /// Bind every entry point of `lib`.
    fn bind(lib: Library, lib_name: String) -> Result<Runtime, String> {
        // SAFETY: each type below is the entry point's C signature.
        unsafe {
            let props = sym(&lib, "hipGetDevicePropertiesR0600")
                .or_else(|_| sym(&lib, "hipGetDeviceProperties"))?;
            Ok(Runtime {
                init: sym(&lib, "hipInit")?,
                runtime_get_version: sym(&lib, "hipRuntimeGetVersion")?,
                get_device_count: sym(&lib, "hipGetDeviceCount")?,
                device_get: sym(&lib, "hipDeviceGet")?,
                device_get_name: sym(&lib, "hipDeviceGetName")?,
                device_get_attribute: sym(&lib, "hipDeviceGetAttribute")?,
                device_total_mem: sym(&lib, "hipDeviceTotalMem")?,
                get_device_properties: props,
                set_device: sym(&lib, "hipSetDevice")?,
                get_error_string: sym(&lib, "hipGetErrorString")?,
                stream_create: sym(&lib, "hipStreamCreate")?,
                stream_destroy: sym(&lib, "hipStreamDestroy")?,
                stream_synchronize: sym(&lib, "hipStreamSynchronize")?,
                malloc: sym(&lib, "hipMalloc")?,
                free: sym(&lib, "hipFree")?,
                malloc_async: sym(&lib, "hipMallocAsync").ok(),
                free_async: sym(&lib, "hipFreeAsync").ok(),
                memcpy_htod_async: sym(&lib, "hipMemcpyHtoDAsync")?,
                memcpy_dtoh_async: sym(&lib, "hipMemcpyDtoHAsync")?,
                memcpy_dtod_async: sym(&lib, "hipMemcpyDtoDAsync")?,
                module_load_data: sym(&lib, "hipModuleLoadData")?,
                module_unload: sym(&lib, "hipModuleUnload")?,
                module_get_function: sym(&lib, "hipModuleGetFunction")?,
                module_launch_kernel: sym(&lib, "hipModuleLaunchKernel")?,
                _lib: lib,
                lib_name,
            })
        }
    }

    /// Load the runtime from the first of `names` that opens.
    pub(crate) fn load(names: &[&str]) -> Result<Runtime, String> {
        let (lib, name) = open_first(names)?;
        Runtime::bind(lib, name.clone()).map_err(|e| format!("{name} is not a HIP runtime: {e}"))
    }

    /// The process-wide runtime, loaded on first use; `Err` says why it
    /// cannot be (e.g. "libamdhip64.so … not found").
    pub(crate) fn get() -> Result<&'static Runtime, String> {
        static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
        RT.get_or_init(|| Runtime::load(RUNTIME_LIBS))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `Ok(())` for `hipSuccess`, else the runtime's message for `code`.
    pub(crate) fn check(&self, code: HipError) -> Result<(), String> {
        if code == HIP_SUCCESS {
            return Ok(());
        }
        Err(self.message(code))
    }

    /// "hipErrorX (code): text" for `code`.
    pub(crate) fn message(&self, code: HipError) -> String {
        // SAFETY: hipGetErrorString returns a static string (or null).
        let text = unsafe { (self.get_error_string)(code) };
        let text = if text.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        format!("{text} (hipError {code})")
    }

    /// The runtime's version, `major * 10_000_000 + minor * 100_000 + patch`
    /// (e.g. 50221153 for ROCm 5.2).
    pub(crate) fn version(&self) -> Result<i32, String> {
        let mut v = 0;
        // SAFETY: `v` is valid for writes.
        self.check(unsafe { (self.runtime_get_version)(&mut v) })?;
        Ok(v)
    }

    /// One integer attribute of device `dev`.
    pub(crate) fn attribute(&self, dev: HipDeviceId, attribute: i32) -> Result<i32, String> {
        let mut v = 0;
        // SAFETY: `v` is valid for writes; a bad attribute is an error code.
        self.check(unsafe { (self.device_get_attribute)(&mut v, attribute, dev) })?;
        Ok(v)
    }

    /// The marketing name of device `dev`.
    pub(crate) fn device_name(&self, dev: HipDeviceId) -> Result<String, String> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes, as passed.
        self.check(unsafe { (self.device_get_name)(buf.as_mut_ptr(), 256, dev) })?;
        // SAFETY: hipDeviceGetName NUL-terminates within the length.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// The `gcnArchName` of device `ordinal` (see [`arch_name`]).
    pub(crate) fn arch(&self, ordinal: c_int) -> Result<String, String> {
        // Several times the largest hipDeviceProp_t of any ROCm (≈1.5 KiB).
        let mut props = vec![0u8; 64 << 10];
        // SAFETY: the buffer is larger than any version's struct.
        self.check(unsafe { (self.get_device_properties)(props.as_mut_ptr().cast(), ordinal) })?;
        arch_name(&props).ok_or_else(|| "the runtime reported no gcnArchName".to_string())
    }
}

/// The `gcnArchName` inside the bytes of a `hipDeviceProp_t` of any ROCm
/// version: the first NUL-terminated string that starts with `gfx`, a hex
/// target id and optional `:feature±` suffixes. Searching instead of reading
/// at an offset keeps Kiln independent of the struct's layout, which ROCm 6
/// changed; no other field of the struct holds such a string.
pub(crate) fn arch_name(props: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 <= props.len() {
        if &props[i..i + 3] == b"gfx" && (i == 0 || props[i - 1] == 0) {
            let end = props[i..].iter().position(|&b| b == 0)? + i;
            let s = std::str::from_utf8(&props[i..end]).ok()?;
            if is_arch_name(s) {
                return Some(s.to_string());
            }
            i = end;
        }
        i += 1;
    }
    None
}

/// `gfx` + 3–4 hex digits (`gfx90a`, `gfx1100`), then `:name+` / `:name-`
/// target features.
pub(crate) fn is_arch_name(s: &str) -> bool {
    let mut parts = s.split(':');
    let Some(base) = parts.next() else {
        return false;
    };
    let Some(id) = base.strip_prefix("gfx") else {
        return false;
    };
    let id_ok = (3..=4).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit());
    id_ok
        && parts.all(|f| {
            f.len() > 1
                && (f.ends_with('+') || f.ends_with('-'))
                && f[..f.len() - 1].chars().all(|c| c.is_ascii_alphanumeric())
        })
}

/// The hiprtc entry points.
pub(crate) struct Rtc {
    _lib: Library,
    /// The library name that loaded.
    pub lib_name: String,
    pub version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int,
    pub get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    #[allow(clippy::type_complexity)]
    pub create_program: unsafe extern "C" fn(
        *mut RtcProgram,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    pub compile_program: unsafe extern "C" fn(RtcProgram, c_int, *const *const c_char) -> c_int,
    pub get_program_log_size: unsafe extern "C" fn(RtcProgram, *mut usize) -> c_int,
    pub get_program_log: unsafe extern "C" fn(RtcProgram, *mut c_char) -> c_int,
    pub get_code_size: unsafe extern "C" fn(RtcProgram, *mut usize) -> c_int,
    pub get_code: unsafe extern "C" fn(RtcProgram, *mut c_char) -> c_int,
    pub destroy_program: unsafe extern "C" fn(*mut RtcProgram) -> c_int,
}

impl Rtc {
    fn bind(lib: Library, lib_name: String) -> Result<Rtc, String> {
        // SAFETY: each type below is the entry point's C signature.
        unsafe {
            Ok(Rtc {
                version: sym(&lib, "hiprtcVersion")?,
                get_error_string: sym(&lib, "hiprtcGetErrorString")?,
                create_program: sym(&lib, "hiprtcCreateProgram")?,
                compile_program: sym(&lib, "hiprtcCompileProgram")?,
                get_program_log_size: sym(&lib, "hiprtcGetProgramLogSize")?,
                get_program_log: sym(&lib, "hiprtcGetProgramLog")?,
                get_code_size: sym(&lib, "hiprtcGetCodeSize")?,
                get_code: sym(&lib, "hiprtcGetCode")?,
                destroy_program: sym(&lib, "hiprtcDestroyProgram")?,
                _lib: lib,
                lib_name,
            })
        }
    }

    /// hiprtc from the first of `names` that opens and exports it.
    pub(crate) fn load(names: &[&str]) -> Result<Rtc, String> {
        let mut last = String::from("no library names given");
        for name in names {
            match open_first(&[name]) {
                Ok((lib, n)) => match Rtc::bind(lib, n) {
                    Ok(rtc) => return Ok(rtc),
                    Err(e) => last = format!("{name}: {e}"),
                },
                Err(e) => last = e,
            }
        }
        Err(format!("hiprtc not found in {} ({last})", names.join(", ")))
    }

    /// The process-wide hiprtc, loaded on first use.
    pub(crate) fn get() -> Result<&'static Rtc, String> {
        static RTC: OnceLock<Result<Rtc, String>> = OnceLock::new();
        RTC.get_or_init(|| Rtc::load(RTC_LIBS))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `Ok(())` for `HIPRTC_SUCCESS`, else hiprtc's message for `code`.
    pub(crate) fn check(&self, code: c_int) -> Result<(), String> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: returns a static string (or null).
        let text = unsafe { (self.get_error_string)(code) };
        let text = if text.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated, static.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        Err(format!("{text} (hiprtcResult {code})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libraries_are_errors_naming_them() {
        let e = Runtime::load(&["libkiln-no-such-hip.so"])
            .err()
            .unwrap_or_default();
        assert!(e.contains("libkiln-no-such-hip.so not found"), "{e}");
        let e = Rtc::load(&["libkiln-no-such-hiprtc.so"])
            .err()
            .unwrap_or_default();
        assert!(e.contains("hiprtc not found"), "{e}");
        assert!(open_first(&[]).is_err());
    }

    #[test]
    fn a_library_without_the_symbols_is_refused() {
        // libc loads everywhere and exports no HIP entry point.
        if let Err(e) = Runtime::load(&["libc.so.6"]) {
            assert!(
                e.contains("is not a HIP runtime") && e.contains("missing"),
                "{e}"
            );
        } else {
            panic!("libc accepted as a HIP runtime");
        }
        let e = Rtc::load(&["libc.so.6"]).err().unwrap_or_default();
        assert!(e.contains("hiprtcVersion missing"), "{e}");
    }

    #[test]
    fn arch_names_are_recognised() {
        for ok in [
            "gfx90a",
            "gfx942:sramecc+:xnack-",
            "gfx1030",
            "gfx1100",
            "gfx908:xnack+",
        ] {
            assert!(is_arch_name(ok), "{ok}");
        }
        for bad in [
            "gfx",
            "gfx9",
            "gfx90a:",
            "gfx90a:xnack",
            "gfxzz1",
            "AMD Instinct",
            "",
        ] {
            assert!(!is_arch_name(bad), "{bad}");
        }
    }

    #[test]
    fn arch_name_is_found_at_any_offset() {
        let mut props = vec![0u8; 2048];
        let name = b"AMD Instinct MI300X";
        props[..name.len()].copy_from_slice(name);
        // A stray "gfx" inside another string is not taken.
        props[300..306].copy_from_slice(b"xgfx90");
        let arch = b"gfx942:sramecc+:xnack-";
        props[1160..1160 + arch.len()].copy_from_slice(arch);
        assert_eq!(arch_name(&props).as_deref(), Some("gfx942:sramecc+:xnack-"));
        assert_eq!(arch_name(&[0u8; 64]), None);
        let mut unterminated = vec![0u8; 8];
        unterminated.extend_from_slice(b"gfx90a");
        assert_eq!(arch_name(&unterminated), None);
    }
}
