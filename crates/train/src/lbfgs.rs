//! A multinomial logistic regression on frozen features, fitted to convergence by full-batch
//! L-BFGS: the classical baseline for a linear head (what scikit-learn's `LogisticRegression`
//! computes), which a sweep of heads trained by minibatch must beat to be worth its epochs.
//!
//! The objective is the mean cross-entropy of `x·Wᵀ + b` plus `l2/2 · ‖W‖²` (the bias is not
//! penalised). L-BFGS keeps the last `HISTORY` steps and gradient changes (Nocedal & Wright,
//! Numerical Optimization, algorithm 7.4) and takes the largest step of 1, 1/2, 1/4, ... that
//! satisfies the Armijo condition. Gradients are the closed form `(softmax − onehot)ᵀ·x / n`.

use tch::{Kind, Tensor};

use crate::Error;

/// Steps kept by the two-loop recursion.
const HISTORY: usize = 10;

/// A fitted regression.
#[derive(Debug)]
pub struct LogisticFit {
    /// Weights `[C, D]`.
    pub weight: Tensor,
    /// Biases `[C]`.
    pub bias: Tensor,
    /// The L2 strength it was fitted with.
    pub l2: f64,
    /// L-BFGS iterations run.
    pub iterations: usize,
    /// The objective at the end.
    pub loss: f64,
    /// Whether the gradient's largest entry fell below the tolerance.
    pub converged: bool,
}

impl LogisticFit {
    /// Top-1 accuracy on features `x` `[N, D]` with labels `y` `[N]`.
    pub fn accuracy(&self, x: &Tensor, y: &Tensor) -> f64 {
        let logits = x.to_kind(Kind::Double).matmul(&self.weight.tr()) + &self.bias;
        logits.argmax(1, false).eq_tensor(y).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
    }
}

/// Objective and gradient at `theta` (`[C·D + C]`: the weights row-major, then the biases).
fn objective(theta: &Tensor, x: &Tensor, onehot: &Tensor, l2: f64) -> (f64, Tensor) {
    let (c, d) = (onehot.size()[1], x.size()[1]);
    let w = theta.narrow(0, 0, c * d).view([c, d]);
    let b = theta.narrow(0, c * d, c);
    let logits = x.matmul(&w.tr()) + &b;
    let logp = logits.log_softmax(1, Kind::Double);
    let n = x.size()[0] as f64;
    let loss = -(&logp * onehot).sum(Kind::Double).double_value(&[]) / n + 0.5 * l2 * (&w * &w).sum(Kind::Double).double_value(&[]);
    let delta = logp.exp() - onehot;
    let gw = delta.tr().matmul(x) / n + &w * l2;
    let gb = delta.sum_dim_intlist([0i64].as_slice(), false, Kind::Double) / n;
    (loss, Tensor::cat(&[gw.flatten(0, -1), gb], 0))
}

