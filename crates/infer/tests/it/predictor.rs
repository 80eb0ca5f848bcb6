//! `infer` on its own: a checkpoint built here (tiny DenseNet, random weights, non-trivial batch-norm
//! statistics) is loaded by `Predictor`, which must reproduce the saved network's outputs exactly
//! (folding and channels_last included), rank classes correctly, agree between batch sizes, and
//! refuse checkpoints that do not fit with an error naming the file.

use std::path::{Path, PathBuf};

use checkpoint::{Checkpoint, ClassEntry, Interpolation, Metadata, Preprocessing};
use infer::{Error, Predictor};
use model::{Arch, Classifier, DenseNetConfig, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const CLASSES: usize = 4;

fn arch() -> Arch {
    Arch::DenseNet(DenseNetConfig { growth_rate: 4, block_config: vec![2, 2], num_init_features: 8, bn_size: 2, drop_rate: 0.0 })
}

fn head() -> HeadConfig {
    HeadConfig { hidden: vec![6], ..Default::default() }
}

/// A randomly initialised network whose batch norms have non-trivial running statistics.
fn network(classes: usize) -> (VarStore, Classifier) {
    let _generator = model::random_generator_lock(); // seeded draws, not interleaved with another test's
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let net = Classifier::new(&vs.root(), &arch(), &head(), classes as i64).expect("classifier");
    tch::no_grad(|| {
        // In name order: a HashMap's order changes from process to process, and so would the draws.
        let sorted: std::collections::BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        for (k, mut t) in sorted {
            if k.ends_with("running_mean") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.2));
            } else if k.ends_with("running_var") {
                t.copy_(&(Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5));
            }
        }
    });
    (vs, net)
}

fn meta(classes: usize) -> Metadata {
    Metadata {
        arch: "densenet".into(),
        arch_config: serde_json::to_value(arch()).expect("arch json"),
        head: serde_json::to_value(head()).expect("head json"),
        classes: (0..classes).map(|i| ClassEntry { folder: format!("{}", i + 1), index: i, name: Some(format!("flower {i}")) }).collect(),
        preprocessing: Some(Preprocessing {
            input_size: 32,
            resize_size: 36,
            mean: preprocess::IMAGENET_MEAN.to_vec(),
            std: preprocess::IMAGENET_STD.to_vec(),
            interpolation: Interpolation::Bilinear,
        }),
        ..Metadata::default()
    }
}

/// Saves `vs` with `meta` (after `edit`) to `dir/name`.
fn save(dir: &Path, name: &str, vs: &VarStore, meta: Metadata, edit: impl FnOnce(&mut Checkpoint)) -> PathBuf {
    let mut c = Checkpoint { meta, tensors: model::weights::varstore_tensors(vs).expect("tensors") };
    edit(&mut c);
    let path = dir.join(name);
    checkpoint::save(&path, &c).expect("save");
    path
}

fn input(n: i64) -> Tensor {
    let v: Vec<f32> = (0..n * 3 * 32 * 32).map(|i| (1.3 * (0.11 * i as f64).sin()) as f32).collect();
    Tensor::from_slice(&v).reshape([n, 3, 32, 32])
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn loaded_network_reproduces_the_saved_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, net) = network(CLASSES);
    let path = save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {});
    let p = Predictor::load(&path, Device::Cpu).expect("load");
    assert_eq!(p.num_classes(), CLASSES);
    assert_eq!(p.transform.image_size, 32);
    assert_eq!(p.transform.resize_size, 36);
    let x = input(3);
    let want = tch::no_grad(|| net.forward_t(&x, false));
    let scale = want.abs().max().double_value(&[]);
    assert!(scale > 1e-3, "logits are not trivially zero: {scale}");
    let got = p.logits(&x).expect("logits");
    assert_eq!(got.size(), vec![3, CLASSES as i64]);
    // Folded batch norms and channels_last change rounding only.
    assert!(max_abs(&got, &want) <= 1e-5 * scale.max(1.0), "logits differ by {}", max_abs(&got, &want));
    // Probabilities: rows sum to 1, and they are the softmax of the saved network's logits.
    let probs = p.probabilities(&x).expect("probabilities");
    let sums = Vec::<f32>::try_from(probs.sum_dim_intlist(-1, false, Kind::Float)).expect("sums");
    for s in sums {
        assert!((s - 1.0).abs() < 1e-6, "row sums to {s}");
    }
    assert!(max_abs(&probs.log(), &want.log_softmax(-1, Kind::Float)) < 1e-4);
    assert!(probs.min().double_value(&[]) > 0.0);
}

