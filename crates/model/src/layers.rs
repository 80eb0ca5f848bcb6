//! Building blocks shared by the backbones: a convolution that can absorb a batch norm, a batch
//! norm with torchvision's buffers (including `num_batches_tracked`), and the memory-format helper.
//!
//! The layers hold shallow clones of the `VarStore` variables, so training updates and weight
//! loading through the `VarStore` are seen by the layers. Batch-norm folding replaces a layer's own
//! tensors by folded copies and leaves the `VarStore` untouched.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// Kaiming-normal (fan-in, ReLU gain), as torchvision initialises DenseNet convolutions.
pub(crate) const KAIMING_NORMAL: Init = nn::init::DEFAULT_KAIMING_NORMAL;

/// Kaiming-normal (fan-out, ReLU gain), as torchvision initialises VGG and ResNet convolutions.
pub(crate) const KAIMING_NORMAL_FAN_OUT: Init =
    Init::Kaiming { dist: nn::init::NormalOrUniform::Normal, fan: nn::init::FanInOut::FanOut, non_linearity: nn::init::NonLinearity::ReLU };

/// PyTorch's default conv weight init (kaiming_uniform with a = sqrt(5)): U(-1/sqrt(fan_in), ..).
pub(crate) fn torch_default_conv_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// Returns `xs` (4-D) with NHWC strides ("channels_last"), the layout oneDNN convolutions prefer.
/// The logical shape stays NCHW; a tensor that already has that layout is returned as is.
pub fn to_channels_last(xs: &Tensor) -> Tensor {
    if xs.dim() != 4 || is_channels_last(xs) {
        return xs.shallow_clone();
    }
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// True when a 4-D tensor is laid out NHWC in memory (PyTorch's channels_last).
pub fn is_channels_last(xs: &Tensor) -> bool {
    if xs.dim() != 4 {
        return false;
    }
    let s = xs.size();
    let st = xs.stride();
    let (c, h, w) = (s[1], s[2], s[3]);
    st[1] == 1 && (w == 1 || st[3] == c) && (h == 1 || st[2] == c * w) && (s[0] == 1 || st[0] == c * h * w)
}

/// A 2-D convolution (bias optional) with optional TF-style static "same" padding applied
/// before the convolution, as `Conv2dStaticSamePadding` of `efficientnet_lite_pytorch` does.
#[derive(Debug)]
pub(crate) struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    stride: i64,
    padding: i64,
    groups: i64,
    /// (left, right, top, bottom), as `F.pad` takes them.
    static_pad: Option<[i64; 4]>,
}

/// Options of [`Conv2d::new`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvOpts {
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
    pub bias: bool,
    pub static_pad: Option<[i64; 4]>,
    pub init: Init,
}

impl Default for ConvOpts {
    fn default() -> Self {
        ConvOpts { stride: 1, padding: 0, groups: 1, bias: false, static_pad: None, init: KAIMING_NORMAL }
    }
}

impl Conv2d {
    pub fn new(vs: &nn::Path, c_in: i64, c_out: i64, k: i64, o: ConvOpts) -> Conv2d {
        let weight = vs.var("weight", &[c_out, c_in / o.groups, k, k], o.init);
        let bias = if o.bias {
            // PyTorch's default Conv2d bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            let bound = 1.0 / ((c_in / o.groups * k * k) as f64).sqrt();
            Some(vs.var("bias", &[c_out], Init::Uniform { lo: -bound, up: bound }))
        } else {
            None
        };
        Conv2d { weight, bias, stride: o.stride, padding: o.padding, groups: o.groups, static_pad: o.static_pad }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let padded;
        let xs = match self.static_pad {
            Some(p) if p != [0, 0, 0, 0] => {
                padded = xs.constant_pad_nd(p);
                &padded
            }
            _ => xs,
        };
        xs.conv2d(&self.weight, self.bias.as_ref(), [self.stride; 2], [self.padding; 2], [1, 1], self.groups)
    }

    /// Absorbs an eval-mode batch norm that directly follows this convolution:
    /// `w' = w * g/sqrt(v+eps)`, `b' = (b - m) * g/sqrt(v+eps) + beta`. New tensors are created;
    /// the `VarStore` variables are not modified. Pairs where either weight requires gradients
    /// (trainable layers) are not folded. Returns whether the batch norm was folded.
    pub fn fold(&mut self, bn: &mut BatchNorm2d) -> bool {
        if bn.folded || bn.weight.requires_grad() || self.weight.requires_grad() {
            return false;
        }
        tch::no_grad(|| {
            let scale = &bn.weight / (&bn.running_var + bn.eps).sqrt();
            let channels_last = is_channels_last(&self.weight);
            let w = &self.weight * scale.view([-1, 1, 1, 1]);
            let w = if channels_last { to_channels_last(&w) } else { w.contiguous() };
            let b = match &self.bias {
                Some(b) => b - &bn.running_mean,
                None => -&bn.running_mean,
            };
            let b = b * &scale + &bn.bias;
            self.weight = w.detach();
            self.bias = Some(b.detach());
        });
        bn.folded = true;
        true
    }

    /// Switches the weight's memory layout to or from channels_last, keeping its values.
    /// The change is made in place (`set_data`), so a weight shared with a `VarStore` variable
    /// changes layout there too, as `module.to(memory_format=...)` does in PyTorch.
    pub fn set_channels_last(&mut self, on: bool) -> Result<(), tch::TchError> {
        let converted = if on { to_channels_last(&self.weight) } else { self.weight.contiguous() };
        tch::no_grad(|| self.weight.f_set_data(&converted))
    }
}

/// Batch normalisation over NCHW input with torchvision's parameters and buffers:
/// `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked` (int64 scalar).
///
/// In training mode a layer whose `weight` does not require gradients (a frozen block) still runs
/// with its running statistics, so a frozen block is a fixed function of its input.
#[derive(Debug)]
pub(crate) struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    pub eps: f64,
    momentum: f64,
    /// Set once the layer has been folded into the preceding convolution: it is then the identity.
    pub folded: bool,
}

impl BatchNorm2d {
    pub fn new(vs: &nn::Path, c: i64, eps: f64, momentum: f64) -> BatchNorm2d {
        BatchNorm2d {
            weight: vs.var("weight", &[c], Init::Const(1.0)),
            bias: vs.var("bias", &[c], Init::Const(0.0)),
            running_mean: vs.zeros_no_train("running_mean", &[c]),
            running_var: vs.ones_no_train("running_var", &[c]),
            num_batches_tracked: vs.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, vs.device())), false),
            eps,
            momentum,
            folded: false,
        }
    }

    /// torchvision's defaults: eps 1e-5, momentum 0.1.
    pub fn torch_default(vs: &nn::Path, c: i64) -> BatchNorm2d {
        Self::new(vs, c, 1e-5, 0.1)
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if self.folded {
            return xs.shallow_clone();
        }
        let train = train && self.weight.requires_grad();
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        xs.batch_norm(Some(&self.weight), Some(&self.bias), Some(&self.running_mean), Some(&self.running_var), train, self.momentum, self.eps, false)
    }
}
