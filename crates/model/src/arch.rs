//! The [`Arch`] enum: every built-in backbone, its name, feature dimension, input size, variable
//! naming and freezing units.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::efficientnet::LiteConfig;
use crate::resnet::ResNetConfig;
use crate::vgg::{PlainSpec, VggConfig};
use crate::{efficientnet, resnet, DenseNetConfig, Error, LITE0_FEATURE_DIM};

/// A backbone architecture. Serialised as its canonical name (`"vgg16_bn"`), except a custom
/// DenseNet (`{"densenet": {...}}`).
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
    /// `efficientnet_lite_pytorch` `efficientnet-lite0` (1280 features, 224 px).
    #[serde(rename = "efficientnet_lite0")]
    EfficientNetLite0,
    /// `efficientnet_lite_pytorch` `efficientnet-lite1` (1280 features, 240 px).
    #[serde(rename = "efficientnet_lite1")]
    EfficientNetLite1,
    /// `efficientnet_lite_pytorch` `efficientnet-lite2` (1280 features, 260 px).
    #[serde(rename = "efficientnet_lite2")]
    EfficientNetLite2,
    /// torchvision `vgg11` (25088 features: the flattened 512x7x7 classifier input).
    #[serde(rename = "vgg11")]
    Vgg11,
    /// torchvision `vgg11_bn`.
    #[serde(rename = "vgg11_bn")]
    Vgg11Bn,
    /// torchvision `vgg13`.
    #[serde(rename = "vgg13")]
    Vgg13,
    /// torchvision `vgg13_bn`.
    #[serde(rename = "vgg13_bn")]
    Vgg13Bn,
    /// torchvision `vgg16`.
    #[serde(rename = "vgg16")]
    Vgg16,
    /// torchvision `vgg16_bn`.
    #[serde(rename = "vgg16_bn")]
    Vgg16Bn,
    /// torchvision `vgg19`.
    #[serde(rename = "vgg19")]
    Vgg19,
    /// torchvision `vgg19_bn`.
    #[serde(rename = "vgg19_bn")]
    Vgg19Bn,
    /// torchvision `resnet18` (512 features).
    #[serde(rename = "resnet18")]
    ResNet18,
    /// torchvision `resnet34` (512 features).
    #[serde(rename = "resnet34")]
    ResNet34,
    /// torchvision `resnet50` (2048 features).
    #[serde(rename = "resnet50")]
    ResNet50,
    /// torchvision `resnet101` (2048 features).
    #[serde(rename = "resnet101")]
    ResNet101,
    /// torchvision `resnet152` (2048 features).
    #[serde(rename = "resnet152")]
    ResNet152,
    /// torchvision `alexnet` (9216 features: the flattened 256x6x6 classifier input).
    #[serde(rename = "alexnet")]
    AlexNet,
    /// A DenseNet-BC with custom hyper-parameters (torchvision naming).
    #[serde(rename = "densenet")]
    DenseNet(DenseNetConfig),
    /// Several built-in backbones run on the same input, their pooled features concatenated (in
    /// this order) into the head's input; member `i`'s variables are named `members.{i}.` + its
    /// own names. Written `efficientnet_lite0+efficientnet_lite1` on the command line,
    /// `{"ensemble": ["efficientnet_lite0", "efficientnet_lite1"]}` in files.
    #[serde(rename = "ensemble")]
    Ensemble(Vec<Arch>),
    /// A built-in backbone (or custom DenseNet) run on its input resampled to `size` x `size` px
    /// by Pillow's antialiased bilinear filter ([`crate::resample`]): an ensemble member that
    /// gives multi-scale features, e.g. `efficientnet_lite0+efficientnet_lite0@224` runs Lite0 on
    /// the 288 px crop and on the same crop at 224 px. Its variables are its backbone's. Written
    /// `efficientnet_lite0@224` on the command line, `{"rescaled": {"arch": "efficientnet_lite0",
    /// "size": 224}}` in files; only inside an ensemble.
    #[serde(rename = "rescaled")]
    Rescaled {
        /// The backbone.
        arch: Box<Arch>,
        /// The side it runs at.
        size: u32,
    },
}

/// The network family of an [`Arch`], with its hyper-parameters: what a consumer that rebuilds the
/// network elsewhere (the `export` crate's ONNX graphs) needs to know of its structure.
#[derive(Debug, Clone, PartialEq)]
pub enum Family {
    /// DenseNet-BC (torchvision).
    DenseNet(DenseNetConfig),
    /// EfficientNet-Lite0/1/2 (`efficientnet_lite_pytorch`).
    Lite(LiteConfig),
    /// A plain convolution stack: VGG (with or without batch norm) and AlexNet.
    Plain(PlainSpec),
    /// ResNet (torchvision, V1.5).
    ResNet(ResNetConfig),
    /// Built-in backbones whose features are concatenated ([`Arch::Ensemble`]).
    Ensemble(Vec<Arch>),
    /// A backbone run on its input resampled to a side ([`Arch::Rescaled`]).
    Rescaled(Box<Arch>, u32),
}

