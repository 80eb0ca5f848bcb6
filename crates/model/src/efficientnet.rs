//! EfficientNet-Lite0/1/2 exactly as the PyPI package `efficientnet_lite_pytorch` 0.1.0 builds them
//! (`EfficientNet.from_name("efficientnet-lite<N>")`): ReLU6, no squeeze-excitation, fixed stem and
//! head (32 and 1280 channels, first and last stage not repeated more), width and depth scaled by
//! the package's `round_filters` / `round_repeats`, batch norm with eps 1e-3 and momentum 0.01,
//! drop-connect 0.2 scaled by block index, and TF-style *static* "same" padding computed once for
//! the variant's image size (224, 240, 260; `Conv2dStaticSamePadding`): other input sizes get the
//! same pads, as in the package.
//!
//! Variable names are the package's `state_dict()` names (`_conv_stem.weight`,
//! `_blocks.3._expand_conv.weight`, `_bn1.running_var`, ...), without its `_fc` classifier.

use std::ops::Range;

use tch::nn;
use tch::Tensor;

use crate::layers::{torch_default_conv_init, BatchNorm2d, Conv2d, ConvOpts};

/// Input size the static padding is computed for (the package's `image_size` for lite0).
pub const LITE0_IMAGE_SIZE: i64 = 224;
/// The package's `image_size` for lite1.
pub const LITE1_IMAGE_SIZE: i64 = 240;
/// The package's `image_size` for lite2.
pub const LITE2_IMAGE_SIZE: i64 = 260;
/// Pooled feature dimension of EfficientNet-Lite0 (`_conv_head` output channels).
pub const LITE0_FEATURE_DIM: i64 = 1280;

const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 1.0 - 0.99;
const DROP_CONNECT_RATE: f64 = 0.2;

/// `(repeats, kernel, stride, expand_ratio, input_filters, output_filters)` from the package's
/// block strings `r1_k3_s11_e1_i32_o16`, ... (width and depth coefficients are 1.0 for lite0;
/// [`LiteConfig::stages`] scales them for the other variants).
pub(crate) const LITE0_STAGES: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Scaling of an EfficientNet-Lite variant (the package's `efficientnet_params`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiteConfig {
    /// `width_coefficient`.
    pub width: f64,
    /// `depth_coefficient`.
    pub depth: f64,
    /// `image_size` (static padding is computed for it).
    pub image_size: i64,
}

impl LiteConfig {
    /// EfficientNet-Lite0.
    pub const LITE0: LiteConfig = LiteConfig { width: 1.0, depth: 1.0, image_size: LITE0_IMAGE_SIZE };
    /// EfficientNet-Lite1.
    pub const LITE1: LiteConfig = LiteConfig { width: 1.0, depth: 1.1, image_size: LITE1_IMAGE_SIZE };
    /// EfficientNet-Lite2.
    pub const LITE2: LiteConfig = LiteConfig { width: 1.1, depth: 1.2, image_size: LITE2_IMAGE_SIZE };

    /// The package's `round_filters` (depth_divisor 8, min_depth None).
    fn round_filters(&self, filters: i64) -> i64 {
        let f = filters as f64 * self.width;
        let mut new = ((f + 4.0) as i64 / 8 * 8).max(8);
        if (new as f64) < 0.9 * f {
            new += 8;
        }
        new
    }

    /// The scaled stages: the first and last keep their repeats (`fix_head_stem`), the first
    /// keeps 32 input channels.
    pub fn stages(&self) -> Vec<(i64, i64, i64, i64, i64, i64)> {
        let last = LITE0_STAGES.len() - 1;
        LITE0_STAGES
            .iter()
            .enumerate()
            .map(|(i, &(r, k, s, e, c_in, c_out))| {
                let fixed = i == 0 || i == last;
                let repeats = if fixed { r } else { (self.depth * r as f64).ceil() as i64 };
                let c_in = if i == 0 { 32 } else { self.round_filters(c_in) };
                (repeats, k, s, e, c_in, self.round_filters(c_out))
            })
            .collect()
    }
}

/// `Conv2dStaticSamePadding`'s pads `(left, right, top, bottom)` for a square image.
pub fn static_same_pad(image: i64, k: i64, s: i64) -> [i64; 4] {
    let o = (image + s - 1) / s;
    let pad = ((o - 1) * s + k - image).max(0);
    [pad / 2, pad - pad / 2, pad / 2, pad - pad / 2]
}

