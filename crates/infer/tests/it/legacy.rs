//! Old PyTorch checkpoints predict directly and after conversion, and agree with PyTorch.
//!
//! The fixtures under `tests/fixtures/legacy/` were written by torch 2.13 (`gen_legacy.py`,
//! committed beside them): every head style in both serializations, a hand-built 0.4-style file,
//! and head-only files completed with backbone weights. `expected.json` holds PyTorch's top-5
//! classes and probabilities predicted the seed's way (rebuild the model, load, Resize 256,
//! CenterCrop 224, Normalize, exp of the LogSoftmax output). When a Python with torch is found
//! (`$PETAL_PYTHON`, set by `cargo xtask test`), the reference is
//! recomputed now and must equal the committed one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use infer::Predictor;
use model::legacy::{convert_legacy, LegacyOptions};
use model::Arch;
use tch::Device;

/// Probabilities agree with PyTorch's within this, for every fixture. (An earlier gap of up to
/// 1.2e-3 on the Lite0 and 6e-5 on the ResNet-18 fixtures came from resizing that was not
/// Pillow's; with `preprocess`'s PIL-identical pixels the input tensors equal torchvision's bit
/// for bit and the largest difference measured is 3.3e-7.)
const TOLERANCE: f32 = 1e-5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy")
}

type Expected = BTreeMap<String, BTreeMap<String, Top5>>;

#[derive(serde::Deserialize, Debug, Clone, PartialEq)]
struct Top5 {
    indices: Vec<usize>,
    probs: Vec<f32>,
}

fn expected() -> Expected {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap()
}

/// What a head-only fixture needs: the backbone named on the command line and its weights.
fn options(fixture: &str) -> LegacyOptions {
    let serial = if fixture.contains("_legacy") { "legacy" } else { "zip" };
    let (arch, backbone) = match fixture.split("_zip").next().unwrap().split("_legacy").next().unwrap() {
        "head_fc1fc2" => (None, "seed_densenet121"),
        "head_network" => (Some(Arch::Vgg16), "vgg16_dataparallel"),
        "head_sequential" => (Some(Arch::ResNet18), "resnet18_model"),
        _ => return LegacyOptions::default(),
    };
    LegacyOptions { arch, backbone_weights: Some(dir().join(format!("{backbone}_{serial}.pth"))) }
}

fn predict(p: &Predictor) -> BTreeMap<String, Top5> {
    let images: Vec<PathBuf> = ["img_a.png", "img_b.png"].iter().map(|i| dir().join(i)).collect();
    let preds = p.predict_paths(&images, 5, 2, |_| {}).unwrap();
    preds
        .into_iter()
        .map(|pr| {
            let name = pr.path.file_name().unwrap().to_string_lossy().into_owned();
            (name, Top5 { indices: pr.top.iter().map(|c| c.index).collect(), probs: pr.top.iter().map(|c| c.prob).collect() })
        })
        .collect()
}

fn assert_close(fixture: &str, got: &BTreeMap<String, Top5>, want: &BTreeMap<String, Top5>) {
    for (img, w) in want {
        let g = &got[img];
        assert_eq!(g.indices, w.indices, "{fixture} {img}: top-5 classes");
        for (a, b) in g.probs.iter().zip(&w.probs) {
            assert!((a - b).abs() <= TOLERANCE, "{fixture} {img}: probabilities {:?} vs PyTorch {:?}", g.probs, w.probs);
        }
    }
}

#[test]
fn every_fixture_predicts_like_pytorch() {
    let exp = expected();
    assert_eq!(exp.len(), 15, "7 head styles x 2 serializations + the 0.4 file");
    for (fixture, want) in &exp {
        let p = Predictor::load_with(&dir().join(fixture), Device::Cpu, &options(fixture)).unwrap_or_else(|e| panic!("{fixture}: {e}"));
        assert_eq!(p.num_classes(), 5, "{fixture}");
        assert_close(fixture, &predict(&p), want);
    }
}

