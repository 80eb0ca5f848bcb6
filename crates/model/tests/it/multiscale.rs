//! Multi-scale features: an ensemble member that runs its backbone on the input resampled to its
//! own side (`Arch::Rescaled`, `efficientnet_lite0@224`). The resample is Pillow's antialiased
//! bilinear filter as two matrix products, checked against libtorch's own antialiased bilinear
//! interpolation (`F.interpolate(mode="bilinear", antialias=True)`); the member's features are its
//! backbone's on the resampled images, from the same weight file as the full-size member.

use crate::common;

use common::*;
use model::resample::{resample, resample_matrix};
use model::weights::{load_backbone_weights, member_weight_files};
use model::{Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn lite0_at(size: u32) -> Arch {
    Arch::Rescaled { arch: Box::new(Arch::EfficientNetLite0), size }
}

/// libtorch's antialiased bilinear interpolation of `x` to `side` x `side`.
fn torch_antialiased(x: &Tensor, side: i64) -> Tensor {
    x.internal_upsample_bilinear2d_aa([side, side], false, None, None)
}

/// Pillow's weights for halving 4 samples: output 0 is centred at 1.0 with the triangle widened to
/// a support of 2, so inputs 0, 1, 2 weigh 0.75, 0.75, 0.25 before normalising.
#[test]
fn the_resample_matrix_has_pillows_weights() {
    let m = resample_matrix(4, 2);
    let want = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0, 0.0, 0.0, 1.0 / 7.0, 3.0 / 7.0, 3.0 / 7.0];
    for (g, w) in m.iter().zip(want) {
        assert!((g - w as f32).abs() < 1e-7, "{m:?}");
    }
    assert_eq!(resample_matrix(2, 1), vec![0.5, 0.5]);
    assert_eq!(resample_matrix(3, 3), vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
}

/// libtorch computes the same filter's weights in f32, about 1e-5 off Pillow's double weights, so
/// the two agree to 1e-4 on standard-normal images (not bit for bit).
#[test]
fn the_resample_is_torchs_antialiased_bilinear_interpolation() {
    tch::manual_seed(3);
    // Downscaling (the 288 px crop to 224), upscaling, odd and tiny sides, and the identity.
    for (from, to) in [(288, 224), (224, 288), (301, 97), (7, 3), (3, 7), (1, 4), (5, 5)] {
        let x = Tensor::randn([2, 3, from, from], (Kind::Float, Device::Cpu));
        let got = resample(&x, to);
        assert_eq!(got.size(), vec![2, 3, to, to], "{from} → {to}");
        let diff = (&got - torch_antialiased(&x, to)).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "{from} → {to}: differs from libtorch's antialiased bilinear by {diff:e}");
    }
    // Every row of the matrix is a weighted average, and a constant image stays constant.
    let m = resample_matrix(288, 224);
    for row in m.chunks_exact(288) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(row.iter().all(|&w| w >= 0.0));
    }
    let flat = resample(&Tensor::full([1, 3, 288, 288], 0.25, (Kind::Float, Device::Cpu)), 224);
    assert!((flat - 0.25).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn rescaled_members_parse_print_serialise_and_are_checked() {
    let a: Arch = "efficientnet_lite0+efficientnet-lite0@224".parse().unwrap();
    assert_eq!(a, Arch::ensemble(vec![Arch::EfficientNetLite0, lite0_at(224)]).unwrap());
    assert_eq!(a.to_string(), "efficientnet_lite0+efficientnet_lite0@224");
    assert_eq!(a.to_string().parse::<Arch>().unwrap(), a);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json, serde_json::json!({"ensemble": ["efficientnet_lite0", {"rescaled": {"arch": "efficientnet_lite0", "size": 224}}]}));
    assert_eq!(serde_json::from_value::<Arch>(json).unwrap(), a);
    assert_eq!(a.feature_dim(), 2 * 1280);
    // The members' maps are not the same size, so the ensemble is one unit (partial mode refuses it).
    assert_eq!(a.backbone_blocks(), vec!["members".to_string()]);
    // A rescaled member's weights are its backbone's.
    assert_eq!(
        model::arch_registry::pretrained(&lite0_at(224)).map(|p| p.cache_name),
        model::arch_registry::pretrained(&Arch::EfficientNetLite0).map(|p| p.cache_name)
    );

    let refused = |s: &str| s.parse::<Arch>().unwrap_err().to_string();
    let e = refused("efficientnet_lite0@224");
    assert!(e.contains("ensemble member") && e.contains("image size"), "{e}");
    let e = refused("efficientnet_lite0+resnet18@8");
    assert!(e.contains("resnet18@8") && e.contains("16 to 1024"), "{e}");
    let e = refused("efficientnet_lite0+resnet18@big");
    assert!(e.contains("resnet18@big") && e.contains("whole number"), "{e}");
    // A file can hold a rescaled ensemble or one outside an ensemble; no network is built from them.
    let vs = VarStore::new(Device::Cpu);
    for bad in [
        serde_json::json!({"ensemble": ["resnet18", {"rescaled": {"arch": {"ensemble": ["resnet18", "alexnet"]}, "size": 64}}]}),
        serde_json::json!({"rescaled": {"arch": "resnet18", "size": 64}}),
    ] {
        let arch: Arch = serde_json::from_value(bad.clone()).unwrap();
        let e = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 3).unwrap_err().to_string();
        assert!(e.contains("single backbone") || e.contains("ensemble member"), "{bad}: {e}");
    }
}

/// `efficientnet_lite0+efficientnet_lite0@160` loads both members from Lite0's one file in the
/// weights folder; its features are Lite0's on the input, then Lite0's on the input resampled to
/// 160 px by libtorch's antialiased bilinear interpolation.
#[test]
fn a_rescaled_member_runs_its_backbone_on_the_resampled_images() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(21);
    let vs1 = VarStore::new(Device::Cpu);
    let single = Classifier::new(&vs1.root(), &Arch::EfficientNetLite0, &HeadConfig::default(), 3).unwrap();
    for (k, t) in vs1.variables() {
        if k.ends_with("running_mean") {
            tch::no_grad(|| t.shallow_clone().copy_(&(Tensor::randn(t.size(), (t.kind(), Device::Cpu)) * 0.1)));
        }
    }
    let named: Vec<(String, Tensor)> = vs1.variables().into_iter().collect();
    Tensor::write_safetensors(&named, dir.path().join("efficientnet_lite0-imagenet.safetensors")).unwrap();

    let arch: Arch = "efficientnet_lite0+efficientnet_lite0@160".parse().unwrap();
    let files = member_weight_files(&arch, dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], files[1]);
    let mut vs = VarStore::new(Device::Cpu);
    let ens = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 3).unwrap();
    assert!(vs.variables().contains_key("members.1._conv_stem.weight"));
    load_backbone_weights(&mut vs, &arch, dir.path()).unwrap();

    let x = golden_input(&[2, 3, 192, 192]);
    let got = ens.infer_features(&x);
    assert_eq!(got.size(), vec![2, 2 * 1280]);
    let full = single.infer_features(&x);
    let small = single.infer_features(&torch_antialiased(&x, 160));
    assert_eq!(rel_err(&got.narrow(1, 0, 1280), &full), 0.0);
    let err = rel_err(&got.narrow(1, 1280, 1280), &small);
    assert!(err < 1e-4, "the 160 px member differs from Lite0 on libtorch's resample by {err:e}");
    // The resample changes what the member sees: not the full-size features again.
    let apart = rel_err(&small, &full);
    assert!(apart > 100.0 * err, "the 160 px and full-size features are only {apart:e} apart");
}
