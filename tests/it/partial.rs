//! Partial fine-tuning on cached activations (`mode = "partial"`), on generated data with a random
//! EfficientNet-Lite0 at 32×32 pixels: it learns where frozen features cannot, a resumed run equals
//! an uninterrupted one, the cache is recomputed when any part of its key (split point, seed,
//! transform, view, element type, images, weights; the architecture is in the key too) changes or
//! it is damaged, and reused
//! otherwise, its size is reported before it is built and a cache over the limit is refused, and
//! the saved checkpoint predicts through `infer::Predictor` exactly like the partial network's own
//! forward (frozen part, then trainable part).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use model::{Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use train::{ActivationDtype, Event, OptimizerKind, Recipe, RunOptions, Schedule, TrainConfig, TrainMode, TrainOutcome, TrainRequest};

/// A small partial run: Lite0 on 32×32 crops, Adam, constant learning rate, no dropout.
fn config(name: &str, mode: TrainMode, blocks: usize) -> TrainConfig {
    TrainConfig {
        name: name.into(),
        recipe: Recipe {
            arch: Arch::EfficientNetLite0,
            head: HeadConfig { hidden: vec![], dropout: 0.0, ..HeadConfig::default() },
            mode,
            unfreeze_blocks: blocks,
            views: 0,
            optimizer: OptimizerKind::Adam,
            lr: 0.01,
            schedule: Schedule::Constant,
            label_smoothing: 0.0,
            epochs: 6,
            batch_size: 8,
            seed: 5,
            image_size: 32,
            resize_size: 36,
            ..Recipe::default()
        },
        run: RunOptions { channels_last: false, eval_batch_size: 6, chunk_images: 12, threads: 1, ..RunOptions::default() },
    }
}

/// A backbone whose last block is dead: the scale of its batch norm (`_bn1.weight`) is zero and its
/// shift 1, so the pooled features are the same constant for every image and nothing trained on
/// them can tell classes apart, while training that block from the activations before it can. For
/// an ensemble, every member's last block is dead.
fn dead_head_weights(path: &Path, arch: &Arch) {
    let _generator = model::random_generator_lock(); // seeded draws, not interleaved with another test's
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let _net = Classifier::new(&vs.root(), arch, &HeadConfig::default(), 3).expect("net");
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let own = arch.member_key(&name).map_or(name.as_str(), |(_, rest)| rest);
            match own {
                "_bn1.weight" => _ = t.zero_(),
                "_bn1.bias" => _ = t.fill_(1.0),
                _ => {}
            }
        }
    });
    let tensors = model::weights::varstore_tensors(&vs).expect("tensors");
    let meta = checkpoint::Metadata { arch: arch.name().into(), ..checkpoint::Metadata::default() };
    checkpoint::save(path, &checkpoint::Checkpoint { meta, tensors }).expect("save weights");
}

struct Bench {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    work: PathBuf,
    weights: PathBuf,
}

/// 3 classes × 15 training images (batches of 8 never leave one image alone, which batch norm
/// on 1×1 maps could not train on) and 3 × 8 validation images.
fn bench() -> Bench {
    bench_for(&Arch::EfficientNetLite0)
}

/// [`bench`] with the dead-headed weights of `arch`.
fn bench_for(arch: &Arch) -> Bench {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    common::make_dataset(&data, 15, 8, 0);
    let weights = tmp.path().join("dead-head.safetensors");
    dead_head_weights(&weights, arch);
    let work = tmp.path().join("work");
    Bench { data, work, weights, _tmp: tmp }
}

fn request(b: &Bench, cfg: TrainConfig, resume: bool) -> TrainRequest {
    TrainRequest {
        config: cfg,
        weights: Some(b.weights.clone()),
        runs_dir: b.work.join("runs"),
        cache_dir: b.work.join("cache"),
        resume,
        train_split: "train".into(),
        valid_split: "valid".into(),
        skip_bad: false,
        init_from: None,
    }
}

