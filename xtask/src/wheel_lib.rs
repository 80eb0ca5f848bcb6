//! A shared library taken out of a pinned PyPI wheel, with no Python and no pip: the pattern behind
//! libjpeg-turbo (from Pillow's wheel) and onnxruntime (from its own wheel).
//!
//! The wheel is resolved through PyPI's JSON simple index, refused unless the index publishes the
//! pinned sha256, downloaded with a progress bar, and only the wanted members are extracted into a
//! temp folder that is renamed into place when complete, so an interrupted run never leaves half a
//! cache. `lib/<link_name>` links to the extracted file, which keeps the wheel's own name.

use crate::download::write_error;
use crate::{libtorch, pypi};
use anyhow::{bail, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// One platform's wheel: its file name's distinguishing parts and its sha256, pinned.
pub struct Wheel<'a> {
    /// Parts of the file name after `<project>-<version>-`.
    pub parts: &'a [&'a str],
    /// The sha256 the index must publish for it.
    pub sha256: &'a str,
}

/// What to take out of which wheel.
pub struct WheelLib<'a> {
    /// What it is, for messages (`libjpeg-turbo 3.2.0 (from the Pillow 13.0.0 wheel)`).
    pub what: &'a str,
    /// The PyPI project (`pillow`).
    pub project: &'a str,
    /// The project's version.
    pub version: &'a str,
    /// This platform's pinned wheel.
    pub wheel: Wheel<'a>,
    /// The file name under `lib/` of a wheel member to extract, `None` for the others.
    pub member: fn(&str) -> Option<&str>,
    /// The name under `lib/` that links to the extracted library (`libjpeg.so`).
    pub link_name: &'a str,
}

/// Provisions `dir` (`dir/lib/<link_name>` and the library it links to) from `lib`'s wheel on
/// `index` if it is not there yet; downloads go to `root/downloads`. Returns `dir`.
pub fn provision(root: &Path, index: &str, dir: &Path, lib: &WheelLib) -> Result<PathBuf> {
    if dir.join("lib").join(lib.link_name).exists() {
        return Ok(dir.to_path_buf());
    }
    eprintln!("setup: provisioning {} from PyPI into {}", lib.what, dir.display());
    let file = pypi::pick(index, lib.project, &format!("{}-{}-", lib.project, lib.version), lib.wheel.parts)?;
    if file.sha256 != lib.wheel.sha256 {
        bail!(
            "{} has sha256 {} on the index, but setup pins {}: the mirror serves another file; refusing it",
            file.filename,
            file.sha256,
            lib.wheel.sha256
        );
    }
    let whl = libtorch::fetch_wheel(&root.join("downloads"), &file)?;
    let tmp = root.join(format!(".{}.tmp-{}", lib.link_name, std::process::id()));
    libtorch::build_then_place(&tmp, dir, |tmp| {
        fs::create_dir_all(tmp.join("lib")).map_err(|e| write_error(tmp, e))?;
        libtorch::extract(&whl, tmp, |name| (lib.member)(name).map(|f| PathBuf::from("lib").join(f)))?;
        let mut found = None;
        for entry in fs::read_dir(tmp.join("lib")).map_err(|e| write_error(tmp, e))? {
            found = Some(entry.map_err(|e| write_error(tmp, e))?.file_name());
        }
        let Some(name) = found else { bail!("{} holds no {}: not the wheel setup expects", whl.display(), lib.what) };
        let so = tmp.join("lib").join(lib.link_name);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&name, &so).map_err(|e| write_error(&so, e))?;
        Ok(())
    })?;
    let _ = fs::remove_file(&whl);
    eprintln!("setup: {} ready at {}", lib.what, dir.display());
    Ok(dir.to_path_buf())
}

/// A library the user chose through `var` (a folder whose `lib/` holds one of `names`), unless
/// `var` is unset or names our own repository link; an unusable choice is an error saying so.
pub fn user_choice(var: &str, repo_link: &Path, names: &[&str]) -> Result<Option<PathBuf>> {
    let Some(user) = std::env::var_os(var).map(PathBuf::from) else { return Ok(None) };
    if user == repo_link {
        return Ok(None);
    }
    if !names.iter().any(|n| user.join("lib").join(n).exists()) {
        bail!("{var}={} has no lib/{}: point it at such a folder, or unset it to let setup provision one", user.display(), names.join(" or lib/"));
    }
    Ok(Some(user))
}
