//! Tiny DenseNet (growth 4, blocks (2, 2), init 8, bn_size 2) and the seed-style head against
//! torchvision, using the committed fixture from `fixtures/gen_goldens.py tiny`.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use model::weights::{load_all_tensors, load_backbone_tensors};
use model::{freeze_backbone, unfreeze_all, Arch, Classifier, DenseNetConfig, Error, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn tiny_arch() -> Arch {
    Arch::DenseNet(DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 })
}

fn tiny_head() -> HeadConfig {
    HeadConfig { hidden: vec![6], ..Default::default() }
}

/// A classifier loaded with the fixture's weights.
fn loaded() -> (VarStore, Classifier, std::collections::BTreeMap<String, Tensor>) {
    let path = fixtures().join("densenet_tiny.safetensors");
    let fx = read(&path);
    let vs = VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &tiny_arch(), &tiny_head(), 5).unwrap();
    let n = load_all_tensors(&vs, weights(&fx), &path).unwrap();
    assert_eq!(n, vs.variables().len());
    (vs, model, fx)
}

#[test]
fn names_and_shapes_equal_torchvision_state_dict() {
    let fx = read(&fixtures().join("densenet_tiny.safetensors"));
    let vs = VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), &tiny_arch(), &tiny_head(), 5).unwrap();
    let ours: BTreeSet<(String, Vec<i64>)> = vs.variables().into_iter().map(|(k, t)| (k, t.size())).collect();
    let theirs: BTreeSet<(String, Vec<i64>)> = weights(&fx).into_iter().map(|(k, t)| (k, t.size())).collect();
    assert_eq!(ours, theirs);
    assert!(ours.iter().any(|(k, _)| k == "features.denseblock2.denselayer2.norm1.running_mean"));
    assert!(ours.iter().any(|(k, s)| k == "classifier.3.weight" && s == &vec![5, 6]));
}

#[test]
fn eval_logits_and_features_match_torchvision() {
    let (_vs, model, fx) = loaded();
    let x = golden_input(&[2, 3, 32, 32]);
    let feats = tch::no_grad(|| model.features(&x, false));
    assert!(rel_err(&feats, &fx["golden.features"]) < TOL, "features err {}", rel_err(&feats, &fx["golden.features"]));
    let logits = tch::no_grad(|| model.forward_t(&x, false));
    let e = rel_err(&logits, &fx["golden.logits"]);
    assert!(e < TOL, "logits rel err {e}");
    assert_eq!(model.feature_dim(), 16);
    assert_eq!(tiny_arch().feature_dim(), 16);
    // A non-square size that is not a multiple of 32: adaptive pooling.
    let x = golden_input(&[1, 3, 40, 36]);
    let logits = tch::no_grad(|| model.forward_t(&x, false));
    let e = rel_err(&logits, &fx["golden.logits_40x36"]);
    assert!(e < TOL, "40x36 logits rel err {e}");
}

#[test]
fn train_mode_uses_batch_statistics_and_updates_running_stats() {
    let path = fixtures().join("densenet_tiny.safetensors");
    let fx = read(&path);
    let vs = VarStore::new(Device::Cpu);
    let head = HeadConfig { dropout: 0.0, ..tiny_head() };
    let model = Classifier::new(&vs.root(), &tiny_arch(), &head, 5).unwrap();
    load_all_tensors(&vs, weights(&fx), &path).unwrap();
    let x = golden_input(&[2, 3, 32, 32]);
    let logits = tch::no_grad(|| model.forward_t(&x, true));
    let e = rel_err(&logits, &fx["golden.train_logits"]);
    assert!(e < TOL, "train logits rel err {e}");
    let v = vs.variables();
    let rm = &v["features.norm5.running_mean"];
    let rv = &v["features.norm5.running_var"];
    assert!(rel_err(rm, &fx["golden.train_norm5_running_mean"]) < TOL);
    assert!(rel_err(rv, &fx["golden.train_norm5_running_var"]) < TOL);
    assert_eq!(v["features.norm5.num_batches_tracked"].int64_value(&[]), 8);
}

#[test]
fn backbone_load_ignores_head_and_is_strict() {
    let path = fixtures().join("densenet_tiny.safetensors");
    let fx = read(&path);
    let arch = tiny_arch();
    let vs = VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 3).unwrap();
    // The seed-style head in the file (6 hidden) does not fit this head (512): ignored.
    let s = load_backbone_tensors(&vs, &arch, weights(&fx), &path).unwrap();
    assert_eq!(s.ignored_head_keys.len(), 4);
    assert_eq!(s.filled_num_batches_tracked, 0);
    let v = vs.variables();
    assert_eq!(rel_err(&v["features.conv0.weight"], &fx["features.conv0.weight"]), 0.0);

    // Missing, unexpected and mis-shaped keys are all listed.
    let mut bad = weights(&fx);
    bad.retain(|(k, _)| k != "features.norm5.weight");
    bad.push(("features.denseblock3.denselayer1.conv1.weight".into(), Tensor::zeros([1], (Kind::Float, Device::Cpu))));
    for (k, t) in bad.iter_mut() {
        if k == "features.conv0.weight" {
            *t = Tensor::zeros([8, 3, 3, 3], (Kind::Float, Device::Cpu));
        }
    }
    let err = load_backbone_tensors(&vs, &arch, bad, &path).unwrap_err();
    let msg = err.to_string();
    match err {
        Error::Keys { report, .. } => {
            assert_eq!(report.missing, vec!["features.norm5.weight".to_string()]);
            assert_eq!(report.unexpected, vec!["features.denseblock3.denselayer1.conv1.weight".to_string()]);
            assert_eq!(report.mis_shaped.len(), 1);
            assert_eq!(report.mis_shaped[0].expected, vec![8, 3, 7, 7]);
            assert_eq!(report.mis_shaped[0].found, vec![8, 3, 3, 3]);
        }
        e => panic!("unexpected error {e}"),
    }
    assert!(msg.contains("densenet_tiny.safetensors") && msg.contains("features.norm5.weight"), "{msg}");
    // Nothing was copied by the failed load.
    assert_eq!(rel_err(&vs.variables()["features.conv0.weight"], &fx["features.conv0.weight"]), 0.0);
}

