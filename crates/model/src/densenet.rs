//! DenseNet-BC as in torchvision (`torchvision.models.densenet`), generic over growth rate, block
//! configuration, initial features and bottleneck size. Variable names and shapes are those of
//! torchvision's `state_dict()` under `features.*`; the pooling is adaptive (any input ≥ 32 px).

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

use crate::layers::{is_channels_last, BatchNorm2d, Conv2d, ConvOpts};
use crate::Error;

/// Hyper-parameters of a DenseNet-BC (torchvision's `DenseNet.__init__` arguments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseNetConfig {
    /// Channels added by each dense layer (`growth_rate`, 32 for densenet121).
    pub growth_rate: i64,
    /// Dense layers per block (`block_config`, `[6, 12, 24, 16]` for densenet121).
    pub block_config: Vec<i64>,
    /// Channels of the stem convolution (`num_init_features`, 64 for densenet121).
    pub num_init_features: i64,
    /// Bottleneck width multiplier (`bn_size`, 4): the 1x1 convolution yields `bn_size * growth_rate`.
    pub bn_size: i64,
    /// Dropout after each dense layer (`drop_rate`, 0 in all torchvision models).
    #[serde(default)]
    pub drop_rate: f64,
}

impl DenseNetConfig {
    /// torchvision's densenet121: growth 32, blocks (6, 12, 24, 16), 64 initial features.
    pub fn densenet121() -> Self {
        Self::new(32, &[6, 12, 24, 16], 64)
    }
    /// torchvision's densenet161: growth 48, blocks (6, 12, 36, 24), 96 initial features.
    pub fn densenet161() -> Self {
        Self::new(48, &[6, 12, 36, 24], 96)
    }
    /// torchvision's densenet169: growth 32, blocks (6, 12, 32, 32), 64 initial features.
    pub fn densenet169() -> Self {
        Self::new(32, &[6, 12, 32, 32], 64)
    }
    /// torchvision's densenet201: growth 32, blocks (6, 12, 48, 32), 64 initial features.
    pub fn densenet201() -> Self {
        Self::new(32, &[6, 12, 48, 32], 64)
    }

    fn new(growth_rate: i64, blocks: &[i64], num_init_features: i64) -> Self {
        DenseNetConfig { growth_rate, block_config: blocks.to_vec(), num_init_features, bn_size: 4, drop_rate: 0.0 }
    }

    /// Checks that every size is positive and the dropout rate is in [0, 1).
    pub fn validate(&self) -> Result<(), Error> {
        let ok = self.growth_rate > 0
            && self.num_init_features > 0
            && self.bn_size > 0
            && !self.block_config.is_empty()
            && self.block_config.iter().all(|&n| n > 0)
            && (0.0..1.0).contains(&self.drop_rate);
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!("invalid DenseNet configuration {self:?}")))
        }
    }

    /// Channels of the final feature map (`norm5`), i.e. the pooled feature dimension.
    pub fn feature_dim(&self) -> i64 {
        let mut c = self.num_init_features;
        for (i, &n) in self.block_config.iter().enumerate() {
            c += n * self.growth_rate;
            if i + 1 != self.block_config.len() {
                c /= 2;
            }
        }
        c
    }
}

#[derive(Debug)]
struct DenseLayer {
    norm1: BatchNorm2d,
    conv1: Conv2d,
    norm2: BatchNorm2d,
    conv2: Conv2d,
    drop_rate: f64,
}

impl DenseLayer {
    fn new(vs: &nn::Path, c_in: i64, growth: i64, bn_size: i64, drop_rate: f64) -> Self {
        let mid = bn_size * growth;
        DenseLayer {
            norm1: BatchNorm2d::torch_default(&(vs / "norm1"), c_in),
            conv1: Conv2d::new(&(vs / "conv1"), c_in, mid, 1, ConvOpts::default()),
            norm2: BatchNorm2d::torch_default(&(vs / "norm2"), mid),
            conv2: Conv2d::new(&(vs / "conv2"), mid, growth, 3, ConvOpts { padding: 1, ..Default::default() }),
            drop_rate,
        }
    }

    fn is_frozen(&self) -> bool {
        !(self.norm1.weight.requires_grad()
            || self.conv1.weight.requires_grad()
            || self.norm2.weight.requires_grad()
            || self.conv2.weight.requires_grad())
    }

    /// `inputs` is the concatenation of all previous feature maps of the block.
    fn forward_t(&self, inputs: &Tensor, train: bool) -> Tensor {
        let h = self.norm1.forward_t(inputs, train).relu_();
        let h = self.conv1.forward(&h);
        let h = self.norm2.forward_t(&h, train).relu_();
        let h = self.conv2.forward(&h);
        if self.drop_rate > 0.0 {
            h.dropout(self.drop_rate, train)
        } else {
            h
        }
    }
}

#[derive(Debug)]
struct Transition {
    norm: BatchNorm2d,
    conv: Conv2d,
}

/// The `features` module of a torchvision DenseNet (everything before the final ReLU + pooling).
#[derive(Debug)]
pub(crate) struct DenseNet {
    conv0: Conv2d,
    norm0: BatchNorm2d,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm5: BatchNorm2d,
}