#[test]
fn converted_files_are_complete_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = expected();
    for fixture in ["seed_densenet121_legacy.pth", "head_network_zip.pth", "legacy_04_densenet121.pth", "lite0_fc_zip.pth"] {
        let out = tmp.path().join(format!("{fixture}.safetensors"));
        let report = convert_legacy(&dir().join(fixture), &out, &options(fixture)).unwrap();
        assert!(report.assumptions.iter().any(|a| a.contains("ImageNet eval transform")), "{report:?}");
        let p = Predictor::load(&out, Device::Cpu).unwrap();
        assert_close(fixture, &predict(&p), &exp[fixture]);
        let summary = checkpoint::inspect(&out).unwrap().to_string();
        assert!(summary.contains("resize 256 -> crop 224") && summary.contains("[assumed"), "{summary}");
        let meta = p.meta.clone();
        assert_eq!(meta.provenance["preprocessing_assumed"], true);
        assert_eq!(meta.classes.iter().map(|c| c.folder.as_str()).collect::<Vec<_>>(), ["1", "10", "102", "21", "3"]);
    }
    // The seed's file: arch from its entry, head from the pickled Sequential, names from cat_to_name.
    let out = tmp.path().join("seed.safetensors");
    let r = convert_legacy(&dir().join("seed_densenet121_zip.pth"), &out, &LegacyOptions::default()).unwrap();
    assert_eq!((r.arch.as_str(), r.arch_from.as_str(), r.head.source.as_str()), ("densenet121", "the file's arch entry", "pickled module tree"));
    assert_eq!(r.head.config.hidden, [32]);
    assert!((r.head.config.dropout - 0.2).abs() < 1e-9);
    assert_eq!(r.head.output, model::rebuild::OutputFn::LogSoftmax);
    let ck = checkpoint::load(&out).unwrap();
    assert_eq!(ck.meta.classes[3].name.as_deref(), Some("fire lily"));
    assert_eq!(ck.meta.hyperparameters["epochs"], 3);
    // DataParallel VGG: arch inferred, head from shapes (classifier.0/3/6).
    let r = convert_legacy(&dir().join("vgg16_dataparallel_legacy.pth"), &out, &LegacyOptions::default()).unwrap();
    assert_eq!((r.arch.as_str(), r.arch_from.as_str(), r.head.source.as_str()), ("vgg16", "key names and shapes", "tensor shapes"));
    assert_eq!(r.head.config.hidden, [16, 16]);
    // The whole pickled ResNet: its fc Sequential read from the module tree, classes by index.
    let r = convert_legacy(&dir().join("resnet18_model_zip.pth"), &out, &LegacyOptions::default()).unwrap();
    assert_eq!((r.arch.as_str(), r.head.source.as_str()), ("resnet18", "pickled module tree"));
    assert!(r.assumptions.iter().any(|a| a.contains("no class_to_idx")), "{:?}", r.assumptions);
    // Udacity's Network: custom class, forward assumed.
    let r = convert_legacy(&dir().join("head_network_legacy.pth"), &out, &options("head_network_legacy.pth")).unwrap();
    assert_eq!(r.head.config.hidden, [64, 32]);
    assert!(r.assumptions.iter().any(|a| a.contains("__main__.Network")), "{:?}", r.assumptions);
}

#[test]
fn mismatches_are_clear_errors() {
    let vgg = dir().join("vgg16_dataparallel_zip.pth");
    let opts = LegacyOptions { arch: Some(Arch::DenseNet121), backbone_weights: None };
    let e = Predictor::load_with(&vgg, Device::Cpu, &opts).err().expect("wrong --arch").to_string();
    assert!(e.contains("--arch names densenet121") && e.contains("those of vgg16") && e.contains("vgg16_dataparallel_zip.pth"), "{e}");
    // A named architecture whose shapes differ: expected and found shapes are named.
    let opts = LegacyOptions { arch: Some(Arch::Vgg16Bn), backbone_weights: None };
    let e = Predictor::load_with(&vgg, Device::Cpu, &opts).err().expect("vgg16_bn").to_string();
    assert!(e.contains("vgg16_bn") && e.contains("expected [") && e.contains("found ["), "{e}");
    // Head-only without an architecture.
    let e = Predictor::load_with(&dir().join("head_sequential_zip.pth"), Device::Cpu, &LegacyOptions::default()).err().expect("no arch").to_string();
    assert!(e.contains("--arch"), "{e}");
    // Head-only on the wrong backbone: the head's input size does not fit.
    let opts = LegacyOptions { arch: Some(Arch::DenseNet121), backbone_weights: Some(dir().join("seed_densenet121_zip.pth")) };
    let e = Predictor::load_with(&dir().join("head_sequential_zip.pth"), Device::Cpu, &opts).err().expect("512 vs 1024").to_string();
    assert!(e.contains("takes 512 features but densenet121 gives 1024") && e.contains("expected [16, 1024], found [16, 512]"), "{e}");
}

#[test]
fn pytorch_still_predicts_the_committed_reference() {
    const CHECK: &str = "infer/legacy/pytorch_reference";
    // Without the reference the committed expected.json is still checked by the other tests.
    let Some(reference) = testkit::Reference::find(CHECK, &["torch", "torchvision", "numpy", "PIL"]) else { return };
    testkit::ran(CHECK);
    let out = Command::new(&reference.python).arg(dir().join("gen_legacy.py")).arg("reference-all").arg(dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let now: Expected = serde_json::from_slice(&out.stdout).unwrap();
    let exp = expected();
    assert_eq!(now.keys().collect::<Vec<_>>(), exp.keys().collect::<Vec<_>>());
    for (fixture, want) in &exp {
        for (img, w) in want {
            let n = &now[fixture][img];
            assert_eq!(n.indices, w.indices, "{fixture} {img}: PyTorch now vs the committed reference");
            assert!(n.probs.iter().zip(&w.probs).all(|(a, b)| (a - b).abs() <= 1e-6), "{fixture} {img}: {n:?} vs committed {w:?}");
        }
    }
}
