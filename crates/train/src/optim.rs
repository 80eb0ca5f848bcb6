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
        // torch 2.13, float64: [0.09999999983333333, 0.199897292585211] (eps and bias correction matter).
        assert!((adam[0] - 0.09999999983333333).abs() < 1e-15 && (adam[1] - 0.199897292585211).abs() < 1e-13, "{adam:?}");
        let sgd = run(OptimizerKind::Sgd, 2);
        assert!((sgd[0] - 0.6).abs() < 1e-9 && (sgd[1] - 1.62).abs() < 1e-9, "{sgd:?}");
    }

    /// Two parameters (the second with lr_scale 0.5, i.e. a PyTorch param group at half the lr),
    /// weight decay, 3 steps, in float64; expected values from torch 2.13 (`torch.optim.Adam`,
    /// `AdamW`, `SGD` with and without momentum), made by this script:
    ///
    /// ```python
    /// x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    /// y = torch.tensor([1.5, -0.25], dtype=torch.float64, requires_grad=True)
    /// groups = [{"params": [x], "lr": 0.1}, {"params": [y], "lr": 0.05}]
    /// opt = torch.optim.Adam(groups, lr=0.1, weight_decay=0.01)  # or AdamW(wd=0.05), SGD(momentum=0.9, wd=0.01), SGD(momentum=0, wd=0.02)
    /// t, w = torch.tensor([3.0, 1.0, -2.0]), torch.tensor([1.0, 2.0, 0.5])  # float64
    /// for _ in range(3):
    ///     opt.zero_grad(); (((x - t) ** 2 * w).sum() + (y ** 3).sum()).backward(); opt.step()
    /// ```
    #[test]
    fn matches_pytorch_with_weight_decay_lr_scale_and_two_params() {
        let cases: [(OptimizerKind, f64, f64, [f64; 5]); 4] = [
            (OptimizerKind::Adam, 0.9, 0.01, [0.7995226296539225, -0.7006243664975166, 1.7002753892942493, 1.3504336878405905, -0.3990586246607039]),
            (OptimizerKind::Adamw, 0.9, 0.05, [0.79058186708242, -0.6872328256596818, 1.6719514552908772, 1.3396286033108888, -0.3968693451425493]),
            (OptimizerKind::Sgd, 0.9, 0.01, [2.8404576995, 2.0806468010000003, -0.06443120199999992, 0.1330424909348879, -0.3053906413098024]),
            (OptimizerKind::Sgd, 0.0, 0.02, [1.7149671960000001, 0.5683944080000001, 0.9074207839999998, 0.8191289265741416, -0.2795179282907459]),
        ];
        let f64s = |v: &[f64]| Tensor::from_slice(v).set_requires_grad(true);
        for (kind, momentum, wd, want) in cases {
            let (x, y) = (f64s(&[0.5, -1.0, 2.0]), f64s(&[1.5, -0.25]));
            // A third parameter that never gets a gradient must be left alone.
            let z = f64s(&[7.0]);
            let params = vec![
                Param { name: "x".into(), tensor: x.shallow_clone(), lr_scale: 1.0 },
                Param { name: "y".into(), tensor: y.shallow_clone(), lr_scale: 0.5 },
                Param { name: "z".into(), tensor: z.shallow_clone(), lr_scale: 1.0 },
            ];
            let mut opt = Optimizer::new(kind, momentum, wd, params);
            let (t, w) = (Tensor::from_slice(&[3.0f64, 1.0, -2.0]), Tensor::from_slice(&[1.0f64, 2.0, 0.5]));
            for _ in 0..3 {
                opt.zero_grad();
                let loss = ((&x - &t).pow_tensor_scalar(2) * &w).sum(tch::Kind::Double) + y.pow_tensor_scalar(3).sum(tch::Kind::Double);
                loss.backward();
                opt.step(0.1);
            }
            assert_eq!(opt.steps(), 3);
            let got: Vec<f64> = Vec::<f64>::try_from(&x).expect("x").into_iter().chain(Vec::<f64>::try_from(&y).expect("y")).collect();
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12, "{kind:?} momentum {momentum} wd {wd}: {got:?} vs torch {want:?}");
            }
            assert_eq!(z.double_value(&[0]), 7.0, "{kind:?}: a parameter without a gradient moved");
            // The exported state holds both parameters with gradients, not the third.
            let (state, n) = opt.export("o/").expect("export");
            assert_eq!(n, 3);
            assert_eq!(state.keys().cloned().collect::<Vec<_>>(), ["o/x/0", "o/x/1", "o/y/0", "o/y/1"]);
        }
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
