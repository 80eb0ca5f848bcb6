//! Throughput of an exported network (suite `export` of `cargo xtask bench`): images/s of petal
//! (libtorch, the `infer::Predictor` path: folded batch norms, channels_last, `no_grad`) and of
//! tract on the exported ONNX, for EfficientNet-Lite0 and DenseNet-121 at batch 1 and 32. The
//! Python side (`bench/export_onnxruntime.py`) runs onnxruntime on the same files in the same run.
//!
//! Networks: random weights (seed 7) with the default head for 102 classes, written untimed as
//! `target/bench/export-<arch>.safetensors` and exported to `target/bench/export-<arch>.onnx`.
//! Input: 32 preprocessed validation images of `--data` (flowers102-mini) when present, else
//! generated images. Each figure: one untimed warm-up run, then runs until `--seconds` have passed
//! (at least `--min-runs`), images/s over the timed runs. Threads: libtorch's default (all cores);
//! tract 0.22 runs on one thread.
//!
//! `cargo run --release -p export --example bench_export -- [--json] [--data DIR] [--seconds S] [--min-runs N]`
//!
//! With `--json` the last stdout line is `{"lite0_b1_img_s", "lite0_b32_img_s", "densenet121_b1_img_s",
//! "densenet121_b32_img_s", "tract_<same keys>", "threads"}`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use tract_onnx::prelude::*;

struct Args {
    json: bool,
    data: PathBuf,
    seconds: f64,
    min_runs: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { json: false, data: PathBuf::from("../shared/data/flowers102-mini"), seconds: 3.0, min_runs: 2 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--data" => a.data = PathBuf::from(val("--data")?),
            "--seconds" => a.seconds = val("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--min-runs" => a.min_runs = val("--min-runs")?.parse().map_err(|e| format!("--min-runs: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

/// Images/s of `run` (which handles `batch` images): one warm-up, then timed runs.
fn throughput(a: &Args, batch: usize, mut run: impl FnMut()) -> f64 {
    run();
    let t = Instant::now();
    let mut n = 0;
    while n < a.min_runs || t.elapsed().as_secs_f64() < a.seconds {
        run();
        n += 1;
    }
    (n * batch) as f64 / t.elapsed().as_secs_f64()
}

/// 32 image paths: the validation images of `data` (first of each class, then the next ones),
/// else generated ones in `dir`.
fn image_paths(data: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("valid"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().filter_map(|f| f.ok().map(|f| f.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    if v.len() >= 32 {
        v.truncate(32);
        return v;
    }
    eprintln!("bench_export: {} has fewer than 32 images; using generated images", data.display());
    let few = common::images(dir, 4);
    (0..32).map(|i| few[i % few.len()].clone()).collect()
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_export: {e}");
            std::process::exit(2);
        }
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let x32 = common::batch(&image_paths(&a.data, &dir), 224);
    let mut out = serde_json::Map::new();
    for (key, arch) in [("lite0", model::Arch::EfficientNetLite0), ("densenet121", model::Arch::DenseNet121)] {
        let ckpt =
            common::random_checkpoint(&dir, &format!("export-{key}"), &arch, serde_json::json!({"hidden": [512], "dropout": 0.2}), 102, 224, &x32);
        let onnx = dir.join(format!("export-{key}.onnx"));
        export::export(&ckpt, export::Format::Onnx, &onnx).expect("export");
        let petal = infer::Predictor::load(&ckpt, tch::Device::Cpu).expect("predictor");
        for b in [1usize, 32] {
            let x = x32.narrow(0, 0, b as i64);
            let img_s = throughput(&a, b, || {
                let _ = petal.probabilities(&x);
            });
            eprintln!("bench_export: petal {key} batch {b}: {img_s:.1} img/s");
            out.insert(format!("{key}_b{b}_img_s"), img_s.into());
            let plan = tract_onnx::onnx()
                .model_for_path(&onnx)
                .and_then(|m| m.with_input_fact(0, f32::fact([b, 3, 224, 224]).into()))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .expect("tract plan");
            let data = Vec::<f32>::try_from(x.flatten(0, -1)).expect("input");
            let input: TValue = tract_ndarray::Array4::from_shape_vec((b, 3, 224, 224), data).expect("array").into_tensor().into();
            let img_s = throughput(&a, b, || {
                let _ = plan.run(tvec!(input.clone())).expect("tract run");
            });
            eprintln!("bench_export: tract {key} batch {b}: {img_s:.1} img/s");
            out.insert(format!("tract_{key}_b{b}_img_s"), img_s.into());
        }
    }
    out.insert("threads".into(), tch::get_num_threads().into());
    if a.json {
        println!("{}", serde_json::Value::Object(out));
    }
}
