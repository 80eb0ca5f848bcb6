//! DenseNet, EfficientNet-Lite0/1/2, VGG, ResNet and AlexNet backbones on libtorch, the
//! classifier head, and pretrained-weight import.
//!
//! This crate owns the network definitions (torchvision-identical DenseNet-BC, VGG-11/13/16/19
//! with and without batch norm, ResNet-18/34/50/101/152 and AlexNet; EfficientNet-Lite0/1/2
//! identical to the PyPI package `efficientnet_lite_pytorch`), the classifier head, the mapping of
//! pretrained files onto them (key remapping, strict key/shape checks), architecture inference
//! from a state dict's keys and shapes ([`detect`]), freezing by block, batch-norm folding and the
//! channels_last layout. It must never know about datasets, image decoding, training loops or
//! file formats beyond what `checkpoint` hands it as named tensors.
//!
//! Variable naming (stable; saved checkpoints rely on it):
//! - DenseNet backbone: torchvision's `features.*` names (`features.conv0.weight`,
//!   `features.denseblock1.denselayer1.norm1.running_mean`, ...), `num_batches_tracked` included.
//! - VGG and AlexNet: torchvision's `features.{i}.*` (every module of the `nn.Sequential` counts).
//! - ResNet: torchvision's names at the root (`conv1.weight`, `layer1.0.bn2.bias`,
//!   `layer2.0.downsample.0.weight`, ...).
//! - EfficientNet-Lite backbone: the package's names at the root (`_conv_stem.weight`,
//!   `_blocks.0._depthwise_conv.weight`, `_bn1.bias`, ...).
//! - Ensemble ([`Arch::Ensemble`]): member `i`'s own names under `members.{i}.`
//!   (`members.0._conv_stem.weight`, `members.1.features.conv0.weight`, ...); a rescaled member
//!   ([`Arch::Rescaled`]) has its backbone's names.
//! - Head: `classifier.{3i}.weight|bias` for hidden layer `i`, `classifier.{3n}.*` for the output
//!   layer (seed default: `classifier.0` 1024→512, `classifier.3` 512→102). torchvision's own
//!   classifiers (`classifier.*`, ResNet's `fc.*`) and the Lite package's `_fc.*` are what the head
//!   replaces; the backbone output is the input of that classifier (for VGG the flattened
//!   512x7x7 map, for AlexNet 256x6x6).
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

mod alexnet;
mod arch;
pub mod arch_registry;
mod densenet;
pub mod detect;
mod device;
mod efficientnet;
mod ensemble;
mod error;
mod head;
mod layers;
pub mod legacy;
pub mod rebuild;
pub mod resample;
mod resnet;
mod vgg;
pub mod weights;

use tch::nn::{self, VarStore};
use tch::{Kind, Tensor};

pub use arch::Arch;
pub use arch::Family;
pub use densenet::DenseNetConfig;
pub use device::{input_tensor, parse_device, DeviceSpec, TorchThreads};
pub use efficientnet::{static_same_pad, LiteConfig, LITE0_FEATURE_DIM, LITE0_IMAGE_SIZE, LITE1_IMAGE_SIZE, LITE2_IMAGE_SIZE};
pub use error::{Error, KeyReport, ShapeMismatch};
pub use head::{Activation, HeadConfig};
pub use layers::{is_channels_last, to_channels_last};
pub use resnet::ResNetConfig;
pub use vgg::{Layer, PlainSpec, VggConfig};
pub use weights::{load_backbone_weights, LoadSummary};

