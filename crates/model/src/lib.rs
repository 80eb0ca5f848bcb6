//! DenseNet and EfficientNet-Lite0 backbones on libtorch, the classifier head, and pretrained-weight
//! import.
//!
//! This crate owns the network definitions (torchvision-identical DenseNet-BC, EfficientNet-Lite0
//! identical to the PyPI package `efficientnet_lite_pytorch`), the classifier head, the mapping of
//! pretrained files onto them (key remapping, strict key/shape checks), freezing by block,
//! batch-norm folding and the channels_last layout. It must never know about datasets, image
//! decoding, training loops or file formats beyond what `checkpoint` hands it as named tensors.
//!
//! Variable naming (stable; saved checkpoints rely on it):
//! - DenseNet backbone: torchvision's `features.*` names (`features.conv0.weight`,
//!   `features.denseblock1.denselayer1.norm1.running_mean`, ...), `num_batches_tracked` included.
//! - EfficientNet-Lite0 backbone: the package's names at the root (`_conv_stem.weight`,
//!   `_blocks.0._depthwise_conv.weight`, `_bn1.bias`, ...).
//! - Head: `classifier.{3i}.weight|bias` for hidden layer `i`, `classifier.{3n}.*` for the output
//!   layer (seed default: `classifier.0` 1024→512, `classifier.3` 512→102).
//!
//! Inference speed: with a frozen backbone (see [`freeze_backbone`]) in eval mode, DenseNet blocks
//! write into one pre-allocated buffer instead of re-concatenating (same values as torchvision's
//! `torch.cat` path, which training uses); [`Classifier::fold_batchnorm`] and
//! [`Classifier::set_channels_last`] are the other levers. libtorch's InferenceMode is not exposed
//! by tch 0.26, so inference runs under `no_grad`.
//!
//! Goldens: `tests/fixtures/gen_goldens.py` (PyTorch/torchvision) wrote the committed fixtures;
//! the full-size goldens are generated at test time with `$PETAL_PYTHON`, else
//! `../venv-torch/bin/python` beside the workspace, else `python3`, and skip with a printed reason
//! when that Python lacks torch/torchvision/efficientnet_lite_pytorch.

#![warn(missing_docs)]

pub mod arch_registry;
mod densenet;
mod efficientnet;
mod error;
mod head;
mod layers;
pub mod weights;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::Tensor;

pub use densenet::DenseNetConfig;
pub use efficientnet::{static_same_pad, LITE0_FEATURE_DIM, LITE0_IMAGE_SIZE, LITE0_STAGES};
pub use error::{Error, KeyReport, ShapeMismatch};
pub use head::{Activation, HeadConfig};
pub use layers::{is_channels_last, to_channels_last};
pub use weights::{load_backbone_weights, LoadSummary};

/// A backbone architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// torchvision `densenet121` (1024 features).
    #[serde(rename = "densenet121")]
    DenseNet121,
    /// torchvision `densenet161` (2208 features).
    #[serde(rename = "densenet161")]
    DenseNet161,
    /// torchvision `densenet169` (1664 features).
    #[serde(rename = "densenet169")]
    DenseNet169,
    /// torchvision `densenet201` (1920 features).
    #[serde(rename = "densenet201")]
    DenseNet201,
    /// `efficientnet_lite_pytorch` `efficientnet-lite0` (1280 features).
    #[serde(rename = "efficientnet_lite0")]
    EfficientNetLite0,
    /// A DenseNet-BC with custom hyper-parameters (torchvision naming).
    #[serde(rename = "densenet")]
    DenseNet(DenseNetConfig),
}

