//! Instruction-set selection: detected at run time, overridable with
//! `KILN_CPU_ISA=scalar|avx2|avx512` so the conformance suite can run every
//! path the machine has.

use std::fmt;

/// A SIMD level. Every kernel has a scalar path that is always correct; the
/// wider paths are used only when the CPU reports the features they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no intrinsics.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL (+ AVX2 + FMA + F16C).
    Avx512,
}

impl Isa {
    /// Lower-case name as accepted by `KILN_CPU_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Every level this CPU can run, lowest first.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c");
            if avx2 {
                v.push(Isa::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    v.push(Isa::Avx512);
                }
            }
        }
        v
    }

    /// The best available level, or the one `KILN_CPU_ISA` asks for.
    pub fn select() -> Result<Isa, String> {
        let available = Isa::available();
        let best = *available.last().unwrap_or(&Isa::Scalar);
        match std::env::var("KILN_CPU_ISA") {
            Err(_) => Ok(best),
            Ok(s) if s.is_empty() || s == "auto" => Ok(best),
            Ok(s) => {
                let want = match s.to_ascii_lowercase().as_str() {
                    "scalar" => Isa::Scalar,
                    "avx2" => Isa::Avx2,
                    "avx512" => Isa::Avx512,
                    _ => {
                        return Err(format!(
                            "KILN_CPU_ISA={s:?}: expected scalar, avx2, avx512 or auto"
                        ))
                    }
                };
                if available.contains(&want) {
                    Ok(want)
                } else {
                    Err(format!(
                        "KILN_CPU_ISA={s}: this CPU supports only {}",
                        available
                            .iter()
                            .map(|i| i.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