/// Trains, returning the outcome and every message the library reported.
fn run(b: &Bench, req: &TrainRequest) -> (Result<TrainOutcome, train::Error>, Vec<String>) {
    let ds = preprocess::discover(&b.data, &preprocess::DiscoverOptions::default()).expect("dataset");
    let log = Mutex::new(Vec::new());
    let progress = |e: Event<'_>| match e {
        Event::Message(m) | Event::Warning(m) => log.lock().expect("log").push(m.to_string()),
        Event::Start { task, .. } => log.lock().expect("log").push(format!("start {task}")),
        _ => {}
    };
    let out = train::train(req, &ds, &progress);
    (out, log.into_inner().expect("log"))
}

fn best_valid(o: &TrainOutcome) -> f64 {
    o.history.iter().filter_map(|m| m.valid_acc).fold(0.0, f64::max)
}

/// Activation cache files (`.pact`) in the cache folder, by name.
fn pact_files(b: &Bench) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(b.work.join("cache"))
        .expect("cache dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pact"))
        .collect();
    v.sort();
    v
}

/// Eval-transformed validation images as one batch.
fn valid_batch(b: &Bench, cfg: &TrainConfig) -> (Tensor, Tensor) {
    let ds = preprocess::discover(&b.data, &preprocess::DiscoverOptions::default()).expect("dataset");
    let samples: Arc<[preprocess::Sample]> = Arc::from(ds.split("valid").expect("valid").samples.clone());
    let lcfg = preprocess::LoaderConfig { batch_size: samples.len(), mode: preprocess::Mode::Eval, ..preprocess::LoaderConfig::default() };
    let batch = preprocess::loader(samples, preprocess::ImageSource::Files, &train::transform_config(cfg), &lcfg)
        .expect("loader")
        .next()
        .expect("a batch")
        .expect("batch");
    (train::batch_tensor(&batch, Device::Cpu), Tensor::from_slice(&batch.labels))
}

#[test]
fn partial_learns_where_frozen_cannot_and_its_checkpoint_predicts_the_same() {
    let b = bench();
    let (cfg, partial, log) = partial_beats_frozen(&b, &Arch::EfficientNetLite0);
    // The size is announced before any activation is computed.
    let size_at = log.iter().position(|m| m.starts_with("activation cache: 2 file(s), 69 images × 32×16×16 F32")).expect("size message");
    let first_pass = log.iter().position(|m| m.starts_with("start train")).expect("extraction");
    assert!(size_at < first_pass, "{log:?}");

    checkpoint_predicts_like_the_split_network(&b, &partial, &cfg);
}

/// Trains `arch` on `b` frozen, then in partial mode with every unit after the stem trainable, and
/// checks that partial mode learns what frozen features cannot (a dead last block); returns the
/// partial run's config, outcome and messages.
fn partial_beats_frozen(b: &Bench, arch: &Arch) -> (TrainConfig, TrainOutcome, Vec<String>) {
    let with_arch = |mut c: TrainConfig| {
        c.recipe.arch = arch.clone();
        c
    };
    let (frozen, _) = run(b, &request(b, with_arch(config("frozen", TrainMode::Frozen, 0)), false));
    let frozen = frozen.expect("frozen run");
    // A random backbone's deep activations say little about these images: train all but the stem.
    let mut cfg = with_arch(config("partial", TrainMode::Partial, 8));
    cfg.recipe.activation_dtype = ActivationDtype::F32;
    cfg.recipe.backbone_lr_scale = 1.0;
    cfg.recipe.epochs = 8;
    let (partial, log) = run(b, &request(b, cfg.clone(), false));
    let partial = partial.expect("partial run");
    // Accuracy on the training images, as trained (batch statistics in the trainable blocks): the
    // batch norms of a random network start from running statistics that a few dozen steps do not
    // bring up to date (momentum 0.01), so validation accuracy is not what this measures.
    let last_train = |o: &TrainOutcome| o.history.last().map_or(0.0, |m| m.train_acc);
    let (f, p) = (last_train(&frozen), last_train(&partial));
    let valid = (best_valid(&frozen), best_valid(&partial));
    // Constant features can at best name one class: 1/3 of these images.
    assert!(f < 0.5, "{arch}: frozen features of a dead last block carry nothing, yet frozen reached {f} (valid {valid:?})");
    assert!(p >= 0.7, "{arch}: partial mode (every block after the stem trainable) reached only {p} (frozen: {f}; valid {valid:?})");
    (cfg, partial, log)
}