impl Arch {
    /// The canonical name (`densenet121`, ..., `efficientnet_lite0`; `densenet` for a custom one).
    pub fn name(&self) -> &'static str {
        match self {
            Arch::DenseNet121 => "densenet121",
            Arch::DenseNet161 => "densenet161",
            Arch::DenseNet169 => "densenet169",
            Arch::DenseNet201 => "densenet201",
            Arch::EfficientNetLite0 => "efficientnet_lite0",
            Arch::DenseNet(_) => "densenet",
        }
    }

    /// The DenseNet hyper-parameters, or `None` for EfficientNet-Lite0.
    pub fn densenet_config(&self) -> Option<DenseNetConfig> {
        match self {
            Arch::DenseNet121 => Some(DenseNetConfig::densenet121()),
            Arch::DenseNet161 => Some(DenseNetConfig::densenet161()),
            Arch::DenseNet169 => Some(DenseNetConfig::densenet169()),
            Arch::DenseNet201 => Some(DenseNetConfig::densenet201()),
            Arch::DenseNet(c) => Some(c.clone()),
            Arch::EfficientNetLite0 => None,
        }
    }

    /// Dimension of the pooled backbone features (the head's input).
    pub fn feature_dim(&self) -> i64 {
        match self.densenet_config() {
            Some(c) => c.feature_dim(),
            None => LITE0_FEATURE_DIM,
        }
    }

    /// Prefix of the backbone's variable names (`"features."` for DenseNet, `""` for Lite0).
    pub fn backbone_prefix(&self) -> &'static str {
        match self {
            Arch::EfficientNetLite0 => "",
            _ => "features.",
        }
    }

    /// True for a variable name that belongs to a classifier rather than the backbone: this
    /// crate's head (`classifier.*`) and, for Lite0, the package's own `_fc.*`.
    pub fn is_head_key(&self, key: &str) -> bool {
        key.starts_with("classifier.") || (matches!(self, Arch::EfficientNetLite0) && key.starts_with("_fc."))
    }

    /// Names of the backbone's blocks in forward order, the units of [`freeze_backbone`]:
    /// DenseNet: `stem` (conv0, norm0), `block1` (denseblock1 + transition1), ..., the last block
    /// with `norm5`. Lite0: `stem`, `stage1`..`stage7`, `head` (`_conv_head`, `_bn1`).
    pub fn backbone_blocks(&self) -> Vec<String> {
        let mut v = vec!["stem".to_string()];
        match self.densenet_config() {
            Some(c) => v.extend((1..=c.block_config.len()).map(|i| format!("block{i}"))),
            None => {
                v.extend((1..=efficientnet::LITE0_STAGES.len()).map(|i| format!("stage{i}")));
                v.push("head".into());
            }
        }
        v
    }

    /// Index into [`Arch::backbone_blocks`] of a backbone variable, `None` for anything else.
    pub fn block_of(&self, key: &str) -> Option<usize> {
        let first_two = |k: &str| -> (String, String) {
            let mut it = k.split('.');
            (it.next().unwrap_or("").to_string(), it.next().unwrap_or("").to_string())
        };
        match self.densenet_config() {
            Some(c) => {
                let rest = key.strip_prefix("features.")?;
                let (m, _) = first_two(rest);
                let n = c.block_config.len();
                if m == "conv0" || m == "norm0" {
                    Some(0)
                } else if m == "norm5" {
                    Some(n)
                } else if let Some(i) = m.strip_prefix("denseblock").or_else(|| m.strip_prefix("transition")) {
                    i.parse::<usize>().ok().filter(|&i| (1..=n).contains(&i))
                } else {
                    None
                }
            }
            None => {
                let (m, idx) = first_two(key);
                match m.as_str() {
                    "_conv_stem" | "_bn0" => Some(0),
                    "_conv_head" | "_bn1" => Some(efficientnet::LITE0_STAGES.len() + 1),
                    "_blocks" => {
                        let mut j: i64 = idx.parse().ok()?;
                        for (s, st) in efficientnet::LITE0_STAGES.iter().enumerate() {
                            if j < st.0 {
                                return Some(s + 1);
                            }
                            j -= st.0;
                        }
                        None
                    }
                    _ => None,
                }
            }
        }
    }

    /// All built-in (non-custom) architectures.
    pub fn builtin() -> [Arch; 5] {
        [Arch::DenseNet121, Arch::DenseNet161, Arch::DenseNet169, Arch::DenseNet201, Arch::EfficientNetLite0]
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::DenseNet(c) => {
                write!(f, "densenet(growth {}, blocks {:?}, init {}, bn_size {})", c.growth_rate, c.block_config, c.num_init_features, c.bn_size)
            }
            a => f.write_str(a.name()),
        }
    }
}

impl FromStr for Arch {
    type Err = Error;
    /// Accepts `densenet121|161|169|201` and `efficientnet_lite0` (also `efficientnet-lite0`),
    /// case-insensitively.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "densenet121" => Ok(Arch::DenseNet121),
            "densenet161" => Ok(Arch::DenseNet161),
            "densenet169" => Ok(Arch::DenseNet169),
            "densenet201" => Ok(Arch::DenseNet201),
            "efficientnet_lite0" => Ok(Arch::EfficientNetLite0),
            _ => Err(Error::UnknownArch(s.to_string())),
        }
    }
}

#[derive(Debug)]
enum Backbone {
    DenseNet(densenet::DenseNet),
    Lite0(efficientnet::EfficientNetLite0),
}

/// Backbone + head, with all variables in one `nn::Path` tree (see the crate docs for names).
#[derive(Debug)]
pub struct Classifier {
    arch: Arch,
    backbone: Backbone,
    head: head::Head,
    feature_dim: i64,
    channels_last: bool,
}