/// The transform a predictor applies is the checkpoint's own: sizes, and a mean and std other than
/// ImageNet's (a checkpoint trained with other statistics must be normalised with them).
#[test]
fn the_transform_is_the_checkpoints_preprocessing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _net) = network(CLASSES);
    let mut m = meta(CLASSES);
    if let Some(pre) = m.preprocessing.as_mut() {
        (pre.input_size, pre.resize_size) = (40, 48);
        (pre.mean, pre.std) = (vec![0.5, 0.25, 0.125], vec![0.3, 0.2, 0.1]);
    }
    let path = save(dir.path(), "stats.petal", &vs, m, |_| {});
    let p = Predictor::load(&path, Device::Cpu).expect("load");
    assert_eq!((p.transform.image_size, p.transform.resize_size), (40, 48));
    assert_eq!((p.transform.mean, p.transform.std), ([0.5, 0.25, 0.125], [0.3, 0.2, 0.1]));
}

/// A server lets go of the checkpoint's unfolded copies of the weights: the answers keep every bit.
#[test]
fn releasing_the_checkpoint_weights_changes_no_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _net) = network(CLASSES);
    let path = save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {});
    let mut p = Predictor::load(&path, Device::Cpu).expect("load");
    let x = input(3);
    let before = p.probabilities(&x).expect("probabilities");
    assert!(!p.variables().is_empty());
    p.release_checkpoint_weights();
    assert!(p.variables().is_empty(), "the variable store still holds its tensors");
    let after = p.probabilities(&x).expect("probabilities");
    assert!(before.equal(&after), "probabilities changed by {}", max_abs(&before, &after));
}

#[test]
fn top_k_orders_by_probability_and_breaks_ties_by_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let p = Predictor::load(&save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {}), Device::Cpu).expect("load");
    let probs = [0.1f32, 0.4, 0.1, 0.4];
    let top = p.top_k(&probs, 4);
    assert_eq!(top.iter().map(|c| c.index).collect::<Vec<_>>(), [1, 3, 0, 2]);
    assert_eq!(top[0].folder, "2");
    assert_eq!(top[0].name, "flower 1");
    assert_eq!(top.iter().map(|c| c.prob).collect::<Vec<_>>(), [0.4, 0.4, 0.1, 0.1]);
    assert_eq!(p.top_k(&probs, 2).iter().map(|c| c.index).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(p.top_k(&[0.05, 0.15, 0.5, 0.3], 3).iter().map(|c| c.index).collect::<Vec<_>>(), [2, 3, 1]);
    assert_eq!(p.top_k(&probs, 10).len(), CLASSES, "k beyond the classes gives every class once");
    assert!(p.top_k(&probs, 0).is_empty());
}

#[test]
fn a_class_without_a_display_name_shows_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let mut m = meta(CLASSES);
    m.classes[2].name = None;
    let p = Predictor::load(&save(dir.path(), "a.petal", &vs, m, |_| {}), Device::Cpu).expect("load");
    let top = p.top_k(&[0.0, 0.0, 1.0, 0.0], 1);
    assert_eq!((top[0].folder.as_str(), top[0].name.as_str()), ("3", "3"));
}

fn write_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            let img = image::RgbImage::from_fn(40 + 3 * i as u32, 37, |x, y| {
                image::Rgb([(x * 6 + i as u32 * 40) as u8, (y * 5) as u8, ((x ^ y) * 9) as u8])
            });
            img.save(&p).expect("save png");
            p
        })
        .collect()
}

