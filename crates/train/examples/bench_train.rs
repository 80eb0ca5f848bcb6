//! Training benchmark (suite `train` of `cargo xtask bench`): EfficientNet-Lite0 with ImageNet
//! weights, frozen backbone, on `flowers102-mini`; reports the best validation accuracy and the
//! wall time of the whole run, feature extraction included (the caches start cold: runs and caches
//! live in a fresh temporary folder).
//!
//! `cargo run --release -p train --example bench_train -- [--json] [--data DIR] [--weights FILE]
//! [--epochs N] [--views N] [--threads N] [--no-seed]`
//!
//! The headline is the project's recipe (`TrainConfig::default()`: eval-transform features computed
//! once, AdamW, cosine schedule, label smoothing 0.1, 30 head epochs), compared by the harness with
//! `bench/train_pytorch.py`, the seed's recipe in PyTorch (backbone and augmentation every epoch).
//! Unless `--no-seed`, the seed's recipe then also runs here (Adam 0.003, 10 epochs, 2 augmented
//! views), reported as `seed_valid_acc` / `seed_wall_s_valid_cached`.
//!
//! With `--json` the last stdout line is one JSON object:
//! `{"valid_acc", "wall_s", "feature_s", "epochs", "best_epoch", "views", "train_images",
//! "valid_images", "threads", "seed_valid_acc", "seed_wall_s_valid_cached", "seed_best_epoch"}`.

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
    also_seed: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        data: PathBuf::from("../shared/data/flowers102-mini"),
        weights: None,
        epochs: None,
        views: None,
        threads: None,
        also_seed: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--no-seed" => a.also_seed = false,
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

    let mut default = TrainConfig { name: "bench-default".into(), arch: Arch::EfficientNetLite0, ..TrainConfig::default() };
    let mut seed = TrainConfig { name: "bench-seed".into(), arch: Arch::EfficientNetLite0, views: 2, ..TrainConfig::seed_preset() };
    for cfg in [&mut default, &mut seed] {
        if let Some(e) = a.epochs {
            cfg.epochs = e;
        }
        if let Some(t) = a.threads {
            cfg.threads = t;
        }
    }
    if let Some(v) = a.views {
        default.views = v;
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

    // Timed, headline: the project's recipe from cold caches — dataset discovery, backbone features
    // (eval transform, once per image), 30 head epochs, a checkpoint per epoch.
    let t0 = Instant::now();
    let ds = preprocess::discover(&a.data, &preprocess::DiscoverOptions::default()).map_err(|e| format!("reading {}: {e}", a.data.display()))?;
    let out = train::train(&request(default.clone()), &ds, &train::Silent).map_err(|e| format!("training (default recipe): {e}"))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let count = |s: &str| ds.split(s).map(|s| s.samples.len()).unwrap_or(0);
    let mut report = serde_json::json!({
        "valid_acc": best_acc(&out),
        "wall_s": wall_s,
        "feature_s": out.feature_s,
        "epochs": out.history.len(),
        "best_epoch": out.best_epoch,
        "views": default.views,
        "train_images": count("train"),
        "valid_images": count("valid"),
        "threads": tch::get_num_threads(),
    });
    eprintln!(
        "default recipe (lite0 frozen, AdamW, cosine, smoothing, {} epochs, {} views): best valid acc {:.2}% (epoch {}), {wall_s:.1}s wall, {:.1}s features",
        default.epochs,
        default.views,
        100.0 * best_acc(&out),
        out.best_epoch,
        out.feature_s
    );

    if a.also_seed {
        // The seed's recipe with its augmentation as 2 precomputed views (the validation features
        // are already cached by the run above, so this time excludes them).
        let t1 = Instant::now();
        let s = train::train(&request(seed.clone()), &ds, &train::Silent).map_err(|e| format!("training (seed recipe): {e}"))?;
        let secs = t1.elapsed().as_secs_f64();
        eprintln!(
            "seed recipe (Adam 0.003, 10 epochs, {} augmented views): best valid acc {:.2}% (epoch {}), {secs:.1}s (validation features cached)",
            seed.views,
            100.0 * best_acc(&s),
            s.best_epoch
        );
        report["seed_valid_acc"] = best_acc(&s).into();
        report["seed_wall_s_valid_cached"] = secs.into();
        report["seed_best_epoch"] = s.best_epoch.into();
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
