//! NVRTC compilation of the kernel sources, with an on-disk cache.
//!
//! A source is compiled for a real architecture (`sm_90a`: NVRTC runs
//! ptxas and returns a CUBIN, which loads with no driver JIT) or a virtual
//! one (`compute_90a`: PTX, JIT-compiled by the driver at load; the fallback
//! for a GPU newer than NVRTC, and what the compile checks use). Each result
//! is cached once per (source text, target, NVRTC version, options) in
//! `$KILN_CUDA_CACHE`, else `$XDG_CACHE_HOME/kiln/cuda`, else
//! `~/.cache/kiln/cuda`, under a name made from the SHA-256 of all of those,
//! so a changed kernel or a new NVRTC never loads stale code. A cache that
//! cannot be written is skipped silently: it only saves start-up time.

use std::ffi::CString;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::sources::{KernelSource, PRELUDE};

/// Options every source is compiled with (besides the architecture).
const OPTIONS: &[&str] = &["--std=c++17", "-default-device"];

/// Why a compilation failed.
#[derive(Debug)]
pub(crate) enum CompileError {
    /// `libnvrtc` could not be loaded.
    NoNvrtc,
    /// NVRTC rejected the source; the log says why.
    Rejected {
        /// Source name.
        source: &'static str,
        /// Target, e.g. `compute_90a`.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// An NVRTC call failed outright.
    Nvrtc(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::NoNvrtc => write!(f, "{}", no_nvrtc_message()),
            CompileError::Rejected { source, arch, log } => {
                write!(f, "NVRTC could not compile {source}.cu for {arch}:\n{log}")
            }
            CompileError::Nvrtc(m) => write!(f, "NVRTC failed: {m}"),
        }
    }
}

/// What to tell a user whose machine has no NVRTC.
pub(crate) fn no_nvrtc_message() -> String {
    "NVRTC (libnvrtc.so.13) not found: install the CUDA 13 toolkit or \
     `pip install nvidia-cuda-nvrtc==13.0.88` and put its lib directory on LD_LIBRARY_PATH"
        .to_string()
}

