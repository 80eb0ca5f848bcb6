//! Adam, AdamW and SGD with momentum, implemented on tch tensors so that their whole state can be
//! saved in a checkpoint and restored bit for bit (libtorch's C++ optimisers do not expose theirs
//! through tch). The update rules are PyTorch's (`torch.optim.Adam`, `AdamW`, `SGD`, defaults
//! betas (0.9, 0.999), eps 1e-8, dampening 0, no Nesterov).

use std::collections::BTreeMap;

use checkpoint::TensorMap;
use tch::Tensor;

use crate::config::OptimizerKind;
use crate::tensors::{from_data, to_data};
use crate::Error;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// One trainable parameter and its learning-rate multiplier.
pub struct Param {
    /// Variable name in the model (keys the state).
    pub name: String,
    /// The variable (shares storage with the VarStore).
    pub tensor: Tensor,
    /// Multiplier of the base learning rate (fine-tuning gives the backbone a smaller one).
    pub lr_scale: f64,
}

/// An optimiser with explicit, serialisable state.
pub struct Optimizer {
    kind: OptimizerKind,
    momentum: f64,
    weight_decay: f64,
    params: Vec<Param>,
    /// Per parameter: Adam's (m, v) or SGD's momentum buffer (in `.0`).
    state: BTreeMap<String, (Tensor, Tensor)>,
    step: i64,
}

impl Optimizer {
    /// A fresh optimiser over `params`.
    pub fn new(kind: OptimizerKind, momentum: f64, weight_decay: f64, params: Vec<Param>) -> Self {
        Optimizer { kind, momentum, weight_decay, params, state: BTreeMap::new(), step: 0 }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Clears the gradients of every parameter.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// One update with base learning rate `lr`, from the gradients left by `backward()`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let t = self.step as f64;
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * p.lr_scale;
                let mut g = grad.shallow_clone();
                if self.weight_decay != 0.0 && self.kind != OptimizerKind::Adamw {
                    g = &g + &p.tensor * self.weight_decay;
                }
                match self.kind {
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        if self.kind == OptimizerKind::Adamw && self.weight_decay != 0.0 {
                            let _ = p.tensor.g_mul_scalar_(1.0 - lr * self.weight_decay);
                        }
                        let (m, v) = self.state.entry(p.name.clone()).or_insert_with(|| (p.tensor.zeros_like(), p.tensor.zeros_like()));
                        let _ = m.g_mul_scalar_(BETA1).g_add_(&(&g * (1.0 - BETA1)));
                        let _ = v.g_mul_scalar_(BETA2).g_add_(&(&g * &g * (1.0 - BETA2)));
                        let bc1 = 1.0 - BETA1.powf(t);
                        let bc2 = 1.0 - BETA2.powf(t);
                        let denom = (v.sqrt() / bc2.sqrt()) + EPS;
                        let update = (&*m / &denom) * (lr / bc1);
                        let _ = p.tensor.g_sub_(&update);
                    }
                    OptimizerKind::Sgd => {
                        let buf = match self.state.get_mut(&p.name) {
                            Some((b, _)) => {
                                let _ = b.g_mul_scalar_(self.momentum).g_add_(&g);
                                b.shallow_clone()
                            }
                            None => {
                                let b = g.detach().copy();
                                self.state.insert(p.name.clone(), (b.shallow_clone(), Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu))));
                                b
                            }
                        };
                        let upd = if self.momentum != 0.0 { buf } else { g };
                        let _ = p.tensor.g_sub_(&(upd * lr));
                    }
                }
            }
        });
    }

    /// The state as named tensors (under `prefix`) plus the step count.
    pub fn export(&self, prefix: &str) -> Result<(TensorMap, i64), Error> {
        let mut out = TensorMap::new();
        for (name, (a, b)) in &self.state {
            out.insert(format!("{prefix}{name}/0"), to_data(name, a)?);
            out.insert(format!("{prefix}{name}/1"), to_data(name, b)?);
        }
        Ok((out, self.step))
    }

    /// Restores state exported by [`Optimizer::export`].
    pub fn import(&mut self, tensors: &TensorMap, prefix: &str, step: i64) -> Result<(), Error> {
        self.state.clear();
        let device = self.params.first().map(|p| p.tensor.device()).unwrap_or(tch::Device::Cpu);
        for p in &self.params {
            let (ka, kb) = (format!("{prefix}{}/0", p.name), format!("{prefix}{}/1", p.name));
            if let (Some(a), Some(b)) = (tensors.get(&ka), tensors.get(&kb)) {
                self.state.insert(p.name.clone(), (from_data(&ka, a)?.to_device(device), from_data(&kb, b)?.to_device(device)));
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimises (x - 3)^2 from x = 0; PyTorch's Adam(lr=0.1) gives x = 0.1 after step 1 and
    /// 0.19998... after step 2 (bias-corrected), SGD(lr=0.1, momentum=0.9): 0.6, 1.62.
    fn run(kind: OptimizerKind, steps: usize) -> Vec<f64> {
        let x = Tensor::zeros([1], (tch::Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(kind, 0.9, 0.0, vec![Param { name: "x".into(), tensor: x.shallow_clone(), lr_scale: 1.0 }]);
        let mut out = Vec::new();
        for _ in 0..steps {
            opt.zero_grad();
            let loss = (&x - 3.0).pow_tensor_scalar(2).sum(tch::Kind::Double);
            loss.backward();
            opt.step(0.1);
            out.push(x.double_value(&[0]));
        }
        out
    }

    #[test]
    fn matches_pytorch_update_rules() {
        let adam = run(OptimizerKind::Adam, 2);
        assert!((adam[0] - 0.1).abs() < 1e-6, "{adam:?}");
        assert!((adam[1] - 0.2).abs() < 1e-3, "{adam:?}");
        let sgd = run(OptimizerKind::Sgd, 2);
        assert!((sgd[0] - 0.6).abs() < 1e-9 && (sgd[1] - 1.62).abs() < 1e-9, "{sgd:?}");
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let make = || Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let (a, b) = (make(), make());
        let mut oa = Optimizer::new(OptimizerKind::Adamw, 0.9, 0.01, vec![Param { name: "w".into(), tensor: a.shallow_clone(), lr_scale: 1.0 }]);
        let target = Tensor::from_slice(&[1.0f32, -2.0, 0.5]);
        let step = |x: &Tensor, o: &mut Optimizer| {
            o.zero_grad();
            (x - &target).pow_tensor_scalar(2).sum(tch::Kind::Float).backward();
            o.step(0.05);
        };
        for _ in 0..3 {
            step(&a, &mut oa);
        }
        let (state, n) = oa.export("optimizer/").expect("export");
        tch::no_grad(|| b.shallow_clone().copy_(&a));
        let mut ob = Optimizer::new(OptimizerKind::Adamw, 0.9, 0.01, vec![Param { name: "w".into(), tensor: b.shallow_clone(), lr_scale: 1.0 }]);
        ob.import(&state, "optimizer/", n).expect("import");
        step(&a, &mut oa);
        step(&b, &mut ob);
        assert_eq!(Vec::<f32>::try_from(&a).expect("a"), Vec::<f32>::try_from(&b).expect("b"));
    }
}
