//! Runtime choice of the vectorised kernels (resampling passes and the tensor write).
//!
//! Every kernel level computes exactly the same bits as the scalar reference: the resampling
//! kernels are integer (wrapping `i32` multiply-adds, whose sum does not depend on the order),
//! and the tensor write does the same three IEEE `f32` operations per value as the scalar code.
//! The level only changes the speed.
//!
//! The widest level the CPU supports is detected once (the first time a kernel runs). The
//! environment variable `PETAL_SIMD` caps it:
//!
//! | `PETAL_SIMD` | level |
//! |---|---|
//! | `scalar` | [`SimdLevel::Scalar`]: the reference code |
//! | `avx2` | [`SimdLevel::Avx2`] |
//! | `avx512bw` | [`SimdLevel::Avx512Bw`]: AVX-512 F + BW + VL, without VBMI byte permutes |
//! | `avx512`, `avx512vbmi` | [`SimdLevel::Avx512Vbmi`]: AVX-512 F + BW + VL + VBMI + VNNI |
//!
//! A level the CPU lacks falls back to the widest supported one below it (so `avx512` on an
//! AVX2-only machine runs AVX2); an unset, empty or unknown value means the widest supported
//! level (an unknown one is logged). [`simd_level`] says which level runs.

use std::sync::OnceLock;

/// A kernel level, ordered from narrowest to widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimdLevel {
    /// The scalar reference code.
    Scalar,
    /// x86-64 AVX2 (8 × i32 lanes).
    Avx2,
    /// x86-64 AVX-512 F + BW + VL (16 × i32 lanes).
    Avx512Bw,
    /// AVX-512 F + BW + VL + VBMI + VNNI (adds byte permutes, `vpermb` and `vpermt2b`, and the
    /// byte dot product `vpdpbusd`; every CPU with VBMI but one, Cannon Lake, has VNNI).
    Avx512Vbmi,
}

impl SimdLevel {
    /// Every level, narrowest first.
    pub const ALL: [SimdLevel; 4] = [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512Bw, SimdLevel::Avx512Vbmi];

    /// The name `PETAL_SIMD` accepts for this level.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512Bw => "avx512bw",
            SimdLevel::Avx512Vbmi => "avx512vbmi",
        }
    }

    /// Parses a `PETAL_SIMD` value (case-insensitive, surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "off" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512bw" => Some(SimdLevel::Avx512Bw),
            "avx512" | "avx512vbmi" => Some(SimdLevel::Avx512Vbmi),
            _ => None,
        }
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        self <= detected()
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The widest level this CPU supports (ignoring `PETAL_SIMD`).
pub fn detected() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    use std::arch::is_x86_feature_detected as has;
    let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx2");
    if avx512 && has!("avx512vbmi") && has!("avx512vnni") {
        SimdLevel::Avx512Vbmi
    } else if avx512 {
        SimdLevel::Avx512Bw
    } else if has!("avx2") {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

/// The level `PETAL_SIMD=value` gives on a CPU whose widest level is `best`.
pub(crate) fn choose(value: Option<&str>, best: SimdLevel) -> SimdLevel {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => best,
        Some(v) => match SimdLevel::parse(v) {
            Some(requested) => requested.min(best),
            None => {
                tracing::warn!("PETAL_SIMD={v:?} is not one of scalar, avx2, avx512bw, avx512, avx512vbmi: using {best}");
                best
            }
        },
    }
}

/// The kernel level in use: the widest the CPU supports, capped by `PETAL_SIMD` (read once).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| choose(std::env::var("PETAL_SIMD").ok().as_deref(), detected()))
}

/// Every level this CPU supports, narrowest first (tests run each one).
#[cfg(test)]
pub(crate) fn supported_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL.into_iter().filter(|l| l.supported()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn petal_simd_caps_the_level_and_never_raises_it() {
        use SimdLevel::*;
        for best in SimdLevel::ALL {
            assert_eq!(choose(None, best), best);
            assert_eq!(choose(Some(""), best), best);
            assert_eq!(choose(Some("sse9"), best), best, "unknown value");
            assert_eq!(choose(Some("scalar"), best), Scalar);
            assert_eq!(choose(Some(" AVX2 "), best), Avx2.min(best));
            assert_eq!(choose(Some("avx512bw"), best), Avx512Bw.min(best));
            assert_eq!(choose(Some("avx512"), best), Avx512Vbmi.min(best));
            assert_eq!(choose(Some("avx512vbmi"), best), best);
        }
        for l in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(l.name()), Some(l));
        }
        assert!(simd_level() <= detected());
        assert!(supported_levels().contains(&Scalar));
    }
}