/// The checkpoint is the whole network: `infer` predicts with it exactly like the partial
/// network's own forward (frozen part, then trainable part), and reaches the accuracy the run
/// measured on its cached activations.
fn checkpoint_predicts_like_the_split_network(b: &Bench, partial: &TrainOutcome, cfg: &TrainConfig) {
    let predictor = infer::Predictor::load(&partial.best_checkpoint, Device::Cpu).expect("predictor");
    let (x, y) = valid_batch(b, cfg);
    let via_infer = predictor.probabilities(&x).expect("probabilities");
    let ckpt = checkpoint::load(&partial.best_checkpoint).expect("checkpoint");
    let vs = VarStore::new(Device::Cpu);
    let net = Classifier::new(&vs.root(), &cfg.recipe.arch, &cfg.recipe.head, 3).expect("net");
    let tensors: Vec<(String, Tensor)> =
        ckpt.model_tensors().map(|(k, d)| (k.clone(), model::weights::to_tensor(d, k, Path::new(k)).expect("tensor"))).collect();
    model::weights::load_all_tensors(&vs, tensors, &partial.best_checkpoint).expect("load");
    let split = net.units() - cfg.recipe.unfreeze_blocks;
    let own = net.forward_from(&net.activations(&x, split).expect("frozen part"), split, false).expect("trainable part").softmax(1, Kind::Float);
    let diff = (&via_infer - &own).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "infer and the partial forward differ by {diff}");
    let acc = own.argmax(1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    let best = partial.history[partial.best_epoch - 1].valid_acc.expect("valid acc");
    assert!((acc - best).abs() < 1e-6, "the checkpoint's accuracy {acc} differs from the run's {best}");
}

/// An ensemble of Lite members in partial mode: with every member's last block dead, a head on
/// the frozen ensemble's features cannot learn, while training every member's blocks from the
/// cached activation maps (both members' maps side by side) can; its checkpoint predicts like
/// the split ensemble's own forward.
#[test]
fn a_partial_ensemble_learns_where_its_frozen_features_cannot() {
    let arch = Arch::ensemble(vec![Arch::EfficientNetLite0, Arch::EfficientNetLite2]).expect("ensemble");
    let b = bench_for(&arch);
    let (cfg, partial, log) = partial_beats_frozen(&b, &arch);
    // Lite0's and Lite2's 32 stem channels, side by side.
    assert!(log.iter().any(|m| m.starts_with("activation cache: 2 file(s), 69 images × 64×16×16 F32")), "{log:?}");
    // Both members' last blocks trained; their stems, frozen, did not move.
    let (start, best) = (checkpoint::import(&b.weights).expect("weights"), checkpoint::load(&partial.best_checkpoint).expect("checkpoint"));
    for i in 0..2 {
        let (trained, frozen) = (format!("members.{i}._bn1.weight"), format!("members.{i}._conv_stem.weight"));
        assert_ne!(best.tensors[&trained], start.tensors[&trained], "{trained} did not train");
        assert_eq!(best.tensors[&frozen], start.tensors[&frozen], "{frozen} changed although frozen");
    }
    checkpoint_predicts_like_the_split_network(&b, &partial, &cfg);
}

