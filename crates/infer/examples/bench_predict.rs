//! Prediction latency benchmark (suite `predict` of `cargo xtask bench`).
//!
//! - cold: wall time from spawning the release `petal predict --checkpoint F IMAGE` to its exit
//!   (process start, libtorch load, checkpoint load, decode, forward, top-5 printed), median of
//!   `--runs` runs after one untimed run (so every timed run finds the files in the page cache);
//! - warm: in-process [`infer::Predictor::load`] once, then `predict_paths` over `--images`
//!   validation images of flowers102-mini in batches of `--batch` → images/s (after one untimed
//!   batch).
//!
//! The checkpoint is built here, untimed: EfficientNet-Lite0 (ImageNet backbone when
//! `~/.cache/petal/weights/efficientnet_lite0-imagenet.safetensors` exists, else random) with the
//! default head (512, ReLU, dropout 0.2) randomly initialised (seed 0) for the dataset's 102 classes,
//! saved as a petal checkpoint with classes and preprocessing at
//! `target/bench/predict-lite0.safetensors`. `bench/predict_pytorch.py` converts that file into a
//! PyTorch `.pth`, so both sides run the same network. The example builds the release `petal`
//! binary itself first (`cargo build --release -p petal`, untimed) unless `--petal PATH` is given.
//!
//! `cargo run --release -p infer --example bench_predict -- [--json] [--smoke] [--data DIR]
//! [--runs N] [--images N] [--batch N] [--petal PATH] [--weights FILE]`
//!
//! `--smoke`: 6 generated images, random weights, the dev `petal` binary, one cold run, 4 warm
//! images; the checkpoint goes to a temporary folder.
//!
//! With `--json` the last stdout line is `{"cold_s", "cold_runs_s", "warm_img_s", "load_s",
//! "images", "batch", "threads", "top1"}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use checkpoint::{Checkpoint, ClassEntry, DType, Metadata, Preprocessing, TensorData, TensorMap};
use model::{Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind};

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// ImageFolder with a `valid/` split.
    #[arg(long, default_value = "../shared/data/flowers102-mini")]
    data: PathBuf,
    /// Timed cold runs (after one untimed run).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Validation images for the warm measurement.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    images: u32,
    /// Batch size of the warm measurement.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// The `petal` binary to time (default: build the release one).
    #[arg(long)]
    petal: Option<PathBuf>,
    /// ImageNet weights for the backbone (default: the cached file, else random).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Only write the benchmark checkpoint (for `--data`'s classes) to this file and exit, untimed
    /// (the `serve` suite's smoke run uses it).
    #[arg(long)]
    save_checkpoint: Option<PathBuf>,
}

/// Contiguous little-endian bytes of a float or int64 tensor.
fn tensor_data(name: &str, t: &tch::Tensor) -> Result<TensorData, String> {
    let dtype = match t.kind() {
        Kind::Float => DType::F32,
        Kind::Int64 => DType::I64,
        k => return Err(format!("{name}: unexpected kind {k:?}")),
    };
    let t = t.detach().contiguous();
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * dtype.size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel).map_err(|e| format!("{name}: {e}"))?;
    TensorData::new(dtype, t.size().iter().map(|&s| s as usize).collect(), bytes).map_err(|e| format!("{name}: {e}"))
}

/// Builds and saves the benchmark checkpoint (see the module docs).
fn build_checkpoint(ds: &preprocess::Dataset, weights: Option<&Path>, out: &Path) -> Result<(), String> {
    let arch = Arch::EfficientNetLite0;
    let head = HeadConfig::default();
    tch::manual_seed(0);
    let mut vs = VarStore::new(Device::Cpu);
    let _net = Classifier::new(&vs.root(), &arch, &head, ds.classes.len() as i64).map_err(|e| e.to_string())?;
    let backbone = match weights {
        Some(w) => {
            model::load_backbone_weights(&mut vs, &arch, w).map_err(|e| e.to_string())?;
            w.display().to_string()
        }
        None => "random-init-seed-0".to_string(),
    };
    let mut tensors = TensorMap::new();
    for (name, t) in vs.variables() {
        tensors.insert(name.clone(), tensor_data(&name, &t)?);
    }
    let classes = ds
        .classes
        .iter()
        .enumerate()
        .map(|(i, folder)| ClassEntry { folder: folder.clone(), index: i, name: ds.display_name(i).map(str::to_string) })
        .collect();
    let tcfg = preprocess::TransformConfig::default();
    let meta = Metadata {
        libtorch_version: Some("2.13.0".into()),
        arch: arch.name().into(),
        arch_config: serde_json::to_value(&arch).map_err(|e| e.to_string())?,
        classes,
        preprocessing: Some(Preprocessing {
            input_size: tcfg.image_size,
            resize_size: tcfg.resize_size,
            mean: tcfg.mean.to_vec(),
            std: tcfg.std.to_vec(),
            interpolation: checkpoint::Interpolation::Bilinear,
        }),
        head: serde_json::to_value(&head).map_err(|e| e.to_string())?,
        provenance: serde_json::json!({ "made_by": "crates/infer/examples/bench_predict.rs", "backbone": backbone, "head": "random init, seed 0" }),
        ..Metadata::default()
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    checkpoint::save(out, &Checkpoint { meta, tensors }).map_err(|e| e.to_string())
}

/// The `petal` binary: given, or built now (untimed; the release one, the dev one for `--smoke`).
fn petal_binary(given: Option<&Path>, release: bool) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile = if release { "release" } else { "debug" };
    eprintln!("bench_predict: building the {profile} petal binary (untimed)");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(benchkit::workspace_root()).args(["build", "--quiet", "-p", "petal", "--bin", "petal"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| format!("could not run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p petal ({profile}) failed ({status})"));
    }
    Ok(benchkit::target_dir().join(profile).join(format!("petal{}", std::env::consts::EXE_SUFFIX)))
}

