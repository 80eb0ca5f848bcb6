//! Throughput of an exported network (suite `export` of `cargo xtask bench`): images/s of petal
//! (libtorch, the `infer::Predictor` path: folded batch norms, channels_last, `no_grad`), of petal
//! with its backbone on onnxruntime (`--runtime onnxruntime`, `ort_*` keys, idle workers sleeping
//! as petal runs them; `ort_spin_*` with spinning workers, onnxruntime's own default) in float32 and in int8
//! (`int8_*` keys: the backbone quantized with ranges calibrated on the benchmark's images; the
//! whole classifier quantized alike is written as `export-<arch>.int8.onnx`), for
//! EfficientNet-Lite0, -Lite2, DenseNet-121 and the Lite0+1+2 ensemble (`lite012`) at batch 1 and
//! 32, and of tract on the exported ONNX of Lite0 and DenseNet-121. The reference side (`bench/export_onnxruntime.py`) runs onnxruntime on the same files in the same run.
//!
//! Networks: random weights (seed 7) with the default head for 102 classes, written untimed as
//! `target/bench/export-<arch>.safetensors` and exported to `target/bench/export-<arch>.onnx`.
//! Input: 32 preprocessed validation images of `--data` (flowers102-mini) when it has them, else
//! generated images. Each figure: untimed warm-up runs for a second, then runs until `--seconds` have passed
//! (at least `--min-runs`), images/s over the timed runs; the best of `--rounds` such figures, the
//! variants of one network alternating (a network's first seconds right after another session's
//! passes at batch 32 ran up to a third slower, and not always in the same variant). Threads: libtorch's default (all cores);
//! tract 0.22 runs on one thread.
//!
//! `cargo run --release -p export --example bench_export -- [--json] [--smoke] [--data DIR] [--seconds S] [--min-runs N] [--rounds R]`
//!
//! With `--json` the last stdout line is `{"<net>_b1_img_s", "<net>_b32_img_s"` for each network (`lite0`,
//! `lite2`, `densenet121`, `lite012`), the same under `ort_*`, `ort_spin_*` and `int8_*`, petal's libtorch figure
//! again under `eager_*` (compared with PyTorch eager on the Python side), `tract_*` for Lite0 and
//! DenseNet-121, `"threads", "size"}`. `--smoke`: 64 px generated
//! images, batch 1 and 2 (reported under the same keys), one timed run, files in a temp folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Tensor;
use tract_onnx::prelude::*;

/// Seconds of untimed warm-up before each figure (the Python side's `WARM_UP_S` too).
const WARM_UP_S: f64 = 1.0;

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// Image folder with a `valid` split (flowers102-mini).
    #[arg(long, default_value = "../shared/data/flowers102-mini")]
    data: PathBuf,
    /// Seconds of timed runs per figure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Timed runs per figure, at least.
    #[arg(long, default_value_t = 2)]
    min_runs: usize,
    /// Rounds: every petal figure is measured this many times, the variants of a network
    /// alternating, and the best round kept (as on the Python side).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// Keeps the larger of `img_s` and what `out[key]` holds; returns it.
fn best_of(out: &mut serde_json::Map<String, serde_json::Value>, key: &str, img_s: f64) -> f64 {
    let best = out.get(key).and_then(serde_json::Value::as_f64).map_or(img_s, |v| v.max(img_s));
    out.insert(key.to_string(), best.into());
    best
}

/// Images/s of `run` (which handles `batch` images): untimed warm-up runs for a second (at least
/// one), then timed runs. A single warm-up run was not enough: right after another network's
/// passes, the ensemble's first seconds at batch 32 on onnxruntime ran at 2/3 of its speed.
fn throughput(seconds: f64, min_runs: usize, batch: usize, mut run: impl FnMut() -> benchkit::Result<()>) -> benchkit::Result<f64> {
    let warm = Instant::now();
    run()?;
    while warm.elapsed().as_secs_f64() < WARM_UP_S.min(seconds) {
        run()?;
    }
    let t = Instant::now();
    let mut n = 0;
    while n < min_runs || t.elapsed().as_secs_f64() < seconds {
        run()?;
        n += 1;
    }
    Ok((n * batch) as f64 / t.elapsed().as_secs_f64())
}