fn out_size(image: i64, s: i64) -> i64 {
    (image + s - 1) / s
}

fn conv(vs: &nn::Path, c_in: i64, c_out: i64, k: i64, s: i64, groups: i64, image: i64) -> Conv2d {
    Conv2d::new(
        vs,
        c_in,
        c_out,
        k,
        ConvOpts {
            stride: s,
            groups,
            static_pad: Some(static_same_pad(image, k, s)),
            init: torch_default_conv_init(c_in / groups * k * k),
            ..Default::default()
        },
    )
}

fn bn(vs: &nn::Path, c: i64) -> BatchNorm2d {
    BatchNorm2d::new(vs, c, BN_EPS, BN_MOMENTUM)
}

/// ReLU6 in place on a freshly computed tensor (batch-norm output or folded conv output).
fn relu6(mut xs: Tensor) -> Tensor {
    let _ = xs.clamp_(0.0, 6.0);
    xs
}

#[derive(Debug)]
struct MBConv {
    expand: Option<(Conv2d, BatchNorm2d)>,
    depthwise: Conv2d,
    bn1: BatchNorm2d,
    project: Conv2d,
    bn2: BatchNorm2d,
    residual: bool,
    drop_connect: f64,
}

impl MBConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = match &self.expand {
            Some((c, b)) => relu6(b.forward_t(&c.forward(xs), train)),
            None => xs.shallow_clone(),
        };
        x = relu6(self.bn1.forward_t(&self.depthwise.forward(&x), train));
        x = self.bn2.forward_t(&self.project.forward(&x), train);
        if !self.residual {
            return x;
        }
        // `drop_connect` of the package: per-sample Bernoulli(keep) mask, scaled by 1/keep.
        // As in the package it applies whenever the module is in training mode.
        if train && self.drop_connect > 0.0 {
            let keep = 1.0 - self.drop_connect;
            let n = x.size()[0];
            let mask = (Tensor::rand([n, 1, 1, 1], (x.kind(), x.device())) + keep).floor();
            x = x / keep * mask;
        }
        x + xs
    }
}

/// The package's `extract_features` followed by `_avg_pooling` and flatten (no dropout / `_fc`).
#[derive(Debug)]
pub(crate) struct EfficientNetLite {
    conv_stem: Conv2d,
    bn0: BatchNorm2d,
    blocks: Vec<MBConv>,
    /// `stage_starts[s]..stage_starts[s + 1]`: the blocks of stage `s + 1` (one entry per stage, plus the end).
    stage_starts: Vec<usize>,
    conv_head: Conv2d,
    bn1: BatchNorm2d,
    /// Output channels of each unit of [`blocks`] (the stem's 32, each stage's, the head's 1280).
    unit_channels: Vec<i64>,
}

impl EfficientNetLite {
    /// Builds the layers under `vs` (the root path: the package's names have no prefix).
    pub fn new(vs: &nn::Path, cfg: &LiteConfig) -> EfficientNetLite {
        let mut image = cfg.image_size;
        let stages = cfg.stages();
        let conv_stem = conv(&(vs / "_conv_stem"), 3, 32, 3, 2, 1, image);
        let bn0 = bn(&(vs / "_bn0"), 32);
        image = out_size(image, 2);
        let total: i64 = stages.iter().map(|s| s.0).sum();
        let mut blocks = Vec::new();
        let mut stage_starts = vec![0];
        for &(repeats, k, stride, expand, c_in0, c_out) in stages.iter() {
            for r in 0..repeats {
                let (c_in, s) = if r == 0 { (c_in0, stride) } else { (c_out, 1) };
                let idx = blocks.len() as i64;
                let bvs = vs / "_blocks" / idx;
                let mid = c_in * expand;
                let expand_layers = (expand != 1).then(|| (conv(&(&bvs / "_expand_conv"), c_in, mid, 1, 1, 1, image), bn(&(&bvs / "_bn0"), mid)));
                let depthwise = conv(&(&bvs / "_depthwise_conv"), mid, mid, k, s, mid, image);
                let bn1 = bn(&(&bvs / "_bn1"), mid);
                image = out_size(image, s);
                let project = conv(&(&bvs / "_project_conv"), mid, c_out, 1, 1, 1, image);
                let bn2 = bn(&(&bvs / "_bn2"), c_out);
                blocks.push(MBConv {
                    expand: expand_layers,
                    depthwise,
                    bn1,
                    project,
                    bn2,
                    residual: s == 1 && c_in == c_out,
                    drop_connect: DROP_CONNECT_RATE * idx as f64 / total as f64,
                });
            }
            stage_starts.push(blocks.len());
        }
        let last_c = stages.last().map_or(320, |s| s.5);
        let conv_head = conv(&(vs / "_conv_head"), last_c, LITE0_FEATURE_DIM, 1, 1, 1, image);
        let bn1 = bn(&(vs / "_bn1"), LITE0_FEATURE_DIM);
        let unit_channels = std::iter::once(32).chain(stages.iter().map(|s| s.5)).chain([LITE0_FEATURE_DIM]).collect();
        EfficientNetLite { conv_stem, bn0, blocks, stage_starts, conv_head, bn1, unit_channels }
    }
}

