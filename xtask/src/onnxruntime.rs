//! `cargo xtask setup`, third part: onnxruntime's shared library, from the PyPI `onnxruntime` wheel.
//!
//! petal runs every forward pass that trains nothing (feature extraction, prediction, evaluation,
//! serving) through onnxruntime where it is faster (the `onnx` crate loads the library at run time
//! through the `ort` crate, so nothing is downloaded or linked at build time). The wheel's
//! `onnxruntime/capi/libonnxruntime.so.<version>` needs nothing but the C and C++ runtimes; we take
//! that one file from a pinned, sha256-verified wheel, with no Python and no pip, and cache it beside
//! libtorch. `.onnxruntime` in the repository links to it, where binaries look for it.

use crate::wheel_lib::{self, Wheel, WheelLib};
use crate::{libtorch, pypi};
use anyhow::{bail, Result};
use petal_common::onnxruntime::{library_name, ENV_VAR, VERSION};
use std::path::{Path, PathBuf};

/// This platform's pinned wheel (the cp311 build; the library inside is the same for every Python).
pub fn wheel() -> Result<Wheel<'static>> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Ok(Wheel {
            parts: &["cp311-cp311-manylinux_2_28_x86_64"],
            sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
        }),
        ("linux", "aarch64") => Ok(Wheel {
            parts: &["cp311-cp311-manylinux_2_28_aarch64"],
            sha256: "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c",
        }),
        (os, arch) => bail!(
            "setup provisions onnxruntime for Linux x86_64 and aarch64 only, not {os}/{arch}: download onnxruntime {VERSION} and set {ENV_VAR} to a folder whose lib/ holds {}",
            library_name()
        ),
    }
}

/// The cached folder: `lib/` holds the wheel's library under its own name and `libonnxruntime.so`
/// linking to it.
pub fn cached_dir(root: &Path) -> PathBuf {
    root.join(format!("onnxruntime-{VERSION}"))
}

/// Where the onnxruntime petal loads lives, and whether the user chose it.
#[derive(Debug, Clone)]
pub struct Onnxruntime {
    /// The folder with `lib/`.
    pub dir: PathBuf,
    /// True when the user supplied it through `PETAL_ONNXRUNTIME`.
    pub user_supplied: bool,
}

/// Ensures an onnxruntime exists; respects a user's `PETAL_ONNXRUNTIME` (anything but our own link).
pub fn ensure(repo_link: &Path) -> Result<Onnxruntime> {
    if let Some(dir) = wheel_lib::user_choice(ENV_VAR, repo_link, &[library_name()])? {
        return Ok(Onnxruntime { dir, user_supplied: true });
    }
    let dir = provision_from(&libtorch::cache_root()?, &pypi::index_url(), &wheel()?)?;
    libtorch::link(repo_link, &dir)?;
    Ok(Onnxruntime { dir, user_supplied: false })
}

/// Provisions [`cached_dir`] from `wheel` on the index if it is not there yet; returns its path.
pub fn provision_from(root: &Path, index: &str, wheel: &Wheel) -> Result<PathBuf> {
    let what = format!("onnxruntime {VERSION}");
    let lib = WheelLib {
        what: &what,
        project: "onnxruntime",
        version: VERSION,
        wheel: Wheel { parts: wheel.parts, sha256: wheel.sha256 },
        member: |name| name.strip_prefix("onnxruntime/capi/").filter(|lib| lib.starts_with("libonnxruntime.so.")),
        link_name: library_name(),
    };
    wheel_lib::provision(root, index, &cached_dir(root), &lib)
}