/// Partial mode's final fit trains the split network on the training split's activations and the
/// selection part's, read as one cache, for the chosen number of epochs.
#[test]
fn a_partial_final_fit_trains_on_train_plus_the_selection_part() {
    let b = bench();
    let mut cfg = config("fit", TrainMode::Partial, 2);
    cfg.recipe.epochs = 3;
    cfg.recipe.holdout = 0.5;
    cfg.recipe.final_fit = true;
    let (out, log) = run(&b, &request(&b, cfg, false));
    let out = out.expect("partial run with a final fit");
    let fit = out.final_fit.expect("a final fit");
    assert_eq!(fit.epochs, out.best_epoch);
    // 45 training images and half of each class's 8 validation images.
    assert_eq!(fit.images, 45 + 12, "{log:?}");
    let last = checkpoint::load(&fit.run_dir.join("last.safetensors")).expect("the final fit's last epoch");
    let history = last.meta.metrics["history"].as_array().expect("history").clone();
    assert_eq!(history.len(), fit.epochs);
    assert!(history.iter().all(|m| m["valid_acc"].is_null() && m["train_acc"].as_f64().is_some()), "{history:?}");
    // The final fit's trainable blocks moved away from the chosen run's.
    let chosen = checkpoint::load(&out.best_checkpoint).expect("chosen");
    let key = "_blocks.15._bn2.weight";
    assert_ne!(last.tensors[key], chosen.tensors[key]);
}

#[test]
fn resumed_partial_run_equals_an_uninterrupted_one() {
    let b = bench();
    let cfg = |epochs| {
        let mut c = config("resume", TrainMode::Partial, 2);
        c.recipe.epochs = epochs;
        c
    };
    let (whole, _) = run(&b, &request(&b, TrainConfig { name: "whole".into(), ..cfg(4) }, false));
    let whole = whole.expect("uninterrupted run");
    let (first, _) = run(&b, &request(&b, cfg(2), false));
    assert_eq!(first.expect("first half").history.len(), 2);
    let (second, _) = run(&b, &request(&b, cfg(4), true));
    let second = second.expect("resumed run");
    assert_eq!(second.feature_s, 0.0, "the resumed run recomputed activations");
    assert_eq!(second.history.len(), 4);
    for (a, w) in second.history.iter().zip(&whole.history) {
        assert_eq!((a.train_loss, a.valid_loss, a.valid_acc), (w.train_loss, w.valid_loss, w.valid_acc), "epoch {}", a.epoch);
    }
    let (a, w) = (checkpoint::load(&second.last_checkpoint).expect("resumed"), checkpoint::load(&whole.last_checkpoint).expect("whole"));
    assert_eq!(a.tensors, w.tensors, "weights, batch-norm statistics and optimiser state must be identical");
    // The trainable blocks' batch norms trained: their running statistics moved.
    let start = checkpoint::import(&b.weights).expect("weights");
    let key = "_blocks.15._bn2.running_mean"; // stage 7 (trainable)
    assert_ne!(a.tensors[key], start.tensors[key], "{key} did not train");
    let frozen_key = "_blocks.14._bn2.running_mean"; // stage 6 (frozen)
    assert_eq!(a.tensors[frozen_key], start.tensors[frozen_key], "{frozen_key} changed although frozen");
}

/// libtorch's random generator is process-wide: two runs started together in one process (drop-connect
/// in the trainable blocks draws from it every step) must each get exactly the draws of a run alone.
#[test]
fn concurrent_runs_in_one_process_match_a_run_alone() {
    let b = bench();
    let cfg = |name: &str| {
        let mut c = config(name, TrainMode::Partial, 3);
        c.name = name.into();
        c.recipe.epochs = 2;
        c
    };
    let (alone, _) = run(&b, &request(&b, cfg("alone"), false));
    let alone = alone.expect("run alone");
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| run(&b, &request(&b, cfg("x"), false)).0.expect("run x"));
        let y = s.spawn(|| run(&b, &request(&b, cfg("y"), false)).0.expect("run y"));
        (x.join().expect("thread x"), y.join().expect("thread y"))
    });
    for o in [&x, &y] {
        let losses = |o: &TrainOutcome| o.history.iter().map(|m| (m.train_loss, m.valid_loss)).collect::<Vec<_>>();
        assert_eq!(losses(o), losses(&alone), "a concurrent run drew other random numbers than a run alone");
    }
}

