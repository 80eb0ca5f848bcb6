//! ResNet-18/34/50/101/152 as in torchvision (`torchvision.models.resnet`, V1.5: the bottleneck
//! strides in its 3x3 convolution). Variable names are torchvision's `state_dict()` names at the
//! root (`conv1.weight`, `bn1.running_mean`, `layer3.1.conv2.weight`, `layer2.0.downsample.0.weight`,
//! ...) without its `fc` classifier, which this crate's head replaces. The backbone output is the
//! pooled `fc` input (512 or 2048 values).

use tch::nn;
use tch::Tensor;

use crate::layers::{BatchNorm2d, Conv2d, ConvOpts, KAIMING_NORMAL_FAN_OUT};

/// A torchvision ResNet depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetConfig {
    /// 18, 34, 50, 101 or 152.
    pub depth: u32,
}

impl ResNetConfig {
    /// Blocks per stage (`layers` of torchvision's `ResNet.__init__`).
    pub fn layers(&self) -> [i64; 4] {
        match self.depth {
            18 => [2, 2, 2, 2],
            34 | 50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            _ => [3, 8, 36, 3],
        }
    }

    /// True for `Bottleneck` blocks (depth ≥ 50), false for `BasicBlock`.
    pub fn bottleneck(&self) -> bool {
        self.depth >= 50
    }

    /// Pooled feature dimension (`fc.in_features`).
    pub fn feature_dim(&self) -> i64 {
        if self.bottleneck() {
            2048
        } else {
            512
        }
    }
}

/// Freezing units: `stem` (conv1, bn1), `layer1`..`layer4`.
pub(crate) fn blocks() -> Vec<String> {
    let mut v = vec!["stem".to_string()];
    v.extend((1..=4).map(|i| format!("layer{i}")));
    v
}

/// Index into [`blocks`] of a variable name.
pub(crate) fn block_of(key: &str) -> Option<usize> {
    let m = key.split('.').next()?;
    match m {
        "conv1" | "bn1" => Some(0),
        _ => m.strip_prefix("layer")?.parse::<usize>().ok().filter(|i| (1..=4).contains(i)),
    }
}

fn conv(vs: &nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> Conv2d {
    Conv2d::new(vs, c_in, c_out, k, ConvOpts { stride, padding: k / 2, init: KAIMING_NORMAL_FAN_OUT, ..Default::default() })
}

/// A `BasicBlock` (two 3x3 convolutions) or `Bottleneck` (1x1, 3x3, 1x1) with its optional
/// `downsample` (1x1 convolution + batch norm).
#[derive(Debug)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Block {
    fn new(vs: &nn::Path, c_in: i64, planes: i64, stride: i64, bottleneck: bool) -> Block {
        let unit = |name: usize, ci: i64, co: i64, k: i64, s: i64| {
            (conv(&(vs / format!("conv{name}")), ci, co, k, s), BatchNorm2d::torch_default(&(vs / format!("bn{name}")), co))
        };
        let (convs, c_out) = if bottleneck {
            (vec![unit(1, c_in, planes, 1, 1), unit(2, planes, planes, 3, stride), unit(3, planes, planes * 4, 1, 1)], planes * 4)
        } else {
            (vec![unit(1, c_in, planes, 3, stride), unit(2, planes, planes, 3, 1)], planes)
        };
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = vs / "downsample";
            (conv(&(&d / 0), c_in, c_out, 1, stride), BatchNorm2d::torch_default(&(&d / 1), c_out))
        });
        Block { convs, downsample }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (c, b)) in self.convs.iter().enumerate() {
            x = b.forward_t(&c.forward(&x), train);
            if i != last {
                x = x.relu_();
            }
        }
        let identity = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(xs), train),
            None => xs.shallow_clone(),
        };
        (x + identity).relu_()
    }

    fn pairs(&mut self) -> impl Iterator<Item = &mut (Conv2d, BatchNorm2d)> {
        self.convs.iter_mut().chain(self.downsample.iter_mut())
    }
}

/// Everything of a torchvision ResNet before `fc`.
#[derive(Debug)]
pub(crate) struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<Block>,
}

impl ResNet {
    /// Builds the layers under `vs` (the root path).
    pub fn new(vs: &nn::Path, cfg: &ResNetConfig) -> ResNet {
        let conv1 = Conv2d::new(&(vs / "conv1"), 3, 64, 7, ConvOpts { stride: 2, padding: 3, init: KAIMING_NORMAL_FAN_OUT, ..Default::default() });
        let bn1 = BatchNorm2d::torch_default(&(vs / "bn1"), 64);
        let expansion = if cfg.bottleneck() { 4 } else { 1 };
        let mut c_in = 64;
        let mut blocks = Vec::new();
        for (i, &n) in cfg.layers().iter().enumerate() {
            let planes = 64 << i;
            let lvs = vs / format!("layer{}", i + 1);
            for j in 0..n {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                blocks.push(Block::new(&(&lvs / j), c_in, planes, stride, cfg.bottleneck()));
                c_in = planes * expansion;
            }
        }
        ResNet { conv1, bn1, blocks }
    }
}

impl crate::Net for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = self.bn1.forward_t(&self.conv1.forward(xs), train).relu_();
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn fold_batchnorm(&mut self) -> usize {
        let mut n = usize::from(self.conv1.fold(&mut self.bn1));
        for b in self.blocks.iter_mut() {
            for (c, bn) in b.pairs() {
                n += usize::from(c.fold(bn));
            }
        }
        n
    }

    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.conv1.set_channels_last(on)?;
        for b in self.blocks.iter_mut() {
            for (c, _) in b.pairs() {
                c.set_channels_last(on)?;
            }
        }
        Ok(())
    }
}