impl DenseNet {
    /// Builds the layers under `vs` (which should be the `features` path).
    pub fn new(vs: &nn::Path, cfg: &DenseNetConfig) -> Result<DenseNet, Error> {
        cfg.validate()?;
        let conv0 = Conv2d::new(&(vs / "conv0"), 3, cfg.num_init_features, 7, ConvOpts { stride: 2, padding: 3, ..Default::default() });
        let norm0 = BatchNorm2d::torch_default(&(vs / "norm0"), cfg.num_init_features);
        let mut c = cfg.num_init_features;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (i, &n) in cfg.block_config.iter().enumerate() {
            let bvs = vs / format!("denseblock{}", i + 1);
            let layers = (0..n)
                .map(|j| {
                    DenseLayer::new(&(&bvs / format!("denselayer{}", j + 1)), c + j * cfg.growth_rate, cfg.growth_rate, cfg.bn_size, cfg.drop_rate)
                })
                .collect();
            blocks.push(layers);
            c += n * cfg.growth_rate;
            if i + 1 != cfg.block_config.len() {
                let tvs = vs / format!("transition{}", i + 1);
                transitions.push(Transition {
                    norm: BatchNorm2d::torch_default(&(&tvs / "norm"), c),
                    conv: Conv2d::new(&(&tvs / "conv"), c, c / 2, 1, ConvOpts::default()),
                });
                c /= 2;
            }
        }
        let norm5 = BatchNorm2d::torch_default(&(vs / "norm5"), c);
        Ok(DenseNet { conv0, norm0, blocks, transitions, norm5 })
    }

    /// `features(x)` followed by torchvision's `F.relu` + `adaptive_avg_pool2d(1)` + flatten.
    fn forward_impl(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.conv0.forward(xs);
        x = self.norm0.forward_t(&x, train).relu_();
        x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (i, block) in self.blocks.iter().enumerate() {
            let fixed = !train && !x.requires_grad() && block.iter().all(DenseLayer::is_frozen);
            x = if fixed { Self::block_buffered(block, x) } else { Self::block_concat(block, x, train) };
            if let Some(t) = self.transitions.get(i) {
                let h = t.norm.forward_t(&x, train).relu_();
                x = t.conv.forward(&h).avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
            }
        }
        let x = self.norm5.forward_t(&x, train).relu_();
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    /// torchvision's dense block: every layer reads `cat(previous feature maps)`.
    fn block_concat(block: &[DenseLayer], x: Tensor, train: bool) -> Tensor {
        let mut feats: Vec<Tensor> = vec![x];
        for layer in block {
            let input = if feats.len() == 1 { feats[0].shallow_clone() } else { Tensor::cat(&feats, 1) };
            feats.push(layer.forward_t(&input, train));
        }
        Tensor::cat(&feats, 1)
    }

    /// The same function without autograd (eval mode, nothing requires grad): the block's output
    /// is allocated once and every layer writes its channels into it and reads a channel prefix
    /// of it, instead of re-concatenating all previous maps for each layer.
    fn block_buffered(block: &[DenseLayer], x: Tensor) -> Tensor {
        let s = x.size();
        let (n, c0, h, w) = (s[0], s[1], s[2], s[3]);
        let growth: i64 = block.iter().map(|l| l.conv2.weight.size()[0]).sum();
        let opts = (x.kind(), x.device());
        let buf = if is_channels_last(&x) {
            Tensor::empty([n, h, w, c0 + growth], opts).permute([0, 3, 1, 2])
        } else {
            Tensor::empty([n, c0 + growth, h, w], opts)
        };
        buf.narrow(1, 0, c0).copy_(&x);
        let mut c = c0;
        for layer in block {
            let out = layer.forward_t(&buf.narrow(1, 0, c), false);
            let g = out.size()[1];
            buf.narrow(1, c, g).copy_(&out);
            c += g;
        }
        buf
    }

    /// Folds `norm0` into `conv0` and each layer's `norm2` into its `conv1` (the batch norms that
    /// directly follow a convolution). Returns how many were folded.
    fn fold_impl(&mut self) -> usize {
        let mut n = 0;
        n += usize::from(self.conv0.fold(&mut self.norm0));
        for layer in self.blocks.iter_mut().flatten() {
            n += usize::from(layer.conv1.fold(&mut layer.norm2));
        }
        n
    }

    /// Switches every convolution weight to or from channels_last (in place).
    fn channels_last_impl(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.conv0.set_channels_last(on)?;
        for layer in self.blocks.iter_mut().flatten() {
            layer.conv1.set_channels_last(on)?;
            layer.conv2.set_channels_last(on)?;
        }
        for t in self.transitions.iter_mut() {
            t.conv.set_channels_last(on)?;
        }
        Ok(())
    }
}

impl crate::Net for DenseNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_impl(xs, train)
    }
    fn fold_batchnorm(&mut self) -> usize {
        self.fold_impl()
    }
    fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        self.channels_last_impl(on)
    }
}
