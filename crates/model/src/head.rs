//! The classifier head: `Linear → activation → Dropout` per hidden size, then a final `Linear`.
//!
//! Naming follows a PyTorch `nn.Sequential` with three modules per hidden layer, so the default
//! head (`hidden = [512]`) has exactly the seed's names: `classifier.0` (Linear F→512),
//! `classifier.1` ReLU, `classifier.2` Dropout, `classifier.3` (Linear 512→C). In general hidden
//! layer `i` is `classifier.{3i}` and the output layer is `classifier.{3·len(hidden)}`.
//! The output is logits; the seed's `LogSoftmax` + NLL equals `log_softmax(logits)` + NLL, i.e.
//! cross-entropy on these logits.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::Error;

/// Non-linearity between hidden layers of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)` (the seed's choice).
    #[default]
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x · sigmoid(x)`.
    Silu,
    /// Exact (erf) GELU.
    Gelu,
    /// Hyperbolic tangent.
    Tanh,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            Activation::Relu => xs.relu(),
            Activation::Relu6 => xs.clamp(0.0, 6.0),
            Activation::Silu => xs.silu(),
            Activation::Gelu => xs.gelu("none"),
            Activation::Tanh => xs.tanh(),
        }
    }
}

/// Shape of the classifier head. `Default` is the seed's head: one hidden layer of 512, ReLU,
/// dropout 0.2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Widths of the hidden layers, in order (`[]` gives a single linear layer).
    pub hidden: Vec<i64>,
    /// Activation after every hidden layer.
    #[serde(default)]
    pub activation: Activation,
    /// Dropout probability after every hidden activation, in `[0, 1)`.
    pub dropout: f64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig { hidden: vec![512], activation: Activation::Relu, dropout: 0.2 }
    }
}

impl HeadConfig {
    /// Checks that all widths are positive and the dropout is in `[0, 1)`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.hidden.iter().any(|&h| h <= 0) || !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("invalid head configuration {self:?}")));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct Head {
    layers: Vec<nn::Linear>,
    activation: Activation,
    dropout: f64,
}

impl Head {
    /// Builds the head under `vs` (the `classifier` path). PyTorch's default `nn.Linear` init.
    pub fn new(vs: &nn::Path, cfg: &HeadConfig, in_dim: i64, num_classes: i64) -> Result<Head, Error> {
        cfg.validate()?;
        if num_classes <= 0 || in_dim <= 0 {
            return Err(Error::Config(format!("head needs positive sizes, got in {in_dim}, classes {num_classes}")));
        }
        let mut layers = Vec::new();
        let mut d = in_dim;
        for (i, &h) in cfg.hidden.iter().chain(std::iter::once(&num_classes)).enumerate() {
            layers.push(nn::linear(vs / (3 * i), d, h, Default::default()));
            d = h;
        }
        Ok(Head { layers, activation: cfg.activation, dropout: cfg.dropout })
    }

    /// Features `[N, d]` → logits `[N, classes]`, one batched product per layer (what training
    /// and the exporters' traces use).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_batch(xs, train, Kind::Float)
    }

    /// [`Head::forward_t`] with every matrix product in `kind` (what `torch.autocast` does to a
    /// linear layer): inputs, weights and biases are cast to `kind` for the product, and the
    /// logits come back as f32. The weights stay f32, so their gradients and the optimiser's
    /// updates are f32 too. `Kind::Float` is `forward_t` itself.
    pub fn forward_t_as(&self, xs: &Tensor, train: bool, kind: Kind) -> Tensor {
        self.forward_batch(xs, train, kind)
    }

    /// Evaluation logits with every row run alone (`[1, d]` products), so that a row's logits do
    /// not depend on its batch mates or its position among them: with some shapes, a CPU's matrix
    /// product rounds rows differently by their position (seen with libtorch 2.13 on a Xeon with
    /// AVX-512 FP16 at d = 64, 3 classes), and an image's answer must be the same in any batch
    /// (sharded prediction merges to one process's bytes; serve batches requests).
    pub fn forward_rows(&self, xs: &Tensor) -> Tensor {
        let n = xs.size().first().copied().unwrap_or(0);
        if xs.dim() != 2 || n <= 1 {
            return self.forward_batch(xs, false, Kind::Float);
        }
        let rows: Vec<Tensor> = (0..n).map(|i| self.forward_batch(&xs.narrow(0, i, 1), false, Kind::Float)).collect();
        Tensor::cat(&rows, 0)
    }

    /// The layers in order, each product in `kind` (f32: `nn::Linear`'s own product, untouched).
    fn forward_batch(&self, xs: &Tensor, train: bool, kind: Kind) -> Tensor {
        let (last, hidden) = match self.layers.split_last() {
            Some(v) => v,
            None => return xs.shallow_clone(),
        };
        let linear = |l: &nn::Linear, x: &Tensor| match kind {
            Kind::Float => l.forward(x),
            _ => x.linear(&l.ws.to_kind(kind), l.bs.as_ref().map(|b| b.to_kind(kind))),
        };
        let mut x = if kind == Kind::Float { xs.shallow_clone() } else { xs.to_kind(kind) };
        for l in hidden {
            x = self.activation.apply(&linear(l, &x));
            if self.dropout > 0.0 {
                x = x.dropout(self.dropout, train);
            }
        }
        let logits = linear(last, &x);
        if kind == Kind::Float {
            logits
        } else {
            logits.to_kind(Kind::Float)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// bf16 products give logits near f32's, in f32, and their gradients reach the f32 weights.
    #[test]
    fn bf16_products_train_the_f32_weights() {
        let _g = crate::random_generator_lock();
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = HeadConfig { hidden: vec![32], activation: Activation::Relu, dropout: 0.0 };
        let head = Head::new(&(vs.root() / "classifier"), &cfg, 64, 5).expect("head");
        let x = Tensor::randn([8, 64], (Kind::Float, Device::Cpu));
        let f32_logits = head.forward_t(&x, false);
        assert!(head.forward_t_as(&x, false, Kind::Float).equal(&f32_logits), "f32 is forward_t itself");
        let bf16 = head.forward_t_as(&x, true, Kind::BFloat16);
        assert_eq!(bf16.kind(), Kind::Float);
        let diff = (&bf16 - &f32_logits).abs().max().double_value(&[]);
        let scale = f32_logits.abs().max().double_value(&[]);
        // bf16 keeps 8 bits of mantissa: products of 64 terms land within a few percent.
        assert!(diff > 0.0 && diff < 0.05 * scale, "bf16 logits differ by {diff} at scale {scale}");
        bf16.sum(Kind::Float).backward();
        for (name, v) in vs.variables() {
            assert_eq!(v.kind(), Kind::Float, "{name} stays f32");
            assert!(v.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name} has a gradient");
        }
    }

    /// A row's logits are the same bits alone, in a batch, and at any position in it: the shapes
    /// include d = 64 with 3 classes, whose batched product rounds rows by position on the Xeon
    /// (AVX-512 FP16) this project's CI runs on, and the heads of the real backbones.
    #[test]
    fn row_logits_do_not_depend_on_the_batch() {
        let _g = crate::random_generator_lock();
        tch::manual_seed(11);
        for (d, hidden, classes) in [(64, vec![], 3), (64, vec![16], 3), (1280, vec![], 102), (1024, vec![512], 102)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = HeadConfig { hidden, ..HeadConfig::default() };
            let head = Head::new(&vs.root(), &cfg, d, classes).expect("head");
            let x = Tensor::randn([5, d], (Kind::Float, Device::Cpu));
            let batch = tch::no_grad(|| head.forward_rows(&x));
            let alone: Vec<Tensor> = (0..5).map(|i| tch::no_grad(|| head.forward_rows(&x.narrow(0, i, 1)))).collect();
            for perm in [[4i64, 3, 2, 1, 0], [1, 2, 3, 4, 0], [2, 0, 4, 1, 3]] {
                let idx = Tensor::from_slice(&perm);
                let moved = tch::no_grad(|| head.forward_rows(&x.index_select(0, &idx)));
                for (pos, &row) in perm.iter().enumerate() {
                    let a = Vec::<f32>::try_from(moved.get(pos as i64)).expect("row");
                    let b = Vec::<f32>::try_from(batch.get(row)).expect("row");
                    let c = Vec::<f32>::try_from(alone[row as usize].get(0)).expect("row");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "d {d}, {classes} classes: row {row} at position {pos} of {perm:?}");
                    assert_eq!(bits(&a), bits(&c), "d {d}, {classes} classes: row {row} alone");
                }
            }
        }
    }
}
