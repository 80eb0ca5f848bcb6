//! Weight import through the `checkpoint` crate: torchvision's legacy `.pth` with old key names,
//! `convert_pretrained` into the project's format, and the real EfficientNet-Lite0 file.

use crate::common;

use common::*;
use model::arch_registry::convert_pretrained;
use model::weights::{from_tensor, load_all_tensors, load_backbone_weights, to_tensor, varstore_tensors};
use model::{Arch, Classifier, DenseNetConfig, Error, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn tiny_arch() -> Arch {
    Arch::DenseNet(DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 })
}

#[test]
fn legacy_torchvision_pth_loads_with_remapped_keys() {
    let fx = read(&fixtures().join("densenet_tiny.safetensors"));
    let legacy = fixtures().join("densenet_tiny_legacy.pth");
    let mut vs = VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), &tiny_arch(), &HeadConfig::default(), 3).unwrap();
    let s = load_backbone_weights(&mut vs, &tiny_arch(), &legacy).unwrap();
    assert_eq!(s.ignored_head_keys, vec!["classifier.bias".to_string(), "classifier.weight".to_string()]);
    assert_eq!(s.filled_num_batches_tracked, 11); // norm0, 4 x (norm1, norm2), transition1.norm, norm5
    let v = vs.variables();
    for k in ["features.denseblock1.denselayer1.norm1.running_var", "features.denseblock2.denselayer2.conv2.weight"] {
        assert_eq!(rel_err(&v[k], &fx[k]), 0.0, "{k}");
    }
}

#[test]
fn convert_pretrained_writes_a_checked_petal_file() {
    let fx = read(&fixtures().join("densenet_tiny.safetensors"));
    let legacy = fixtures().join("densenet_tiny_legacy.pth");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.petal");
    let c = convert_pretrained(&tiny_arch(), &legacy, &out).unwrap();
    assert_eq!(c.dropped_head_keys.len(), 2);
    assert_eq!(c.filled_num_batches_tracked, 11); // norm0, 4 x (norm1, norm2), transition1.norm, norm5
    assert!(c.source_format.contains("legacy"), "{}", c.source_format);
    let imported = checkpoint::import(&out).unwrap();
    let meta = imported.meta.expect("petal metadata");
    assert_eq!(meta.arch, "densenet");
    let arch: Arch = serde_json::from_value(meta.arch_config).unwrap();
    assert_eq!(arch, tiny_arch());
    assert!(imported.tensors.keys().all(|k| k.starts_with("features.")));
    assert_eq!(imported.tensors.len(), c.tensors);

    // Converted backbone + the fixture's head give torchvision's logits.
    let mut vs = VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &arch, &HeadConfig { hidden: vec![6], ..Default::default() }, 5).unwrap();
    load_backbone_weights(&mut vs, &arch, &out).unwrap();
    let head: Vec<(String, Tensor)> = weights(&fx).into_iter().filter(|(k, _)| k.starts_with("classifier.")).collect();
    let mut all: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(k, _)| !k.starts_with("classifier.")).collect();
    all.extend(head);
    load_all_tensors(&vs, all, &out).unwrap();
    let logits = tch::no_grad(|| model.forward_t(&golden_input(&[2, 3, 32, 32]), false));
    assert!(rel_err(&logits, &fx["golden.logits"]) < 1e-4);
}

#[test]
fn convert_pretrained_lists_mismatched_keys() {
    let legacy = fixtures().join("densenet_tiny_legacy.pth");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.petal");
    let err = convert_pretrained(&Arch::DenseNet121, &legacy, &out).unwrap_err();
    let msg = err.to_string();
    match err {
        Error::Keys { report, .. } => {
            assert!(report.missing.contains(&"features.denseblock4.denselayer16.conv2.weight".to_string()));
            assert!(report.mis_shaped.iter().any(|m| m.key == "features.conv0.weight" && m.expected == vec![64, 3, 7, 7]));
            assert!(report.unexpected.is_empty());
        }
        e => panic!("unexpected error {e}"),
    }
    assert!(msg.contains("densenet_tiny_legacy.pth") && msg.contains("missing"), "{msg}");
    assert!(!out.exists(), "nothing written on failure");
    let err = convert_pretrained(&Arch::DenseNet121, &dir.path().join("absent.pth"), &out).unwrap_err();
    assert!(err.to_string().contains("absent.pth"), "{err}");
}

#[test]
fn tensor_conversion_round_trips() {
    let t = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([1, 2, 3, 4]);
    let cl = model::to_channels_last(&t);
    assert!(model::is_channels_last(&cl));
    let td = from_tensor(&cl, "x").unwrap();
    assert_eq!(td.shape, vec![1, 2, 3, 4]);
    assert_eq!(td.to_f32_vec().unwrap(), (0..24).map(|i| i as f32).collect::<Vec<_>>());
    for kind in [Kind::Double, Kind::Half, Kind::BFloat16, Kind::Int64, Kind::Int, Kind::Int8, Kind::Uint8, Kind::Bool] {
        let x = t.to_kind(kind);
        let back = to_tensor(&from_tensor(&x, "x").unwrap(), "x", std::path::Path::new("mem")).unwrap();
        assert_eq!(back.kind(), kind);
        assert!(back.equal(&x), "{kind:?}");
    }
    let vs = VarStore::new(Device::Cpu);
    let _m = Classifier::new(&vs.root(), &tiny_arch(), &HeadConfig::default(), 3).unwrap();
    let map = varstore_tensors(&vs).unwrap();
    assert_eq!(map.len(), vs.len());
    assert_eq!(map["features.norm5.num_batches_tracked"].dtype, checkpoint::DType::I64);
}

#[test]
fn real_lite0_pth_converts_and_matches_the_package() {
    const CHECK: &str = "model/import/real_lite0_pth";
    let Some(pth) = testkit::lite0_pth(CHECK) else { return };
    let Some(golden) = generated_golden(CHECK, "lite0") else { return };
    let fx = read(&golden);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lite0.petal");
    let c = convert_pretrained(&Arch::EfficientNetLite0, &pth, &out).unwrap();
    assert_eq!(c.dropped_head_keys, vec!["_fc.bias".to_string(), "_fc.weight".to_string()]);
    assert_eq!(c.tensors, 294);
    let mut vs = VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &Arch::EfficientNetLite0, &HeadConfig::default(), 102).unwrap();
    load_backbone_weights(&mut vs, &Arch::EfficientNetLite0, &out).unwrap();
    let feats = model.infer_features(&golden_input(&[2, 3, 224, 224]));
    let e = rel_err(&feats, &fx["golden.features"]);
    assert!(e < 1e-4, "lite0 features rel err {e}");
}
