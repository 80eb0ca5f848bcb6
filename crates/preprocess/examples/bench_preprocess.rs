//! Throughput benchmark of the preprocessing pipeline (images/s), for `cargo xtask bench`.
//!
//! ```text
//! cargo run --release -p preprocess --example bench_preprocess -- \
//!     --data ../shared/data/flowers102-fullres-sample --json [--smoke] [--decoders] [--cache PATH]
//! ```
//! Measures, over every image of the `train` split (306 full-resolution JPEGs in the sample):
//! eval transform and train augmentation from the JPEG files, then the same from the image
//! cache (built first, build time reported). `--decoders` adds a single-thread JPEG decoder
//! comparison, and the exact decode alone on every rayon thread (the ceiling of any exact eval pipeline). With `--json` the last stdout line is one JSON object (`eval_img_s`, `train_img_s`,
//! `cached_eval_img_s`, `cached_train_img_s`, …). `--smoke` measures 12 generated images, once.

use preprocess::{discover, loader, CacheParams, DiscoverOptions, ImageCache, ImageSource, LoaderConfig, Mode, Sample, TransformConfig};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn run(samples: &Arc<[Sample]>, source: ImageSource, cfg: &TransformConfig, mode: Mode, passes: usize) -> Result<f64, preprocess::Error> {
    let mut best = 0f64;
    for pass in 0..passes {
        let l = LoaderConfig { batch_size: 32, mode, shuffle: mode == Mode::Train, epoch: pass as u64, prefetch: 2, ..Default::default() };
        let t = Instant::now();
        let mut n = 0usize;
        for b in loader(samples.clone(), source.clone(), cfg, &l)? {
            let b = b?;
            n += b.labels.len();
            std::hint::black_box(&b.images);
        }
        best = best.max(n as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn decoders(samples: &[Sample]) -> serde_json::Value {
    let files: Vec<Vec<u8>> = samples.iter().filter_map(|s| std::fs::read(&s.path).ok()).collect();
    let time = |f: &dyn Fn(&[u8]) -> usize| {
        let t = Instant::now();
        let mut px = 0usize;
        for b in &files {
            px += f(b);
        }
        std::hint::black_box(px);
        files.len() as f64 / t.elapsed().as_secs_f64()
    };
    let ours = time(&|b| preprocess::decode_rgb_bytes(b, std::path::Path::new("x"), &Default::default()).map(|i| i.len()).unwrap_or(0));
    let image_crate = time(&|b| image::load_from_memory_with_format(b, image::ImageFormat::Jpeg).map(|i| i.to_rgb8().len()).unwrap_or(0));
    let jd = |scale: u16| {
        move |b: &[u8]| {
            let mut d = jpeg_decoder::Decoder::new(b);
            if scale > 1 {
                if d.read_info().is_err() {
                    return 0;
                }
                let Some(info) = d.info() else { return 0 };
                if d.scale(info.width / scale, info.height / scale).is_err() {
                    return 0;
                }
            }
            d.decode().map(|v| v.len()).unwrap_or(0)
        }
    };
    // The ceiling of any exact eval pipeline: the exact decode alone, on every rayon thread.
    let t = Instant::now();
    let px: usize =
        files.par_iter().map(|b| preprocess::decode_rgb_bytes(b, std::path::Path::new("x"), &Default::default()).map(|i| i.len()).unwrap_or(0)).sum();
    std::hint::black_box(px);
    let parallel = files.len() as f64 / t.elapsed().as_secs_f64();
    let jd1 = time(&jd(1));
    let jd2 = time(&jd(2));
    let jd4 = time(&jd(4));
    serde_json::json!({
        "threads": 1,
        "petal_libjpeg_turbo_img_s": ours,
        "parallel_threads": rayon::current_num_threads(),
        "petal_libjpeg_turbo_parallel_img_s": parallel,
        "image_crate_zune_jpeg_img_s": image_crate,
        "jpeg_decoder_full_img_s": jd1,
        "jpeg_decoder_dct_half_img_s": jd2,
        "jpeg_decoder_dct_quarter_img_s": jd4,
    })
}

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// ImageFolder or Oxford dataset; its `train` split is measured.
    #[arg(long, default_value = "../shared/data/flowers102-fullres-sample")]
    data: PathBuf,
    /// Also compare single-thread JPEG decoders.
    #[arg(long)]
    decoders: bool,
    /// Where to build the image cache (default: a temporary folder).
    #[arg(long)]
    cache: Option<PathBuf>,
}

fn run_bench(a: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let data = if common.smoke {
        let d = tmp.path().join("smoke-data");
        benchkit::image_folder(&d, 2, &[("train", 6)], 320, 240)?;
        d
    } else {
        a.data.clone()
    };
    let ds = discover(&data, &DiscoverOptions { verify: false, ..Default::default() })?;
    let split = ds.split("train").or_else(|| ds.splits.first()).ok_or("no split")?;
    let samples: Arc<[Sample]> = split.samples.clone().into();
    let cfg = TransformConfig::default();
    // Warm the OS page cache so every variant reads from memory.
    for s in samples.iter() {
        std::hint::black_box(std::fs::read(&s.path)?);
    }
    let (files_passes, cache_passes) = if common.smoke { (1, 1) } else { (2, 3) };
    let threads = rayon::current_num_threads();
    let eval = run(&samples, ImageSource::Files, &cfg, Mode::Eval, files_passes)?;
    let train = run(&samples, ImageSource::Files, &cfg, Mode::Train, files_passes)?;
    let cpath = a.cache.clone().unwrap_or_else(|| tmp.path().join("bench.pimg"));
    let _ = std::fs::remove_file(&cpath);
    let params = CacheParams::new(cfg.resize_size, &cfg.limits);
    let t = Instant::now();
    let (cache, _) = ImageCache::open_or_build(&cpath, &samples, &params, false)?;
    let build_s = t.elapsed().as_secs_f64();
    let cache = Arc::new(cache);
    let t = Instant::now();
    let (reopened, _) = ImageCache::open_or_build(&cpath, &samples, &params, false)?;
    let reopen_s = t.elapsed().as_secs_f64();
    drop(reopened);
    let ceval = run(&samples, ImageSource::Cache(cache.clone()), &cfg, Mode::Eval, cache_passes)?;
    let ctrain = run(&samples, ImageSource::Cache(cache), &cfg, Mode::Train, cache_passes)?;
    let mut out = serde_json::json!({
        "tool": "petal-preprocess",
        "images": samples.len(),
        "threads": threads,
        "batch_size": 32,
        "eval_img_s": eval,
        "train_img_s": train,
        "cached_eval_img_s": ceval,
        "cached_train_img_s": ctrain,
        "cache_build_s": build_s,
        "cache_open_verify_s": reopen_s,
    });
    if a.decoders {
        out["decoders"] = decoders(&samples);
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_preprocess", run_bench)
}
