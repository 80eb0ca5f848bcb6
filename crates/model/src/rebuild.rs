//! Rebuilding an old checkpoint's classifier head as this crate's [`HeadConfig`], without
//! executing any pickle code: from the pickled module tree when the file has one (class names
//! such as `torch.nn.modules.linear.Linear`, `ReLU`, `Dropout`, `LogSoftmax`, `Softmax` and their
//! attributes `in_features`, `out_features`, `p`, `dim`), else from the tensor names and shapes,
//! saying what was assumed.

use std::collections::BTreeMap;

use checkpoint::PickledModule;
use serde::Serialize;

use crate::{Activation, HeadConfig};

/// What the old head did to its last Linear layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFn {
    /// Nothing: logits (probabilities are their softmax).
    Logits,
    /// `LogSoftmax`: probabilities are `exp` of the output, i.e. the softmax of the logits.
    LogSoftmax,
    /// `Softmax`: the output is the probabilities.
    Softmax,
}

/// One Linear layer of the old head: its name prefix in the head's state dict and its sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadLayer {
    /// Prefix of `weight`/`bias` relative to the head (`fc1`, `hidden_layers.0`, `6`, `""`).
    pub prefix: String,
    /// `in_features`.
    pub in_features: i64,
    /// `out_features`.
    pub out_features: i64,
}

/// An old head, rebuilt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuiltHead {
    /// Linear layers in forward order.
    pub layers: Vec<HeadLayer>,
    /// The equivalent head of this crate (layer `i` becomes `classifier.{3i}`).
    pub config: HeadConfig,
    /// The output function.
    pub output: OutputFn,
    /// `"pickled module tree"` or `"tensor shapes"`.
    pub source: String,
    /// What had to be assumed, in words.
    pub assumptions: Vec<String>,
}

type Shapes = BTreeMap<String, Vec<i64>>;

fn join(prefix: &str, leaf: &str) -> String {
    if prefix.is_empty() {
        leaf.to_owned()
    } else {
        format!("{prefix}.{leaf}")
    }
}

/// Leaf modules in forward (registration) order with their paths; custom classes (whose
/// `forward` is unknown) are collected in `custom`.
fn leaves<'a>(m: &'a PickledModule, path: &str, out: &mut Vec<(String, &'a PickledModule)>, custom: &mut Vec<String>) {
    if m.children.is_empty() {
        out.push((path.to_owned(), m));
        return;
    }
    if !m.class.starts_with("torch.nn.modules.container.") {
        custom.push(m.class.clone());
    }
    for (name, c) in &m.children {
        leaves(c, &join(path, name), out, custom);
    }
}

fn activation_of(class: &str) -> Option<Activation> {
    Some(match class {
        "ReLU" => Activation::Relu,
        "ReLU6" => Activation::Relu6,
        "SiLU" => Activation::Silu,
        "GELU" => Activation::Gelu,
        "Tanh" => Activation::Tanh,
        _ => return None,
    })
}

/// Parses the leaves into layers, activation, dropout and output function.
struct Walk {
    layers: Vec<HeadLayer>,
    activations: Vec<Activation>,
    dropout: f64,
    output: OutputFn,
}

fn walk(leaves: &[(String, &PickledModule)]) -> Result<Walk, String> {
    let mut w = Walk { layers: Vec::new(), activations: Vec::new(), dropout: 0.0, output: OutputFn::Logits };
    for (path, m) in leaves {
        let class = m.short_class();
        if w.output != OutputFn::Logits && class != "Dropout" {
            return Err(format!("module {path:?} ({class}) follows the output {:?}", w.output));
        }
        match class {
            "Linear" => {
                let (Some(i), Some(o)) = (m.int("in_features"), m.int("out_features")) else {
                    return Err(format!("Linear {path:?} has no in_features/out_features"));
                };
                if w.layers.len() > w.activations.len() {
                    return Err(format!("Linear {path:?} follows another Linear with no activation between them"));
                }
                w.layers.push(HeadLayer { prefix: path.clone(), in_features: i, out_features: o });
            }
            "Dropout" => w.dropout = w.dropout.max(m.float("p").unwrap_or(0.5)),
            "LogSoftmax" | "Softmax" => {
                if m.int("dim").is_some_and(|d| d != 1 && d != -1) {
                    return Err(format!("{class} {path:?} over dim {:?}, expected the class dimension 1", m.int("dim")));
                }
                w.output = if class == "LogSoftmax" { OutputFn::LogSoftmax } else { OutputFn::Softmax };
            }
            "Identity" | "Flatten" => {}
            c => match activation_of(c) {
                Some(a) if w.layers.len() == w.activations.len() + 1 => w.activations.push(a),
                Some(_) => return Err(format!("activation {path:?} ({c}) does not follow a Linear layer")),
                None => return Err(format!("module {path:?} of class {} is not supported in a head", m.class)),
            },
        }
    }
    Ok(w)
}

