//! `cargo xtask setup`: a CPU libtorch for tch, built from PyPI wheels without Python or pip.
//!
//! The torch wheel (a zip) holds the C++ headers and shared libraries. We extract only what a C++
//! consumer needs, add the two small CUDA runtime libraries `libtorch_cpu.so` names as NEEDED (they
//! load fine without a GPU), and replace `libtorch.so` (which would pull in libtorch_cuda.so) by a
//! one-line linker script. The result is cached under the user's cache directory, keyed by version,
//! and placed by renaming a finished temp directory, so an interrupted run never leaves half a cache.

use crate::download::{self, write_error, Expect};
use crate::pypi;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The libtorch version tch 0.26 (torch-sys) is built against.
pub const TORCH_VERSION: &str = "2.13.0";

/// Where a provisioned libtorch lives, and whether it is ours or the user's.
#[derive(Debug, Clone)]
pub struct Libtorch {
    /// The directory with `include/` and `lib/`.
    pub dir: PathBuf,
    /// True when the user supplied it through `LIBTORCH`.
    pub user_supplied: bool,
}

impl Libtorch {
    /// The directory holding the shared libraries.
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }
}

/// The project's cache root: `PETAL_CACHE_DIR`, else `<user cache dir>/petal`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PETAL_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let base = dirs::cache_dir().context("no user cache directory is known on this system; set PETAL_CACHE_DIR")?;
    Ok(base.join("petal"))
}

/// The cached libtorch directory for this version.
pub fn cached_dir(root: &Path) -> PathBuf {
    root.join(format!("libtorch-{TORCH_VERSION}-cpu"))
}

/// The wheels that make up a CPU libtorch on this platform.
struct WheelPlan {
    torch_parts: &'static [&'static str],
    cuda_runtime: bool,
}

fn plan() -> Result<WheelPlan> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Ok(WheelPlan { torch_parts: &["cp311-cp311-manylinux", "x86_64.whl"], cuda_runtime: true }),
        ("linux", "aarch64") => Ok(WheelPlan { torch_parts: &["cp311-cp311-manylinux", "aarch64.whl"], cuda_runtime: false }),
        ("macos", "aarch64") => Ok(WheelPlan { torch_parts: &["cp311-none-macosx", "arm64.whl"], cuda_runtime: false }),
        (os, arch) => {
            bail!("there is no PyPI torch wheel for {os}/{arch}: download libtorch {TORCH_VERSION} yourself and set LIBTORCH to its folder")
        }
    }
}

/// Ensures a libtorch exists and returns it. Respects a user's `LIBTORCH` (anything but our own link).
///
/// `repo_link` is the `.libtorch` link in the repository that `.cargo/config.toml` points cargo at.
pub fn ensure(repo_link: &Path) -> Result<Libtorch> {
    if let Some(user) = std::env::var_os("LIBTORCH") {
        let user = PathBuf::from(user);
        if user != repo_link {
            if !user.join("lib").is_dir() || !user.join("include").is_dir() {
                bail!("LIBTORCH={} has no lib/ and include/ folders: point it at an unpacked libtorch {TORCH_VERSION}, or unset it to let setup provision a CPU one", user.display());
            }
            return Ok(Libtorch { dir: user, user_supplied: true });
        }
    }
    let root = cache_root()?;
    let dir = provision(&root)?;
    link(repo_link, &dir)?;
    Ok(Libtorch { dir, user_supplied: false })
}

/// Makes `link` a symlink to `target` (replacing a stale link).
pub(crate) fn link(link: &Path, target: &Path) -> Result<()> {
    if let Ok(current) = fs::read_link(link) {
        if current == target {
            return Ok(());
        }
        fs::remove_file(link).map_err(|e| write_error(link, e))?;
    } else if link.exists() {
        bail!("{} exists and is not a link; remove it and rerun `cargo xtask setup`", link.display());
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, link).map_err(|e| write_error(link, e))?;
    #[cfg(not(unix))]
    bail!("automatic setup supports Unix only; set LIBTORCH to a libtorch {TORCH_VERSION} folder");
    Ok(())
}

/// Provisions `<root>/libtorch-<ver>-cpu` if it is not there yet; returns its path.
pub fn provision(root: &Path) -> Result<PathBuf> {
    provision_from(root, &pypi::index_url())
}