/// Freezing units: `stem`, `stage1`..`stage7`, `head`.
pub(crate) fn blocks() -> Vec<String> {
    let mut v = vec!["stem".to_string()];
    v.extend((1..=LITE0_STAGES.len()).map(|i| format!("stage{i}")));
    v.push("head".into());
    v
}

/// Index into [`blocks`] of a variable name.
pub(crate) fn block_of(cfg: &LiteConfig, key: &str) -> Option<usize> {
    let mut it = key.split('.');
    let (m, idx) = (it.next()?, it.next().unwrap_or(""));
    let stages = cfg.stages();
    match m {
        "_conv_stem" | "_bn0" => Some(0),
        "_conv_head" | "_bn1" => Some(stages.len() + 1),
        "_blocks" => {
            let mut j: i64 = idx.parse().ok()?;
            for (s, st) in stages.iter().enumerate() {
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

impl crate::Net for EfficientNetLite {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_units(xs, 0..self.stage_starts.len() + 1, train).unwrap_or_else(|| xs.shallow_clone())
    }

    /// Units as in [`blocks`]: 0 the stem, `1..=7` the stages, 8 the head convolution with the pooling.
    fn forward_units(&self, xs: &Tensor, units: Range<usize>, train: bool) -> Option<Tensor> {
        let last = self.stage_starts.len();
        if units.start > units.end || units.end > last + 1 {
            return None;
        }
        let mut x = xs.shallow_clone();
        for unit in units {
            x = match unit {
                0 => relu6(self.bn0.forward_t(&self.conv_stem.forward(&x), train)),
                u if u == last => {
                    let x = relu6(self.bn1.forward_t(&self.conv_head.forward(&x), train));
                    x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
                }
                s => self.blocks[self.stage_starts[s - 1]..self.stage_starts[s]].iter().fold(x, |x, b| b.forward_t(&x, train)),
            };
        }
        Some(x)
    }

    fn channels_after(&self, units: usize) -> Option<i64> {
        self.unit_channels.get(units.checked_sub(1)?).copied()
    }

    /// Folds every batch norm into the convolution before it. Returns how many were folded.
    fn fold_batchnorm(&mut self) -> usize {
        let mut n = 0;
        let mut fold = |c: &mut Conv2d, b: &mut BatchNorm2d| n += usize::from(c.fold(b));
        fold(&mut self.conv_stem, &mut self.bn0);
        for blk in self.blocks.iter_mut() {
            if let Some((c, b)) = blk.expand.as_mut() {
                fold(c, b);
            }
            fold(&mut blk.depthwise, &mut blk.bn1);
            fold(&mut blk.project, &mut blk.bn2);
        }
        fold(&mut self.conv_head, &mut self.bn1);
        n
    }

    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.conv_stem.set_channels_last(on)?;
        for blk in self.blocks.iter_mut() {
            if let Some((c, _)) = blk.expand.as_mut() {
                c.set_channels_last(on)?;
            }
            blk.depthwise.set_channels_last(on)?;
            blk.project.set_channels_last(on)?;
        }
        self.conv_head.set_channels_last(on)
    }
}
