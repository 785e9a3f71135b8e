//! Building programs, with an on-disk cache of device binaries.
//!
//! A program's binary is cached under `$KILN_OPENCL_CACHE` (else
//! `~/.cache/kiln/opencl`), keyed by a hash of the source, the build options
//! and the device's name, vendor, driver and OpenCL versions, so a second
//! start loads binaries instead of compiling. A cached binary the driver
//! rejects is rebuilt from source. A failed build returns the build log.

use std::path::PathBuf;

use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::program::Program;
use sha2::{Digest, Sha256};

use crate::device::KernelPath;
use crate::sources::KernelSource;

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KILN_OPENCL_CACHE") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln/opencl"))
}

fn cache_key(text: &str, options: &str, device: &Device) -> String {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(options.as_bytes());
    for s in [
        device.name(),
        device.vendor(),
        device.driver_version(),
        device.version(),
    ] {
        h.update([0]);
        h.update(s.unwrap_or_default().as_bytes());
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Build `src` for `device` on `path`, from the binary cache when possible.
/// The error names the source and carries the compiler's build log.
pub(crate) fn build(
    context: &Context,
    device: &Device,
    src: &KernelSource,
    path: KernelPath,
) -> Result<Program, String> {
    let text = src.text();
    let options = path.build_options();
    let file = cache_dir().map(|d| {
        d.join(format!(
            "{}-{}.bin",
            src.name,
            cache_key(&text, options, device)
        ))
    });
    if let Some(bytes) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
        if let Ok(p) = Program::create_and_build_from_binary(context, &[&bytes], options) {
            return Ok(p);
        }
    }
    let mut program = Program::create_from_source(context, &text)
        .map_err(|e| format!("creating program {}.cl: {e}", src.name))?;
    if let Err(e) = program.build(context.devices(), options) {
        let log = program
            .get_build_log(device.id())
            .unwrap_or_else(|le| format!("(no build log: {le})"));
        return Err(format!(
            "{}.cl failed to build ({} path, options `{options}`): {e}\nbuild log:\n{log}",
            src.name,
            path.name()
        ));
    }
    if let Some(f) = file {
        if let Ok(mut bins) = program.get_binaries() {
            if let Some(bin) = bins.pop().filter(|b| !b.is_empty()) {
                let _ = f.parent().map(std::fs::create_dir_all);
                let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &bin).is_ok() {
                    let _ = std::fs::rename(&tmp, &f);
                }
            }
        }
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel that does not compile gives an error with the build log.
    #[test]
    fn a_failed_build_carries_the_build_log() {
        let Ok(dev) = crate::OpenClDevice::open(0) else {
            println!("skipped: no OpenCL device");
            return;
        };
        static BROKEN: KernelSource = KernelSource {
            name: "broken",
            headers: &[],
            body: "__kernel void broken(__global float* x) { x[0] = undefined_name; }",
            kernels: &["broken"],
        };
        let Err(err) = build(
            dev.context(),
            dev.cl_device(),
            &BROKEN,
            KernelPath::Portable,
        ) else {
            panic!("the broken source must not build");
        };
        assert!(err.contains("broken.cl failed to build"), "{err}");
        assert!(err.contains("build log"), "{err}");
        assert!(err.contains("undefined_name"), "{err}");
    }
}