/// Rebuilds the head from its pickled module tree. Custom classes (e.g. Udacity's
/// `Network` with `hidden_layers` and `output`) have an unknown `forward`: ReLU between the
/// Linear layers and a LogSoftmax output are then assumed and said so.
pub fn from_module(m: &PickledModule) -> Result<RebuiltHead, String> {
    let mut ls = Vec::new();
    let mut custom = Vec::new();
    leaves(m, "", &mut ls, &mut custom);
    if custom.is_empty() {
        return finish(walk(&ls)?, "pickled module tree", Vec::new());
    }
    let mut w = walk_custom(&ls)?;
    w.activations = vec![Activation::Relu; w.layers.len().saturating_sub(1)];
    let assumptions = vec![format!(
        "the forward of {} is not stored in the file: assumed ReLU and dropout after every hidden Linear and a log_softmax output (as in the Udacity Network class)",
        custom.join(", ")
    )];
    finish(w, "pickled module tree", assumptions)
}

/// Custom modules list their children by attribute, not in forward order: take the Linear
/// layers (in order) and the dropout, ignore the rest.
fn walk_custom(ls: &[(String, &PickledModule)]) -> Result<Walk, String> {
    let mut w = Walk { layers: Vec::new(), activations: Vec::new(), dropout: 0.0, output: OutputFn::LogSoftmax };
    for (path, m) in ls {
        match m.short_class() {
            "Linear" => w.layers.push(HeadLayer {
                prefix: path.clone(),
                in_features: m.int("in_features").ok_or_else(|| format!("Linear {path:?} has no in_features"))?,
                out_features: m.int("out_features").ok_or_else(|| format!("Linear {path:?} has no out_features"))?,
            }),
            "Dropout" => w.dropout = w.dropout.max(m.float("p").unwrap_or(0.5)),
            _ => {}
        }
    }
    Ok(w)
}

fn finish(w: Walk, source: &str, mut assumptions: Vec<String>) -> Result<RebuiltHead, String> {
    if w.layers.is_empty() {
        return Err("the head has no Linear layer".into());
    }
    if w.activations.len() + 1 != w.layers.len() {
        return Err(format!("{} Linear layer(s) but {} activation(s) between them", w.layers.len(), w.activations.len()));
    }
    for pair in w.layers.windows(2) {
        if pair[0].out_features != pair[1].in_features {
            return Err(format!(
                "Linear {:?} gives {} features but the next Linear {:?} takes {}",
                pair[0].prefix, pair[0].out_features, pair[1].prefix, pair[1].in_features
            ));
        }
    }
    let activation = w.activations.first().copied().unwrap_or_default();
    if w.activations.iter().any(|&a| a != activation) {
        return Err(format!("mixed activations {:?} between Linear layers cannot be represented", w.activations));
    }
    if w.dropout >= 1.0 {
        return Err(format!("dropout p = {} is not below 1", w.dropout));
    }
    let hidden: Vec<i64> = w.layers[..w.layers.len() - 1].iter().map(|l| l.out_features).collect();
    if hidden.is_empty() && w.dropout > 0.0 {
        assumptions.push(format!("dropout p={} before the only Linear layer is dropped (no hidden layer to follow)", w.dropout));
    }
    let config = HeadConfig { hidden, activation, dropout: w.dropout };
    Ok(RebuiltHead { layers: w.layers, config, output: w.output, source: source.into(), assumptions })
}

/// Natural-order sort key: `fc2` < `fc10`, `hidden_layers.1` < `hidden_layers.2`, and the usual
/// names of an output layer last.
fn order_key(prefix: &str) -> (u8, Vec<(String, u64)>) {
    let last = prefix.rsplit('.').next().unwrap_or(prefix);
    let rank = u8::from(matches!(last, "output" | "out" | "logits" | "last" | "final" | "classifier" | "head"));
    let mut parts = Vec::new();
    for seg in prefix.split('.') {
        let digits = seg.len() - seg.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (stem, num) = seg.split_at(seg.len() - digits);
        parts.push((stem.to_owned(), num.parse().unwrap_or(0)));
    }
    (rank, parts)
}

/// Rebuilds the head from the names and shapes of its tensors (relative to the head): 2-D
/// `weight`s are Linear layers, ordered by name (numbered Sequential `0`, `3`, ...; `fc1`,
/// `fc2`; `hidden_layers.N` then `output`). ReLU between them, dropout 0.5 for fine-tuning and a
/// LogSoftmax output (the seed's) are assumed and said so.
pub fn from_shapes(shapes: &Shapes) -> Result<RebuiltHead, String> {
    let mut layers = Vec::new();
    for (k, s) in shapes {
        let (prefix, leaf) = match k.rsplit_once('.') {
            Some((p, l)) => (p.to_owned(), l),
            None => (String::new(), k.as_str()),
        };
        match (leaf, s.as_slice()) {
            ("weight", [o, i]) => layers.push(HeadLayer { prefix, in_features: *i, out_features: *o }),
            ("bias", [_]) => {}
            _ => return Err(format!("head tensor {k:?} of shape {s:?} is not a Linear weight or bias (only Linear heads are supported)")),
        }
    }
    layers.sort_by_key(|l| order_key(&l.prefix));
    let n = layers.len();
    let w = Walk {
        layers,
        activations: vec![Activation::Relu; n.saturating_sub(1)],
        dropout: if n > 1 { 0.5 } else { 0.0 },
        output: OutputFn::LogSoftmax,
    };
    let assumptions = vec![
        "no pickled module tree in the file: the head was rebuilt from tensor names and shapes, assuming ReLU between Linear layers, dropout 0.5 (used only when fine-tuning) and a log_softmax output (the seed's)".to_string(),
    ];
    finish(w, "tensor shapes", assumptions)
}
