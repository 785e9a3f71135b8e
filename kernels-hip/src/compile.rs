//! hiprtc compilation of the kernel sources, with an on-disk cache.
//!
//! A source is compiled for the GPU's full `gcnArchName`
//! (`--offload-arch=gfx90a:sramecc+:xnack-`, so the code object matches the
//! device's XNACK / SRAM-ECC mode) and the resulting code object is loaded
//! with `hipModuleLoadData`. Each result is cached once per (source text,
//! target, hiprtc library and version, options) in `$KILN_HIP_CACHE`, else
//! `$XDG_CACHE_HOME/kiln/hip`, else `~/.cache/kiln/hip`, under a name made
//! from the SHA-256 of all of those, so a changed kernel or another ROCm
//! never loads stale code. A cache that cannot be written is skipped
//! silently: it only saves start-up time.

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::sources::{KernelSource, PRELUDE};
use crate::sys::{Rtc, RtcProgram};

/// Options every source is compiled with (besides the architecture).
const OPTIONS: &[&str] = &["-O3", "-std=c++17"];

/// Why a compilation failed.
#[derive(Debug)]
pub(crate) enum CompileError {
    /// hiprtc could not be loaded; the text says what was tried.
    NoCompiler(String),
    /// hiprtc rejected the source; the log says why.
    Rejected {
        /// Source name.
        source: &'static str,
        /// Target, e.g. `gfx90a`.
        arch: String,
        /// hiprtc's log.
        log: String,
    },
    /// A hiprtc call failed outright, or the source is malformed.
    Rtc(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::NoCompiler(why) => write!(f, "{}", no_compiler_message(why)),
            CompileError::Rejected { source, arch, log } => {
                write!(f, "hiprtc could not compile {source} for {arch}:\n{log}")
            }
            CompileError::Rtc(m) => write!(f, "hiprtc failed: {m}"),
        }
    }
}

/// What to tell a user whose machine has no hiprtc.
pub(crate) fn no_compiler_message(why: &str) -> String {
    format!(
        "{why}: install ROCm (hiprtc is libhiprtc.so from ROCm 6, part of libamdhip64.so \
         in ROCm 5; Debian: `apt install libamdhip64-dev libhiprtc-builtins5`)"
    )
}

fn rtc() -> Result<&'static Rtc, CompileError> {
    Rtc::get().map_err(CompileError::NoCompiler)
}

/// Whether hiprtc can be loaded on this machine.
pub(crate) fn compiler_present() -> bool {
    Rtc::get().is_ok()
}

/// hiprtc's identity for cache keys: its library and `(major, minor)`.
pub(crate) fn compiler_id() -> Result<String, CompileError> {
    let rtc = rtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes.
    rtc.check(unsafe { (rtc.version)(&mut major, &mut minor) })
        .map_err(CompileError::Rtc)?;
    Ok(format!("{} {major}.{minor}", rtc.lib_name))
}

/// The full text hiprtc sees for `src`.
pub(crate) fn full_source(src: &KernelSource) -> Result<String, CompileError> {
    let body = src.body().map_err(CompileError::Rtc)?;
    let mut text = String::from(PRELUDE);
    for header in src.headers {
        text.push('\n');
        text.push_str(header);
    }
    text.push_str(&format!("\n#line 1 \"{}\"\n{}", src.name, body));
    Ok(text)
}

/// The base architecture of a `gcnArchName` (`gfx942` of
/// `gfx942:sramecc+:xnack-`).
pub(crate) fn base_arch(arch: &str) -> &str {
    arch.split(':').next().unwrap_or(arch)
}

/// Why hiprtc cannot target `arch`, if it cannot: the hiprtc of ROCm 5
/// aborts the whole process (rather than failing) for gfx940–gfx942, which
/// it predates, so those targets need the hiprtc of ROCm 6 or newer.
/// `runtime_version`: `hipRuntimeGetVersion`'s value.
pub(crate) fn unsupported_target(arch: &str, runtime_version: i32) -> Option<String> {
    let base = base_arch(arch);
    let gfx94x = matches!(base, "gfx940" | "gfx941" | "gfx942");
    (gfx94x && runtime_version < 60_000_000).then(|| {
        format!(
            "{base} (MI300) needs ROCm 6 or newer: this ROCm's hiprtc (runtime version \
             {runtime_version}) cannot compile for it"
        )
    })
}