/// Holds libtorch's process-wide random generator for the caller.
///
/// libtorch has one CPU generator per process: weight initialisation, dropout and drop-connect
/// all draw from it, and `tch::manual_seed` reseeds it for every thread. Two threads that seed it
/// and then draw (two training runs, or one run while another thread builds a network) interleave
/// their draws, and neither gets the sequence its seed promised. Whatever needs a reproducible
/// sequence seeds and draws while holding this guard; `train::train` holds it for a whole run, and
/// [`Classifier::new`] (whose initialisation draws) takes it too, so building a network (as
/// `infer::Predictor::load` does before loading its weights) never disturbs a seeded sequence of
/// another thread. The lock is reentrant: a thread holding it may take it again.
pub fn random_generator_lock() -> parking_lot::ReentrantMutexGuard<'static, ()> {
    static GENERATOR: parking_lot::ReentrantMutex<()> = parking_lot::ReentrantMutex::new(());
    GENERATOR.lock()
}

/// What every backbone implementation provides.
pub(crate) trait Net: std::fmt::Debug + Send {
    /// Images `[N, 3, H, W]` → features `[N, feature_dim]`.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;
    /// Folds frozen eval-mode batch norms into the convolutions before them; returns how many.
    fn fold_batchnorm(&mut self) -> usize;
    /// Switches every convolution weight to or from channels_last (in place).
    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError>;
    /// Runs only the units `units` of [`Arch::backbone_blocks`] (the last one ends with the
    /// pooling): what splitting the backbone at a block boundary needs. `None` where the
    /// architecture cannot be split (yet) or the range is out of bounds.
    fn forward_units(&self, _xs: &Tensor, _units: std::ops::Range<usize>, _train: bool) -> Option<Tensor> {
        None
    }
    /// Channels of the activation map after the first `units` units (what
    /// [`Net::forward_units`]`(x, 0..units)` returns); `None` where the network cannot be split there.
    fn channels_after(&self, _units: usize) -> Option<i64> {
        None
    }
}

/// Backbone + head, with all variables in one `nn::Path` tree (see the crate docs for names).
#[derive(Debug)]
pub struct Classifier {
    arch: Arch,
    backbone: Box<dyn Net>,
    head: head::Head,
    feature_dim: i64,
    channels_last: bool,
}

impl Classifier {
    /// Builds the network under `vs` (normally `vs.root()`), randomly initialised like PyTorch.
    /// Errors on an invalid custom DenseNet or head configuration.
    pub fn new(vs: &nn::Path, arch: &Arch, head: &HeadConfig, num_classes: i64) -> Result<Self, Error> {
        // Initialisation draws from the process-wide generator: not while another thread runs a seeded sequence.
        let _generator = random_generator_lock();
        arch.check()?;
        let backbone = backbone(vs, arch)?;
        let feature_dim = arch.feature_dim();
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
        self.backbone.forward_t(&xs, train)
    }

    /// Head: features `[N, feature_dim]` → logits `[N, num_classes]`.
    pub fn head_forward(&self, feats: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(feats, train)
    }

    /// [`Classifier::head_forward`] with the head's matrix products in `kind` (bf16 autocast of
    /// the trainable head; see `Head::forward_t_as`). The logits are f32.
    pub fn head_forward_as(&self, feats: &Tensor, train: bool, kind: Kind) -> Tensor {
        self.head.forward_t_as(feats, train, kind)
    }

    /// Head in evaluation with every row alone: a row's logits are the same bits whatever batch it
    /// comes in (prediction and serving answer with these; see `Head::forward_rows`).
    pub fn head_forward_rows(&self, feats: &Tensor) -> Tensor {
        self.head.forward_rows(feats)
    }

