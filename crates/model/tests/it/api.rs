//! Public API behaviour: key remapping against torchvision's regex, architecture names and
//! serde, head naming, block grouping, the pretrained table.

use crate::common;

use std::collections::BTreeMap;

use common::fixtures;
use model::arch_registry::{self, Sha256, Source, PRETRAINED};
use model::weights::{backbone_shapes, remap_torchvision_densenet_key};
use model::{Activation, Arch, Classifier, DenseNetConfig, Error, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

#[test]
fn remap_matches_torchvision_regex_cases() {
    let text = std::fs::read_to_string(fixtures().join("densenet_remap_cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for c in cases {
        let (key, want) = (c[0].as_str().unwrap(), c[1].as_str().unwrap());
        assert_eq!(remap_torchvision_densenet_key(key), want, "key {key:?}");
    }
}

#[test]
fn arch_names_parse_and_serialise() {
    for a in Arch::builtin() {
        assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{}\"", a.name()));
        assert_eq!(serde_json::from_str::<Arch>(&json).unwrap(), a);
    }
    assert_eq!("EfficientNet-Lite0".parse::<Arch>().unwrap(), Arch::EfficientNetLite0);
    let err = "resnet51".parse::<Arch>().unwrap_err();
    assert!(matches!(err, Error::UnknownArch(_)) && err.to_string().contains("densenet121"));
    let custom = Arch::DenseNet(DenseNetConfig { growth_rate: 12, block_config: vec![3, 3], num_init_features: 16, bn_size: 4, drop_rate: 0.1 });
    let json = serde_json::to_string(&custom).unwrap();
    assert_eq!(serde_json::from_str::<Arch>(&json).unwrap(), custom);
    assert_eq!(Arch::DenseNet121.feature_dim(), 1024);
    assert_eq!(Arch::DenseNet161.feature_dim(), 2208);
    assert_eq!(Arch::DenseNet169.feature_dim(), 1664);
    assert_eq!(Arch::DenseNet201.feature_dim(), 1920);
    assert_eq!(Arch::EfficientNetLite0.feature_dim(), 1280);
    assert_eq!(arch_registry::arch_names().len(), 21);
}

#[test]
fn invalid_configs_are_errors() {
    let vs = VarStore::new(Device::Cpu);
    let bad = Arch::DenseNet(DenseNetConfig { growth_rate: 0, block_config: vec![2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 });
    assert!(matches!(Classifier::new(&vs.root(), &bad, &HeadConfig::default(), 3), Err(Error::Config(_))));
    let head = HeadConfig { hidden: vec![16, -1], ..Default::default() };
    assert!(matches!(Classifier::new(&vs.root(), &Arch::EfficientNetLite0, &head, 3), Err(Error::Config(_))));
    let head = HeadConfig { dropout: 1.0, ..Default::default() };
    assert!(Classifier::new(&vs.root(), &Arch::EfficientNetLite0, &head, 3).is_err());
    assert!(Classifier::new(&vs.root(), &Arch::EfficientNetLite0, &HeadConfig::default(), 0).is_err());
}

fn shapes(vs: &VarStore, prefix: &str) -> BTreeMap<String, Vec<i64>> {
    vs.variables().into_iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, t)| (k, t.size())).collect()
}