#[test]
fn legacy_key_names_are_remapped() {
    let path = fixtures().join("densenet_tiny.safetensors");
    let fx = read(&path);
    let arch = tiny_arch();
    let vs = VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), &arch, &tiny_head(), 5).unwrap();
    // Old torchvision names (`norm.1`), no `num_batches_tracked`.
    let old: Vec<(String, Tensor)> = weights(&fx)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| {
            let k = if k.contains(".denselayer") {
                ["norm1", "norm2", "conv1", "conv2"].iter().fold(k, |k, m| k.replace(&format!(".{m}."), &format!(".{}.{}.", &m[..4], &m[4..])))
            } else {
                k
            };
            (k, t)
        })
        .collect();
    assert!(old.iter().any(|(k, _)| k == "features.denseblock1.denselayer1.norm.1.weight"));
    let s = load_backbone_tensors(&vs, &arch, old, &path).unwrap();
    assert_eq!(s.filled_num_batches_tracked, 1 + 4 * 2 + 1 + 1);
    let v = vs.variables();
    let k = "features.denseblock2.denselayer2.conv2.weight";
    assert_eq!(rel_err(&v[k], &fx[k]), 0.0);
    assert_eq!(v["features.norm0.num_batches_tracked"].int64_value(&[]), 0);
}

#[test]
fn folding_and_channels_last_keep_outputs() {
    let (vs, mut model, fx) = loaded();
    let arch = tiny_arch();
    let x = golden_input(&[2, 3, 32, 32]);
    let reference = &fx["golden.logits"];
    // Nothing folds while the backbone is trainable.
    assert_eq!(model.fold_batchnorm(), 0);
    let s = freeze_backbone(&vs, &arch, 0);
    assert!(s.trainable_blocks.is_empty());
    model.set_channels_last(true).unwrap();
    assert!(model::is_channels_last(&vs.variables()["features.denseblock1.denselayer1.conv2.weight"]));
    let cl = tch::no_grad(|| model.forward_t(&x, false));
    assert!(rel_err(&cl, reference) < TOL, "channels_last err {}", rel_err(&cl, reference));
    // norm0 + one norm2 per dense layer.
    assert_eq!(model.fold_batchnorm(), 1 + 4);
    let folded = tch::no_grad(|| model.forward_t(&x, false));
    assert!(rel_err(&folded, reference) < TOL, "folded err {}", rel_err(&folded, reference));
    // The VarStore keeps the unfolded weights (what gets saved).
    assert_eq!(rel_err(&vs.variables()["features.conv0.weight"], &fx["features.conv0.weight"]), 0.0);
    model.set_channels_last(false).unwrap();
    let back = model.infer_features(&x);
    assert!(rel_err(&back, &fx["golden.features"]) < TOL);
}

#[test]
fn freeze_by_block() {
    let (vs, model, _fx) = loaded();
    let arch = tiny_arch();
    assert_eq!(arch.backbone_blocks(), vec!["stem", "block1", "block2"]);
    let s = freeze_backbone(&vs, &arch, 1);
    assert_eq!(s.trainable_blocks, vec!["block2".to_string()]);
    let v = vs.variables();
    assert!(!v["features.conv0.weight"].requires_grad());
    assert!(!v["features.transition1.conv.weight"].requires_grad());
    assert!(!v["features.denseblock1.denselayer2.norm1.bias"].requires_grad());
    assert!(v["features.denseblock2.denselayer1.conv1.weight"].requires_grad());
    assert!(v["features.norm5.weight"].requires_grad());
    assert!(v["classifier.0.weight"].requires_grad());
    assert!(!v["features.norm5.running_mean"].requires_grad());
    // Frozen blocks keep their statistics in training mode; trainable ones update them.
    let before0 = v["features.norm0.running_mean"].copy();
    let before5 = v["features.norm5.running_mean"].copy();
    let _ = model.forward_t(&golden_input(&[2, 3, 32, 32]), true);
    assert_eq!(rel_err(&v["features.norm0.running_mean"], &before0), 0.0);
    assert!(rel_err(&v["features.norm5.running_mean"], &before5) > 1e-3);
    // Gradients reach only trainable parameters.
    let loss = model.forward_t(&golden_input(&[2, 3, 32, 32]), true).sum(Kind::Float);
    loss.backward();
    assert!(!v["features.conv0.weight"].grad().defined());
    assert!(v["features.denseblock2.denselayer2.conv2.weight"].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    unfreeze_all(&vs);
    assert!(vs.variables()["features.conv0.weight"].requires_grad());
    assert_eq!(freeze_backbone(&vs, &arch, 10).frozen_tensors, 0);
}