#[test]
fn the_prediction_key_changes_with_every_input_of_the_predictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _net) = network(CLASSES);
    let a = save(dir.path(), "a.safetensors", &vs, meta(CLASSES), |_| {});
    let renamed = save(dir.path(), "b.safetensors", &vs, meta(CLASSES), |c| c.meta.classes[0].name = Some("another flower".into()));
    let paths = write_images(dir.path(), 3);
    let p = Predictor::load(&a, Device::Cpu).expect("load");
    let key = p.prediction_key(&paths, 2, 4);
    assert_eq!(key, p.prediction_key(&paths, 2, 4), "a pure function of its inputs");
    assert_eq!((key["kind"].as_str(), key["k"].as_u64(), key["batch_size"].as_u64()), (Some("petal.predictions"), Some(2), Some(4)));
    assert!(key.get("tta").is_none(), "without TTA the key is the one earlier versions wrote");
    assert_ne!(key, p.prediction_key(&paths[..2], 2, 4), "the images");
    assert_ne!(key, p.prediction_key(&paths, 3, 4), "k");
    assert_ne!(key, p.prediction_key(&paths, 2, 5), "the batch size");
    assert_eq!(p.prediction_key(&paths, 99, 4)["k"].as_u64(), Some(CLASSES as u64), "k beyond the classes is all of them");
    assert_ne!(key, Predictor::load(&renamed, Device::Cpu).expect("load").prediction_key(&paths, 2, 4), "the classes");
    let mut flip = Predictor::load(&a, Device::Cpu).expect("load");
    flip.tta = infer::Tta::Flip;
    assert_eq!(flip.prediction_key(&paths, 2, 4)["tta"], serde_json::json!(infer::Tta::Flip), "test-time augmentation");
    // An image rewritten in place (other size, later modification time) is another input.
    let before = std::fs::metadata(&paths[0]).and_then(|m| m.modified()).expect("mtime");
    image::RgbImage::from_pixel(41, 37, image::Rgb([1, 2, 3])).save(&paths[0]).expect("rewrite");
    std::fs::File::options().write(true).open(&paths[0]).and_then(|f| f.set_modified(before + std::time::Duration::from_secs(60))).expect("mtime");
    assert_ne!(key, p.prediction_key(&paths, 2, 4), "a changed image");
}

/// Resumable prediction journals whole batches (about `chunk_images` images a chunk, rounded down to
/// whole batches, at least one) and answers as `predict_paths` does.
#[test]
fn resumable_prediction_journals_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let p = Predictor::load(&save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {}), Device::Cpu).expect("load");
    let paths = write_images(dir.path(), 14);
    let whole = p.predict_paths(&paths, 2, 4, |_| {}).expect("predict");
    for (chunk_images, items, chunks) in [(13, 12, 2), (3, 4, 4), (8, 8, 2)] {
        let out = dir.path().join(format!("out-{chunk_images}.csv"));
        let (preds, store) = p.predict_paths_resumable(&paths, 2, 4, chunk_images, &out, |_| {}).expect("resumable");
        assert_eq!((store.chunk_items(), store.chunks()), (items, chunks), "chunk_images {chunk_images}, batches of 4, 14 images");
        assert_eq!(preds.len(), whole.len());
        for (a, b) in preds.iter().zip(&whole) {
            assert_eq!(a.path, b.path);
            assert_eq!(a.top.iter().map(|c| c.index).collect::<Vec<_>>(), b.top.iter().map(|c| c.index).collect::<Vec<_>>());
            assert!(a.top.iter().zip(&b.top).all(|(x, y)| (x.prob - y.prob).abs() < 1e-6), "{}", a.path.display());
        }
    }
}

/// A second run over the same inputs reads every chunk the first one journaled (the store is left
/// unfinished, as after a crash): it computes no batch and returns the same predictions, bit for bit.
#[test]
fn a_rerun_reuses_every_journaled_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let p = Predictor::load(&save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {}), Device::Cpu).expect("load");
    let paths = write_images(dir.path(), 14);
    let out = dir.path().join("out.csv");
    let mut first = Vec::new();
    let (a, mut store) = p.predict_paths_resumable(&paths, 2, 4, 8, &out, |done| first.push(done)).expect("first run");
    assert_eq!(first, [0, 4, 8, 12, 14], "progress of the first run");
    assert!(store.load().iter().all(Option::is_some), "both chunks journaled");
    let mut second = Vec::new();
    let (b, _) = p.predict_paths_resumable(&paths, 2, 4, 8, &out, |done| second.push(done)).expect("second run");
    assert_eq!(second, [14], "the second run computed a batch");
    let bits = |v: &[infer::Prediction]| {
        v.iter().map(|q| (q.path.clone(), q.top.iter().map(|c| (c.index, c.prob.to_bits())).collect::<Vec<_>>())).collect::<Vec<_>>()
    };
    assert_eq!(bits(&b), bits(&a));
}