/// [`provision`] against a given PyPI simple index (tests use a local server).
pub fn provision_from(root: &Path, index: &str) -> Result<PathBuf> {
    let dir = cached_dir(root);
    if dir.join("lib").is_dir() && dir.join("build-version").is_file() {
        return Ok(dir);
    }
    let plan = plan()?;
    eprintln!("setup: provisioning a CPU libtorch {TORCH_VERSION} from PyPI into {}", dir.display());
    let downloads = root.join("downloads");
    let torch = pypi::pick(index, "torch", &format!("torch-{TORCH_VERSION}-"), plan.torch_parts)?;
    let torch_whl = fetch_wheel(&downloads, &torch)?;
    let mut extra = Vec::new();
    if plan.cuda_runtime {
        for (project, version) in [("nvidia-cuda-runtime", "13.0.96"), ("nvidia-cuda-cupti", "13.0.85")] {
            let prefix = format!("{}-{version}-", project.replace('-', "_"));
            let f = pypi::pick(index, project, &prefix, &["x86_64"])?;
            extra.push(fetch_wheel(&downloads, &f)?);
        }
    }

    // Build into a temp dir next to the final one, then rename: all or nothing.
    let tmp = root.join(format!(".libtorch-{TORCH_VERSION}-cpu.tmp-{}", std::process::id()));
    build_then_place(&tmp, &dir, |tmp| {
        fs::create_dir_all(tmp.join("lib")).map_err(|e| write_error(tmp, e))?;
        extract(&torch_whl, tmp, |name| {
            if let Some(rest) = name.strip_prefix("torch/include/") {
                return Some(PathBuf::from("include").join(rest));
            }
            let lib = name.strip_prefix("torch/lib/")?;
            let wanted = ["libc10.so", "libtorch_cpu.so", "libgomp.so.1", "libc10.dylib", "libtorch_cpu.dylib", "libtorch.dylib", "libomp.dylib"];
            wanted.contains(&lib).then(|| PathBuf::from("lib").join(lib))
        })?;
        for whl in &extra {
            extract(whl, tmp, |name| {
                let lib = name.rsplit('/').next()?;
                (name.contains("/lib/") && (lib.starts_with("libcudart.so.") || lib.starts_with("libcupti.so.")))
                    .then(|| PathBuf::from("lib").join(lib))
            })?;
        }
        if std::env::consts::OS == "linux" {
            // torch-sys links -ltorch; this script forwards to the CPU library only.
            write_file(&tmp.join("lib/libtorch.so"), b"INPUT(libtorch_cpu.so)\n")?;
        }
        write_file(&tmp.join("build-version"), format!("{TORCH_VERSION}\n").as_bytes())
    })?;
    // The wheels are no longer needed: the extracted folder is the cache.
    let _ = fs::remove_dir_all(&downloads);
    eprintln!("setup: libtorch {TORCH_VERSION} ready at {}", dir.display());
    Ok(dir)
}

/// Fills a fresh `tmp` folder with `fill`, then renames it to `dir` (replacing an older one): the
/// cache folder appears whole or not at all, and a failure leaves no temp folder behind.
pub(crate) fn build_then_place(tmp: &Path, dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(|e| write_error(tmp, e))?;
    }
    if let Err(e) = fill(tmp) {
        let _ = fs::remove_dir_all(tmp);
        return Err(e);
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| write_error(dir, e))?;
    }
    fs::rename(tmp, dir).map_err(|e| write_error(dir, e))
}

pub(crate) fn fetch_wheel(downloads: &Path, f: &pypi::DistFile) -> Result<PathBuf> {
    let dest = downloads.join(&f.filename);
    download::fetch(&f.url, &dest, &Expect::Sha256(f.sha256.clone()), &f.filename)?;
    Ok(dest)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| write_error(path, e))
}

/// Extracts the members of `wheel` that `map` names a destination for, below `dest`.
pub(crate) fn extract(wheel: &Path, dest: &Path, map: impl Fn(&str) -> Option<PathBuf>) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("could not open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).with_context(|| format!("{} is corrupt", wheel.display()))?;
        if entry.is_dir() {
            continue;
        }
        // `enclosed_name` refuses absolute paths and `..` components.
        let Some(name) = entry.enclosed_name() else { continue };
        let Some(rel) = map(&name.to_string_lossy()) else { continue };
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        let mut w = File::create(&out).map_err(|e| write_error(&out, e))?;
        io::copy(&mut entry, &mut w).map_err(|e| {
            if download::is_disk_full(&e) {
                write_error(&out, e)
            } else {
                anyhow::anyhow!("could not extract {} from {}: {e}", out.display(), wheel.display())
            }
        })?;
        #[cfg(unix)]
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&out, fs::Permissions::from_mode(mode & 0o755 | 0o644));
        }
    }
    Ok(())
}
