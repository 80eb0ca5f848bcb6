//! Where petal finds onnxruntime's shared library at run time: the one fact `cargo xtask setup`
//! (which provisions it) and the `onnx` crate (which loads it) must agree on.

use std::path::{Path, PathBuf};

/// The onnxruntime release setup provisions (the PyPI `onnxruntime` wheel's
/// `onnxruntime/capi/libonnxruntime.so.<version>`).
pub const VERSION: &str = "1.32.0";

/// The variable naming a folder whose `lib/` holds the library (as `LIBTORCH` does for libtorch).
pub const ENV_VAR: &str = "PETAL_ONNXRUNTIME";

/// The repository link setup makes to the provisioned folder, like `.libtorch`.
pub const REPO_LINK: &str = ".onnxruntime";

/// The library's file name on this platform.
pub fn library_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libonnxruntime.dylib"
    } else if cfg!(windows) {
        "onnxruntime.dll"
    } else {
        "libonnxruntime.so"
    }
}

/// The candidates, in order: `$PETAL_ONNXRUNTIME/lib/<library>` (or the file itself), onnxruntime's
/// own `ORT_DYLIB_PATH`, then `.onnxruntime/lib/<library>` in each folder above the running
/// executable (a binary in `target/<profile>/` or `target/<profile>/deps/` finds the link setup made
/// in the repository, as its rpath finds `.libtorch`).
pub fn candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(v) = std::env::var_os(ENV_VAR).map(PathBuf::from) {
        out.push(if v.is_file() { v } else { v.join("lib").join(library_name()) });
    }
    if let Some(v) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(v));
    }
    if let Some(exe) = exe {
        out.extend(exe.ancestors().skip(1).map(|dir| dir.join(REPO_LINK).join("lib").join(library_name())));
    }
    out
}

/// petal's cache folder: `PETAL_CACHE_DIR`, else `$XDG_CACHE_HOME/petal`, else `~/.cache/petal`
/// (where `cargo xtask setup` puts libtorch and onnxruntime); `None` when none of these is set.
pub fn cache_root() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("PETAL_CACHE_DIR").or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("petal"))).or_else(|| var("HOME").map(|h| h.join(".cache/petal")))
}

/// Where ONNX graphs built for onnxruntime are cached: `<cache_root>/onnx`.
pub fn graph_cache() -> Option<PathBuf> {
    cache_root().map(|r| r.join("onnx"))
}

/// The first candidate that exists, or the list that was searched.
pub fn locate() -> Result<PathBuf, Vec<PathBuf>> {
    let exe = std::env::current_exe().ok();
    let all = candidates(exe.as_deref());
    all.iter().find(|p| p.is_file()).cloned().ok_or(all)
}
