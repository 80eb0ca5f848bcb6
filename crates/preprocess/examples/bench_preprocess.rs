//! Throughput benchmark of the preprocessing pipeline (images/s), for `cargo xtask bench`.
//!
//! ```text
//! cargo run --release -p preprocess --example bench_preprocess -- \
//!     --data ../shared/data/flowers102-fullres-sample --json [--smoke] [--decoders] [--stages] [--cache PATH]
//! ```
//! Measures, over every image of the `train` split (306 full-resolution JPEGs in the sample):
//! eval transform and train augmentation from the JPEG files, then the same from the image
//! cache (built first, build time reported). `--decoders` adds a single-thread JPEG decoder
//! comparison, and the exact decode alone on every rayon thread (the ceiling of any exact eval pipeline). With `--json` the last stdout line is one JSON object (`eval_img_s`, `train_img_s`,
//! `cached_eval_img_s`, `cached_train_img_s`, …). `--smoke` measures 12 generated images, once.
//! `--stages` adds single-thread per-stage times (`stages`: mean ms per image of decode, the eval
//! `Resize(256)`, `CenterCrop(224)`, ToTensor + Normalize into a batch buffer, and the train
//! `RandomResizedCrop` resize; best of 3 passes). `simd_level` names the kernels that ran
//! (`PETAL_SIMD=scalar|avx2|avx512bw|avx512` caps them).

use preprocess::transform::resized_crop;
use preprocess::{
    center_crop, discover, loader, resize_shorter, train_params, write_tensor, CacheParams, DiscoverOptions, ImageCache, ImageSource, LoaderConfig,
    Mode, RgbImage, Sample, TransformConfig,
};
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

/// Single-thread time of each stage of the eval transform (and the train resize), in mean ms
/// per image over `samples`, best of `passes` passes per stage: each stage alone on whole
/// images (`decode_ms` … `normalize_into_batch_ms`, their sum `eval_total_ms`), then the
/// loader's fused eval path: `decode_window_ms` decodes only the window the crop reads, and
/// `eval_view_ms` is the whole view of a file (windowed decode, the crop region of the resize,
/// ToTensor + Normalize).
fn stages(samples: &[Sample], passes: usize) -> Result<serde_json::Value, preprocess::Error> {
    let cfg = TransformConfig::default();
    let files: Vec<Vec<u8>> = samples.iter().filter_map(|s| std::fs::read(&s.path).ok()).collect();
    let n = files.len().max(1) as f64;
    let best = |f: &mut dyn FnMut()| {
        (0..passes.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3 / n
            })
            .fold(f64::MAX, f64::min)
    };
    let decode = |b: &Vec<u8>| preprocess::decode_rgb_bytes(b, std::path::Path::new("x"), &cfg.limits);
    let imgs: Vec<RgbImage> = files.iter().map(decode).collect::<Result<_, _>>()?;
    let decode_ms = best(&mut || {
        for b in &files {
            std::hint::black_box(decode(b).ok());
        }
    });
    // The loader's eval path: only the window Resize + CenterCrop read is decoded (from the
    // file, in the page cache), then the crop region is resized and normalised.
    let mut buf = Vec::new();
    let decode_window_ms = best(&mut || {
        for s in samples {
            let window = |w, h| preprocess::transform::resize_center_crop_source(w, h, cfg.resize_size, cfg.image_size);
            std::hint::black_box(preprocess::decode::decode_rgb_window(&s.path, &cfg.limits, window, &mut buf).ok());
        }
    });
    let eval_view_ms = best(&mut || {
        for s in samples {
            std::hint::black_box(preprocess::predict_tensor(&s.path, &cfg).ok());
        }
    });
    let mut resized = Vec::new();
    let resize_ms = best(&mut || resized = imgs.iter().map(|i| resize_shorter(i, cfg.resize_size)).collect());
    let mut crops = Vec::new();
    let crop_ms = best(&mut || crops = resized.iter().map(|i| center_crop(i, cfg.image_size)).collect());
    // ToTensor + Normalize straight into the slots of a 32-image batch buffer, as the loader does.
    let per = 3 * (cfg.image_size * cfg.image_size) as usize;
    let mut batch = vec![0f32; 32 * per];
    let normalize_ms = best(&mut || {
        for (i, c) in crops.iter().enumerate() {
            let slot = &mut batch[i % 32 * per..(i % 32 + 1) * per];
            write_tensor(c.as_raw(), cfg.image_size, &cfg, i % 2 == 1, false, slot);
        }
        std::hint::black_box(&batch);
    });
    let boxes: Vec<_> = imgs.iter().enumerate().map(|(i, img)| train_params(img.width(), img.height(), &cfg, 1, 0, i as u64)).collect();
    let train_resize_ms = best(&mut || {
        for (img, p) in imgs.iter().zip(&boxes) {
            std::hint::black_box(resized_crop(img, p.top, p.left, p.height, p.width, cfg.image_size));
        }
    });
    Ok(serde_json::json!({
        "threads": 1,
        "images": files.len(),
        "unit": "ms per image, best of passes",
        "passes": passes,
        "decode_ms": decode_ms,
        "resize_256_ms": resize_ms,
        "center_crop_224_ms": crop_ms,
        "normalize_into_batch_ms": normalize_ms,
        "eval_total_ms": decode_ms + resize_ms + crop_ms + normalize_ms,
        "train_resized_crop_224_ms": train_resize_ms,
        "decode_window_ms": decode_window_ms,
        "eval_view_ms": eval_view_ms,
    }))
}

/// The stages `cargo xtask bench` records, as `stage_<name>`: the whole decode and the windowed
/// one, the resize, the crop, ToTensor + Normalize, and the loader's whole eval view of a file.
const STAGE_METRICS: [&str; 6] = ["decode_ms", "decode_window_ms", "resize_256_ms", "center_crop_224_ms", "normalize_into_batch_ms", "eval_view_ms"];

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// ImageFolder or Oxford dataset; its `train` split is measured.
    #[arg(long, default_value = "../shared/data/flowers102-fullres-sample")]
    data: PathBuf,
    /// Also compare single-thread JPEG decoders.
    #[arg(long)]
    decoders: bool,
    /// Also time each stage (decode, resize, crop, normalize into the batch) on one thread.
    #[arg(long)]
    stages: bool,
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
        "simd_level": preprocess::simd_level().name(),
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
    // A smoke run times the stages too, so that the harness sees every metric it records.
    if a.stages || common.smoke {
        let st = stages(&samples, if common.smoke { 1 } else { 3 })?;
        // The per-stage figures the harness records (`stage_*`, single-thread ms per image).
        for k in STAGE_METRICS {
            out[format!("stage_{k}")] = st[k].clone();
        }
        out["stages"] = st;
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_preprocess", run_bench)
}