/// A journaled chunk whose records do not fit this run (here: one class per image where the run
/// asks for two, with a length consistent with its header) is recomputed, never read.
#[test]
fn a_journaled_chunk_that_does_not_fit_is_recomputed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let p = Predictor::load(&save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {}), Device::Cpu).expect("load");
    let paths = write_images(dir.path(), 8);
    let out = dir.path().join("out.csv");
    let (want, _) = p.predict_paths_resumable(&paths, 2, 4, 8, &out, |_| {}).expect("first run");
    let key = p.prediction_key(&paths, 2, 4);
    let chunk_dir = out.with_file_name(format!(".out.csv.{}.chunks", &checkpoint::chunks::digest(&key)[..16]));
    let mut store = checkpoint::chunks::ChunkStore::open(&chunk_dir, &key, 8, 8, "predictions").expect("open the journal");
    let mut payload = [8u32.to_le_bytes(), 1u32.to_le_bytes()].concat();
    for _ in 0..8 {
        payload.extend(0u32.to_le_bytes());
        payload.extend(0.5f32.to_bits().to_le_bytes());
    }
    store.save(0, &payload).expect("save the chunk");
    let mut progress = Vec::new();
    let (got, _) = p.predict_paths_resumable(&paths, 2, 4, 8, &out, |done| progress.push(done)).expect("second run");
    assert_eq!(progress, [0, 4, 8], "the chunk that does not fit was read instead of recomputed");
    let bits = |v: &[infer::Prediction]| v.iter().map(|q| q.top.iter().map(|c| (c.index, c.prob.to_bits())).collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn batch_and_single_predictions_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let p = Predictor::load(&save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {}), Device::Cpu).expect("load");
    let paths = write_images(dir.path(), 5);
    let mut progress = Vec::new();
    let batched = p.predict_paths(&paths, CLASSES, 2, |done| progress.push(done)).expect("batch of 2");
    assert_eq!(progress, [2, 4, 5]);
    let whole = p.predict_paths(&paths, CLASSES, 5, |_| {}).expect("batch of 5");
    let single: Vec<_> = paths.iter().map(|q| p.predict_paths(std::slice::from_ref(q), CLASSES, 1, |_| {}).expect("single").remove(0)).collect();
    assert_eq!(batched.len(), 5);
    for ((b, w), s) in batched.iter().zip(&whole).zip(&single) {
        assert_eq!(b.path, s.path);
        let idx = |pr: &infer::Prediction| pr.top.iter().map(|c| c.index).collect::<Vec<_>>();
        assert_eq!(idx(b), idx(s), "{}", s.path.display());
        assert_eq!(idx(w), idx(s), "{}", s.path.display());
        for ((x, y), z) in b.top.iter().zip(&w.top).zip(&s.top) {
            assert!((x.prob - z.prob).abs() < 1e-6 && (y.prob - z.prob).abs() < 1e-6, "{}: {x:?} {y:?} {z:?}", s.path.display());
        }
        let total: f32 = s.top.iter().map(|c| c.prob).sum();
        assert!((total - 1.0).abs() < 1e-5, "all classes sum to {total}");
    }
    // Images differ, so do their predictions: a batch is not one image repeated.
    assert!(single.windows(2).any(|w| (w[0].top[0].prob - w[1].top[0].prob).abs() > 1e-6));
    // Each prediction is the network's softmax on that image's own eval tensor.
    for s in &single {
        let t = preprocess::predict_tensor(&s.path, &p.transform).expect("tensor");
        let probs =
            Vec::<f32>::try_from(p.probabilities(&Tensor::from_slice(&t).reshape([1, 3, 32, 32])).expect("probabilities").get(0)).expect("row");
        for c in &s.top {
            assert!((probs[c.index] - c.prob).abs() < 1e-6);
        }
    }
    // An unreadable image is named.
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"not a png").expect("write");
    let err = p.predict_paths(&[paths[0].clone(), bad], 3, 4, |_| {}).expect_err("broken image");
    assert!(err.to_string().contains("broken.png"), "{err}");
}