/// `n` image paths: the validation images of `data` (sorted), else generated ones in `dir`.
fn image_paths(data: &Path, dir: &Path, n: usize) -> benchkit::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("valid"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().filter_map(|f| f.ok().map(|f| f.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    if v.len() < n {
        eprintln!("bench_export: {} has fewer than {n} validation images; using generated images", data.display());
        benchkit::image_folder(dir, 4, &[("valid", 1)], 300, 260)?;
        v = (1..=4).map(|c| dir.join("valid").join(c.to_string()).join("0.jpg")).collect();
    }
    Ok((0..n).map(|i| v[i % v.len()].clone()).collect())
}

/// The images as petal's eval transform gives them: `[N, 3, size, size]`.
fn batch(paths: &[PathBuf], size: u32) -> benchkit::Result<Tensor> {
    let cfg = preprocess::TransformConfig { image_size: size, resize_size: size * 8 / 7, ..Default::default() };
    let mut flat = Vec::new();
    for p in paths {
        flat.extend(preprocess::predict_tensor(p, &cfg)?);
    }
    Ok(Tensor::from_slice(&flat).view([paths.len() as i64, 3, size as i64, size as i64]))
}

/// A random-weight classifier checkpoint of `arch` (102 classes, default head) at `path`.
fn checkpoint(path: &Path, arch: &model::Arch, size: u32) -> benchkit::Result<()> {
    tch::manual_seed(7);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let head = model::HeadConfig::default();
    model::Classifier::new(&vs.root(), arch, &head, 102)?;
    let meta = checkpoint::Metadata {
        arch: arch.name().into(),
        arch_config: serde_json::to_value(arch)?,
        classes: (0..102).map(|i| checkpoint::ClassEntry { folder: format!("{}", i + 1), index: i, name: None }).collect(),
        preprocessing: Some(checkpoint::Preprocessing {
            input_size: size,
            resize_size: size * 8 / 7,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            interpolation: Default::default(),
        }),
        head: serde_json::to_value(&head)?,
        ..Default::default()
    };
    checkpoint::save(path, &checkpoint::Checkpoint { meta, tensors: model::weights::varstore_tensors(&vs)? })?;
    Ok(())
}

/// tract's optimised plan of `onnx` for a fixed input shape.
fn tract_plan(onnx: &Path, shape: &[usize]) -> benchkit::Result<TypedRunnableModel<TypedModel>> {
    Ok(tract_onnx::onnx().model_for_path(onnx)?.with_input_fact(0, f32::fact(shape).into())?.into_optimized()?.into_runnable()?)
}

fn run(a: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let (size, batches, seconds, min_runs, rounds) =
        if common.smoke { (64u32, [1usize, 2], 0.0, 1, 1) } else { (224, [1, 32], a.seconds, a.min_runs, a.rounds.max(1)) };
    let dir = if common.smoke { tmp.path().to_path_buf() } else { benchkit::workspace_root().join("target/bench") };
    std::fs::create_dir_all(&dir)?;
    let data = if common.smoke { tmp.path().join("no-data") } else { a.data.clone() };
    let x_all = batch(&image_paths(&data, &tmp.path().join("generated"), batches[1])?, size)?;
    let mut out = serde_json::Map::new();
    let lite012 = model::Arch::Ensemble(vec![model::Arch::EfficientNetLite0, model::Arch::EfficientNetLite1, model::Arch::EfficientNetLite2]);
    let nets = [
        ("lite0", model::Arch::EfficientNetLite0),
        ("lite2", model::Arch::EfficientNetLite2),
        ("densenet121", model::Arch::DenseNet121),
        ("lite012", lite012),
    ];
    for (key, arch) in &nets {
        let ckpt = dir.join(format!("export-{key}.safetensors"));
        checkpoint(&ckpt, arch, size)?;
        let onnx = dir.join(format!("export-{key}.onnx"));
        export::export(&ckpt, export::Format::Onnx, &onnx)?;
        let petal = infer::Predictor::load(&ckpt, tch::Device::Cpu)?;
        // The same checkpoint with its backbone on onnxruntime (`--runtime onnxruntime`).
        let mut petal_ort = infer::Predictor::load(&ckpt, tch::Device::Cpu)?;
        petal_ort.set_runtime(infer::Runtime::Onnxruntime, None)?;
        // And with spinning workers (onnxruntime's own default, which the Python side's
        // `ort_spin_*` figures use): petal's choice for a process that does nothing else meanwhile.
        let mut petal_spin = infer::Predictor::load(&ckpt, tch::Device::Cpu)?;
        petal_spin.set_session_options(petal_onnx::SessionOptions { threads: 0, spinning: true });
        petal_spin.set_runtime(infer::Runtime::Onnxruntime, None)?;
        // And in int8, calibrated on the benchmark's images (`petal quantize` calibrates on
        // training images); the whole classifier quantized with the same ranges is written beside
        // the float file for the Python side.
        let mut calibrator = petal_onnx::quantize::Calibrator::new(&petal_ort.backbone_graph()?, 0)?;
        let calib = x_all.contiguous();
        let dims: Vec<usize> = calib.size().iter().map(|&d| d as usize).collect();
        calibrator.observe(&Vec::<f32>::try_from(calib.flatten(0, -1))?, &dims)?;
        let calibration = calibrator.calibration()?;
        drop(calibrator);
        let mut petal_int8 = infer::Predictor::load(&ckpt, tch::Device::Cpu)?;
        petal_int8.set_int8(&calibration)?;
        let float = <petal_onnx::proto::ModelProto as prost::Message>::decode(std::fs::read(&onnx)?.as_slice())?;
        let int8 = petal_onnx::quantize::quantize(&float, &calibration)?;
        std::fs::write(dir.join(format!("export-{key}.int8.onnx")), petal_onnx::to_bytes(&int8))?;
        for (b, label) in batches.into_iter().zip([1, 32]) {
            let x = x_all.narrow(0, 0, b as i64);
            let variants = [("", &petal), ("ort_", &petal_ort), ("ort_spin_", &petal_spin), ("int8_", &petal_int8)];
            for round in 1..=rounds {
                for (prefix, pred) in variants {
                    let img_s = throughput(seconds, min_runs, b, || {
                        let _ = pred.probabilities(&x).map_err(|e| e.to_string())?;
                        Ok(())
                    })?;
                    eprintln!("bench_export: round {round}, {prefix}{key} batch {b}: {img_s:.1} img/s");
                    let best = best_of(&mut out, &format!("{prefix}{key}_b{label}_img_s"), img_s);
                    if prefix.is_empty() {
                        // petal's libtorch path again, under the key of PyTorch eager on the Python side.
                        out.insert(format!("eager_{key}_b{label}_img_s"), best.into());
                    }
                }
            }
            if !matches!(*key, "lite0" | "densenet121") {
                continue; // tract: the two families it was measured on
            }
            let shape = [b, 3, size as usize, size as usize];
            let plan = tract_plan(&onnx, &shape)?;
            let input: TValue = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), Vec::<f32>::try_from(x.flatten(0, -1))?)?.into_tensor().into();
            let img_s = throughput(seconds, min_runs, b, || {
                plan.run(tvec!(input.clone()))?;
                Ok(())
            })?;
            eprintln!("bench_export: tract {key} batch {b}: {img_s:.1} img/s");
            out.insert(format!("tract_{key}_b{label}_img_s"), img_s.into());
        }
    }
    out.insert("threads".into(), tch::get_num_threads().into());
    out.insert("size".into(), size.into());
    Ok(serde_json::Value::Object(out))
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_export", run)
}