/// Whether `libnvrtc` can be loaded (loading it otherwise panics inside cudarc).
pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's version, `(major, minor)`.
pub(crate) fn nvrtc_version() -> Result<(i32, i32), CompileError> {
    if !nvrtc_present() {
        return Err(CompileError::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for writes.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    status
        .result()
        .map_err(|e| CompileError::Nvrtc(format!("{e:?}")))?;
    Ok((major, minor))
}

/// The virtual architecture NVRTC targets for compute capability
/// `major.minor`: `compute_90a` on Hopper (for its arch-specific
/// instructions), `compute_XY` elsewhere.
pub(crate) fn arch_for(major: u32, minor: u32) -> String {
    if (major, minor) == (9, 0) {
        "compute_90a".to_string()
    } else {
        format!("compute_{major}{minor}")
    }
}

/// The real architecture of the same GPU (`sm_90a`, `sm_XY`): NVRTC
/// returns a CUBIN for it.
pub(crate) fn sm_for(major: u32, minor: u32) -> String {
    arch_for(major, minor).replacen("compute_", "sm_", 1)
}

/// Compile `src` for `target`: a CUBIN for `sm_*`, PTX (NUL-terminated,
/// as `cuModuleLoadData` wants it) for `compute_*`. Not cached.
pub(crate) fn compile_image(src: &KernelSource, target: &str) -> Result<Vec<u8>, CompileError> {
    if target.starts_with("sm_") {
        compile_cubin(src, target)
    } else {
        let mut ptx = compile_ptx(src, target)?.into_bytes();
        ptx.push(0);
        Ok(ptx)
    }
}

fn compile_cubin(src: &KernelSource, target: &str) -> Result<Vec<u8>, CompileError> {
    use cudarc::nvrtc::{result, sys};
    let prog = create(src)?;
    let log = compile(prog, src, target);
    let out = log.and_then(|()| {
        let mut size = 0usize;
        // SAFETY: compilation succeeded; `size` is valid for writes.
        unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
            .result()
            .map_err(|e| CompileError::Nvrtc(format!("{e:?}")))?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` holds the `size` bytes NVRTC reported.
        unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut std::ffi::c_char) }
            .result()
            .map_err(|e| CompileError::Nvrtc(format!("{e:?}")))?;
        Ok(cubin)
    });
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// A new NVRTC program for `src`.
fn create(src: &KernelSource) -> Result<cudarc::nvrtc::sys::nvrtcProgram, CompileError> {
    if !nvrtc_present() {
        return Err(CompileError::NoNvrtc);
    }
    let text = CString::new(full_source(src))
        .map_err(|_| CompileError::Nvrtc(format!("{}.cu contains a NUL byte", src.name)))?;
    let name = CString::new(format!("{}.cu", src.name))
        .map_err(|_| CompileError::Nvrtc("bad source name".into()))?;
    cudarc::nvrtc::result::create_program(&text, Some(&name))
        .map_err(|e| CompileError::Nvrtc(format!("{e:?}")))
}

/// Compile `prog` for `target`; the log is the error on failure.
fn compile(
    prog: cudarc::nvrtc::sys::nvrtcProgram,
    src: &KernelSource,
    target: &str,
) -> Result<(), CompileError> {
    use cudarc::nvrtc::result;
    let mut opts: Vec<String> = vec![format!("--gpu-architecture={target}")];
    opts.extend(OPTIONS.iter().map(|s| s.to_string()));
    // SAFETY: `prog` is a live program; the options are valid C strings.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    if compiled.is_ok() {
        return Ok(());
    }
    // SAFETY: as above.
    let log = unsafe { result::get_program_log(prog) }
        .map(|l| c_chars_to_string(&l))
        .unwrap_or_default();
    Err(CompileError::Rejected {
        source: src.name,
        arch: target.to_string(),
        log,
    })
}

/// The full text NVRTC sees for `src`.
fn full_source(src: &KernelSource) -> String {
    let mut text = String::from(PRELUDE);
    for header in src.headers {
        text.push('\n');
        text.push_str(header);
    }
    text.push_str(&format!("\n#line 1 \"{}.cu\"\n{}", src.name, src.code));
    text
}

/// Compile `src` for `arch` (e.g. `compute_90a`) to PTX, without the cache.
pub(crate) fn compile_ptx(src: &KernelSource, arch: &str) -> Result<String, CompileError> {
    use cudarc::nvrtc::result;
    let prog = create(src)?;
    let out = compile(prog, src, arch).and_then(|()| {
        // SAFETY: compilation succeeded, so the PTX exists.
        unsafe { result::get_ptx(prog) }
            .map(|p| c_chars_to_string(&p))
            .map_err(|e| CompileError::Nvrtc(format!("{e:?}")))
    });
    // SAFETY: destroyed once, after its last use.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

fn c_chars_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The cache directory, if one can be named.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_CUDA_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("kiln").join("cuda"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("kiln").join("cuda"))
}

/// The cache key of `src` compiled for `arch` by NVRTC `version`.
fn cache_key(src: &KernelSource, arch: &str, version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(full_source(src).as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("nvrtc {}.{}", version.0, version.1).as_bytes());
    for o in OPTIONS {
        h.update(o.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let ext = if arch.starts_with("sm_") {
        "cubin"
    } else {
        "ptx"
    };
    format!("{}-{arch}-{hex}.{ext}", src.name)
}

/// The module image of `src` for `target` (see [`compile_image`]): from
/// the disk cache when present, else compiled and stored there.
pub(crate) fn cached_image(src: &KernelSource, target: &str) -> Result<Vec<u8>, CompileError> {
    let version = nvrtc_version()?;
    let path = cache_dir().map(|d| d.join(cache_key(src, target, version)));
    if let Some(p) = &path {
        if let Ok(image) = std::fs::read(p) {
            if !image.is_empty() {
                return Ok(image);
            }
        }
    }
    let image = compile_image(src, target)?;
    if let Some(p) = &path {
        store(p, &image);
    }
    Ok(image)
}

/// Write `image` to `path` atomically (temporary file + rename); errors ignored.
fn store(path: &std::path::Path, image: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, image).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(arch_for(9, 0), "compute_90a");
        assert_eq!(arch_for(8, 0), "compute_80");
        assert_eq!(arch_for(8, 9), "compute_89");
    }

    #[test]
    fn cache_key_depends_on_arch_and_version() {
        let s = &crate::sources::ELEMENTWISE;
        let a = cache_key(s, "compute_80", (13, 0));
        assert_ne!(a, cache_key(s, "compute_90a", (13, 0)));
        assert_ne!(a, cache_key(s, "compute_80", (13, 1)));
        assert!(a.starts_with("elementwise-compute_80-") && a.ends_with(".ptx"));
        assert!(cache_key(s, "sm_90a", (13, 0)).ends_with(".cubin"));
        assert_eq!(sm_for(9, 0), "sm_90a");
        assert_eq!(sm_for(8, 9), "sm_89");
    }
}