/// Loads `path`, expecting an error whose message names the file and contains every `needles`.
fn refused(path: &Path, needles: &[&str]) -> Error {
    let err = match Predictor::load(path, Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    let name = path.file_name().expect("name").to_string_lossy();
    assert!(msg.contains(name.as_ref()), "{msg} does not name {name}");
    for n in needles {
        assert!(msg.contains(n), "{msg} lacks {n:?}");
    }
    err
}

#[test]
fn mismatched_checkpoints_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (vs, _) = network(CLASSES);
    // The head recorded in the metadata is not the one the tensors were made with.
    let mut m = meta(CLASSES);
    m.head = serde_json::to_value(HeadConfig { hidden: vec![7], ..Default::default() }).expect("json");
    assert!(matches!(refused(&save(d, "head.petal", &vs, m, |_| {}), &["mis-shaped", "classifier."]), Error::Model(_)));
    // More classes in the metadata than the last layer has outputs.
    let mut m = meta(CLASSES + 1);
    m.classes[CLASSES].folder = "extra".into();
    refused(&save(d, "classes.petal", &vs, m, |_| {}), &["mis-shaped", &format!("[{}, 6]", CLASSES + 1)]);
    // A tensor missing from the file, and one the network does not have.
    refused(
        &save(d, "missing.petal", &vs, meta(CLASSES), |c| drop(c.tensors.remove("features.conv0.weight"))),
        &["missing", "features.conv0.weight"],
    );
    let extra = |c: &mut Checkpoint| drop(c.tensors.insert("features.bogus.weight".into(), checkpoint::TensorData::from_f32(vec![1], &[1.0])));
    refused(&save(d, "unexpected.petal", &vs, meta(CLASSES), extra), &["unexpected", "features.bogus.weight"]);
    // A weights-only file (no classes), no preprocessing, bad class indices, an unknown architecture.
    let no_classes = Metadata { classes: vec![], ..meta(CLASSES) };
    assert!(matches!(refused(&save(d, "weights.petal", &vs, no_classes, |_| {}), &["no class list"]), Error::Unusable { .. }));
    let no_pre = Metadata { preprocessing: None, ..meta(CLASSES) };
    refused(&save(d, "nopre.petal", &vs, no_pre, |_| {}), &["no preprocessing"]);
    let mut gap = meta(CLASSES);
    gap.classes[3].index = 7;
    refused(&save(d, "gap.petal", &vs, gap, |_| {}), &["indices"]);
    let unknown = Metadata { arch: "resnet9".into(), arch_config: serde_json::Value::Null, ..meta(CLASSES) };
    refused(&save(d, "unknown.petal", &vs, unknown, |_| {}), &["unknown architecture", "resnet9"]);
    let mut bad_std = meta(CLASSES);
    bad_std.preprocessing.as_mut().expect("pre").std = vec![0.2, 0.2];
    refused(&save(d, "std.petal", &vs, bad_std, |_| {}), &["3 values"]);
    // Not a checkpoint at all, and a file that does not exist.
    std::fs::write(d.join("junk.petal"), b"junk").expect("write");
    assert!(matches!(refused(&d.join("junk.petal"), &[]), Error::Checkpoint(_)));
    refused(&d.join("absent.petal"), &[]);
}

/// A `w`×`h` PNG; mirrored left-right when `symmetric`.
fn pattern(path: &Path, w: u32, h: u32, symmetric: bool) -> PathBuf {
    image::RgbImage::from_fn(w, h, |x, y| {
        let m = if symmetric { x.min(w - 1 - x) } else { x };
        image::Rgb([(m * 13 + y * 7) as u8, (m * m + 3 * y) as u8, (y * 11 + m) as u8])
    })
    .save(path)
    .expect("write png");
    path.to_path_buf()
}

fn probs_by_index(p: &infer::Prediction) -> Vec<f32> {
    let mut v = vec![0f32; p.top.len()];
    for c in &p.top {
        v[c.index] = c.prob;
    }
    v
}