/// `petal sweep` searches partial-mode fields (here the split point) and trains each trial exactly
/// as `train::train` trains the same config: the same best validation accuracy, bit for bit.
#[test]
fn a_sweep_over_the_split_point_scores_its_trials_as_train_does() {
    use pipeline::sweep::{self, Halving, Method, SweepFile};
    let b = bench();
    let base = {
        let mut c = config("base", TrainMode::Partial, 1);
        c.recipe.epochs = 3;
        c
    };
    let file = SweepFile {
        data: Some(b.data.clone()),
        weights: Some(b.weights.clone()),
        out: b.work.join("sweep"),
        cache_dir: b.work.join("cache"),
        method: Method::Grid,
        workers: 1,
        halving: Halving { rounds: 1, eta: 2 },
        train: toml::Table::try_from(&base).expect("base config as TOML"),
        space: toml::from_str("unfreeze_blocks = [1, 2]").expect("space"),
        ..SweepFile::default()
    };
    let path = b.work.join("sweep.toml");
    std::fs::create_dir_all(&b.work).expect("work dir");
    std::fs::write(&path, toml::to_string(&file).expect("sweep file")).expect("write sweep file");
    let s = sweep::Sweep::load(&path).expect("sweep");
    let runner = sweep::InProcess::new(sweep::TrialContext::open(&s).expect("context"));
    let outcome = sweep::run_sweep(&s, &runner, None, &train::Silent).expect("sweep run");
    assert_eq!(outcome.leaderboard.rows.len(), 2);
    for row in &outcome.leaderboard.rows {
        let blocks = row.point["unfreeze_blocks"].as_integer().expect("unfreeze_blocks") as usize;
        let (o, _) = run(
            &b,
            &request(
                &b,
                {
                    let mut c = base.clone();
                    c.name = format!("blocks{blocks}");
                    c.recipe.unfreeze_blocks = blocks;
                    c
                },
                false,
            ),
        );
        let o = o.expect("train");
        assert_eq!(row.valid_acc, best_valid(&o), "{blocks} block(s): the sweep's trial and train differ");
    }
}

#[test]
fn activation_cache_is_recomputed_when_any_key_part_changes() {
    let b = bench();
    let base = {
        let mut c = config("key", TrainMode::Partial, 1);
        c.recipe.epochs = 1;
        c
    };
    let (o, _) = run(&b, &request(&b, base.clone(), false));
    assert!(o.expect("base run").feature_s > 0.0);
    let mut files = pact_files(&b);
    assert_eq!(files.len(), 2, "train and valid: {files:?}");
    let again = |cfg: TrainConfig| {
        let (o, log) = run(&b, &request(&b, TrainConfig { name: "again".into(), ..cfg }, false));
        (o.expect("run"), log)
    };
    let (same, _) = again(base.clone());
    assert_eq!(same.feature_s, 0.0, "an unchanged key must reuse the cache");
    assert_eq!(pact_files(&b), files);
    // A damaged cache file is detected and recomputed, never read.
    let victim = b.work.join("cache").join(&files[0]);
    let mut bytes = std::fs::read(&victim).expect("read");
    let at = bytes.len() - 3;
    bytes[at] ^= 0x40;
    std::fs::write(&victim, bytes).expect("damage");
    let (o, log) = again(base.clone());
    assert!(o.feature_s > 0.0 && log.iter().any(|m| m.contains("unusable") && m.contains("checksum")), "{log:?}");
    assert_eq!(pact_files(&b), files);
    // (what changes, config, new files: both splits or only the training split)
    let with = |change: fn(&mut Recipe)| {
        let mut c = base.clone();
        change(&mut c.recipe);
        c
    };
    let variants: Vec<(&str, TrainConfig, usize)> = vec![
        ("split point", with(|r| r.unfreeze_blocks = 2), 2),
        ("seed", with(|r| r.seed = 6), 2),
        ("transform", with(|r| r.resize_size = 40), 2),
        ("view", with(|r| r.views = 1), 1),
        ("element type", with(|r| r.activation_dtype = ActivationDtype::F32), 2),
    ];
    for (what, cfg, new) in variants {
        let (o, _) = again(cfg);
        assert!(o.feature_s > 0.0, "{what}: nothing recomputed");
        let now = pact_files(&b);
        assert_eq!(now.len(), files.len() + new, "{what}: {now:?}");
        files = now;
    }
    // Other weights (a replaced file) and other images.
    std::fs::copy(b.data.join("train/daisy/000.png"), b.data.join("train/daisy/001.png")).expect("replace an image");
    assert!(again(base.clone()).0.feature_s > 0.0, "images changed");
    assert_eq!(pact_files(&b).len(), files.len() + 1, "only the training split's images changed");
    files = pact_files(&b);
    dead_head_weights(&b.weights, &Arch::EfficientNetLite0);
    // The rewrite's time, set explicitly: the test must not depend on the filesystem's timestamp
    // resolution.
    let f = std::fs::File::options().write(true).open(&b.weights).expect("open the weights");
    let before = f.metadata().and_then(|m| m.modified()).expect("mtime");
    f.set_modified(before + std::time::Duration::from_secs(3600)).expect("set mtime");
    assert!(again(base.clone()).0.feature_s > 0.0, "weights changed");
    assert_eq!(pact_files(&b).len(), files.len() + 2);
}

