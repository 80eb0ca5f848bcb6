//! Full-size goldens generated at test time with the reference PyTorch that `cargo xtask test`
//! provisions (a recorded, loud skip when it is absent, which CI refuses: tests/required-checks.txt): densenet121 with random weights against
//! torchvision, EfficientNet-Lite0 with its real ImageNet weights against `efficientnet_lite_pytorch`.

use crate::common;

use common::*;
use model::weights::{load_all_tensors, load_backbone_tensors};
use model::{freeze_backbone, Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::Device;

const TOL: f64 = 1e-4;

#[test]
fn densenet121_logits_match_torchvision() {
    let Some(path) = generated_golden("model/golden_full/densenet121", "densenet121") else { return };
    let fx = read(&path);
    let arch = Arch::DenseNet121;
    let vs = VarStore::new(Device::Cpu);
    // torchvision's classifier is one Linear: a head without hidden layers, named classifier.0.
    let head = HeadConfig { hidden: vec![], ..Default::default() };
    let mut model = Classifier::new(&vs.root(), &arch, &head, 1000).unwrap();
    let mut w = weights(&fx);
    for (k, _) in w.iter_mut() {
        if let Some(p) = k.strip_prefix("classifier.") {
            *k = format!("classifier.0.{p}");
        }
    }
    load_all_tensors(&vs, w, &path).unwrap();
    let x = golden_input(&[2, 3, 224, 224]);
    let logits = tch::no_grad(|| model.forward_t(&x, false));
    let e = rel_err(&logits, &fx["golden.logits"]);
    assert!(e < TOL, "densenet121 logits rel err {e}");
    // Frozen, folded, channels_last: same logits.
    freeze_backbone(&vs, &arch, 0);
    model.set_channels_last(true).unwrap();
    assert_eq!(model.fold_batchnorm(), 1 + 58);
    let fast = tch::no_grad(|| model.forward_t(&x, false));
    let e = rel_err(&fast, &fx["golden.logits"]);
    assert!(e < TOL, "densenet121 folded channels_last rel err {e}");
}

#[test]
fn efficientnet_lite0_matches_python_package_with_real_weights() {
    let Some(path) = generated_golden("model/golden_full/lite0", "lite0") else { return };
    let fx = read(&path);
    let arch = Arch::EfficientNetLite0;
    let vs = VarStore::new(Device::Cpu);
    let mut model = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 102).unwrap();
    let s = load_backbone_tensors(&vs, &arch, weights(&fx), &path).unwrap();
    assert_eq!(s.ignored_head_keys, vec!["_fc.bias".to_string(), "_fc.weight".to_string()]);
    assert_eq!(s.filled_num_batches_tracked, 0);
    let x = golden_input(&[2, 3, 224, 224]);
    let feats = model.infer_features(&x);
    let e = rel_err(&feats, &fx["golden.features"]);
    assert!(e < TOL, "lite0 features rel err {e}");
    // The package's ImageNet classifier on our features gives its logits.
    let logits = feats.linear(&fx["_fc.weight"], Some(&fx["_fc.bias"]));
    let e = rel_err(&logits, &fx["golden.logits"]);
    assert!(e < TOL, "lite0 logits rel err {e}");
    freeze_backbone(&vs, &arch, 0);
    model.set_channels_last(true).unwrap();
    assert_eq!(model.fold_batchnorm(), 1 + 16 * 3 - 1 + 1);
    let fast = model.infer_features(&x);
    let e = rel_err(&fast, &fx["golden.features"]);
    assert!(e < TOL, "lite0 folded channels_last rel err {e}");
}
