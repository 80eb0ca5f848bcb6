//! Ensembles of backbones (`Arch::Ensemble`): names, parsing, the concatenated features, loading
//! each member's weights from the folder `cargo xtask fetch-weights` fills, and freezing.

use crate::common;

use common::*;
use model::weights::{load_backbone_weights, member_weight_files, remap_key};
use model::{Arch, Classifier, Error, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Tensor};

fn pair() -> Arch {
    Arch::ensemble(vec![Arch::EfficientNetLite0, Arch::ResNet18]).unwrap()
}

#[test]
fn ensembles_parse_print_and_serialise() {
    let a: Arch = "efficientnet-lite0+ResNet18".parse().unwrap();
    assert_eq!(a, pair());
    assert_eq!(a.to_string(), "efficientnet_lite0+resnet18");
    assert_eq!(a.to_string().parse::<Arch>().unwrap(), a);
    assert_eq!(a.name(), "ensemble");
    assert_eq!(a.feature_dim(), 1280 + 512);
    assert_eq!(a.input_size(), 224);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json, serde_json::json!({"ensemble": ["efficientnet_lite0", "resnet18"]}));
    assert_eq!(serde_json::from_value::<Arch>(json).unwrap(), a);
    // A single name stays a plain architecture.
    assert_eq!("resnet18".parse::<Arch>().unwrap(), Arch::ResNet18);
}

#[test]
fn bad_ensembles_are_refused_with_the_reason() {
    let e = "efficientnet_lite0+resnet19".parse::<Arch>().unwrap_err();
    assert!(matches!(&e, Error::UnknownArch(n) if n == "resnet19"), "{e}");
    assert!("efficientnet_lite0+".parse::<Arch>().is_err());
    let e = Arch::ensemble(vec![Arch::ResNet18]).unwrap_err();
    assert!(e.to_string().contains("at least two"), "{e}");
    // A file can hold a nested ensemble; no network is built from it.
    let nested: Arch = serde_json::from_value(serde_json::json!({"ensemble": [{"ensemble": ["resnet18", "alexnet"]}, "resnet18"]})).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let e = Classifier::new(&vs.root(), &nested, &HeadConfig::default(), 3).unwrap_err();
    assert!(e.to_string().contains("do not nest"), "{e}");
    // One downloaded file is one architecture's: converting it "as an ensemble" says so.
    let dir = tempfile::tempdir().unwrap();
    let e = model::arch_registry::convert_pretrained(&pair(), &dir.path().join("lite0.pth"), &dir.path().join("out")).unwrap_err();
    assert!(e.to_string().contains("lite0.pth") && e.to_string().contains("convert each member"), "{e}");
}

#[test]
fn member_variables_are_prefixed_and_the_head_sees_every_feature() {
    let vs = VarStore::new(Device::Cpu);
    let net = Classifier::new(&vs.root(), &pair(), &HeadConfig { hidden: vec![], ..Default::default() }, 7).unwrap();
    let v = vs.variables();
    for k in ["members.0._conv_stem.weight", "members.0._bn1.running_var", "members.1.conv1.weight", "members.1.layer4.1.bn2.bias"] {
        assert!(v.contains_key(k), "{k} missing");
    }
    assert!(v.keys().all(|k| k.starts_with("members.0.") || k.starts_with("members.1.") || k.starts_with("classifier.")));
    assert_eq!(v["classifier.0.weight"].size(), vec![7, 1280 + 512]);
    assert_eq!(net.feature_dim(), 1792);
    let a = pair();
    assert_eq!(a.member_key("members.1.fc.weight"), Some((1, "fc.weight")));
    assert!(a.is_head_key("members.0._fc.weight") && a.is_head_key("members.1.fc.bias") && a.is_head_key("classifier.0.bias"));
    assert!(!a.is_head_key("members.1.conv1.weight"));
    assert_eq!(a.member_key("members.2.conv1.weight"), None);
    // Torchvision's old DenseNet names are remapped inside a DenseNet member only.
    let d = Arch::ensemble(vec![Arch::DenseNet121, Arch::ResNet18]).unwrap();
    assert_eq!(remap_key(&d, "members.0.features.denseblock1.denselayer1.norm.1.weight"), "members.0.features.denseblock1.denselayer1.norm1.weight");
    assert_eq!(remap_key(&d, "members.1.layer1.0.bn1.weight"), "members.1.layer1.0.bn1.weight");
}

