//! Training benchmark (suite `train` of `cargo xtask bench`): EfficientNet-Lite0 with ImageNet
//! weights, frozen backbone, on `flowers102-mini`; reports the best validation accuracy and the
//! wall time of the whole run, feature extraction included (the caches start cold: runs and caches
//! live in a fresh temporary folder).
//!
//! `cargo run --release -p train --example bench_train -- [--json] [--smoke] [--data DIR]
//! [--weights FILE] [--epochs N] [--views N] [--threads N] [--no-seed]`
//!
//! The headline is the project's recipe (`TrainConfig::default()`: eval-transform features computed
//! once, a linear head, AdamW, cosine schedule, label smoothing 0.2, batch 128, 80 head epochs), compared by the harness with
//! `bench/train_pytorch.py`, the seed's recipe in PyTorch (backbone and augmentation every epoch).
//! Unless `--no-seed`, the seed's recipe then also runs here (Adam 0.003, 10 epochs, 2 augmented
//! views), reported as `seed_valid_acc` / `seed_wall_s_valid_cached`.
//!
//! With `--json` the last stdout line is one JSON object:
//! `{"valid_acc", "wall_s", "feature_s", "epochs", "best_epoch", "views", "train_images",
//! "valid_images", "threads", "seed_valid_acc", "seed_wall_s_valid_cached", "seed_best_epoch"}`.
//! `--smoke`: 3 generated classes of 4 + 2 images, random weights (unless `--weights`),
//! 2 epochs, no seed run.

use std::path::PathBuf;
use std::time::Instant;

use model::Arch;
use train::{Recipe, TrainConfig, TrainOutcome, TrainRequest};

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// ImageFolder with `train/` and `valid/`.
    #[arg(long, default_value = "../shared/data/flowers102-mini")]
    data: PathBuf,
    /// ImageNet weights of EfficientNet-Lite0 (default: the file `cargo xtask fetch-weights efficientnet_lite0` writes).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Head epochs (default: each recipe's own).
    #[arg(long)]
    epochs: Option<usize>,
    /// Augmented views of the project's recipe (default: its own).
    #[arg(long)]
    views: Option<usize>,
    /// Worker threads (default: the config's).
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the second run with the seed's recipe.
    #[arg(long)]
    no_seed: bool,
    /// Backbone (its cached ImageNet weights; trained at its own input size, resize = size·256/224).
    #[arg(long, default_value = "efficientnet_lite0", value_parser = |s: &str| s.parse::<Arch>().map_err(|e| e.to_string()))]
    arch: Arch,
}

/// The backbone weights: given, else (smoke: random) the cached ImageNet file.
fn weights(a: &Args, smoke: bool) -> benchkit::Result<Option<PathBuf>> {
    let cached = || if smoke { None } else { benchkit::cached_weights(a.arch.name()) };
    match a.weights.clone().or_else(cached) {
        Some(w) if w.is_file() => Ok(Some(w)),
        Some(w) => Err(format!("the weights file {} does not exist", w.display()).into()),
        None if smoke => Ok(None),
        None => {
            Err(format!("the ImageNet weights of {0} are missing: run `cargo xtask fetch-weights {0}` (or pass --weights FILE)", a.arch.name())
                .into())
        }
    }
}

fn best_acc(out: &TrainOutcome) -> f64 {
    out.history.iter().filter_map(|m| m.valid_acc).fold(f64::NAN, f64::max)
}