/// Every built-in architecture with its canonical name, in the order the CLI lists them.
const BUILTIN: [(Arch, &str); 21] = [
    (Arch::DenseNet121, "densenet121"),
    (Arch::DenseNet161, "densenet161"),
    (Arch::DenseNet169, "densenet169"),
    (Arch::DenseNet201, "densenet201"),
    (Arch::EfficientNetLite0, "efficientnet_lite0"),
    (Arch::EfficientNetLite1, "efficientnet_lite1"),
    (Arch::EfficientNetLite2, "efficientnet_lite2"),
    (Arch::Vgg11, "vgg11"),
    (Arch::Vgg11Bn, "vgg11_bn"),
    (Arch::Vgg13, "vgg13"),
    (Arch::Vgg13Bn, "vgg13_bn"),
    (Arch::Vgg16, "vgg16"),
    (Arch::Vgg16Bn, "vgg16_bn"),
    (Arch::Vgg19, "vgg19"),
    (Arch::Vgg19Bn, "vgg19_bn"),
    (Arch::ResNet18, "resnet18"),
    (Arch::ResNet34, "resnet34"),
    (Arch::ResNet50, "resnet50"),
    (Arch::ResNet101, "resnet101"),
    (Arch::ResNet152, "resnet152"),
    (Arch::AlexNet, "alexnet"),
];