#[test]
fn activation_cache_over_the_limit_is_refused_before_any_work() {
    let b = bench();
    // Split after the stem at 64×64: 32×32×32 f16 values = 64 KiB per image, 69 images ≈ 4.5 MB.
    let cfg = {
        let mut c = config("limit", TrainMode::Partial, 8);
        c.recipe.image_size = 64;
        c.recipe.resize_size = 72;
        c.run.activation_cache_limit_mb = 1;
        c
    };
    let (o, log) = run(&b, &request(&b, cfg.clone(), false));
    let err = o.expect_err("over the limit").to_string();
    assert!(err.contains("activation_cache_limit_mb is 1") && err.contains("4.5 MB"), "{err}");
    assert!(log.iter().any(|m| m.contains("activation cache: 2 file(s), 69 images × 32×32×32 F16 = 4.5 MB")), "{log:?}");
    assert!(!log.iter().any(|m| m.starts_with("start")), "nothing may be computed: {log:?}");
    assert!(pact_files(&b).is_empty());
    // With room for it the same run goes ahead.
    let (o, _) = run(
        &b,
        &request(
            &b,
            {
                let mut c = cfg;
                c.run.activation_cache_limit_mb = 5;
                c.recipe.epochs = 1;
                c
            },
            false,
        ),
    );
    o.expect("within the limit");
    assert_eq!(pact_files(&b).len(), 2);
}

#[test]
fn partial_mode_refuses_an_impossible_split() {
    let b = bench();
    for blocks in [0, 9] {
        let (o, _) = run(&b, &request(&b, config("bad", TrainMode::Partial, blocks), false));
        let err = o.expect_err("impossible split").to_string();
        assert!(err.contains("partial mode trains 1 to 8 of the 9 blocks"), "{err}");
    }
}

/// Partial mode's frozen blocks run on either runtime: onnxruntime's activations are cached under
/// their own keys (switching back computes nothing), and the same run on them reaches the same
/// accuracy at every epoch; fine-tuning, which trains its whole backbone, refuses an explicit
/// onnxruntime by name.
#[test]
fn partial_runtimes_have_their_own_activation_caches_and_agree() {
    let b = bench();
    let cfg = |name: &str, runtime: train::Runtime| {
        let mut c = config(name, TrainMode::Partial, 2);
        c.recipe.activation_dtype = ActivationDtype::F32;
        c.recipe.epochs = 3;
        c.run.runtime = runtime;
        c
    };
    let valid = |o: &TrainOutcome| o.history.iter().map(|m| m.valid_acc).collect::<Vec<_>>();
    let (torch, _) = run(&b, &request(&b, cfg("p-torch", train::Runtime::Torch), false));
    let torch = torch.expect("partial on libtorch");
    let torch_files = pact_files(&b);
    assert_eq!(torch_files.len(), 2, "train and valid activations: {torch_files:?}");
    let (ort, _) = run(&b, &request(&b, cfg("p-ort", train::Runtime::Onnxruntime), false));
    let ort = ort.expect("partial on onnxruntime (run `cargo xtask setup`)");
    let both = pact_files(&b);
    assert_eq!(both.len(), 4, "onnxruntime's activations are cached under their own keys: {both:?}");
    assert!(torch_files.iter().all(|f| both.contains(f)), "libtorch's files are kept");
    assert_eq!(valid(&ort), valid(&torch), "valid accuracy per epoch");
    for (t, o) in torch.history.iter().zip(&ort.history) {
        assert!((t.train_loss - o.train_loss).abs() < 1e-4, "epoch {}: train loss {} vs {}", t.epoch, t.train_loss, o.train_loss);
    }
    let (again, log) = run(&b, &request(&b, cfg("p-torch-again", train::Runtime::Torch), false));
    again.expect("partial on libtorch again");
    assert_eq!(pact_files(&b), both, "switching back computes nothing new");
    assert!(!log.iter().any(|m| m.starts_with("start train") || m.starts_with("start valid")), "no activation pass ran: {log:?}");

    let mut fine = config("fine-ort", TrainMode::Finetune, 1);
    fine.run.runtime = train::Runtime::Onnxruntime;
    let (err, _) = run(&b, &request(&b, fine, false));
    let err = err.expect_err("fine-tuning on onnxruntime is refused").to_string();
    assert!(err.contains("trains its whole backbone on libtorch") && err.contains("--runtime torch or auto"), "{err}");
}

