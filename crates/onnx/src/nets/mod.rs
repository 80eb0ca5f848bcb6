//! One ONNX graph description per architecture family, written with the layer methods of
//! [`Graph`] and the PyTorch module names of the model crate (see its crate docs).
//!
//! Adding a family: write `fn name(g, params, config, input) -> Result<String, Error>` that emits
//! its backbone from the input to the pooled, flattened features (the head's input), and add a
//! match arm in [`backbone`] (the match on [`Family`] is exhaustive, so a new family of the model
//! crate does not compile until it has one). The exporter is checked by `tests/it/onnx_tract.rs`,
//! which compares the ONNX file run by tract with petal's libtorch forward for every architecture.

mod densenet;
mod efficientnet;
mod head;
mod plain;
mod resnet;

use model::{Arch, Family};

use crate::graph::{Graph, Param, Params};
use crate::Error;

pub use head::head;

/// Emits the backbone of `arch` reading `input` (`[batch, 3, side, side]`); returns the pooled
/// features `[batch, F]`.
pub fn backbone(g: &mut Graph, params: &Params, arch: &Arch, side: i64, input: &str) -> Result<String, Error> {
    match arch.family() {
        Family::DenseNet(cfg) => densenet::densenet(g, params, &cfg, input),
        Family::Lite(cfg) => efficientnet::lite(g, params, &cfg, input, None),
        Family::Plain(spec) => plain::plain(g, params, &spec, side, input),
        Family::ResNet(cfg) => resnet::resnet(g, params, &cfg, input),
        Family::Ensemble(members) => {
            let mut feats = Vec::with_capacity(members.len());
            for (i, m) in members.iter().enumerate() {
                feats.push(backbone(g, &params.scoped(&format!("members.{i}.")), m, side, input)?);
            }
            let feats: Vec<&str> = feats.iter().map(String::as_str).collect();
            Ok(g.concat(&feats, "members", 1))
        }
        Family::Rescaled(inner, size) => {
            let size = i64::from(size);
            let x = resample(g, input, side, size);
            backbone(g, params, &inner, size, &x)
        }
    }
}

/// `input` (`[batch, C, side, side]`) resampled to `size` px as [`model::resample::resample`] does:
/// `MatMul(A, x)` then `MatMul(·, Aᵀ)` with Pillow's antialiased bilinear matrix `A`
/// (`[size, side]`) held as initializers.
fn resample(g: &mut Graph, input: &str, side: i64, size: i64) -> String {
    let a = model::resample::resample_matrix(side as usize, size as usize);
    let mut at = vec![0f32; a.len()];
    for (i, row) in a.chunks_exact(side as usize).enumerate() {
        for (j, v) in row.iter().enumerate() {
            at[j * size as usize + i] = *v;
        }
    }
    let scope = format!("resample{size}");
    let a = g.initializer(&format!("{scope}.rows"), Param { shape: vec![size, side], data: a });
    let at = g.initializer(&format!("{scope}.cols"), Param { shape: vec![side, size], data: at });
    let y = g.node(&scope, "MatMul", &[&a, input], vec![]);
    g.node(&scope, "MatMul", &[&y, &at], vec![])
}

/// Emits the frozen part of a split network: the first `units` units of `arch`'s backbone (see
/// `model::Arch::backbone_blocks`) reading `input`; returns the activation map there
/// `[batch, C, H, W]`, what `model::Classifier::activations` computes. EfficientNet-Lite, alone or
/// in an ensemble (the members' maps concatenated along the channels), as partial mode.
pub fn backbone_prefix(g: &mut Graph, params: &Params, arch: &Arch, units: usize, input: &str) -> Result<String, Error> {
    match arch.family() {
        Family::Lite(cfg) => efficientnet::lite(g, params, &cfg, input, Some(units)),
        Family::Ensemble(members) => {
            let mut maps = Vec::with_capacity(members.len());
            for (i, m) in members.iter().enumerate() {
                maps.push(backbone_prefix(g, &params.scoped(&format!("members.{i}.")), m, units, input)?);
            }
            let maps: Vec<&str> = maps.iter().map(String::as_str).collect();
            Ok(g.concat(&maps, "members", 1))
        }
        _ => Err(Error::Graph(format!(
            "{} cannot be cut between blocks (partial mode supports efficientnet_lite0/1/2, alone or in an ensemble of them)",
            arch.name()
        ))),
    }
}
