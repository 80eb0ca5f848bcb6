//! What every `cargo xtask` command that builds or runs the stage crates needs first: the
//! prerequisites checked within seconds (a C compiler, free disk), the native libraries provisioned
//! (libtorch, libjpeg-turbo, onnxruntime), a clean environment for the cargo processes xtask starts, and the
//! `petal` binary built once, with a build failure reported as itself.

use crate::{libjpeg, libtorch, onnxruntime};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use xtask_launch::is_package_var;

/// The native libraries the stage crates link.
#[derive(Debug, Clone)]
pub struct Native {
    /// libtorch (tch).
    pub torch: libtorch::Libtorch,
    /// libjpeg-turbo (preprocess).
    pub jpeg: libjpeg::Libjpeg,
    /// onnxruntime (the `onnx` crate loads it at run time).
    pub ort: onnxruntime::Onnxruntime,
}

impl Native {
    /// Checks the prerequisites, then provisions what is missing; once per xtask process.
    pub fn ensure() -> Result<Native> {
        static NATIVE: OnceLock<Native> = OnceLock::new();
        if let Some(n) = NATIVE.get() {
            return Ok(n.clone());
        }
        check_compiler()?;
        check_disk(&target_dir())?;
        let native = Native {
            torch: libtorch::ensure(&crate::libtorch_link())?,
            jpeg: libjpeg::ensure(&crate::libjpeg_link())?,
            ort: onnxruntime::ensure(&crate::onnxruntime_link())?,
        };
        Ok(NATIVE.get_or_init(|| native).clone())
    }

    /// Sets `LIBTORCH`, `PETAL_LIBJPEG`, `PETAL_ONNXRUNTIME` and the dynamic-library search path for a child process, and
    /// removes the variables cargo set for xtask's own package: a `CARGO_MANIFEST_DIR` inherited
    /// from `cargo run -p xtask` is seen by build scripts (ring's) and rebuilt everything that
    /// depends on them whenever plain `cargo` and `cargo xtask` alternate.
    pub fn apply(&self, cmd: &mut Command) {
        xtask_launch::strip_package_vars(cmd);
        // For our own caches the values equal what .cargo/config.toml gives, so nothing is rebuilt.
        cmd.env("LIBTORCH", if self.torch.user_supplied { self.torch.dir.clone() } else { crate::libtorch_link() });
        cmd.env("PETAL_LIBJPEG", if self.jpeg.user_supplied { self.jpeg.dir.clone() } else { crate::libjpeg_link() });
        cmd.env(petal_common::onnxruntime::ENV_VAR, if self.ort.user_supplied { self.ort.dir.clone() } else { crate::onnxruntime_link() });
        let var = if cfg!(target_os = "macos") { "DYLD_LIBRARY_PATH" } else { "LD_LIBRARY_PATH" };
        let mut paths = vec![self.torch.lib_dir(), self.jpeg.dir.join("lib")];
        if let Some(old) = std::env::var_os(var) {
            paths.extend(std::env::split_paths(&old));
        }
        if let Ok(joined) = std::env::join_paths(paths) {
            cmd.env(var, joined);
        }
    }
}

/// The cargo target folder (`CARGO_TARGET_DIR`, else `target/` in the repository).
pub fn target_dir() -> PathBuf {
    xtask_launch::target_dir(&crate::repo_root())
}

/// A C compiler must run (see [`xtask_launch::check_compiler`]).
pub fn check_compiler() -> Result<()> {
    xtask_launch::check_compiler().map_err(anyhow::Error::msg)
}

/// The target folder's file system must have room for the build (see [`xtask_launch::check_disk`]).
pub fn check_disk(target: &Path) -> Result<()> {
    xtask_launch::check_disk(target).map_err(anyhow::Error::msg)
}

/// The build of the workspace's binaries that shares every artifact with `cargo test --workspace`:
/// building the examples too activates the dev-dependencies, so every dependency gets the features
/// the tests resolve (`--bins` alone resolved others for half, num-traits, rand, regex, reqwest and
/// time, and rebuilt them and the libtorch bindings a second time).
pub const SHARED_BUILD: [&str; 4] = ["build", "--workspace", "--bins", "--examples"];

/// Builds the `petal` binary once per xtask process and returns its path. The dev profile
/// optimises the hot crates (Cargo.toml), so this is the build whose speed README quotes, and it
/// shares every artifact with `cargo xtask test`. A failed build is reported as such, and nothing
/// runs after it.
pub fn petal_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = BUILT.get() {
        return Ok(p.clone());
    }
    let mut cmd = crate::cargo()?;
    cmd.args(SHARED_BUILD);
    let status = cmd.status().map_err(|e| anyhow::anyhow!("could not start cargo: {e}"))?;
    if !status.success() {
        bail!("the petal build failed (cargo's and the compiler's errors are above); nothing was run");
    }
    let bin = target_dir().join("debug").join(format!("petal{}", std::env::consts::EXE_SUFFIX));
    Ok(BUILT.get_or_init(|| bin).clone())
}