/// The members' own weight files in a folder, under the names `fetch-weights` writes; the
/// ensemble loaded from it computes each member's features, concatenated in order.
#[test]
fn an_ensemble_loads_its_members_from_a_folder_and_concatenates_their_features() {
    let dir = tempfile::tempdir().unwrap();
    let members = [Arch::EfficientNetLite0, Arch::ResNet18];
    let mut singles = Vec::new();
    for (i, m) in members.iter().enumerate() {
        tch::manual_seed(10 + i as i64);
        let vs = VarStore::new(Device::Cpu);
        let net = Classifier::new(&vs.root(), m, &HeadConfig::default(), 3).unwrap();
        // Perturb the batch-norm statistics so a member loaded from the wrong file shows.
        for (k, t) in vs.variables() {
            if k.ends_with("running_mean") {
                tch::no_grad(|| t.shallow_clone().copy_(&(Tensor::randn(t.size(), (t.kind(), Device::Cpu)) * 0.1)));
            }
        }
        let file = dir.path().join(format!("{}-imagenet.safetensors", m.name()));
        let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        Tensor::write_safetensors(&named, &file).unwrap();
        singles.push((vs, net));
    }
    let arch = pair();
    assert_eq!(member_weight_files(&arch, dir.path()).unwrap().len(), 2);
    let mut vs = VarStore::new(Device::Cpu);
    let ens = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 3).unwrap();
    let s = load_backbone_weights(&mut vs, &arch, dir.path()).unwrap();
    assert_eq!(s.loaded, vs.variables().keys().filter(|k| !k.starts_with("classifier.")).count());
    // The single nets' own heads (`classifier.*`) were saved too: set aside as head keys.
    assert_eq!(s.ignored_head_keys.len(), 8, "{:?}", s.ignored_head_keys);
    assert!(s.ignored_head_keys.iter().all(|k| k.starts_with("members.0.classifier.") || k.starts_with("members.1.classifier.")));
    let x = golden_input(&[2, 3, 64, 64]);
    let got = ens.infer_features(&x);
    let want = Tensor::cat(&[singles[0].1.infer_features(&x), singles[1].1.infer_features(&x)], 1);
    assert_eq!(got.size(), vec![2, 1792]);
    assert_eq!(rel_err(&got, &want), 0.0);

    // A missing member file is named, with the command that fetches it.
    std::fs::remove_file(dir.path().join("resnet18-imagenet.safetensors")).unwrap();
    let e = load_backbone_weights(&mut vs, &arch, dir.path()).unwrap_err().to_string();
    assert!(e.contains("resnet18-imagenet.safetensors") && e.contains("cargo xtask fetch-weights resnet18"), "{e}");
}

#[test]
fn an_ensemble_freezes_as_one_unit() {
    let vs = VarStore::new(Device::Cpu);
    let _net = Classifier::new(&vs.root(), &pair(), &HeadConfig::default(), 3).unwrap();
    assert_eq!(pair().backbone_blocks(), vec!["members".to_string()]);
    let s = model::freeze_backbone(&vs, &pair(), 0);
    for (k, t) in vs.variables() {
        if k.ends_with(".weight") || k.ends_with(".bias") {
            assert_eq!(t.requires_grad(), k.starts_with("classifier."), "{k}");
        }
    }
    assert!(s.trainable_blocks.is_empty());
    model::freeze_backbone(&vs, &pair(), 1);
    assert!(vs.variables().iter().filter(|(k, _)| k.ends_with(".weight")).all(|(_, t)| t.requires_grad()));
}

/// An ensemble of EfficientNet-Lite members has their units, so partial mode can split it: the
/// activation map after unit `s` is the members' maps side by side (channels), the trainable part
/// splits it back, and the two parts together give the whole forward at every split. Freezing
/// all but the last `k` units leaves exactly those units of every member trainable.
#[test]
fn an_ensemble_of_lite_members_splits_between_their_units() {
    let arch = Arch::ensemble(vec![Arch::EfficientNetLite0, Arch::EfficientNetLite2]).unwrap();
    assert_eq!(arch.backbone_blocks(), Arch::EfficientNetLite0.backbone_blocks());
    let vs = VarStore::new(Device::Cpu);
    let net = {
        let _generator = model::random_generator_lock();
        tch::manual_seed(3);
        Classifier::new(&vs.root(), &arch, &HeadConfig { hidden: vec![], dropout: 0.0, ..HeadConfig::default() }, 4).unwrap()
    };
    assert_eq!(net.units(), 9);
    let x = golden_input(&[2, 3, 64, 64]);
    let whole = tch::no_grad(|| net.forward_t(&x, false));
    // Lite0's and Lite2's channels after the stem, then each stage (Lite2 is 1.1× wider).
    let channels = [32 + 32, 16 + 16, 24 + 24, 40 + 48, 80 + 88, 112 + 120, 192 + 208, 320 + 352];
    for split in 1..net.units() {
        let acts = net.activations(&x, split).unwrap();
        assert_eq!(acts.size()[1], channels[split - 1], "split {split}: {:?}", acts.size());
        let logits = tch::no_grad(|| net.forward_from(&acts, split, false)).unwrap();
        assert_eq!(rel_err(&logits, &whole), 0.0, "split {split}");
    }
    // A map of the wrong width is refused, not misread.
    let e = net.forward_from(&net.activations(&x, 3).unwrap().narrow(1, 0, 40), 3, false).unwrap_err();
    assert!(e.to_string().contains("efficientnet_lite0+efficientnet_lite2"), "{e}");

    let s = model::freeze_backbone(&vs, &arch, 2);
    assert_eq!(s.trainable_blocks, ["stage7", "head"]);
    for (k, t) in vs.variables() {
        if !(k.ends_with(".weight") || k.ends_with(".bias")) {
            continue;
        }
        let member_unit = arch.member_key(&k).and_then(|(i, rest)| [Arch::EfficientNetLite0, Arch::EfficientNetLite2][i].block_of(rest));
        let want = k.starts_with("classifier.") || member_unit.is_some_and(|u| u >= 7);
        assert_eq!(t.requires_grad(), want, "{k}");
    }
    assert!(vs.variables().keys().any(|k| k.starts_with("members.1._blocks.") && arch.block_of(k) == Some(7)));
}
