//! VGG, ResNet, AlexNet and EfficientNet-Lite1/2 against their references, with goldens generated
//! at test time (a recorded skip when the reference Python or a package is absent; see
//! `testkit::Reference`): every backbone's names and shapes equal torchvision's / the package's
//! `state_dict()`, random-weight torchvision models give the same features and logits (also
//! frozen, folded and channels_last), and Lite1/Lite2 with their real weights match the package.

use crate::common;

use std::collections::BTreeMap;

use common::*;
use model::weights::{backbone_shapes, load_all_tensors, load_backbone_tensors};
use model::{freeze_backbone, Arch, Classifier, HeadConfig};
use tch::nn::{OptimizerConfig, VarStore};
use tch::Device;

const TOL: f64 = 1e-4;

#[test]
fn names_and_shapes_equal_the_references() {
    let Some(path) = generated_golden_ext("model/backbones/shapes", "shapes", "json") else { return };
    let all: BTreeMap<String, BTreeMap<String, Vec<i64>>> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(all.len(), 16);
    for (name, want) in all {
        let arch: Arch = name.parse().unwrap();
        let got = backbone_shapes(&arch).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

/// Loads a torchvision golden (classifier replaced by `Linear(F, 10)`) into a head without
/// hidden layers (`classifier.0`), checks features and logits, then again frozen, with batch
/// norms folded and channels_last.
/// `check` is the check id `model/backbones/<what>`.
fn check_torchvision(check: &str, arch: Arch, size: i64, folds: usize) {
    let what = check.rsplit('/').next().unwrap_or(check);
    let Some(path) = generated_golden(check, what) else { return };
    let fx = read(&path);
    let vs = VarStore::new(Device::Cpu);
    let head = HeadConfig { hidden: vec![], ..Default::default() };
    let mut model = Classifier::new(&vs.root(), &arch, &head, 10).unwrap();
    let w: Vec<_> = weights(&fx)
        .into_iter()
        .map(|(k, t)| {
            let k = match k.strip_prefix("classifier.").or_else(|| k.strip_prefix("fc.")) {
                Some(p) => format!("classifier.0.{p}"),
                None => k,
            };
            (k, t)
        })
        .collect();
    load_all_tensors(&vs, w, &path).unwrap();
    let x = golden_input(&[2, 3, size, size]);
    let feats = model.infer_features(&x);
    assert!(rel_err(&feats, &fx["golden.features"]) < TOL, "{what} features rel err {}", rel_err(&feats, &fx["golden.features"]));
    let logits = tch::no_grad(|| model.forward_t(&x, false));
    let e = rel_err(&logits, &fx["golden.logits"]);
    assert!(e < TOL, "{what} logits rel err {e}");
    let s = freeze_backbone(&vs, &arch, 0);
    assert_eq!(s.trainable_tensors, 2, "{what}: only the head stays trainable");
    model.set_channels_last(true).unwrap();
    assert_eq!(model.fold_batchnorm(), folds, "{what} folded batch norms");
    let fast = tch::no_grad(|| model.forward_t(&x, false));
    let e = rel_err(&fast, &fx["golden.logits"]);
    assert!(e < TOL, "{what} frozen/folded/channels_last rel err {e}");
}

#[test]
fn vgg16_matches_torchvision() {
    check_torchvision("model/backbones/vgg16", Arch::Vgg16, 64, 0);
}

#[test]
fn vgg11_bn_matches_torchvision() {
    check_torchvision("model/backbones/vgg11_bn", Arch::Vgg11Bn, 64, 8);
}

#[test]
fn resnet18_matches_torchvision() {
    check_torchvision("model/backbones/resnet18", Arch::ResNet18, 64, 1 + 8 * 2 + 3);
}

#[test]
fn resnet50_matches_torchvision() {
    check_torchvision("model/backbones/resnet50", Arch::ResNet50, 64, 1 + 16 * 3 + 4);
}

#[test]
fn alexnet_matches_torchvision() {
    check_torchvision("model/backbones/alexnet", Arch::AlexNet, 96, 0);
}

/// Lite1/Lite2 with their real ImageNet weights against `efficientnet_lite_pytorch`.
fn check_lite(check: &str, arch: Arch, size: i64) {
    let what = check.rsplit('/').next().unwrap_or(check);
    let Some(path) = generated_golden(check, what) else { return };
    let fx = read(&path);
    assert_eq!(arch.input_size() as i64, size);
    let vs = VarStore::new(Device::Cpu);
    let mut model = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 102).unwrap();
    let s = load_backbone_tensors(&vs, &arch, weights(&fx), &path).unwrap();
    assert_eq!(s.ignored_head_keys, vec!["_fc.bias".to_string(), "_fc.weight".to_string()]);
    let x = golden_input(&[2, 3, size, size]);
    let feats = model.infer_features(&x);
    let e = rel_err(&feats, &fx["golden.features"]);
    assert!(e < TOL, "{what} features rel err {e}");
    let logits = feats.linear(&fx["_fc.weight"], Some(&fx["_fc.bias"]));
    let e = rel_err(&logits, &fx["golden.logits"]);
    assert!(e < TOL, "{what} logits rel err {e}");
    freeze_backbone(&vs, &arch, 0);
    model.set_channels_last(true).unwrap();
    assert_eq!(model.fold_batchnorm(), 1 + 21 * 3 - 1 + 1);
    let e = rel_err(&model.infer_features(&x), &fx["golden.features"]);
    assert!(e < TOL, "{what} folded channels_last rel err {e}");
}

#[test]
fn efficientnet_lite1_matches_python_package_with_real_weights() {
    check_lite("model/backbones/lite1", Arch::EfficientNetLite1, 240);
}

#[test]
fn efficientnet_lite2_matches_python_package_with_real_weights() {
    check_lite("model/backbones/lite2", Arch::EfficientNetLite2, 260);
}

#[test]
fn blocks_and_feature_dims_follow_torchvision() {
    assert_eq!(Arch::Vgg16.feature_dim(), 25088);
    assert_eq!(Arch::AlexNet.feature_dim(), 9216);
    assert_eq!(Arch::ResNet34.feature_dim(), 512);
    assert_eq!(Arch::ResNet101.feature_dim(), 2048);
    assert_eq!(Arch::EfficientNetLite2.feature_dim(), 1280);
    assert_eq!(Arch::Vgg16Bn.backbone_blocks(), ["stage1", "stage2", "stage3", "stage4", "stage5"]);
    assert_eq!(Arch::Vgg16Bn.block_of("features.40.running_var"), Some(4));
    assert_eq!(Arch::Vgg16.block_of("features.28.weight"), Some(4));
    assert_eq!(Arch::Vgg16.block_of("features.5.weight"), Some(1));
    assert_eq!(Arch::AlexNet.backbone_blocks().len(), 3);
    assert_eq!(Arch::AlexNet.block_of("features.8.weight"), Some(2));
    assert_eq!(Arch::ResNet50.backbone_blocks(), ["stem", "layer1", "layer2", "layer3", "layer4"]);
    assert_eq!(Arch::ResNet50.block_of("layer3.5.bn3.weight"), Some(3));
    assert_eq!(Arch::ResNet50.block_of("bn1.bias"), Some(0));
    assert!(Arch::ResNet50.is_head_key("fc.weight"));
    assert!(!Arch::Vgg16.is_head_key("fc.weight"));
    assert_eq!(Arch::EfficientNetLite1.block_of("_blocks.20._bn2.bias"), Some(7));
    assert_eq!(Arch::EfficientNetLite1.block_of("_blocks.4._bn2.bias"), Some(3));
    assert_eq!(Arch::EfficientNetLite1.block_of("_blocks.3._bn2.bias"), Some(2));
    assert_eq!(Arch::EfficientNetLite1.input_size(), 240);
    for a in Arch::builtin() {
        assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::json!(a.name()));
    }
    assert_eq!("VGG16-BN".parse::<Arch>().unwrap(), Arch::Vgg16Bn);
}

#[test]
fn fine_tuning_trains_only_unfrozen_blocks() {
    let arch = Arch::ResNet18;
    let vs = VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 3).unwrap();
    let s = freeze_backbone(&vs, &arch, 1);
    assert_eq!(s.trainable_blocks, ["layer4"]);
    let before: BTreeMap<String, tch::Tensor> = vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
    let mut opt = tch::nn::Sgd::default().build(&vs, 0.1).unwrap();
    let x = golden_input(&[2, 3, 64, 64]);
    let loss = model.forward_t(&x, true).cross_entropy_for_logits(&tch::Tensor::from_slice(&[0i64, 2]));
    opt.backward_step(&loss);
    for (k, t) in vs.variables() {
        let changed = rel_err(&t, &before[&k]) > 0.0;
        let trainable = k.starts_with("layer4.") || k.starts_with("classifier.");
        if k.ends_with(".weight") && !k.contains("bn") && !k.contains("downsample.1") {
            assert_eq!(changed, trainable, "{k}");
        }
    }
}
