//! `cargo xtask setup`, second part: libjpeg-turbo for the preprocess crate, from the Pillow wheel.
//!
//! petal decodes JPEG with the library Pillow decodes with, so that pixels are Pillow's bit for bit.
//! Pillow's manylinux wheels ship exactly that library (libjpeg-turbo with its SIMD code, libjpeg 6.2
//! ABI) in `pillow.libs/`. We take that one file from a pinned, sha256-verified wheel, with no Python
//! and no pip, and cache it beside libtorch: no system package, no root, no NASM or CMake. The
//! preprocess crate's build script compiles a small C shim against vendored headers and links it.

use crate::wheel_lib::{self, Wheel, WheelLib};
use crate::{libtorch, pypi};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The Pillow release whose bundled libjpeg-turbo we use.
pub const PILLOW_VERSION: &str = "13.0.0";
/// The libjpeg-turbo version inside that wheel (its `strings` say "libjpeg-turbo version 3.2.0").
pub const LIBJPEG_TURBO_VERSION: &str = "3.2.0";

/// This platform's pinned wheel.
pub fn wheel() -> Result<Wheel<'static>> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Ok(Wheel {
            parts: &["cp311-cp311-manylinux_2_27_x86_64"],
            sha256: "a625df9a2a5597fa5e5266e01aefc82604bb85d291e3547981e863560d75da6c",
        }),
        ("linux", "aarch64") => Ok(Wheel {
            parts: &["cp311-cp311-manylinux_2_27_aarch64"],
            sha256: "7c88c10dd432f3b39ccdafc9ed81d0c21b8fd634502574da76d1bfa4fe2c76d0",
        }),
        (os, arch) => bail!(
            "setup provisions libjpeg-turbo for Linux x86_64 and aarch64 only, not {os}/{arch}: install libjpeg-turbo and set PETAL_LIBJPEG to a folder whose lib/ holds libjpeg.so (or libjpeg.dylib)"
        ),
    }
}

/// The cached folder: `lib/` holds the wheel's library under its own name and `libjpeg.so` linking to it.
pub fn cached_dir(root: &Path) -> PathBuf {
    root.join(format!("libjpeg-turbo-{LIBJPEG_TURBO_VERSION}-pillow-{PILLOW_VERSION}"))
}

/// Where the libjpeg-turbo the build links lives, and whether the user chose it.
#[derive(Debug, Clone)]
pub struct Libjpeg {
    /// The folder with `lib/`.
    pub dir: PathBuf,
    /// True when the user supplied it through `PETAL_LIBJPEG`.
    pub user_supplied: bool,
}

/// Ensures a libjpeg-turbo exists; respects a user's `PETAL_LIBJPEG` (anything but our own link).
pub fn ensure(repo_link: &Path) -> Result<Libjpeg> {
    if let Some(dir) = wheel_lib::user_choice("PETAL_LIBJPEG", repo_link, &["libjpeg.so", "libjpeg.dylib"])? {
        return Ok(Libjpeg { dir, user_supplied: true });
    }
    let dir = provision_from(&libtorch::cache_root()?, &pypi::index_url(), &wheel()?)?;
    libtorch::link(repo_link, &dir)?;
    Ok(Libjpeg { dir, user_supplied: false })
}

/// Provisions [`cached_dir`] from `wheel` on the index if it is not there yet; returns its path.
pub fn provision_from(root: &Path, index: &str, wheel: &Wheel) -> Result<PathBuf> {
    let what = format!("libjpeg-turbo {LIBJPEG_TURBO_VERSION} (from the Pillow {PILLOW_VERSION} wheel)");
    let lib = WheelLib {
        what: &what,
        project: "pillow",
        version: PILLOW_VERSION,
        wheel: Wheel { parts: wheel.parts, sha256: wheel.sha256 },
        member: |name| name.strip_prefix("pillow.libs/").filter(|lib| lib.starts_with("libjpeg-") && lib.contains(".so.62")),
        link_name: "libjpeg.so",
    };
    wheel_lib::provision(root, index, &cached_dir(root), &lib)
}
