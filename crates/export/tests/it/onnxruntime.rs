//! The onnxruntime backend (`--runtime onnxruntime`) against libtorch, on photos
//! (`../shared/data` when present, else the committed fixture images): the backbone's features
//! within 1e-5 relative, probabilities within 1e-5, and the same top-5, for full-size (224 px)
//! EfficientNet-Lite0 and DenseNet-121 and for an ensemble, at several batch sizes; the graph
//! cache is written once and read back; and features from the two runtimes never share a cache
//! entry. No Python is involved: onnxruntime's library comes from `cargo xtask setup`.

use crate::common;

use common::*;
use infer::{Predictor, Runtime};
use model::Arch;
use tch::{Device, Tensor};

const REAL: &str = "export/onnxruntime/real_images";

/// Max |a - b| / (max |b| + 1e-6) over the whole tensor: the relative error of the features.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]) + 1e-6;
    (a - b).abs().max().double_value(&[]) / scale
}

/// Loads `ckpt` on both runtimes and compares them on `x` at every batch size of `batches`.
fn same_answers(what: &str, ckpt: &std::path::Path, x: &Tensor, batches: &[i64]) {
    let torch = Predictor::load(ckpt, Device::Cpu).expect("load");
    let mut ort = Predictor::load(ckpt, Device::Cpu).expect("load");
    let chosen = ort.set_runtime(Runtime::Onnxruntime, None).expect("onnxruntime (run `cargo xtask setup`)");
    assert_eq!(chosen.runtime, Runtime::Onnxruntime);
    assert_eq!((torch.runtime(), ort.runtime()), (Runtime::Torch, Runtime::Onnxruntime));
    for &n in batches {
        let xb = x.narrow(0, 0, n);
        let (ft, fo) = (torch.features(&xb).expect("torch features"), ort.features(&xb).expect("onnxruntime features"));
        assert_eq!(ft.size(), fo.size(), "{what}: feature shape");
        let rel = relative_error(&fo, &ft);
        assert!(rel <= 1e-5, "{what} batch {n}: features differ by {rel:e} relative (> 1e-5)");
        let want = rows(&torch.probabilities(&xb).expect("torch probabilities"));
        let got = rows(&ort.probabilities(&xb).expect("onnxruntime probabilities"));
        let max = assert_close(&format!("{what} batch {n}"), &got, &want, 1e-5);
        eprintln!("{what} batch {n}: features {rel:e} relative, probabilities {max:e}");
    }
}

#[test]
fn lite0_and_densenet121_at_224_px_give_libtorchs_answers() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 4);
    let x = batch(&paths, 224);
    for arch in [Arch::EfficientNetLite0, Arch::DenseNet121] {
        let ckpt = random_checkpoint(dir.path(), arch.name(), &arch, serde_json::json!({"hidden": [], "dropout": 0.0}), 102, 224, &x);
        same_answers(arch.name(), &ckpt, &x, &[1, 4]);
    }
}

#[test]
fn an_ensemble_gives_libtorchs_answers() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let x = batch(&paths, 96);
    let arch = Arch::ensemble(vec![Arch::EfficientNetLite0, Arch::EfficientNetLite1, Arch::ResNet18]).unwrap();
    let ckpt = random_checkpoint(dir.path(), "ensemble", &arch, serde_json::json!({"hidden": [32], "dropout": 0.0}), 20, 96, &x);
    same_answers("ensemble", &ckpt, &x, &[1, 3]);
}

/// Multi-scale features: Lite0 on the 96 px input and again resampled to 64 px (the resample is two
/// `MatMul`s in the graph).
#[test]
fn a_multi_scale_ensemble_gives_libtorchs_answers() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let x = batch(&paths, 96);
    let arch: Arch = "efficientnet_lite0+efficientnet_lite0@64".parse().unwrap();
    let ckpt = random_checkpoint(dir.path(), "multiscale", &arch, serde_json::json!({"hidden": [], "dropout": 0.0}), 20, 96, &x);
    same_answers("multi-scale ensemble", &ckpt, &x, &[1, 3]);
}

