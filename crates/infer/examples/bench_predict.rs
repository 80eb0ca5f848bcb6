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
//!
//! `--shards` measures sharding instead (not part of `cargo xtask bench`, which has no PyTorch
//! side for it): batch prediction of every image under `--data` (`petal predict DIR --csv`, batches
//! of `--batch`) by 1 process with 2 threads (`OMP_NUM_THREADS=2 RAYON_NUM_THREADS=2`) against 2
//! processes started together with 1 thread each (`--shard 0/2`, `--shard 1/2`) followed by
//! `petal merge`, alternating for `--runs` rounds: wall-clock throughput (process start and model
//! load included) and total CPU time of the children (`getrusage(RUSAGE_CHILDREN)`, user + system).
//! The merged CSV must equal the single process's byte for byte. With `--json` the last line is
//! `{"mode":"shards", "images", "one_x2_img_s", "two_x1_img_s", "one_x2_cpu_s", "two_x1_cpu_s",
//! "merge_s", "rounds", "identical"}` (medians over rounds).

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
    /// Measure 1 process × 2 threads against 2 processes × 1 thread instead (see the module docs).
    #[arg(long)]
    shards: bool,
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

/// User + system CPU seconds of the waited-for children of this process so far.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// `petal predict DIR --csv OUT` as shard `shard` (if any) with `threads` threads, started.
fn spawn_predict(
    petal: &Path,
    ckpt: &Path,
    dir: &Path,
    out: &Path,
    batch: usize,
    threads: u32,
    shard: Option<&str>,
) -> Result<std::process::Child, String> {
    let mut c = Command::new(petal);
    c.arg("predict").arg(dir).arg("--checkpoint").arg(ckpt).arg("--csv").arg(out).args(["--batch-size", &batch.to_string()]);
    if let Some(s) = shard {
        c.args(["--shard", s]);
    }
    c.env("OMP_NUM_THREADS", threads.to_string()).env("RAYON_NUM_THREADS", threads.to_string());
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| format!("could not start {}: {e}", petal.display()))
}

fn wait_ok(child: std::process::Child, what: &str) -> Result<(), String> {
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// `--shards`: 1 process × 2 threads against 2 processes × 1 thread (see the module docs).
fn run_shards(a: &Args, smoke: bool, data: &Path, ds: &preprocess::Dataset, tmp: &Path) -> benchkit::Result<serde_json::Value> {
    let ckpt = tmp.join("shards.safetensors");
    build_checkpoint(ds, a.weights.as_deref(), &ckpt)?;
    let petal = petal_binary(a.petal.as_deref(), !smoke)?;
    let (rounds, batch) = if smoke { (1, 2) } else { (a.runs as usize, a.batch as usize) };
    let images = ds.splits.iter().map(|s| s.samples.len()).sum::<usize>();
    let (mut one, mut two, mut merge_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut identical = true;
    for round in 0..rounds {
        let (single, sharded) = (tmp.join(format!("one-{round}.csv")), tmp.join(format!("two-{round}.csv")));
        let (t, cpu) = (Instant::now(), children_cpu_s());
        wait_ok(spawn_predict(&petal, &ckpt, data, &single, batch, 2, None)?, "petal predict (1 x 2 threads)")?;
        one.push((t.elapsed().as_secs_f64(), children_cpu_s() - cpu));
        let (t, cpu) = (Instant::now(), children_cpu_s());
        let kids = ["0/2", "1/2"].map(|s| spawn_predict(&petal, &ckpt, data, &sharded, batch, 1, Some(s)));
        for k in kids {
            wait_ok(k?, "petal predict --shard (2 x 1 thread)")?;
        }
        let tm = Instant::now();
        let merge = Command::new(&petal).arg("merge").arg(&sharded).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
        wait_ok(merge.map_err(|e| e.to_string())?, "petal merge")?;
        merge_s.push(tm.elapsed().as_secs_f64());
        two.push((t.elapsed().as_secs_f64(), children_cpu_s() - cpu));
        identical &= std::fs::read(&single).ok() == std::fs::read(&sharded).ok();
        eprintln!(
            "round {round}: 1x2 {:.1}s ({:.1} CPU s), 2x1 + merge {:.1}s ({:.1} CPU s)",
            one[round].0, one[round].1, two[round].0, two[round].1
        );
    }
    if !identical {
        return Err("the merged CSV of 2 shards differs from the single process's".to_string().into());
    }
    let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| benchkit::median(&v.iter().map(f).collect::<Vec<_>>());
    Ok(serde_json::json!({
        "impl": "petal",
        "mode": "shards",
        "images": images,
        "batch": batch,
        "one_x2_img_s": images as f64 / med(&one, |r| r.0),
        "two_x1_img_s": images as f64 / med(&two, |r| r.0),
        "one_x2_cpu_s": med(&one, |r| r.1),
        "two_x1_cpu_s": med(&two, |r| r.1),
        "merge_s": benchkit::median(&merge_s),
        "rounds": rounds,
        "identical": identical,
    }))
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
    if a.shards {
        return run_shards(a, smoke, &data, &ds, tmp.path());
    }
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