/// Partial mode on a full disk (issue 30): the activation cache and the run folder fill at
/// several stages; each time the error names a path on the disk and says "no space left", every
/// file left is whole, and once space is freed the resumed run ends on the uninterrupted run's
/// weights.
#[test]
fn a_full_disk_mid_activation_cache_resumes_to_the_same_weights() {
    const CHECK: &str = "petal/partial/full_disk";
    let Some(disk) = testkit::SmallDisk::mount(CHECK, 512) else { return };
    testkit::ran(CHECK);
    let b = bench();
    let mut cfg = config("full", TrainMode::Partial, 2);
    cfg.recipe.activation_dtype = ActivationDtype::F32;
    cfg.recipe.epochs = 3;
    let (roomy, _) = run(&b, &request(&b, cfg.clone(), false));
    let roomy = roomy.expect("partial run on a roomy disk");
    let acts: u64 = common::files_under(&b.work)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pact"))
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    assert!(acts > 20_000, "activation caches of {acts} bytes");
    let on_disk = TrainRequest { runs_dir: disk.dir.join("runs"), cache_dir: disk.dir.join("cache"), ..request(&b, cfg, true) };
    let mut failures = Vec::new();
    // Part of the activations' chunks; all chunks but not the assembled file; the caches but not
    // the checkpoints.
    for leave in [acts / 2, acts * 3 / 2, acts * 3 + (1 << 20)] {
        disk.fill(leave);
        let (out, _) = run(&b, &on_disk);
        disk.free();
        let Err(e) = out else { break };
        let msg = e.to_string();
        assert!(msg.to_lowercase().contains("no space left") && msg.contains(&disk.dir.display().to_string()), "{msg}");
        for p in common::files_under(&disk.dir).into_iter().filter(|p| !p.ends_with(testkit::FILLER)) {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp") && !name.contains(".tmp-"), "a temp file is left: {}", p.display());
            if name.ends_with(".safetensors") {
                checkpoint::load(&p).unwrap_or_else(|e| panic!("{} is damaged: {e}", p.display()));
            }
        }
        eprintln!("partial on a full disk: {msg}");
        failures.push(msg);
    }
    assert!(failures.len() >= 2, "the disk filled at fewer than two stages: {failures:?}");
    assert!(failures.iter().any(|m| m.contains("for the activation cache")), "the disk never filled in the activation cache: {failures:?}");
    let (done, _) = run(&b, &on_disk);
    let done = done.expect("resumed after freeing");
    let (want, got) =
        (checkpoint::load(&roomy.run_dir.join("last.safetensors")).unwrap(), checkpoint::load(&done.run_dir.join("last.safetensors")).unwrap());
    assert!(want.tensors == got.tensors, "the resumed run's weights differ from the uninterrupted run's");
    let acc = |o: &TrainOutcome| o.history.iter().map(|m| m.valid_acc).collect::<Vec<_>>();
    assert_eq!(acc(&done), acc(&roomy));
}
