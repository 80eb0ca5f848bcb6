//! Cost of crash-safe chunking in feature extraction: the same backbone pass over one split with
//! chunks (`chunk_images`, default 256) and without (`chunk_images = 0`: only the final cache is
//! written), alternating, each from a cold feature cache in a fresh temporary folder.
//!
//! `cargo run --release -p train --example bench_chunks -- [--json] [--data DIR] [--split valid]
//! [--arch efficientnet_lite0] [--weights FILE] [--rounds 3] [--chunk-images 256] [--threads N]`
//!
//! Without `--weights` the backbone has random weights (the same work per image). Prints the
//! throughput of every run, the median of each side and their ratio; with `--json` the last stdout
//! line is `{"images", "rounds", "chunk_images", "plain_img_s": [...], "chunked_img_s": [...],
//! "plain_median", "chunked_median", "cost_pct", "chunk_write_s", "chunk_write_pct"}` (cost = how much
//! slower chunked is, in %; `chunk_write_s` = the chunk files of one pass written and removed alone).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use model::{Arch, Classifier};
use preprocess::Mode;
use tch::nn::VarStore;
use tch::Device;
use train::features::Extractor;
use train::TrainConfig;

struct Args {
    json: bool,
    data: PathBuf,
    split: String,
    arch: Arch,
    weights: Option<PathBuf>,
    rounds: usize,
    chunk_images: usize,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: false,
        data: PathBuf::from("../shared/data/flowers102-mini"),
        split: "valid".into(),
        arch: Arch::EfficientNetLite0,
        weights: None,
        rounds: 3,
        chunk_images: 256,
        threads: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--data" => a.data = PathBuf::from(val("--data")?),
            "--split" => a.split = val("--split")?,
            "--arch" => a.arch = val("--arch")?.parse().map_err(|e| format!("--arch: {e}"))?,
            "--weights" => a.weights = Some(PathBuf::from(val("--weights")?)),
            "--rounds" => a.rounds = val("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--chunk-images" => a.chunk_images = val("--chunk-images")?.parse().map_err(|e| format!("--chunk-images: {e}"))?,
            "--threads" => a.threads = val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn run(a: &Args) -> Result<serde_json::Value, String> {
    let ds = preprocess::discover(&a.data, &preprocess::DiscoverOptions::default()).map_err(|e| format!("reading {}: {e}", a.data.display()))?;
    let split = ds.split(&a.split).filter(|s| !s.samples.is_empty()).ok_or(format!("{} has no split {:?}", a.data.display(), a.split))?;
    let samples: Arc<[preprocess::Sample]> = split.samples.clone().into();
    if a.threads > 0 {
        tch::set_num_threads(a.threads as i32);
    }
    let base = TrainConfig { recipe: train::Recipe { arch: a.arch.clone(), ..train::Recipe::default() }, ..TrainConfig::default() };
    let mut vs = VarStore::new(Device::Cpu);
    let mut net = Classifier::new(&vs.root(), &base.recipe.arch, &base.recipe.head, ds.classes.len().max(2) as i64).map_err(|e| e.to_string())?;
    if let Some(w) = &a.weights {
        model::load_backbone_weights(&mut vs, &base.recipe.arch, w).map_err(|e| format!("{}: {e}", w.display()))?;
    }
    net.fold_batchnorm();
    net.set_channels_last(true).map_err(|e| e.to_string())?;
    let tcfg = train::transform_config(&base);
    let (mut plain, mut chunked) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        // Alternate which side goes first, so a drift of the machine's load hits both alike.
        let order = if round % 2 == 0 { [0, a.chunk_images] } else { [a.chunk_images, 0] };
        for chunk_images in order {
            let tmp = tempfile::Builder::new().prefix("petal-bench-chunks-").tempdir().map_err(|e| e.to_string())?;
            let cfg = TrainConfig { run: train::RunOptions { chunk_images, ..base.run.clone() }, ..base.clone() };
            let fx = Extractor {
                net: &net,
                cfg: &cfg,
                tcfg: &tcfg,
                device: Device::Cpu,
                cache_dir: tmp.path(),
                weights_id: "bench",
                skip_bad: false,
                progress: &train::Silent,
                // The chunking overhead is measured on libtorch's pass, as before onnxruntime.
                ort: None,
            };
            let t0 = Instant::now();
            let _features = fx.features(&samples, &a.split, Mode::Eval, 0).map_err(|e| e.to_string())?;
            let img_s = samples.len() as f64 / t0.elapsed().as_secs_f64();
            eprintln!("round {}: chunk_images {chunk_images:>4}: {img_s:.2} img/s", round + 1);
            if chunk_images == 0 { &mut plain } else { &mut chunked }.push(img_s);
        }
    }
    let (pm, cm) = (median(&plain), median(&chunked));
    // The chunks' own work, timed alone (less exposed to the machine's load than the ratio): the
    // same number of chunk files of the same size written durably, then removed.
    let write_s = time_chunk_writes(samples.len(), a.chunk_images.max(1), net.feature_dim() as usize)?;
    let plain_s = samples.len() as f64 / pm;
    Ok(serde_json::json!({
        "images": samples.len(), "rounds": a.rounds, "chunk_images": a.chunk_images,
        "plain_img_s": plain, "chunked_img_s": chunked,
        "plain_median": pm, "chunked_median": cm, "cost_pct": 100.0 * (pm / cm - 1.0),
        "chunk_write_s": write_s, "chunk_write_pct": 100.0 * write_s / plain_s,
    }))
}

/// Seconds to save (atomically, with fsync) and then remove the chunks of `n` images of `dim`
/// features in chunks of `chunk_images`.
fn time_chunk_writes(n: usize, chunk_images: usize, dim: usize) -> Result<f64, String> {
    let tmp = tempfile::Builder::new().prefix("petal-bench-chunks-").tempdir().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let key = serde_json::json!({ "bench": true });
    let mut store = checkpoint::chunks::ChunkStore::open(tmp.path().join("c"), &key, n, chunk_images, "features").map_err(|e| e.to_string())?;
    for c in 0..store.chunks() {
        let payload = vec![7u8; 16 + store.range(c).len() * (dim * 4 + 8)];
        store.save(c, &payload).map_err(|e| e.to_string())?;
    }
    store.finish();
    Ok(t0.elapsed().as_secs_f64())
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    match run(&a) {
        Ok(v) => {
            if a.json {
                println!("{v}");
            } else {
                println!(
                    "{} images, {} rounds: without chunks {:.2} img/s, with chunks of {} {:.2} img/s (median); cost {:.2} %; writing the chunks alone: {:.3} s ({:.2} % of a plain pass)",
                    v["images"], a.rounds, v["plain_median"], a.chunk_images, v["chunked_median"], v["cost_pct"], v["chunk_write_s"], v["chunk_write_pct"]
                );
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
