//! The classifier head: `Gemm` per linear layer with the activation between (dropout is the
//! identity in eval mode and is not emitted, as in `torch.onnx.export`).

use model::{Activation, HeadConfig};

use crate::graph::{Graph, Param, Params};
use crate::Error;

/// Emits the head on `features`; returns the logits. Hidden layer `i` is `classifier.{3i}`, the
/// output layer `classifier.{3·len(hidden)}` (the model crate's names).
pub fn head(g: &mut Graph, p: &Params, cfg: &HeadConfig, features: &str) -> Result<String, Error> {
    let mut x = features.to_string();
    for i in 0..cfg.hidden.len() {
        x = g.linear(&x, p, &format!("classifier.{}", 3 * i))?;
        x = activation(g, &x, &format!("classifier.{}", 3 * i + 1), cfg.activation);
    }
    g.linear(&x, p, &format!("classifier.{}", 3 * cfg.hidden.len()))
}

fn scalar(g: &mut Graph, name: &str, v: f32) -> String {
    g.initializer(name, Param { shape: vec![], data: vec![v] })
}

/// The activation as `torch.onnx.export` (opset 17) writes it.
fn activation(g: &mut Graph, x: &str, scope: &str, a: Activation) -> String {
    match a {
        Activation::Relu => g.relu(x, scope),
        Activation::Relu6 => g.clip(x, scope, 0.0, 6.0),
        Activation::Tanh => g.node(scope, "Tanh", &[x], vec![]),
        Activation::Silu => {
            let s = g.node(scope, "Sigmoid", &[x], vec![]);
            g.node(scope, "Mul", &[x, &s], vec![])
        }
        Activation::Gelu => {
            // 0.5 · x · (1 + erf(x / √2)), the exact GELU.
            let sqrt2 = scalar(g, &format!("{scope}.sqrt2"), std::f32::consts::SQRT_2);
            let one = scalar(g, &format!("{scope}.one"), 1.0);
            let half = scalar(g, &format!("{scope}.half"), 0.5);
            let d = g.node(scope, "Div", &[x, &sqrt2], vec![]);
            let e = g.node(scope, "Erf", &[&d], vec![]);
            let a = g.node(scope, "Add", &[&e, &one], vec![]);
            let m = g.node(scope, "Mul", &[x, &a], vec![]);
            g.node(scope, "Mul", &[&m, &half], vec![])
        }
    }
}
