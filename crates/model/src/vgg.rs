//! VGG-11/13/16/19, with and without batch norm, as in torchvision (`torchvision.models.vgg`), and
//! the plain `features` stack (convolution, optional batch norm, ReLU, max-pooling) that VGG and
//! AlexNet share.
//!
//! Variable names are torchvision's `features.{i}.*`, where `i` counts every module of the
//! `nn.Sequential` (convolution, batch norm, ReLU, pooling), so `vgg16.features.28.weight` and
//! `vgg16_bn.features.40.running_var` are where torchvision has them. The backbone output is the
//! classifier's input: `adaptive_avg_pool2d(features(x), pool)` flattened (25088 values for VGG),
//! so a replaced `classifier` (the usual transfer-learning recipe) is this crate's head.

use tch::nn;
use tch::Tensor;

use crate::layers::{BatchNorm2d, Conv2d, ConvOpts};

/// VGG variants: number of weight layers and whether batch norm follows each convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggConfig {
    /// 11, 13, 16 or 19.
    pub depth: u32,
    /// `vgg*_bn`.
    pub batch_norm: bool,
}

/// `0` stands for torchvision's `"M"` (max-pooling 2x2, stride 2).
fn vgg_cfg(depth: u32) -> &'static [i64] {
    match depth {
        11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        13 => &[64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        16 => &[64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0],
        _ => &[64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0],
    }
}

/// One layer of a plain feature stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Convolution `(out_channels, kernel, stride, padding)` with bias, then (optional batch norm
    /// and) ReLU.
    Conv(i64, i64, i64, i64),
    /// Max-pooling `(kernel, stride)`.
    Pool(i64, i64),
}

/// A plain feature stack: its layers, whether each convolution has a batch norm, and the size of
/// the adaptive average pooling before flattening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainSpec {
    /// The layers in order.
    pub layers: Vec<Layer>,
    /// Whether every convolution is followed by a batch norm (`vgg*_bn`).
    pub batch_norm: bool,
    /// Output side of the adaptive average pooling (7 for VGG, 6 for AlexNet).
    pub pool: i64,
    /// torchvision's VGG initialisation (kaiming-normal fan-out, zero bias); otherwise PyTorch's
    /// default `Conv2d` initialisation (AlexNet).
    pub vgg_init: bool,
}

impl PlainSpec {
    /// torchvision's `make_layers(cfgs[...], batch_norm)`.
    pub fn vgg(c: VggConfig) -> PlainSpec {
        let layers = vgg_cfg(c.depth).iter().map(|&v| if v == 0 { Layer::Pool(2, 2) } else { Layer::Conv(v, 3, 1, 1) }).collect();
        PlainSpec { layers, batch_norm: c.batch_norm, pool: 7, vgg_init: true }
    }

    /// Index of every layer in torchvision's `nn.Sequential` (a conv takes 2 or 3 slots: conv,
    /// \[bn\], relu).
    pub fn indices(&self) -> Vec<usize> {
        let mut i = 0;
        self.layers
            .iter()
            .map(|l| {
                let at = i;
                i += match l {
                    Layer::Conv(..) if self.batch_norm => 3,
                    Layer::Conv(..) => 2,
                    Layer::Pool(..) => 1,
                };
                at
            })
            .collect()
    }

    /// Channels after the last convolution.
    pub fn channels(&self) -> i64 {
        self.layers.iter().rev().find_map(|l| if let Layer::Conv(c, ..) = l { Some(*c) } else { None }).unwrap_or(3)
    }

    /// Flattened feature dimension (`channels · pool²`).
    pub fn feature_dim(&self) -> i64 {
        self.channels() * self.pool * self.pool
    }

    /// Freezing units: `stage{k}` is everything up to and including the k-th max-pooling.
    pub fn blocks(&self) -> Vec<String> {
        let n = self.layers.iter().filter(|l| matches!(l, Layer::Pool(..))).count();
        (1..=n).map(|k| format!("stage{k}")).collect()
    }

    /// Index into [`PlainSpec::blocks`] of `features.{i}.*`.
    pub fn block_of(&self, key: &str) -> Option<usize> {
        let i: usize = key.strip_prefix("features.")?.split('.').next()?.parse().ok()?;
        let idx = self.indices();
        let mut stage = 0;
        for (l, &at) in self.layers.iter().zip(&idx) {
            let width = if matches!(l, Layer::Conv(..)) { 1 + usize::from(self.batch_norm) } else { 0 };
            if (at..=at + width).contains(&i) {
                return matches!(l, Layer::Conv(..)).then_some(stage);
            }
            if matches!(l, Layer::Pool(..)) {
                stage += 1;
            }
        }
        None
    }
}

#[derive(Debug)]
enum Built {
    Conv(Conv2d, Option<BatchNorm2d>),
    Pool(i64, i64),
}

/// The `features` + `avgpool` + flatten of a torchvision VGG or AlexNet.
#[derive(Debug)]
pub(crate) struct PlainFeatures {
    layers: Vec<Built>,
    pool: i64,
}

impl PlainFeatures {
    /// Builds the layers under `vs` (the `features` path).
    pub fn new(vs: &nn::Path, spec: &PlainSpec) -> PlainFeatures {
        let mut c_in = 3;
        let mut layers = Vec::new();
        for (l, at) in spec.layers.iter().zip(spec.indices()) {
            match *l {
                Layer::Conv(c_out, k, stride, padding) => {
                    let init =
                        if spec.vgg_init { crate::layers::KAIMING_NORMAL_FAN_OUT } else { crate::layers::torch_default_conv_init(c_in * k * k) };
                    let conv = Conv2d::new(&(vs / at), c_in, c_out, k, ConvOpts { stride, padding, bias: true, init, ..Default::default() });
                    if spec.vgg_init {
                        if let Some(b) = &conv.bias {
                            let _ = tch::no_grad(|| b.shallow_clone().zero_());
                        }
                    }
                    let bn = spec.batch_norm.then(|| BatchNorm2d::torch_default(&(vs / (at + 1)), c_out));
                    layers.push(Built::Conv(conv, bn));
                    c_in = c_out;
                }
                Layer::Pool(k, s) => layers.push(Built::Pool(k, s)),
            }
        }
        PlainFeatures { layers, pool: spec.pool }
    }
}

impl crate::Net for PlainFeatures {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for l in &self.layers {
            x = match l {
                Built::Conv(c, None) => c.forward(&x).relu_(),
                Built::Conv(c, Some(b)) => b.forward_t(&c.forward(&x), train).relu_(),
                Built::Pool(k, s) => x.max_pool2d([*k, *k], [*s, *s], [0, 0], [1, 1], false),
            };
        }
        x.adaptive_avg_pool2d([self.pool, self.pool]).flatten(1, -1)
    }

    fn fold_batchnorm(&mut self) -> usize {
        let mut n = 0;
        for l in self.layers.iter_mut() {
            if let Built::Conv(c, Some(b)) = l {
                n += usize::from(c.fold(b));
            }
        }
        n
    }

    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        for l in self.layers.iter_mut() {
            if let Built::Conv(c, _) = l {
                c.set_channels_last(on)?;
            }
        }
        Ok(())
    }
}