impl Arch {
    /// The canonical name (`densenet121`, `vgg16_bn`, `resnet50`, `efficientnet_lite2`, ...;
    /// `densenet` for a custom one).
    pub fn name(&self) -> &'static str {
        match self {
            Arch::DenseNet(_) => "densenet",
            Arch::Ensemble(_) => "ensemble",
            Arch::Rescaled { .. } => "rescaled",
            a => BUILTIN.iter().find(|(b, _)| b == a).map_or("densenet", |(_, n)| n),
        }
    }

    /// The family and hyper-parameters of the network.
    pub fn family(&self) -> Family {
        let vgg = |depth, batch_norm| Family::Plain(PlainSpec::vgg(VggConfig { depth, batch_norm }));
        match self {
            Arch::EfficientNetLite0 => Family::Lite(LiteConfig::LITE0),
            Arch::EfficientNetLite1 => Family::Lite(LiteConfig::LITE1),
            Arch::EfficientNetLite2 => Family::Lite(LiteConfig::LITE2),
            Arch::Vgg11 => vgg(11, false),
            Arch::Vgg11Bn => vgg(11, true),
            Arch::Vgg13 => vgg(13, false),
            Arch::Vgg13Bn => vgg(13, true),
            Arch::Vgg16 => vgg(16, false),
            Arch::Vgg16Bn => vgg(16, true),
            Arch::Vgg19 => vgg(19, false),
            Arch::Vgg19Bn => vgg(19, true),
            Arch::ResNet18 => Family::ResNet(ResNetConfig { depth: 18 }),
            Arch::ResNet34 => Family::ResNet(ResNetConfig { depth: 34 }),
            Arch::ResNet50 => Family::ResNet(ResNetConfig { depth: 50 }),
            Arch::ResNet101 => Family::ResNet(ResNetConfig { depth: 101 }),
            Arch::ResNet152 => Family::ResNet(ResNetConfig { depth: 152 }),
            Arch::AlexNet => Family::Plain(crate::alexnet::spec()),
            Arch::Ensemble(members) => Family::Ensemble(members.clone()),
            Arch::Rescaled { arch, size } => Family::Rescaled(arch.clone(), *size),
            a => Family::DenseNet(a.densenet_config().unwrap_or_else(DenseNetConfig::densenet121)),
        }
    }

    /// The DenseNet hyper-parameters, or `None` for the other families.
    pub fn densenet_config(&self) -> Option<DenseNetConfig> {
        match self {
            Arch::DenseNet121 => Some(DenseNetConfig::densenet121()),
            Arch::DenseNet161 => Some(DenseNetConfig::densenet161()),
            Arch::DenseNet169 => Some(DenseNetConfig::densenet169()),
            Arch::DenseNet201 => Some(DenseNetConfig::densenet201()),
            Arch::DenseNet(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Dimension of the backbone features (the head's input).
    pub fn feature_dim(&self) -> i64 {
        match self.family() {
            Family::DenseNet(c) => c.feature_dim(),
            Family::Lite(_) => LITE0_FEATURE_DIM,
            Family::Plain(p) => p.feature_dim(),
            Family::ResNet(r) => r.feature_dim(),
            Family::Ensemble(m) => m.iter().map(Arch::feature_dim).sum(),
            Family::Rescaled(a, _) => a.feature_dim(),
        }
    }

    /// The input size the weights were trained at and the network is evaluated at (224; 240 for
    /// EfficientNet-Lite1, 260 for Lite2, whose static padding is computed for that size; an
    /// ensemble's is its first member's; a rescaled backbone's is its side).
    pub fn input_size(&self) -> u32 {
        match self.family() {
            Family::Lite(c) => c.image_size as u32,
            Family::Ensemble(m) => m.first().map_or(224, Arch::input_size),
            Family::Rescaled(_, size) => size,
            _ => 224,
        }
    }

    /// Prefix of the backbone's variable names (`"features."` for DenseNet, VGG and AlexNet, `""`
    /// for EfficientNet-Lite and ResNet, `"members."` for an ensemble; a rescaled backbone's own).
    pub fn backbone_prefix(&self) -> &'static str {
        match self.family() {
            Family::Lite(_) | Family::ResNet(_) => "",
            Family::Ensemble(_) => "members.",
            Family::Rescaled(a, _) => a.backbone_prefix(),
            _ => "features.",
        }
    }

    /// True for a variable name that belongs to a classifier rather than the backbone: this
    /// crate's head (`classifier.*`, also torchvision's own classifier for DenseNet, VGG and
    /// AlexNet), EfficientNet-Lite's `_fc.*` and ResNet's `fc.*`.
    pub fn is_head_key(&self, key: &str) -> bool {
        key.starts_with("classifier.")
            || match self.family() {
                Family::Lite(_) => key.starts_with("_fc."),
                Family::ResNet(_) => key.starts_with("fc."),
                Family::Ensemble(m) => self.member_key(key).is_some_and(|(i, rest)| m[i].is_head_key(rest)),
                Family::Rescaled(a, _) => a.is_head_key(key),
                _ => false,
            }
    }

    /// For an ensemble, the member a variable name belongs to and the name inside that member
    /// (`members.1._bn1.bias` → `(1, "_bn1.bias")`); `None` for other names and architectures.
    pub fn member_key<'k>(&self, key: &'k str) -> Option<(usize, &'k str)> {
        let Arch::Ensemble(m) = self else { return None };
        let (i, rest) = key.strip_prefix("members.")?.split_once('.')?;
        let i: usize = i.parse().ok().filter(|&i| i < m.len())?;
        Some((i, rest))
    }

    /// Names of the backbone's blocks in forward order, the units of [`crate::freeze_backbone`]:
    /// DenseNet: `stem` (conv0, norm0), `block1` (denseblock1 + transition1), ..., the last block
    /// with `norm5`. EfficientNet-Lite: `stem`, `stage1`..`stage7`, `head` (`_conv_head`, `_bn1`).
    /// VGG and AlexNet: `stage1`.. (each ends with a max-pooling). ResNet: `stem`,
    /// `layer1`..`layer4`. An ensemble of EfficientNet-Lite0/1/2 members has their units: unit `i`
    /// is unit `i` of every member. Any other ensemble is one unit, `members` (all its backbones),
    /// as is one with a rescaled member (its maps would not line up with the others'). A rescaled
    /// backbone has its backbone's units.
    pub fn backbone_blocks(&self) -> Vec<String> {
        match self.family() {
            Family::Ensemble(m) => shared_blocks(&m).unwrap_or_else(|| vec!["members".to_string()]),
            Family::Rescaled(a, _) => a.backbone_blocks(),
            Family::DenseNet(c) => std::iter::once("stem".to_string()).chain((1..=c.block_config.len()).map(|i| format!("block{i}"))).collect(),
            Family::Lite(_) => efficientnet::blocks(),
            Family::Plain(p) => p.blocks(),
            Family::ResNet(_) => resnet::blocks(),
        }
    }

    /// Index into [`Arch::backbone_blocks`] of a backbone variable, `None` for anything else.
    pub fn block_of(&self, key: &str) -> Option<usize> {
        match self.family() {
            Family::Ensemble(m) => {
                let (i, rest) = self.member_key(key).filter(|_| !self.is_head_key(key))?;
                if shared_blocks(&m).is_some() {
                    m[i].block_of(rest)
                } else {
                    Some(0)
                }
            }
            Family::DenseNet(c) => densenet_block_of(&c, key),
            Family::Lite(c) => efficientnet::block_of(&c, key),
            Family::Plain(p) => p.block_of(key),
            Family::ResNet(_) => resnet::block_of(key),
            Family::Rescaled(a, _) => a.block_of(key),
        }
    }

    /// All built-in (non-custom) architectures.
    pub fn builtin() -> Vec<Arch> {
        BUILTIN.iter().map(|(a, _)| a.clone()).collect()
    }
}

/// The units an ensemble's members share, when they are all EfficientNet-Lites (the family that
/// can be split between units, so partial mode can split the ensemble too).
fn shared_blocks(members: &[Arch]) -> Option<Vec<String>> {
    members.iter().all(|m| matches!(m.family(), Family::Lite(_))).then(efficientnet::blocks)
}

fn densenet_block_of(c: &DenseNetConfig, key: &str) -> Option<usize> {
    let m = key.strip_prefix("features.")?.split('.').next()?;
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

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::DenseNet(c) => {
                write!(f, "densenet(growth {}, blocks {:?}, init {}, bn_size {})", c.growth_rate, c.block_config, c.num_init_features, c.bn_size)
            }
            Arch::Ensemble(m) => f.write_str(&m.iter().map(Arch::to_string).collect::<Vec<_>>().join("+")),
            Arch::Rescaled { arch, size } => write!(f, "{arch}@{size}"),
            a => f.write_str(a.name()),
        }
    }
}