/// Fits the regression on features `x` `[N, D]` and labels `y` `[N]` (in `0..classes`), with L2
/// strength `l2`, for at most `max_iter` iterations or until the gradient's largest entry is below
/// `tol`. Computes in float64.
pub fn fit_logistic(x: &Tensor, y: &Tensor, classes: i64, l2: f64, max_iter: usize, tol: f64) -> Result<LogisticFit, Error> {
    if x.dim() != 2 || y.size() != [x.size()[0]] || x.size()[0] == 0 {
        return Err(Error::Config(format!("logistic regression needs features [N, D] and N labels, got {:?} and {:?}", x.size(), y.size())));
    }
    if !(l2 >= 0.0 && l2.is_finite()) {
        return Err(Error::Config(format!("the L2 strength {l2} is not a non-negative number")));
    }
    let x = x.to_kind(Kind::Double);
    let onehot = y.to_kind(Kind::Int64).one_hot(classes).to_kind(Kind::Double);
    let d = x.size()[1];
    let mut theta = Tensor::zeros([classes * d + classes], (Kind::Double, x.device()));
    let (mut f, mut g) = objective(&theta, &x, &onehot, l2);
    let mut hist: std::collections::VecDeque<(Tensor, Tensor, f64)> = std::collections::VecDeque::new();
    let mut iterations = 0;
    let mut converged = false;
    while iterations < max_iter {
        if g.abs().max().double_value(&[]) < tol {
            converged = true;
            break;
        }
        // Two-loop recursion: p = −H·g.
        let mut q = g.copy(); // updated in place below: not a view of g
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * s.dot(&q).double_value(&[]);
            q -= yv * a;
            alphas.push(a);
        }
        let gamma =
            hist.back().map_or(1.0 / g.norm().double_value(&[]).max(1e-12), |(s, yv, _)| s.dot(yv).double_value(&[]) / yv.dot(yv).double_value(&[]));
        let mut r = q * gamma;
        for ((s, yv, rho), a) in hist.iter().zip(alphas.into_iter().rev()) {
            let beta = rho * yv.dot(&r).double_value(&[]);
            r += s * (a - beta);
        }
        let mut p = -r;
        let mut slope = g.dot(&p).double_value(&[]);
        if slope >= 0.0 {
            // Not a descent direction (curvature lost): restart from steepest descent.
            hist.clear();
            p = -&g / g.norm().double_value(&[]).max(1e-12);
            slope = g.dot(&p).double_value(&[]);
        }
        // Backtracking line search with the Armijo condition.
        let mut step = 1.0;
        let (mut f_new, mut g_new, mut theta_new);
        let found = loop {
            theta_new = &theta + &p * step;
            (f_new, g_new) = objective(&theta_new, &x, &onehot, l2);
            if f_new <= f + 1e-4 * step * slope {
                break true;
            }
            if step < 1e-10 {
                break false;
            }
            step *= 0.5;
        };
        if !found {
            // The quasi-Newton direction failed: forget the curvature pairs and try steepest
            // descent; when even that fails, the objective cannot be lowered at this precision.
            iterations += 1;
            if hist.is_empty() {
                converged = g.abs().max().double_value(&[]) < tol.sqrt();
                break;
            }
            hist.clear();
            continue;
        }
        let s = &theta_new - &theta;
        let yv = &g_new - &g;
        let sy = s.dot(&yv).double_value(&[]);
        if sy > 1e-12 {
            if hist.len() == HISTORY {
                hist.pop_front();
            }
            hist.push_back((s, yv, 1.0 / sy));
        }
        let improvement = f - f_new;
        (theta, f, g) = (theta_new, f_new, g_new);
        iterations += 1;
        if improvement.abs() < 1e-14 * f.abs().max(1.0) {
            converged = g.abs().max().double_value(&[]) < tol.sqrt();
            break;
        }
    }
    let weight = theta.narrow(0, 0, classes * d).view([classes, d]).copy();
    let bias = theta.narrow(0, classes * d, classes).copy();
    Ok(LogisticFit { weight, bias, l2, iterations, loss: f, converged })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian blobs in 5 dimensions: the fitted regression separates them, its gradient
    /// is zero at the end, and it is the minimum (perturbing it raises the objective).
    #[test]
    fn converges_to_the_minimum_on_separable_blobs() {
        // Noise from a fixed integer sequence, not libtorch's generator (which other tests of the
        // process draw from concurrently).
        let n = 300;
        let y = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(3);
        let centres = Tensor::from_slice(&[2.0f64, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, -1.0, 0.0, -2.0, -2.0, 0.0, 0.0, 1.0]).view([3, 5]);
        let mut state = 12345u64;
        let noise: Vec<f64> = (0..n * 5)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let x = centres.index_select(0, &y) + Tensor::from_slice(&noise).view([n, 5]) * 1.5;
        let fit = fit_logistic(&x, &y, 3, 1e-2, 500, 1e-8).unwrap();
        assert!(fit.converged, "{fit:?}");
        assert!(fit.accuracy(&x, &y) > 0.95);
        let onehot = y.one_hot(3).to_kind(Kind::Double);
        let theta = Tensor::cat(&[fit.weight.flatten(0, -1), fit.bias.shallow_clone()], 0);
        let (f, g) = objective(&theta, &x.to_kind(Kind::Double), &onehot, 1e-2);
        assert!((f - fit.loss).abs() < 1e-12);
        assert!(g.abs().max().double_value(&[]) < 1e-8);
        for k in 0..theta.size()[0] {
            let e = theta.zeros_like();
            let _ = e.get(k).fill_(1e-3);
            assert!(objective(&(&theta + &e), &x, &onehot, 1e-2).0 > f && objective(&(&theta - &e), &x, &onehot, 1e-2).0 > f);
        }
        // A stronger penalty gives smaller weights.
        let strong = fit_logistic(&x, &y, 3, 1.0, 500, 1e-8).unwrap();
        assert!(strong.weight.norm().double_value(&[]) < fit.weight.norm().double_value(&[]));
        assert!(fit_logistic(&x, &y.narrow(0, 0, 10), 3, 1e-2, 10, 1e-8).is_err());
    }
}
