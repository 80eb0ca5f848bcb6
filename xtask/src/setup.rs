//! What every `cargo xtask` command that builds or runs the stage crates needs first: the
//! prerequisites checked within seconds (a C compiler, free disk), the native libraries provisioned
//! (libtorch, libjpeg-turbo), a clean environment for the cargo processes xtask starts, and the
//! `petal` binary built once, with a build failure reported as itself.

use crate::{libjpeg, libtorch};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Free space a build from nothing needs in the target folder's file system: the main job's first
/// run left 2.5 GB in an empty `target/` (BENCHMARKS.md, "Time to a first result"); the lint and
/// test builds add to it (not yet measured from nothing), hence the margin.
pub const FROM_NOTHING_BYTES: u64 = 9 << 30;
/// Free space an incremental build needs when `target/` already exists.
pub const INCREMENTAL_BYTES: u64 = 2 << 30;

/// The native libraries the stage crates link.
#[derive(Debug, Clone)]
pub struct Native {
    /// libtorch (tch).
    pub torch: libtorch::Libtorch,
    /// libjpeg-turbo (preprocess).
    pub jpeg: libjpeg::Libjpeg,
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
        let native = Native { torch: libtorch::ensure(&crate::libtorch_link())?, jpeg: libjpeg::ensure(&crate::libjpeg_link())? };
        Ok(NATIVE.get_or_init(|| native).clone())
    }

    /// Sets `LIBTORCH`, `PETAL_LIBJPEG` and the dynamic-library search path for a child process, and
    /// removes the variables cargo set for xtask's own package: a `CARGO_MANIFEST_DIR` inherited
    /// from `cargo run -p xtask` is seen by build scripts (ring's) and rebuilt everything that
    /// depends on them whenever plain `cargo` and `cargo xtask` alternate.
    pub fn apply(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(is_package_var) {
                cmd.env_remove(&key);
            }
        }
        // For our own caches the values equal what .cargo/config.toml gives, so nothing is rebuilt.
        cmd.env("LIBTORCH", if self.torch.user_supplied { self.torch.dir.clone() } else { crate::libtorch_link() });
        cmd.env("PETAL_LIBJPEG", if self.jpeg.user_supplied { self.jpeg.dir.clone() } else { crate::libjpeg_link() });
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

/// The variables cargo sets for the package it runs (here xtask), which a nested cargo must not see.
pub fn is_package_var(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

/// The cargo target folder (`CARGO_TARGET_DIR`, else `target/` in the repository).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate::repo_root().join("target"))
}

/// A C compiler must run: the preprocess crate compiles its libjpeg shim (and ring its C code).
pub fn check_compiler() -> Result<()> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let ok = Command::new(&cc).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "no C compiler: `{cc} --version` did not run. The build compiles a little C (the JPEG shim); install one (Debian/Ubuntu: `apt-get install gcc`; Fedora: `dnf install gcc`; macOS: `xcode-select --install`) or set CC, then rerun"
        );
    }
    Ok(())
}

/// The target folder's file system must have room for the build: [`FROM_NOTHING_BYTES`] when
/// there is no `debug/` yet, [`INCREMENTAL_BYTES`] otherwise.
pub fn check_disk(target: &Path) -> Result<()> {
    if target.join("debug").is_dir() {
        check_disk_needing(target, INCREMENTAL_BYTES, "a build")
    } else {
        check_disk_needing(target, FROM_NOTHING_BYTES, "a build from nothing")
    }
}

/// [`check_disk`] for `what`, which needs `need` bytes.
pub fn check_disk_needing(target: &Path, need: u64, what: &str) -> Result<()> {
    // The nearest existing ancestor carries the file system the build will write to.
    let probe = target.ancestors().find(|p| p.exists()).unwrap_or(Path::new("."));
    let Some(free) = free_bytes(probe) else { return Ok(()) };
    if free < need {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        bail!(
            "only {:.1} GiB free on the file system of {} but {} needs about {:.0} GiB: free some space (or set CARGO_TARGET_DIR to a folder on a larger disk) and rerun",
            gib(free),
            target.display(),
            what,
            gib(need)
        );
    }
    Ok(())
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u64 on Linux x86_64, u32/c_ulong elsewhere).
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
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