#[test]
fn head_naming_and_shapes() {
    // The seed's head on densenet121: classifier.0 (1024 -> 512), classifier.3 (512 -> 102).
    let vs = VarStore::new(Device::Cpu);
    let m = Classifier::new(&vs.root(), &Arch::DenseNet121, &HeadConfig::default(), 102).unwrap();
    let want: BTreeMap<String, Vec<i64>> = [
        ("classifier.0.weight", vec![512, 1024]),
        ("classifier.0.bias", vec![512]),
        ("classifier.3.weight", vec![102, 512]),
        ("classifier.3.bias", vec![102]),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_string(), s))
    .collect();
    assert_eq!(shapes(&vs, "classifier."), want);
    assert_eq!(m.feature_dim(), 1024);
    assert_eq!(HeadConfig::default(), HeadConfig { hidden: vec![512], activation: Activation::Relu, dropout: 0.2 });
    // Two hidden layers: classifier.0, .3, .6. Head forward in eval mode is deterministic,
    // in train mode dropout changes it.
    let vs = VarStore::new(Device::Cpu);
    let head = HeadConfig { hidden: vec![32, 16], activation: Activation::Gelu, dropout: 0.5 };
    let m = Classifier::new(&vs.root(), &Arch::EfficientNetLite0, &head, 7).unwrap();
    let s = shapes(&vs, "classifier.");
    assert_eq!(s["classifier.0.weight"], vec![32, 1280]);
    assert_eq!(s["classifier.3.weight"], vec![16, 32]);
    assert_eq!(s["classifier.6.weight"], vec![7, 16]);
    let f = Tensor::randn([4, 1280], (Kind::Float, Device::Cpu));
    let a = m.head_forward(&f, false);
    assert_eq!(a.size(), vec![4, 7]);
    assert!(a.equal(&m.head_forward(&f, false)));
    assert!(!a.equal(&m.head_forward(&f, true)));
    // Lite0 backbone names are the package's (no prefix), 294 tensors (296 minus `_fc`).
    let b = backbone_shapes(&Arch::EfficientNetLite0).unwrap();
    assert_eq!(b.len(), 294);
    assert_eq!(b["_blocks.15._project_conv.weight"], vec![320, 1152, 1, 1]);
    assert_eq!(b["_blocks.1._depthwise_conv.weight"], vec![96, 1, 3, 3]);
}

#[test]
fn any_input_of_at_least_32_pixels_works() {
    let vs = VarStore::new(Device::Cpu);
    let m = Classifier::new(&vs.root(), &Arch::DenseNet121, &HeadConfig::default(), 5).unwrap();
    for (h, w) in [(32, 32), (33, 47), (64, 32)] {
        let y = m.infer_features(&Tensor::randn([1, 3, h, w], (Kind::Float, Device::Cpu)));
        assert_eq!(y.size(), vec![1, 1024]);
    }
}

#[test]
fn blocks_cover_every_backbone_parameter() {
    for arch in Arch::builtin() {
        let blocks = arch.backbone_blocks();
        let shapes = backbone_shapes(&arch).unwrap();
        let mut seen = vec![0usize; blocks.len()];
        for k in shapes.keys() {
            let b = arch.block_of(k).unwrap_or_else(|| panic!("{arch}: {k} in no block"));
            seen[b] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{arch}: empty block in {seen:?}");
        assert_eq!(arch.block_of("classifier.0.weight"), None);
    }
    assert_eq!(Arch::DenseNet121.backbone_blocks(), vec!["stem", "block1", "block2", "block3", "block4"]);
    assert_eq!(Arch::DenseNet121.block_of("features.transition3.conv.weight"), Some(3));
    assert_eq!(Arch::DenseNet121.block_of("features.norm5.bias"), Some(4));
    assert_eq!(Arch::EfficientNetLite0.block_of("_blocks.15._bn2.bias"), Some(7));
    assert_eq!(Arch::EfficientNetLite0.block_of("_blocks.3._bn2.bias"), Some(3));
    assert_eq!(Arch::EfficientNetLite0.block_of("_bn1.weight"), Some(8));
}

#[test]
fn pretrained_table_is_consistent() {
    for arch in Arch::builtin() {
        let p = arch_registry::pretrained(&arch).unwrap_or_else(|| panic!("{arch} has no weights"));
        match p.source {
            Source::Url { url, sha256: Sha256::Prefix(prefix) } => {
                // torchvision's convention: <name>[-variant]-<first 8 hex of sha256>.pth
                let file = url.rsplit('/').next().unwrap();
                assert!(file.starts_with(&format!("{}-", arch.name())) && file.ends_with(&format!("-{prefix}.pth")), "{url}");
                assert_eq!(prefix.len(), 8);
            }
            Source::PyPiWheel { wheel_sha256, member_sha256, member, .. } => {
                assert_eq!(wheel_sha256.len(), 64);
                assert_eq!(member_sha256.len(), 64);
                assert!(member.ends_with(".pth"));
            }
            s => panic!("unexpected source {s:?}"),
        }
    }
    assert!(arch_registry::pretrained(&Arch::DenseNet(DenseNetConfig::densenet121())).is_none());
    let full = "a639ec97".to_string() + &"0".repeat(56);
    assert!(Sha256::Prefix("a639ec97").matches(&full));
    assert!(!Sha256::Prefix("a639ec97").matches("a639ec97"));
    assert!(Sha256::Full("ab").matches("AB"));
    assert_eq!(PRETRAINED.iter().map(|p| p.cache_name).collect::<std::collections::BTreeSet<_>>().len(), 21);
}