    /// Images → logits.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head_forward(&self.features(xs, train), train)
    }

    /// Eval-mode backbone under `no_grad` (libtorch's inference mode is not exposed by tch).
    pub fn infer_features(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| self.features(xs, false))
    }

    /// Number of backbone units the network can be split between (the length of
    /// [`Arch::backbone_blocks`]).
    pub fn units(&self) -> usize {
        self.arch.backbone_blocks().len()
    }

    /// The frozen part of a split network: images → activations after the first `split` units of
    /// [`Arch::backbone_blocks`], in eval mode under `no_grad` (batch norms use their running
    /// statistics). `split` must be in `1..units()`; errors for architectures that cannot be split.
    pub fn activations(&self, xs: &Tensor, split: usize) -> Result<Tensor, Error> {
        let xs = if self.channels_last { to_channels_last(xs) } else { xs.shallow_clone() };
        self.check_split(split)?;
        let out = tch::no_grad(|| self.backbone.forward_units(&xs, 0..split, false));
        out.ok_or_else(|| self.unsplittable())
    }

    /// The trainable part of a split network: activations at `split` (from
    /// [`Classifier::activations`]) → logits, through the remaining units and the head.
    /// `forward_from(&activations(x, s), s, false)` equals `forward_t(x, false)`.
    pub fn forward_from(&self, acts: &Tensor, split: usize, train: bool) -> Result<Tensor, Error> {
        self.check_split(split)?;
        let acts = if self.channels_last { to_channels_last(acts) } else { acts.shallow_clone() };
        let feats = self.backbone.forward_units(&acts, split..self.units(), train).ok_or_else(|| self.unsplittable())?;
        Ok(self.head_forward(&feats, train))
    }

    fn check_split(&self, split: usize) -> Result<(), Error> {
        if split == 0 || split >= self.units() {
            return Err(Error::Config(format!(
                "{} can be split after unit 1 to {} of {:?}, not after {split}",
                self.arch,
                self.units() - 1,
                self.arch.backbone_blocks()
            )));
        }
        Ok(())
    }

    fn unsplittable(&self) -> Error {
        Error::Config(format!(
            "{} cannot be split between blocks (partial mode supports efficientnet_lite0/1/2, alone or in an ensemble of them)",
            self.arch
        ))
    }

    /// Dimension of the pooled features.
    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    /// Puts every backbone convolution weight (in place, shared with the `VarStore`) and every
    /// input of [`Classifier::features`] into (`on`) or out of the channels_last layout.
    pub fn set_channels_last(&mut self, on: bool) -> Result<(), Error> {
        self.backbone.set_channels_last(on).map_err(|source| Error::Torch { context: "switching to channels_last".into(), source })?;
        self.channels_last = on;
        Ok(())
    }

    /// Folds every eval-mode batch norm that directly follows a convolution into that convolution,
    /// for inference with a frozen backbone. Pairs whose convolution or batch-norm weight still
    /// requires gradients (trainable blocks) are left alone. The `VarStore` is not modified (folded
    /// weights live in the layers), so save weights from the `VarStore` as usual. After folding,
    /// the folded layers behave as in eval mode even when `train` is true. Returns the number of
    /// batch norms folded (0 for VGG without batch norm and AlexNet).
    pub fn fold_batchnorm(&mut self) -> usize {
        let n = self.backbone.fold_batchnorm();
        tracing::debug!(arch = %self.arch, folded = n, "folded batch norms");
        n
    }
}

/// The backbone of `arch` under `vs` (its variables named as the crate docs say).
fn backbone(vs: &nn::Path, arch: &Arch) -> Result<Box<dyn Net>, Error> {
    Ok(match arch.family() {
        Family::DenseNet(cfg) => Box::new(densenet::DenseNet::new(&(vs / "features"), &cfg)?),
        Family::Lite(cfg) => Box::new(efficientnet::EfficientNetLite::new(vs, &cfg)),
        Family::Plain(spec) => Box::new(vgg::PlainFeatures::new(&(vs / "features"), &spec)),
        Family::ResNet(cfg) => Box::new(resnet::ResNet::new(vs, &cfg)),
        Family::Ensemble(members) => {
            let path = vs / "members";
            let members = members.iter().enumerate().map(|(i, m)| backbone(&(&path / i), m)).collect::<Result<_, _>>()?;
            Box::new(ensemble::Ensemble { members })
        }
        Family::Rescaled(inner, side) => Box::new(resample::Rescaled { inner: backbone(vs, &inner)?, side: i64::from(side) }),
    })
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
