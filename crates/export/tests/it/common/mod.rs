//! Helpers shared by the export tests and the benchmark example: random-weight checkpoints,
//! images (real photos from `../shared` when present, else the committed fixture images), petal's
//! reference probabilities.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use checkpoint::{Checkpoint, ClassEntry, Metadata, Preprocessing};
use model::{Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// A tiny DenseNet-BC (growth 4, blocks (2, 2), 8 initial features, bottleneck 2).
pub fn tiny_densenet() -> Arch {
    Arch::DenseNet(model::DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 })
}

/// Random batch-norm statistics and affine parameters and non-zero convolution biases, so that
/// folding is exercised (a fresh network has the identity batch norm).
pub fn perturb(vs: &VarStore) {
    // In name order: a HashMap's order changes from process to process, and so would the draws.
    let sorted: std::collections::BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    for (k, mut t) in sorted {
        let c = t.size().first().copied().unwrap_or(1);
        let perturbed = if k.ends_with("running_var") {
            Tensor::rand([c], (Kind::Float, Device::Cpu)) * 1.5 + 0.5
        } else if k.ends_with("running_mean") || (k.ends_with(".bias") && !k.starts_with("classifier")) {
            Tensor::randn([c], (Kind::Float, Device::Cpu)) * 0.2
        } else if t.dim() == 1 && k.ends_with(".weight") {
            Tensor::rand([c], (Kind::Float, Device::Cpu)) + 0.5
        } else {
            continue;
        };
        t.copy_(&perturbed);
    }
}

/// Writes a checkpoint of `arch` with random weights (seeded), perturbed batch norms, and a final
/// layer scaled so that the logits on `calib` (normalised images `[N, 3, S, S]`) have a standard
/// deviation of about 3: peaked probabilities whose top-5 is well separated. `head_json` may carry
/// extra fields (`output`).
pub fn random_checkpoint(
    dir: &Path,
    name: &str,
    arch: &Arch,
    head_json: serde_json::Value,
    classes: usize,
    input_size: u32,
    calib: &Tensor,
) -> PathBuf {
    let _generator = model::random_generator_lock(); // seeded draws, not interleaved with another test's
    tch::manual_seed(7);
    let head: HeadConfig = serde_json::from_value(head_json.clone()).expect("head config");
    let vs = VarStore::new(Device::Cpu);
    let net = Classifier::new(&vs.root(), arch, &head, classes as i64).expect("classifier");
    tch::no_grad(|| {
        perturb(&vs);
        let last = format!("classifier.{}", 3 * head.hidden.len());
        let std = net.forward_t(calib, false).std(true).double_value(&[]);
        let scale = 3.0 / std.max(1e-6);
        let vars = vs.variables();
        for suffix in ["weight", "bias"] {
            let mut t = vars[&format!("{last}.{suffix}")].shallow_clone();
            let _ = t.g_mul_scalar_(scale);
        }
    });
    let tensors = model::weights::varstore_tensors(&vs).expect("tensors");
    let meta = Metadata {
        arch: arch.name().into(),
        arch_config: serde_json::to_value(arch).expect("arch json"),
        classes: (0..classes).map(|i| ClassEntry { folder: format!("{}", i + 1), index: i, name: Some(format!("flower {}", i + 1)) }).collect(),
        preprocessing: Some(Preprocessing {
            input_size,
            resize_size: input_size * 8 / 7,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            interpolation: Default::default(),
        }),
        head: head_json,
        ..Metadata::default()
    };
    let path = dir.join(format!("{name}.safetensors"));
    checkpoint::save(&path, &Checkpoint { meta, tensors }).expect("save checkpoint");
    path
}

/// The workspace's `../shared/data` folder.
pub fn shared_data() -> PathBuf {
    testkit::workspace_root().join("../shared/data")
}

/// The committed fixture photos of the preprocess crate (RGB, RGBA, grey and CMYK JPEG/PNG files
/// of several sizes), used when the real data set is absent.
fn fixture_images() -> Vec<PathBuf> {
    let dir = testkit::workspace_root().join("crates/preprocess/tests/fixtures/golden");
    ["rgb_333x500.jpg", "rgb_320x280.png", "cmyk_200x260.jpg", "rgba_260x300.png", "gray_300x257.png", "rgb_203x301.png"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

/// `n` (≤ 6) images: the first image of the first `n` classes of
/// `../shared/data/flowers102-mini/valid` when present, else the committed fixture images, with
/// a recorded skip of `check` (the real-photo variant of the check) saying why.
pub fn images(check: &str, n: usize) -> Vec<PathBuf> {
    let valid = shared_data().join("flowers102-mini/valid");
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&valid).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    classes.sort();
    let real: Vec<PathBuf> = classes
        .iter()
        .filter_map(|c| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(c).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            files.into_iter().next()
        })
        .take(n)
        .collect();
    if real.len() == n {
        testkit::ran(check);
        return real;
    }
    testkit::skip(check, &format!("{} is absent or has fewer than {n} classes: the committed fixture images are used instead", valid.display()));
    fixture_images().into_iter().take(n).collect()
}

/// The images as petal's eval transform gives them: `[N, 3, size, size]`.
pub fn batch(paths: &[PathBuf], input_size: u32) -> Tensor {
    let cfg = preprocess::TransformConfig { image_size: input_size, resize_size: input_size * 8 / 7, ..Default::default() };
    let flat: Vec<f32> = paths.iter().flat_map(|p| preprocess::predict_tensor(p, &cfg).expect("preprocess")).collect();
    Tensor::from_slice(&flat).view([paths.len() as i64, 3, input_size as i64, input_size as i64])
}

/// petal's probabilities `[N, C]` for `x` (the production path: `infer::Predictor`).
pub fn petal_probabilities(ckpt: &Path, x: &Tensor) -> Tensor {
    infer::Predictor::load(ckpt, Device::Cpu).expect("predictor").probabilities(x).expect("probabilities")
}

/// Rows of a `[N, C]` tensor.
pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    (0..t.size()[0]).map(|i| Vec::<f32>::try_from(t.get(i).contiguous()).expect("row")).collect()
}

/// Indices of the `k` largest values, largest first.
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Asserts max |a − b| ≤ `tol` and equal top-5 for every row; returns the max difference.
pub fn assert_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let mut max = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {i} length");
        let d = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        max = max.max(d);
        assert!(d <= tol, "{what}: row {i}: max |diff| {d:e} > {tol:e}");
        assert_eq!(top_k(g, 5), top_k(w, 5), "{what}: row {i}: top-5 differs");
    }
    eprintln!("{what}: max |diff| {max:e} over {} rows", got.len());
    max
}
