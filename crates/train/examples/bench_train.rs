//! Training benchmark (suite `train` of `cargo xtask bench`): EfficientNet-Lite0 with ImageNet
//! weights, frozen backbone, on `flowers102-mini`; reports the best validation accuracy and the
//! wall time of the whole run, feature extraction included (the caches start cold: runs and caches
//! live in a fresh temporary folder).
//!
//! `cargo run --release -p train --example bench_train -- [--json] [--data DIR] [--weights FILE]
//! [--epochs N] [--views N] [--threads N] [--no-default]`
//!
//! The headline is the pipeline's default recipe, i.e. the seed's recipe (Adam lr 0.003, batch 64,
//! 10 epochs, hidden 512 / ReLU / dropout 0.2) with its augmentation drawn as 2 precomputed views —
//! the recipe `bench/train_pytorch.py` runs with PyTorch. Unless `--no-default`, the project's own
//! `TrainConfig::default()` recipe (AdamW, cosine, label smoothing 0.1, 30 epochs, 2 views) then
//! trains on the same (now cached) features; its accuracy and wall time are reported as
//! `default_valid_acc` and `default_wall_s_cached` (head training only, the features being shared).
//!
//! With `--json` the last stdout line is one JSON object:
//! `{"valid_acc", "wall_s", "feature_s", "epochs", "best_epoch", "views", "train_images",
//! "valid_images", "threads", "default_valid_acc", "default_wall_s_cached", "default_best_epoch"}`.

use std::path::PathBuf;
use std::time::Instant;

use model::Arch;
use train::{TrainConfig, TrainOutcome, TrainRequest};

struct Args {
    json: bool,
    data: PathBuf,
    weights: Option<PathBuf>,
    epochs: Option<usize>,
    views: Option<usize>,
    threads: Option<usize>,
    also_default: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        data: PathBuf::from("../shared/data/flowers102-mini"),
        weights: None,
        epochs: None,
        views: None,
        threads: None,
        also_default: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--no-default" => a.also_default = false,
            "--data" => a.data = PathBuf::from(val("--data")?),
            "--weights" => a.weights = Some(PathBuf::from(val("--weights")?)),
            "--epochs" => a.epochs = Some(val("--epochs")?.parse().map_err(|e| format!("--epochs: {e}"))?),
            "--views" => a.views = Some(val("--views")?.parse().map_err(|e| format!("--views: {e}"))?),
            "--threads" => a.threads = Some(val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// `~/.cache/petal/weights/efficientnet_lite0-imagenet.safetensors` (written by
/// `cargo xtask fetch-weights efficientnet_lite0`).
fn default_weights() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/petal/weights/efficientnet_lite0-imagenet.safetensors"))
}

fn best_acc(out: &TrainOutcome) -> f64 {
    out.history.iter().filter_map(|m| m.valid_acc).fold(f64::NAN, f64::max)
}

fn run(a: &Args) -> Result<serde_json::Value, String> {
    let weights = match a.weights.clone().or_else(default_weights) {
        Some(w) if w.is_file() => w,
        Some(w) => {
            return Err(format!(
                "the ImageNet weights {} are missing: run `cargo xtask fetch-weights efficientnet_lite0` (or pass --weights FILE)",
                w.display()
            ))
        }
        None => return Err("$HOME is not set, so the default weights cannot be found: pass --weights FILE".into()),
    };
    if !a.data.is_dir() {
        return Err(format!("{} is not a folder: pass --data <shared>/data/flowers102-mini", a.data.display()));
    }
    let tmp = tempfile::Builder::new().prefix("petal-bench-train-").tempdir().map_err(|e| format!("creating a temporary folder: {e}"))?;
    let runs_dir = tmp.path().join("runs");
    let cache_dir = tmp.path().join("cache");

    let mut seed = TrainConfig { name: "bench-seed".into(), arch: Arch::EfficientNetLite0, views: 2, ..TrainConfig::seed_preset() };
    let mut default = TrainConfig { name: "bench-default".into(), arch: Arch::EfficientNetLite0, ..TrainConfig::default() };
    for cfg in [&mut seed, &mut default] {
        if let Some(e) = a.epochs {
            cfg.epochs = e;
        }
        if let Some(v) = a.views {
            cfg.views = v;
        }
        if let Some(t) = a.threads {
            cfg.threads = t;
        }
    }
    let request = |config: TrainConfig| TrainRequest {
        config,
        weights: Some(weights.clone()),
        runs_dir: runs_dir.clone(),
        cache_dir: cache_dir.clone(),
        resume: false,
        train_split: "train".into(),
        valid_split: "valid".into(),
        skip_bad: false,
    };

    // Timed: dataset discovery, feature extraction (cold caches), head training, checkpoints.
    let t0 = Instant::now();
    let ds = preprocess::discover(&a.data, &preprocess::DiscoverOptions::default()).map_err(|e| format!("reading {}: {e}", a.data.display()))?;
    let out = train::train(&request(seed.clone()), &ds).map_err(|e| format!("training (seed recipe): {e}"))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let count = |s: &str| ds.split(s).map(|s| s.samples.len()).unwrap_or(0);
    let mut report = serde_json::json!({
        "valid_acc": best_acc(&out),
        "wall_s": wall_s,
        "feature_s": out.feature_s,
        "epochs": out.history.len(),
        "best_epoch": out.best_epoch,
        "views": seed.views,
        "train_images": count("train"),
        "valid_images": count("valid"),
        "threads": tch::get_num_threads(),
    });
    eprintln!(
        "seed recipe (lite0, frozen, {} views): best valid acc {:.2}% (epoch {}), {wall_s:.1}s wall, {:.1}s features",
        seed.views,
        100.0 * best_acc(&out),
        out.best_epoch,
        out.feature_s
    );

    if a.also_default {
        let t1 = Instant::now();
        let d = train::train(&request(default.clone()), &ds).map_err(|e| format!("training (default recipe): {e}"))?;
        let secs = t1.elapsed().as_secs_f64();
        eprintln!(
            "default recipe (AdamW, cosine, smoothing, {} epochs) on the cached features: best valid acc {:.2}% (epoch {}), {secs:.1}s",
            default.epochs,
            100.0 * best_acc(&d),
            d.best_epoch
        );
        report["default_valid_acc"] = best_acc(&d).into();
        report["default_wall_s_cached"] = secs.into();
        report["default_best_epoch"] = d.best_epoch.into();
        report["default_epochs"] = d.history.len().into();
    }
    Ok(report)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_train: {e}");
            std::process::exit(2);
        }
    };
    match run(&a) {
        Ok(report) => {
            if a.json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            }
        }
        Err(e) => {
            eprintln!("bench_train: {e}");
            std::process::exit(1);
        }
    }
}