impl Classifier {
    /// Builds the network under `vs` (normally `vs.root()`), randomly initialised like PyTorch.
    /// Errors on an invalid custom DenseNet or head configuration.
    pub fn new(vs: &nn::Path, arch: &Arch, head: &HeadConfig, num_classes: i64) -> Result<Self, Error> {
        let backbone = match arch.densenet_config() {
            Some(cfg) => Backbone::DenseNet(densenet::DenseNet::new(&(vs / "features"), &cfg)?),
            None => Backbone::Lite0(efficientnet::EfficientNetLite0::new(vs)),
        };
        let feature_dim = match &backbone {
            Backbone::DenseNet(d) => d.feature_dim(),
            Backbone::Lite0(_) => LITE0_FEATURE_DIM,
        };
        let head = head::Head::new(&(vs / "classifier"), head, feature_dim, num_classes)?;
        Ok(Classifier { arch: arch.clone(), backbone, head, feature_dim, channels_last: false })
    }

    /// The architecture this classifier was built for.
    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// Backbone: images `[N, 3, H, W]` (H, W ≥ 32) → pooled features `[N, feature_dim]`.
    /// In training mode, batch norms of frozen layers still use their running statistics.
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = if self.channels_last { to_channels_last(xs) } else { xs.shallow_clone() };
        match &self.backbone {
            Backbone::DenseNet(d) => d.forward_t(&xs, train),
            Backbone::Lite0(e) => e.forward_t(&xs, train),
        }
    }

    /// Head: features `[N, feature_dim]` → logits `[N, num_classes]`.
    pub fn head_forward(&self, feats: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(feats, train)
    }

    /// Images → logits.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head_forward(&self.features(xs, train), train)
    }

    /// Eval-mode backbone under `no_grad` (libtorch's inference mode is not exposed by tch).
    pub fn infer_features(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.features(xs, false))
    }

    /// Dimension of the pooled features.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// Puts every backbone convolution weight (in place, shared with the `VarStore`) and every
    /// input of [`Classifier::features`] into (`on`) or out of the channels_last layout.
    pub fn set_channels_last(&mut self, on: bool) -> Result<(), Error> {
        let r = match &mut self.backbone {
            Backbone::DenseNet(d) => d.set_channels_last(on),
            Backbone::Lite0(e) => e.set_channels_last(on),
        };
        r.map_err(|source| Error::Torch { context: "switching to channels_last".into(), source })?;
        self.channels_last = on;
        Ok(())
    }

    /// Folds every eval-mode batch norm that directly follows a convolution into that convolution,
    /// for inference with a frozen backbone. Pairs whose convolution or batch-norm weight still
    /// requires gradients (trainable blocks) are left alone. The `VarStore` is not modified (folded
    /// weights live in the layers), so save weights from the `VarStore` as usual. After folding,
    /// the folded layers behave as in eval mode even when `train` is true. Returns the number of
    /// batch norms folded.
    pub fn fold_batchnorm(&mut self) -> usize {
        let n = match &mut self.backbone {
            Backbone::DenseNet(d) => d.fold_batchnorm(),
            Backbone::Lite0(e) => e.fold_batchnorm(),
        };
        tracing::debug!(arch = %self.arch, folded = n, "folded batch norms");
        n
    }
}

/// What [`freeze_backbone`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeSummary {
    /// Backbone blocks left trainable (the last `trainable` of [`Arch::backbone_blocks`]).
    pub trainable_blocks: Vec<String>,
    /// Number of parameter tensors now frozen.
    pub frozen_tensors: usize,
    /// Number of parameter tensors trainable (backbone and head).
    pub trainable_tensors: usize,
}

/// Freezes the backbone except its last `trainable_blocks` blocks (see
/// [`Arch::backbone_blocks`]); the head stays trainable. `0` freezes the whole backbone. Only
/// parameters (`weight`, `bias`) are touched; buffers never require gradients.
pub fn freeze_backbone(vs: &VarStore, arch: &Arch, trainable_blocks: usize) -> FreezeSummary {
    let blocks = arch.backbone_blocks();
    let first_trainable = blocks.len().saturating_sub(trainable_blocks);
    let mut s = FreezeSummary { trainable_blocks: blocks[first_trainable..].to_vec(), frozen_tensors: 0, trainable_tensors: 0 };
    for (name, t) in vs.variables() {
        if !(name.ends_with(".weight") || name.ends_with(".bias")) {
            continue;
        }
        let trainable = match arch.block_of(&name) {
            Some(b) => b >= first_trainable,
            None => true,
        };
        let _ = t.set_requires_grad(trainable);
        if trainable {
            s.trainable_tensors += 1;
        } else {
            s.frozen_tensors += 1;
        }
    }
    s
}

/// Makes every parameter (`weight`, `bias`) of the store trainable again.
pub fn unfreeze_all(vs: &VarStore) {
    for (name, t) in vs.variables() {
        if name.ends_with(".weight") || name.ends_with(".bias") {
            let _ = t.set_requires_grad(true);
        }
    }
}