/// With a cache folder, the graph is written once (named by the checkpoint's digest and what the
/// graph is built from) and a second predictor reads it back with the same answers; another
/// checkpoint gets another file.
#[test]
fn the_graph_is_cached_by_the_checkpoints_digest() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("onnx");
    let paths = images(REAL, 2);
    let x = batch(&paths, 64);
    let a = random_checkpoint(dir.path(), "a", &tiny_densenet(), serde_json::json!({"hidden": [], "dropout": 0.0}), 5, 64, &x);
    let files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&cache)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut first = Predictor::load(&a, Device::Cpu).unwrap();
    first.set_runtime(Runtime::Onnxruntime, Some(&cache)).expect("onnxruntime");
    let written = files();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].starts_with("backbone-") && written[0].ends_with(".onnx"), "{written:?}");
    let mtime = std::fs::metadata(cache.join(&written[0])).unwrap().modified().unwrap();
    let mut second = Predictor::load(&a, Device::Cpu).unwrap();
    second.set_runtime(Runtime::Onnxruntime, Some(&cache)).expect("onnxruntime");
    assert_eq!(files(), written, "the second load reads the cached graph");
    assert_eq!(std::fs::metadata(cache.join(&written[0])).unwrap().modified().unwrap(), mtime, "not rewritten");
    let (p1, p2) = (rows(&first.probabilities(&x).unwrap()), rows(&second.probabilities(&x).unwrap()));
    assert_eq!(p1, p2, "the cached graph gives the same bits");

    // A damaged cache file is rebuilt, not trusted.
    std::fs::write(cache.join(&written[0]), b"not an onnx model").unwrap();
    let mut third = Predictor::load(&a, Device::Cpu).unwrap();
    third.set_runtime(Runtime::Onnxruntime, Some(&cache)).expect("a damaged graph is rebuilt");
    assert_eq!(rows(&third.probabilities(&x).unwrap()), p1);

    let b = random_checkpoint(dir.path(), "b", &tiny_densenet(), serde_json::json!({"hidden": [4], "dropout": 0.0}), 5, 64, &x);
    Predictor::load(&b, Device::Cpu).unwrap().set_runtime(Runtime::Onnxruntime, Some(&cache)).expect("onnxruntime");
    assert_eq!(files().len(), 2, "another checkpoint, another graph");
}

/// Session options change how onnxruntime schedules a pass, not what it computes: spinning workers
/// (and the head on one libtorch thread that comes with them) and a single intra-op thread give the
/// sleeping default's answers within 1e-6; the head's one-thread scope leaves the caller's libtorch
/// thread count as it found it.
#[test]
fn session_options_change_the_schedule_not_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let x = batch(&paths, 64);
    let ckpt = random_checkpoint(dir.path(), "spin", &tiny_densenet(), serde_json::json!({"hidden": [8], "dropout": 0.0}), 5, 64, &x);
    let with = |options: petal_onnx::SessionOptions| {
        let mut p = Predictor::load(&ckpt, Device::Cpu).unwrap();
        p.set_session_options(options);
        p.set_runtime(Runtime::Onnxruntime, None).expect("onnxruntime");
        p
    };
    let sleeping = with(petal_onnx::SessionOptions { threads: 2, spinning: false });
    let spinning = with(petal_onnx::SessionOptions { threads: 2, spinning: true });
    let single = with(petal_onnx::SessionOptions::from(1));
    let want = rows(&sleeping.probabilities(&x).unwrap());
    let before = tch::get_num_threads();
    let spun = rows(&spinning.probabilities(&x).unwrap());
    assert_eq!(tch::get_num_threads(), before, "the head's one-thread scope is undone");
    assert_close("spinning workers, the head on one libtorch thread", &spun, &want, 1e-6);
    assert_close("one intra-op thread", &rows(&single.probabilities(&x).unwrap()), &want, 1e-6);
    assert_eq!(rows(&spinning.probabilities(&x).unwrap()), spun, "the same options give the same bits again");
}

