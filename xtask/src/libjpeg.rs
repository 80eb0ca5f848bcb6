//! `cargo xtask setup`, second part: libjpeg-turbo for the preprocess crate, from the Pillow wheel.
//!
//! petal decodes JPEG with the library Pillow decodes with, so that pixels are Pillow's bit for bit.
//! Pillow's manylinux wheels ship exactly that library (libjpeg-turbo with its SIMD code, libjpeg 6.2
//! ABI) in `pillow.libs/`. We take that one file from a pinned, sha256-verified wheel, with no Python
//! and no pip, and cache it beside libtorch: no system package, no root, no NASM or CMake. The
//! preprocess crate's build script compiles a small C shim against vendored headers and links it.

use crate::download::write_error;
use crate::{libtorch, pypi};
use anyhow::{bail, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The Pillow release whose bundled libjpeg-turbo we use.
pub const PILLOW_VERSION: &str = "13.0.0";
/// The libjpeg-turbo version inside that wheel (its `strings` say "libjpeg-turbo version 3.2.0").
pub const LIBJPEG_TURBO_VERSION: &str = "3.2.0";

/// One platform's Pillow wheel: its file name's distinguishing parts and its sha256, pinned.
pub struct Wheel<'a> {
    /// Parts of the file name after `pillow-<version>-`.
    pub parts: &'a [&'a str],
    /// The sha256 the index must publish for it.
    pub sha256: &'a str,
}

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
    if let Some(user) = std::env::var_os("PETAL_LIBJPEG").map(PathBuf::from) {
        if user != repo_link {
            let lib = user.join("lib");
            if !lib.join("libjpeg.so").exists() && !lib.join("libjpeg.dylib").exists() {
                bail!(
                    "PETAL_LIBJPEG={} has no lib/libjpeg.so: point it at a libjpeg-turbo folder, or unset it to let setup provision one",
                    user.display()
                );
            }
            return Ok(Libjpeg { dir: user, user_supplied: true });
        }
    }
    let dir = provision_from(&libtorch::cache_root()?, &pypi::index_url(), &wheel()?)?;
    libtorch::link(repo_link, &dir)?;
    Ok(Libjpeg { dir, user_supplied: false })
}

/// Provisions [`cached_dir`] from `wheel` on the index if it is not there yet; returns its path.
pub fn provision_from(root: &Path, index: &str, wheel: &Wheel) -> Result<PathBuf> {
    let dir = cached_dir(root);
    if dir.join("lib/libjpeg.so").exists() {
        return Ok(dir);
    }
    eprintln!("setup: provisioning libjpeg-turbo {LIBJPEG_TURBO_VERSION} (from the Pillow {PILLOW_VERSION} wheel on PyPI) into {}", dir.display());
    let file = pypi::pick(index, "pillow", &format!("pillow-{PILLOW_VERSION}-"), wheel.parts)?;
    check_pin(&file, wheel.sha256)?;
    let downloads = root.join("downloads");
    let whl = libtorch::fetch_wheel(&downloads, &file)?;
    let tmp = root.join(format!(".libjpeg-turbo.tmp-{}", std::process::id()));
    libtorch::build_then_place(&tmp, &dir, |tmp| {
        fs::create_dir_all(tmp.join("lib")).map_err(|e| write_error(tmp, e))?;
        libtorch::extract(&whl, tmp, |name| {
            let lib = name.strip_prefix("pillow.libs/")?;
            (lib.starts_with("libjpeg-") && lib.contains(".so.62")).then(|| PathBuf::from("lib").join(lib))
        })?;
        let mut found = None;
        for entry in fs::read_dir(tmp.join("lib")).map_err(|e| write_error(tmp, e))? {
            found = Some(entry.map_err(|e| write_error(tmp, e))?.file_name());
        }
        let Some(name) = found else { bail!("{} holds no pillow.libs/libjpeg-*.so.62*: not the wheel setup expects", whl.display()) };
        let so = tmp.join("lib/libjpeg.so");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&name, &so).map_err(|e| write_error(&so, e))?;
        Ok(())
    })?;
    let _ = fs::remove_file(&whl);
    eprintln!("setup: libjpeg-turbo {LIBJPEG_TURBO_VERSION} ready at {}", dir.display());
    Ok(dir)
}

/// The index's hash must be the pinned one (a mirror serving another file is refused).
fn check_pin(file: &pypi::DistFile, pinned: &str) -> Result<()> {
    if file.sha256 != pinned {
        bail!("{} has sha256 {} on the index, but setup pins {pinned}: the mirror serves another file; refusing it", file.filename, file.sha256);
    }
    Ok(())
}