/// Compile `src` for `arch` into a code object. Not cached.
pub(crate) fn compile_code_object(src: &KernelSource, arch: &str) -> Result<Vec<u8>, CompileError> {
    let rtc = rtc()?;
    let text = CString::new(full_source(src)?)
        .map_err(|_| CompileError::Rtc(format!("{} contains a NUL byte", src.name)))?;
    let name = CString::new(format!("{}.hip", src.name))
        .map_err(|_| CompileError::Rtc("bad source name".into()))?;
    let mut prog: RtcProgram = std::ptr::null_mut();
    // SAFETY: `prog` is valid for writes; text and name are NUL-terminated
    // and outlive the call; no headers are passed.
    rtc.check(unsafe {
        (rtc.create_program)(
            &mut prog,
            text.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    })
    .map_err(CompileError::Rtc)?;
    let out = compile_program(rtc, prog, src, arch);
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { (rtc.destroy_program)(&mut prog) };
    out
}

fn compile_program(
    rtc: &Rtc,
    prog: RtcProgram,
    src: &KernelSource,
    arch: &str,
) -> Result<Vec<u8>, CompileError> {
    let mut opts: Vec<CString> = Vec::new();
    for o in std::iter::once(format!("--offload-arch={arch}"))
        .chain(OPTIONS.iter().map(|s| s.to_string()))
    {
        opts.push(CString::new(o).map_err(|_| CompileError::Rtc("bad option".into()))?);
    }
    let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `prog` is live; `ptrs` holds `ptrs.len()` NUL-terminated options.
    let status = unsafe { (rtc.compile_program)(prog, ptrs.len() as i32, ptrs.as_ptr()) };
    if status != 0 {
        return Err(CompileError::Rejected {
            source: src.name,
            arch: arch.to_string(),
            log: program_log(rtc, prog),
        });
    }
    let mut size = 0usize;
    // SAFETY: compilation succeeded; `size` is valid for writes.
    rtc.check(unsafe { (rtc.get_code_size)(prog, &mut size) })
        .map_err(CompileError::Rtc)?;
    let mut code = vec![0u8; size];
    // SAFETY: `code` holds the `size` bytes hiprtc reported.
    rtc.check(unsafe { (rtc.get_code)(prog, code.as_mut_ptr().cast()) })
        .map_err(CompileError::Rtc)?;
    if code.is_empty() {
        return Err(CompileError::Rtc(format!(
            "{} for {arch}: hiprtc returned no code",
            src.name
        )));
    }
    Ok(code)
}

fn program_log(rtc: &Rtc, prog: RtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: `size` is valid for writes.
    if unsafe { (rtc.get_program_log_size)(prog, &mut size) } != 0 || size == 0 {
        return String::new();
    }
    let mut log = vec![0u8; size + 1];
    // SAFETY: `log` holds more than the reported size.
    if unsafe { (rtc.get_program_log)(prog, log.as_mut_ptr().cast()) } != 0 {
        return String::new();
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    String::from_utf8_lossy(&log[..end]).into_owned()
}

/// The cache directory, if one can be named.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_HIP_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("kiln").join("hip"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("kiln").join("hip"))
}

/// The cache file name of the source text `text` (named `name`) compiled
/// for `arch` by hiprtc `compiler`: `name-arch-<96-bit hex>.hsaco`, the
/// target's `:` features spelled `_` so the name is portable.
pub(crate) fn cache_key(name: &str, text: &str, arch: &str, compiler: &str) -> String {
    let mut h = Sha256::new();
    for part in [text, arch, compiler] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for o in OPTIONS {
        h.update((o.len() as u64).to_le_bytes());
        h.update(o.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let target: String = arch
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{name}-{target}-{hex}.hsaco")
}

/// The code object of `src` for `arch`: from the disk cache when present,
/// else compiled and stored there.
pub(crate) fn cached_code_object(src: &KernelSource, arch: &str) -> Result<Vec<u8>, CompileError> {
    let compiler = compiler_id()?;
    let text = full_source(src)?;
    let path = cache_dir().map(|d| d.join(cache_key(src.name, &text, arch, &compiler)));
    if let Some(p) = &path {
        if let Ok(code) = std::fs::read(p) {
            if !code.is_empty() {
                return Ok(code);
            }
        }
    }
    let code = compile_code_object(src, arch)?;
    if let Some(p) = &path {
        store(p, &code);
    }
    Ok(code)
}

/// Write `code` to `path` atomically (temporary file + rename); errors ignored.
fn store(path: &Path, code: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, code).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_text_arch_and_compiler() {
        let a = cache_key("gemm", "k()", "gfx90a", "libamdhip64.so 9.0");
        assert_eq!(a, cache_key("gemm", "k()", "gfx90a", "libamdhip64.so 9.0"));
        assert_ne!(a, cache_key("gemm", "k() ", "gfx90a", "libamdhip64.so 9.0"));
        assert_ne!(a, cache_key("gemm", "k()", "gfx1030", "libamdhip64.so 9.0"));
        assert_ne!(a, cache_key("gemm", "k()", "gfx90a", "libhiprtc.so 6.2"));
        assert!(
            a.starts_with("gemm-gfx90a-") && a.ends_with(".hsaco"),
            "{a}"
        );
        // Boundaries between the parts are part of the key.
        assert_ne!(
            cache_key("x", "ab", "c", "d"),
            cache_key("x", "a", "bc", "d")
        );
        let full = cache_key("gemm", "k()", "gfx942:sramecc+:xnack-", "c");
        assert!(full.starts_with("gemm-gfx942_sramecc__xnack_-"), "{full}");
        assert_ne!(
            full,
            cache_key("gemm", "k()", "gfx942:sramecc+:xnack+", "c")
        );
    }

    #[test]
    fn full_source_is_prelude_headers_then_body() {
        let text = full_source(&crate::sources::PAGED_ATTENTION).unwrap_or_default();
        let prelude = text.find("KILN_WAVE").unwrap_or(usize::MAX);
        let core = text.find("pa_core").unwrap_or(usize::MAX);
        let body = text
            .find("#line 1 \"paged_attention\"")
            .unwrap_or(usize::MAX);
        assert!(
            prelude < core && core < body && body < text.len(),
            "{prelude} {core} {body}"
        );
    }

    #[test]
    fn gfx94x_is_refused_before_rocm6() {
        assert!(unsupported_target("gfx942:sramecc+:xnack-", 50_221_153).is_some());
        assert!(unsupported_target("gfx940", 50_700_000).is_some());
        assert!(unsupported_target("gfx942", 60_200_000).is_none());
        assert!(unsupported_target("gfx90a:sramecc+:xnack-", 50_221_153).is_none());
        assert_eq!(base_arch("gfx90a:xnack-"), "gfx90a");
    }

    #[test]
    fn missing_compiler_message_says_how_to_fix() {
        let m = CompileError::NoCompiler("hiprtc not found".into()).to_string();
        assert!(
            m.contains("hiprtc not found") && m.contains("install ROCm"),
            "{m}"
        );
    }
}