/// `auto` is onnxruntime on the CPU (the library is provisioned) and libtorch on CUDA; an explicit
/// onnxruntime on a GPU is refused with a message naming `--runtime torch`.
#[test]
fn auto_resolves_by_device() {
    let cpu = Runtime::Auto.resolve(Device::Cpu).expect("resolve");
    assert_eq!(cpu.runtime, Runtime::Onnxruntime, "{cpu:?}");
    assert_eq!(Runtime::Auto.resolve(Device::Cuda(0)).expect("resolve").runtime, Runtime::Torch);
    assert_eq!(Runtime::Torch.resolve(Device::Cpu).expect("resolve").runtime, Runtime::Torch);
    let err = Runtime::Onnxruntime.resolve(Device::Cuda(0)).expect_err("onnxruntime on a GPU");
    assert!(err.to_string().contains("--runtime torch"), "{err}");
}

/// Partial mode's frozen blocks on onnxruntime: the backbone cut after each of its units gives
/// the activation map `model::Classifier::activations` computes on libtorch, within 1e-5 relative
/// (full-size Lite0, photos, perturbed batch norms), and a cut outside the backbone is refused.
#[test]
fn partial_modes_frozen_blocks_give_libtorchs_activations() {
    cut_graphs_give_libtorchs_activations(&Arch::EfficientNetLite0, 224);
    let params = || petal_onnx::graph::Params::new(Default::default());
    let spec = petal_onnx::BackboneSpec { arch: &Arch::DenseNet121, side: 224, feature_dim: 1024, weights: "partial-test" };
    let dense = petal_onnx::prefix_net(spec, 2, params, None, 0).expect_err("densenet");
    assert!(dense.to_string().contains("partial mode supports efficientnet_lite0/1/2"), "{dense}");
}

/// The same for an ensemble of Lite0 and Lite2 at 288 px (the best recipe's size): its cut graph is
/// the members' cut graphs, their maps concatenated along the channels as libtorch does.
#[test]
fn an_ensembles_frozen_blocks_give_libtorchs_activations() {
    let arch = Arch::ensemble(vec![Arch::EfficientNetLite0, Arch::EfficientNetLite2]).expect("ensemble");
    cut_graphs_give_libtorchs_activations(&arch, 288);
}

fn cut_graphs_give_libtorchs_activations(arch: &Arch, side: u32) {
    use petal_onnx::graph::Params;
    let paths = images(REAL, 3);
    let x = batch(&paths, side);
    let head: model::HeadConfig = serde_json::from_value(serde_json::json!({"hidden": [], "dropout": 0.0})).unwrap();
    let generator = model::random_generator_lock(); // seeded draws, not interleaved with another test's
    tch::manual_seed(11);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let net = model::Classifier::new(&vs.root(), arch, &head, 10).expect("classifier");
    tch::no_grad(|| perturb(&vs));
    drop(generator);
    let spec = petal_onnx::BackboneSpec { arch, side: side.into(), feature_dim: net.feature_dim(), weights: "partial-test" };
    let params = || Params::new(vs.variables());
    assert_eq!(net.units(), 9, "{arch}: stem, 7 stages, head");
    for split in 1..net.units() {
        let want = net.activations(&x, split).expect("libtorch activations");
        let got = petal_onnx::prefix_net(spec, split, params, None, 0).expect("cut graph").run_tensor(&x).expect("onnxruntime run");
        assert_eq!(got.size(), want.size(), "{arch}, split {split}: activation shape");
        let rel = relative_error(&got, &want);
        assert!(rel <= 1e-5, "{arch}, split {split}: activations differ by {rel:e} relative (> 1e-5)");
        eprintln!("{arch}, split {split} {:?}: {rel:e} relative", want.size());
    }
    for bad in [0, net.units()] {
        let err = petal_onnx::prefix_net(spec, bad, params, None, 0).expect_err("a cut outside the backbone");
        assert!(err.to_string().contains(&format!("not after {bad}")), "{err}");
    }
}