fn run(a: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
    let weights = weights(a, common.smoke)?;
    let tmp = tempfile::Builder::new().prefix("petal-bench-train-").tempdir().map_err(|e| format!("creating a temporary folder: {e}"))?;
    let data = if common.smoke {
        let d = tmp.path().join("smoke-data");
        benchkit::image_folder(&d, 3, &[("train", 4), ("valid", 2)], 96, 96)?;
        d
    } else if a.data.is_dir() {
        a.data.clone()
    } else {
        return Err(format!("{} is not a folder: pass --data <shared>/data/flowers102-mini", a.data.display()).into());
    };
    let (epochs, also_seed) = if common.smoke { (Some(2), false) } else { (a.epochs, !a.no_seed) };
    let runs_dir = tmp.path().join("runs");
    let cache_dir = tmp.path().join("cache");

    let mut default =
        TrainConfig { name: "bench-default".into(), recipe: Recipe { arch: a.arch.clone(), ..Recipe::default() }, ..TrainConfig::default() };
    let mut seed = TrainConfig {
        name: "bench-seed".into(),
        recipe: Recipe { arch: a.arch.clone(), views: 2, ..Recipe::seed_preset() },
        ..TrainConfig::default()
    };
    for cfg in [&mut default, &mut seed] {
        if a.arch != Arch::EfficientNetLite0 {
            cfg.recipe.image_size = a.arch.input_size();
            cfg.recipe.resize_size = (a.arch.input_size() * 256 + 112) / 224;
        }
        if let Some(e) = epochs {
            cfg.recipe.epochs = e;
        }
        if let Some(t) = a.threads {
            cfg.run.threads = t;
        }
    }
    if let Some(v) = a.views {
        default.recipe.views = v;
    }
    let request = |config: TrainConfig| TrainRequest {
        config,
        weights: weights.clone(),
        init_from: None,
        runs_dir: runs_dir.clone(),
        cache_dir: cache_dir.clone(),
        resume: false,
        train_split: "train".into(),
        valid_split: "valid".into(),
        skip_bad: false,
    };

    // Timed, headline: the project's recipe from cold caches — dataset discovery, backbone features
    // (eval transform, once per image), 30 head epochs, a checkpoint per epoch.
    let t0 = Instant::now();
    let ds = preprocess::discover(&data, &preprocess::DiscoverOptions::default()).map_err(|e| format!("reading {}: {e}", data.display()))?;
    let out = train::train(&request(default.clone()), &ds, &train::Silent).map_err(|e| format!("training (default recipe): {e}"))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let count = |s: &str| ds.split(s).map(|s| s.samples.len()).unwrap_or(0);
    let mut report = serde_json::json!({
        "arch": a.arch.name(),
        "image_size": default.recipe.image_size,
        "valid_acc": best_acc(&out),
        "wall_s": wall_s,
        "feature_s": out.feature_s,
        "epochs": out.history.len(),
        "best_epoch": out.best_epoch,
        "views": default.recipe.views,
        "train_images": count("train"),
        "valid_images": count("valid"),
        "threads": tch::get_num_threads(),
    });
    eprintln!(
        "default recipe ({} frozen, AdamW, cosine, smoothing, {} epochs, {} views): best valid acc {:.2}% (epoch {}), {wall_s:.1}s wall, {:.1}s features",
        a.arch,
        default.recipe.epochs,
        default.recipe.views,
        100.0 * best_acc(&out),
        out.best_epoch,
        out.feature_s
    );

    if also_seed {
        // The seed's recipe with its augmentation as 2 precomputed views (the validation features
        // are already cached by the run above, so this time excludes them).
        let t1 = Instant::now();
        let s = train::train(&request(seed.clone()), &ds, &train::Silent).map_err(|e| format!("training (seed recipe): {e}"))?;
        let secs = t1.elapsed().as_secs_f64();
        eprintln!(
            "seed recipe (Adam 0.003, 10 epochs, {} augmented views): best valid acc {:.2}% (epoch {}), {secs:.1}s (validation features cached)",
            seed.recipe.views,
            100.0 * best_acc(&s),
            s.best_epoch
        );
        report["seed_valid_acc"] = best_acc(&s).into();
        report["seed_wall_s_valid_cached"] = secs.into();
        report["seed_best_epoch"] = s.best_epoch.into();
    }
    Ok(report)
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_train", run)
}