#[test]
fn tta_flip_of_a_symmetric_image_equals_no_tta_and_the_advice_becomes_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vs, _) = network(CLASSES);
    let ckpt = save(dir.path(), "a.petal", &vs, meta(CLASSES), |_| {});
    // 40×36 → Resize(36) keeps it, CenterCrop(32) takes columns 4..36: the crop stays symmetric.
    let images = [pattern(&dir.path().join("sym.png"), 40, 36, true), pattern(&dir.path().join("asym.png"), 40, 36, false)];
    let mut p = Predictor::load(&ckpt, Device::Cpu).expect("load");
    assert_eq!(p.tta, infer::Tta::None, "no advice recorded: no test-time augmentation");
    let none = p.predict_paths(&images, CLASSES, 8, |_| {}).expect("predict");
    p.tta = infer::Tta::Flip;
    let flip = p.predict_paths(&images, CLASSES, 8, |_| {}).expect("predict flip");
    let diff = |a: &infer::Prediction, b: &infer::Prediction| {
        probs_by_index(a).iter().zip(probs_by_index(b)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
    };
    // Equal up to the rounding of another batch size (libtorch's kernels), far below any real change.
    assert!(diff(&none[0], &flip[0]) < 1e-6, "symmetric image: flip changed the answer by {}", diff(&none[0], &flip[0]));
    assert!(diff(&none[1], &flip[1]) > 1e-4, "asymmetric image: flip must change the answer ({})", diff(&none[1], &flip[1]));
    p.tta = infer::Tta::FiveCrop;
    let five = p.predict_paths(&images[..1], CLASSES, 8, |_| {}).expect("five-crop");
    let total: f32 = five[0].top.iter().map(|c| c.prob).sum();
    assert!((total - 1.0).abs() < 1e-5, "averaged probabilities sum to 1: {total}");
    // Five crops cut here by hand from the resized image (36 px shorter side: the 40×36 image as
    // is): the four corners and the centre, each normalised and run without TTA; their mean
    // probabilities are five-crop's answer.
    let img = preprocess::resize_shorter(&preprocess::decode_rgb(&images[0]).expect("decode"), 36);
    assert_eq!(img.dimensions(), (40, 36));
    let mut pixels = Vec::new();
    for (x0, y0) in [(0, 0), (8, 0), (0, 4), (8, 4), (4, 2)] {
        let mut crop = Vec::with_capacity(32 * 32 * 3);
        for y in 0..32 {
            for x in 0..32 {
                crop.extend(img.get_pixel(x0 + x, y0 + y).0);
            }
        }
        let mut out = vec![0f32; 3 * 32 * 32];
        preprocess::write_tensor(&crop, 32, &p.transform, false, false, &mut out);
        pixels.extend(out);
    }
    let x = tch::Tensor::from_slice(&pixels).view([5, 3, 32, 32]);
    let mean = p.probabilities(&x).expect("five crops").mean_dim(0, false, tch::Kind::Float);
    let mean: Vec<f32> = Vec::try_from(mean).expect("probabilities");
    let got = probs_by_index(&five[0]);
    let diff = got.iter().zip(&mean).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "five-crop differs from the mean of five hand-cut crops by {diff}");

    // The advice: a costlier mode only when strictly better; recorded, it is the loaded default.
    let tie = infer::InferenceAdvice::choose("valid", &[(infer::Tta::None, 0.8, 0.01), (infer::Tta::Flip, 0.8, 0.02)]);
    assert_eq!(tie.tta, infer::Tta::None);
    let better =
        infer::InferenceAdvice::choose("valid", &[(infer::Tta::None, 0.8, 0.01), (infer::Tta::Flip, 0.82, 0.02), (infer::Tta::FiveCrop, 0.81, 0.05)]);
    assert_eq!(better.tta, infer::Tta::Flip);
    infer::record_advice(&ckpt, &better).expect("record");
    let q = Predictor::load(&ckpt, Device::Cpu).expect("reload");
    assert_eq!(q.tta, infer::Tta::Flip);
    assert_eq!(infer::InferenceAdvice::from_meta(&q.meta), Some(better));
}