/// Spawns `petal predict` once; returns (seconds from spawn to exit, stdout).
fn cold_once(petal: &Path, ckpt: &Path, image: &Path, cwd: &Path) -> Result<(f64, String), String> {
    let t = Instant::now();
    let out = Command::new(petal)
        .current_dir(cwd)
        .arg("predict")
        .arg("--checkpoint")
        .arg(ckpt)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start {}: {e}", petal.display()))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("petal predict failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn run(a: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
    let smoke = common.smoke;
    let tmp = tempfile::tempdir().map_err(|e| format!("creating a temporary folder: {e}"))?;
    let data = if smoke {
        let d = tmp.path().join("smoke-data");
        benchkit::image_folder(&d, 3, &[("valid", 2)], 96, 96)?;
        d
    } else {
        a.data.clone()
    };
    if let Some(out) = &a.save_checkpoint {
        let ds = preprocess::discover(&a.data, &preprocess::DiscoverOptions::default()).map_err(|e| format!("reading {}: {e}", a.data.display()))?;
        build_checkpoint(&ds, a.weights.as_deref(), out)?;
        return Ok(serde_json::json!({ "impl": "petal", "checkpoint": out }));
    }
    let (runs, images, batch) = if smoke { (1, 4, 2) } else { (a.runs as usize, a.images as usize, a.batch as usize) };
    let ds = preprocess::discover(&data, &preprocess::DiscoverOptions::default()).map_err(|e| format!("reading {}: {e}", data.display()))?;
    let valid = ds.split("valid").filter(|s| !s.samples.is_empty()).ok_or_else(|| format!("{} has no valid split", data.display()))?;
    let weights = a.weights.clone().or_else(|| if smoke { None } else { benchkit::cached_weights("efficientnet_lite0") });
    if weights.is_none() {
        eprintln!("bench_predict: no ImageNet weights; the checkpoint's backbone is random (timings are unaffected)");
    }
    // The PyTorch reference reads target/bench/predict-lite0.safetensors; a smoke run leaves it alone.
    let ckpt = if smoke { tmp.path().join("predict-smoke.safetensors") } else { benchkit::target_dir().join("bench/predict-lite0.safetensors") };
    build_checkpoint(&ds, weights.as_deref(), &ckpt)?;
    let petal = petal_binary(a.petal.as_deref(), !smoke)?;

    // Cold: one untimed run, then `runs` timed runs.
    // The child runs in a temporary folder (so it writes nothing here): absolute paths.
    let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()));
    let image = abs(&valid.samples[0].path)?;
    let ckpt = abs(&ckpt)?;
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir_all(&cwd)?;
    let tmp_cwd = &cwd;
    let (_, first_out) = cold_once(&petal, &ckpt, &image, tmp_cwd)?;
    let top1 = first_out.lines().nth(1).map(|l| l.trim().to_string()).unwrap_or_default();
    let mut cold = Vec::with_capacity(runs);
    for _ in 0..runs {
        cold.push(cold_once(&petal, &ckpt, &image, tmp_cwd)?.0);
    }
    let cold_s = benchkit::median(&cold);
    eprintln!("cold predict of {}: median {cold_s:.3}s over {runs} runs {cold:?}; top-1 {top1}", image.display());

    // Warm: in-process, batched.
    let t = Instant::now();
    let pred = infer::Predictor::load(&ckpt, Device::Cpu).map_err(|e| e.to_string())?;
    let load_s = t.elapsed().as_secs_f64();
    let step = (valid.samples.len() / images).max(1);
    let paths: Vec<PathBuf> = valid.samples.iter().step_by(step).take(images).map(|s| s.path.clone()).collect();
    pred.predict_paths(&paths[..batch.min(paths.len())], 5, batch, |_| {}).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let preds = pred.predict_paths(&paths, 5, batch, |_| {}).map_err(|e| e.to_string())?;
    let warm_img_s = preds.len() as f64 / t.elapsed().as_secs_f64();
    eprintln!("warm predict: {} images in batches of {batch}: {warm_img_s:.2} img/s (load {load_s:.3}s)", preds.len());
    Ok(serde_json::json!({
        "impl": "petal",
        "cold_s": cold_s,
        "cold_runs_s": cold,
        "warm_img_s": warm_img_s,
        "load_s": load_s,
        "images": preds.len(),
        "batch": batch,
        "threads": tch::get_num_threads(),
        "top1": top1,
    }))
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_predict", run)
}