impl FromStr for Arch {
    type Err = Error;
    /// Accepts every canonical name ([`Arch::builtin`]), case-insensitively, with `-` for `_`
    /// (`efficientnet-lite0`, `VGG16-BN`); two or more joined by `+` make an ensemble
    /// (`efficientnet_lite0+efficientnet_lite1`), whose members may name the side they run at
    /// (`efficientnet_lite0+efficientnet_lite0@224`, [`Arch::Rescaled`]).
    fn from_str(s: &str) -> Result<Self, Error> {
        let builtin = |s: &str| {
            let want = s.trim().to_ascii_lowercase().replace('-', "_");
            BUILTIN.iter().find(|(_, n)| *n == want).map(|(a, _)| a.clone()).ok_or_else(|| Error::UnknownArch(s.to_string()))
        };
        let one = |s: &str| match s.split_once('@') {
            None => builtin(s),
            Some((name, size)) => {
                let size = size.trim().parse().map_err(|_| Error::Config(format!("{s}: the side after `@` must be a whole number of pixels")))?;
                Ok(Arch::Rescaled { arch: Box::new(builtin(name)?), size })
            }
        };
        if !s.contains('+') {
            let arch = one(s)?;
            arch.check()?;
            return Ok(arch);
        }
        let members = s.split('+').map(one).collect::<Result<Vec<_>, _>>()?;
        Arch::ensemble(members)
    }
}

impl Arch {
    /// An ensemble of `members` ([`Arch::Ensemble`]): at least two, each a built-in architecture
    /// or a custom DenseNet (ensembles do not nest).
    pub fn ensemble(members: Vec<Arch>) -> Result<Arch, Error> {
        let arch = Arch::Ensemble(members);
        arch.check()?;
        Ok(arch)
    }

    /// Errors for an ensemble of fewer than two members or with an ensemble among them, and for a
    /// rescaled backbone outside an ensemble, of an ensemble or another rescaled backbone, or at a
    /// side outside 16..=1024 px (what a file could hold but no network is built from).
    pub fn check(&self) -> Result<(), Error> {
        match self {
            Arch::Ensemble(m) if m.len() < 2 => Err(Error::Config(format!("an ensemble needs at least two backbones, not {}", m.len()))),
            Arch::Ensemble(m) if m.iter().any(|a| matches!(a, Arch::Ensemble(_))) => Err(Error::Config("ensembles do not nest".into())),
            Arch::Ensemble(m) => m.iter().try_for_each(Arch::check_member),
            Arch::Rescaled { .. } => Err(Error::Config(format!(
                "{self}: a backbone at its own side is an ensemble member (multi-scale features, e.g. efficientnet_lite0+efficientnet_lite0@224); alone, set the image size instead"
            ))),
            _ => Ok(()),
        }
    }

    /// The checks of an ensemble's member `self`: a rescaled one's backbone is not itself an
    /// ensemble or rescaled, and its side is in 16..=1024 px.
    fn check_member(&self) -> Result<(), Error> {
        match self {
            Arch::Rescaled { arch, .. } if matches!(**arch, Arch::Ensemble(_) | Arch::Rescaled { .. }) => {
                Err(Error::Config(format!("{self}: only a single backbone runs at its own side")))
            }
            Arch::Rescaled { size, .. } if !(16..=1024).contains(size) => {
                Err(Error::Config(format!("{self}: the side a member runs at must be 16 to 1024 px, not {size}")))
            }
            _ => Ok(()),
        }
    }
}
