//! Determinism of transforms and batches, and the image cache's reuse / invalidation /
//! corruption handling.

use preprocess::{
    decode_rgb, loader, transform, CacheParams, CacheStatus, DecodeLimits, Error, ImageCache, ImageSource, LoaderConfig, Mode, Sample,
    TransformConfig,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn make_samples(dir: &Path, n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img_{i:02}.jpg"));
            let (w, h) = (300 + 7 * i as u32, 260 + 3 * i as u32);
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x + i as u32 * 9) as u8, (y * 2) as u8, ((x ^ y) & 0xff) as u8]));
            img.save_with_format(&p, image::ImageFormat::Jpeg).unwrap();
            Sample { path: p, label: i % 3 }
        })
        .collect()
}

/// The first half of the JPEG at `path`, as `dir/trunc.jpg`.
fn truncated_copy(path: &Path, dir: &Path) -> PathBuf {
    let bad = dir.join("trunc.jpg");
    let b = std::fs::read(path).unwrap();
    std::fs::write(&bad, &b[..b.len() / 2]).unwrap();
    bad
}

fn collect(samples: &[Sample], source: ImageSource, cfg: &TransformConfig, lcfg: &LoaderConfig) -> Vec<preprocess::Batch> {
    loader(samples.to_vec().into(), source, cfg, lcfg).unwrap().map(|b| b.unwrap()).collect()
}

#[test]
fn train_views_are_pure_functions_of_seed_epoch_index() {
    let d = tempfile::tempdir().unwrap();
    let samples = make_samples(d.path(), 10);
    let cfg = TransformConfig {
        color_jitter: Some(preprocess::ColorJitter { brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.05 }),
        ..Default::default()
    };
    let base = LoaderConfig { batch_size: 4, shuffle: true, seed: 11, epoch: 2, mode: Mode::Train, ..Default::default() };
    // Different thread counts and prefetch depths give identical batches.
    let a = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { threads: 1, prefetch: 1, ..base.clone() });
    let b = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { threads: 2, prefetch: 3, ..base.clone() });
    assert_eq!(a, b);
    assert_eq!(a.len(), 3);
    assert_eq!(a[2].shape, [2, 3, 224, 224]);
    // The order is a permutation fixed by (seed, epoch); each batch's content matches the
    // single-sample transform of its indices.
    let order: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, preprocess::epoch_order(10, 11, 2, true));
    let i = a[1].indices[0];
    let img = decode_rgb(&samples[i].path).unwrap();
    let one = transform(&img, Mode::Train, &cfg, 11, 2, i as u64);
    assert_eq!(&a[1].images[..one.len()], &one[..]);
    assert_eq!(a[1].labels[0], samples[i].label as i64);
    // Another epoch gives another view of the same sample.
    assert_ne!(one, transform(&img, Mode::Train, &cfg, 11, 3, i as u64));
    // Resume: start_batch skips exactly the first batches.
    let resumed = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { start_batch: 1, ..base.clone() });
    assert_eq!(&resumed[..], &a[1..]);
    // A range of batches: the same batches, with the same indices and augmentation.
    let middle = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { start_batch: 1, end_batch: Some(2), ..base.clone() });
    assert_eq!(&middle[..], &a[1..2]);
    let past_end = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { start_batch: 2, end_batch: Some(9), ..base.clone() });
    assert_eq!(&past_end[..], &a[2..]);
    // drop_last
    let dropped = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { drop_last: true, ..base });
    assert_eq!(dropped.len(), 2);
}

#[test]
fn channels_last_is_a_transpose() {
    let d = tempfile::tempdir().unwrap();
    let samples = make_samples(d.path(), 2);
    let cfg = TransformConfig::default();
    let l = LoaderConfig { batch_size: 2, ..Default::default() };
    let nchw = collect(&samples, ImageSource::Files, &cfg, &l);
    let nhwc = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { channels_last: true, ..l });
    let (a, b) = (&nchw[0].images, &nhwc[0].images);
    assert!(nhwc[0].channels_last && nhwc[0].shape == [2, 3, 224, 224]);
    let hw = 224 * 224;
    for (n, c, y, x) in [(0, 0, 0, 0), (1, 2, 100, 7), (0, 1, 223, 223), (1, 0, 5, 200)] {
        assert_eq!(a[n * 3 * hw + c * hw + y * 224 + x], b[n * 3 * hw + (y * 224 + x) * 3 + c]);
    }
}

#[test]
fn decode_errors_name_the_file_and_stop_the_loader() {
    let d = tempfile::tempdir().unwrap();
    let mut samples = make_samples(d.path(), 3);
    let bad = d.path().join("bad.jpg");
    std::fs::write(&bad, b"garbage").unwrap();
    samples.push(Sample { path: bad.clone(), label: 0 });
    let l = LoaderConfig { batch_size: 2, ..Default::default() };
    let out: Vec<_> = loader(samples.into(), ImageSource::Files, &TransformConfig::default(), &l).unwrap().collect();
    assert_eq!(out.len(), 2);
    assert!(out[0].is_ok());
    let e = out[1].as_ref().unwrap_err();
    assert!(e.to_string().contains("bad.jpg"), "{e}");
}

fn params() -> CacheParams {
    CacheParams::new(256, &DecodeLimits::default())
}

#[test]
fn cache_eval_equals_files_and_is_reused() {
    let d = tempfile::tempdir().unwrap();
    let samples = make_samples(d.path(), 5);
    let path = d.path().join("cache/train.pimg");
    let (c, st) = ImageCache::open_or_build(&path, &samples, &params(), false).unwrap();
    assert!(matches!(st, CacheStatus::Built { .. }));
    assert_eq!(c.len(), 5);
    let e = c.get(3).unwrap();
    assert_eq!((e.orig_width, e.orig_height), (321, 269));
    assert_eq!((e.width, e.height), (305, 256)); // int(256 * 321 / 269) = 305
    let cfg = TransformConfig::default();
    let l = LoaderConfig { batch_size: 5, ..Default::default() };
    let from_files = collect(&samples, ImageSource::Files, &cfg, &l);
    let from_cache = collect(&samples, ImageSource::Cache(Arc::new(c)), &cfg, &l);
    assert_eq!(from_files, from_cache, "eval from the cache must be bit-identical");
    // Train from the cache: same geometry drawn in original coordinates, from a smaller image.
    let lt = LoaderConfig { batch_size: 5, mode: Mode::Train, seed: 3, ..Default::default() };
    let (c, st) = ImageCache::open_or_build(&path, &samples, &params(), false).unwrap();
    assert_eq!(st, CacheStatus::Reused);
    let tf = collect(&samples, ImageSource::Files, &cfg, &lt);
    let tc = collect(&samples, ImageSource::Cache(Arc::new(c)), &cfg, &lt);
    let mad: f64 = tf[0].images.iter().zip(&tc[0].images).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / tf[0].images.len() as f64;
    eprintln!("train files vs cache: mean |diff| {mad:.4} (normalised units)");
    assert!(mad < 0.25, "{mad}");
}

fn rebuilt(path: &Path, samples: &[Sample], p: &CacheParams, needle: &str) {
    let (_, st) = ImageCache::open_or_build(path, samples, p, false).unwrap();
    match st {
        CacheStatus::Built { reason } => assert!(reason.contains(needle), "reason {reason:?} lacks {needle:?}"),
        CacheStatus::Reused => panic!("expected a rebuild ({needle})"),
    }
}

#[test]
fn cache_invalidation_and_corruption() {
    let d = tempfile::tempdir().unwrap();
    let mut samples = make_samples(d.path(), 4);
    let path: PathBuf = d.path().join("c.pimg");
    rebuilt(&path, &samples, &params(), "no cache");
    // Parameters changed.
    rebuilt(&path, &samples, &CacheParams::new(288, &DecodeLimits::default()), "parameters");
    rebuilt(&path, &samples, &params(), "parameters");
    // A source file changed (size and mtime; the time set explicitly, not left to the
    // filesystem's timestamp resolution).
    let before = std::fs::metadata(&samples[1].path).and_then(|m| m.modified()).unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([1, 2, 3])).save_with_format(&samples[1].path, image::ImageFormat::Jpeg).unwrap();
    std::fs::File::options().write(true).open(&samples[1].path).unwrap().set_modified(before + std::time::Duration::from_secs(3600)).unwrap();
    rebuilt(&path, &samples, &params(), "stale");
    // The sample list changed.
    samples.pop();
    rebuilt(&path, &samples, &params(), "stale");
    let (_, st) = ImageCache::open_or_build(&path, &samples, &params(), false).unwrap();
    assert_eq!(st, CacheStatus::Reused);
    // Flipped pixel byte → checksum mismatch.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[200] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let e = ImageCache::open(&path).unwrap().verify().unwrap_err();
    assert!(matches!(e, Error::Cache { .. }) && e.to_string().contains("c.pimg"), "{e}");
    rebuilt(&path, &samples, &params(), "checksum");
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    assert!(ImageCache::open(&path).unwrap_err().to_string().contains("truncated"));
    rebuilt(&path, &samples, &params(), "truncated");
    // Garbage and an older format version.
    std::fs::write(&path, b"not a cache at all, clearly not one ................................").unwrap();
    rebuilt(&path, &samples, &params(), "magic");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 99;
    std::fs::write(&path, &bytes).unwrap();
    rebuilt(&path, &samples, &params(), "version");
    let (c, _) = ImageCache::open_or_build(&path, &samples, &params(), false).unwrap();
    c.verify().unwrap();
    // No temp files are left behind.
    let leftovers: Vec<_> =
        std::fs::read_dir(d.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(".tmp")).collect();
    assert!(leftovers.is_empty());
}

#[test]
fn cache_skip_bad_records_missing_entries() {
    let d = tempfile::tempdir().unwrap();
    let mut samples = make_samples(d.path(), 2);
    let bad = truncated_copy(&samples[0].path, d.path());
    samples.push(Sample { path: bad.clone(), label: 1 });
    let path = d.path().join("c.pimg");
    let e = ImageCache::open_or_build(&path, &samples, &params(), false).unwrap_err();
    assert!(e.to_string().contains("trunc.jpg") && e.to_string().contains("truncated"), "{e}");
    let (c, _) = ImageCache::open_or_build(&path, &samples, &params(), true).unwrap();
    assert_eq!(c.bad.len(), 1);
    assert_eq!(c.bad[0].path, bad);
    assert!(c.get(2).is_err() && c.get(1).is_ok());
    let (c, st) = ImageCache::open_or_build(&path, &samples, &params(), true).unwrap();
    assert_eq!(st, CacheStatus::Reused);
    assert_eq!(c.bad.len(), 1);
}

/// `predict_tensor` (decode a file + eval transform) against torchvision's eval transform of the
/// same files (the committed goldens of `golden.rs`): lossless inputs in RGB, grey and RGBA.
#[test]
fn predict_tensor_matches_torchvision_eval_on_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let cfg = TransformConfig::default();
    let mut checked = 0;
    for case in g["eval"].as_array().unwrap().iter().filter(|c| c["input"].as_str().unwrap().ends_with(".png")) {
        let input = case["input"].as_str().unwrap();
        let t = preprocess::predict_tensor(&dir.join(input), &cfg).unwrap();
        assert_eq!(t.len(), 3 * 224 * 224, "{input}");
        // One uint8 level of resampling rounding, after normalisation by the smallest std.
        let tol = 1.0 / 255.0 / 0.224 + 1e-6;
        for s in case["samples"].as_array().unwrap() {
            let (i, want) = (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap() as f32);
            assert!((t[i] - want).abs() <= tol, "{input}: value {i} is {}, torchvision {want}", t[i]);
        }
        let sum: f64 = t.iter().map(|&v| v as f64).sum();
        let per_value = (sum - case["tensor_sum"].as_f64().unwrap()).abs() / t.len() as f64;
        assert!(per_value < 1e-3, "{input}: mean deviation {per_value}");
        checked += 1;
    }
    assert_eq!(checked, 5, "rgb x3, gray, rgba");
    let d = tempfile::tempdir().unwrap();
    let e = preprocess::predict_tensor(&d.path().join("missing.jpg"), &cfg).unwrap_err();
    assert!(e.to_string().contains("missing.jpg"), "{e}");
    // An invalid config is refused before any file is read.
    let bad = TransformConfig { image_size: 0, ..TransformConfig::default() };
    assert!(matches!(preprocess::predict_tensor(&dir.join("rgb_256x256.png"), &bad), Err(Error::Config(_))));
}

#[test]
fn loader_skip_bad_drops_unreadable_samples_and_lists_them() {
    let d = tempfile::tempdir().unwrap();
    let good = make_samples(d.path(), 4);
    let bad = truncated_copy(&good[0].path, d.path());
    let mut samples = good.clone();
    samples.insert(1, Sample { path: bad.clone(), label: 2 });
    let cfg = TransformConfig::default();
    let lcfg = LoaderConfig { batch_size: 3, mode: Mode::Eval, ..Default::default() };
    // Without skip_bad the epoch stops with an error naming the file.
    let err = loader(samples.clone().into(), ImageSource::Files, &cfg, &lcfg).unwrap().find_map(|b| b.err()).expect("an error");
    assert!(err.to_string().contains("trunc.jpg"), "{err}");
    // With skip_bad the bad sample is dropped from its batch and listed; the rest is unchanged.
    let batches = collect(&samples, ImageSource::Files, &cfg, &LoaderConfig { skip_bad: true, ..lcfg.clone() });
    assert_eq!(batches[0].indices, vec![0, 2]);
    assert_eq!(batches[0].shape, [2, 3, 224, 224]);
    assert_eq!(batches[0].labels, vec![samples[0].label as i64, samples[2].label as i64]);
    assert_eq!(batches[0].skipped.len(), 1);
    assert_eq!(batches[0].skipped[0].path, bad);
    assert!(batches[1].skipped.is_empty());
    let per = 3 * 224 * 224;
    let clean = collect(&good, ImageSource::Files, &cfg, &LoaderConfig { batch_size: 1, ..lcfg });
    assert_eq!(&batches[0].images[per..2 * per], clean[1].images.as_slice());
    assert_eq!(&batches[0].images[..per], clean[0].images.as_slice());
}

/// A dropped batch hands its buffer back: a later batch is written into it (no fresh zeroed
/// buffer), and its values are those of a run that keeps every batch, even where a skipped
/// sample leaves the previous batch's values in its slot before compaction.
#[test]
fn dropped_batches_lend_their_buffers_to_later_batches() {
    let d = tempfile::tempdir().unwrap();
    let mut samples = make_samples(d.path(), 7);
    let bad = truncated_copy(&samples[0].path, d.path());
    // Batches of 2: the unreadable file is the first sample of batches 2 and 3; batch 4 has one
    // sample.
    samples.insert(4, Sample { path: bad.clone(), label: 1 });
    samples.insert(6, Sample { path: bad, label: 1 });
    let cfg = TransformConfig::default();
    let lcfg = LoaderConfig { batch_size: 2, prefetch: 1, threads: 1, mode: Mode::Eval, skip_bad: true, ..Default::default() };
    let kept = collect(&samples, ImageSource::Files, &cfg, &lcfg);
    let mut ptrs = Vec::new();
    let mut hold = Vec::new();
    for (i, b) in loader(samples.clone().into(), ImageSource::Files, &cfg, &lcfg).unwrap().enumerate() {
        let b = b.unwrap();
        assert_eq!(b, kept[i], "batch {i}");
        ptrs.push(b.images.as_ptr());
        if i == 0 {
            // Were batch 0's buffer freed rather than handed back, this allocation of its size
            // would take its memory, and no later batch could show its address.
            drop(b);
            hold = vec![1f32; 2 * 3 * 224 * 224];
        }
    }
    assert_eq!(ptrs.len(), 5);
    assert_eq!((kept[2].indices.clone(), kept[4].indices.clone()), (vec![5], vec![8]));
    // With one batch prefetched, batch 3 is prepared after the consumer took batch 1, so after
    // batch 0 was dropped: batch 2 or 3 is written into batch 0's buffer.
    assert!(ptrs[2] == ptrs[0] || ptrs[3] == ptrs[0], "no batch reused batch 0's buffer: {ptrs:?}");
    assert_ne!(hold.as_ptr(), ptrs[0]);
}

/// The loader decodes only the window of a JPEG that a view reads (the eval crop, or a train
/// view's rotated crop); its batches equal the views of whole decodes, for the committed fixture
/// images (every JPEG layout, and other formats) and the full-resolution photos of
/// `../shared/data/flowers102-fullres-sample`, in both modes.
#[test]
fn loader_views_of_windowed_decodes_equal_views_of_whole_decodes() {
    const CHECK: &str = "preprocess/loader_cache/windowed_photos";
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let images = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = walk(dir).into_iter().filter(|p| preprocess::is_image_path(p)).collect();
        v.sort();
        v
    };
    let mut paths = images(&manifest.join("tests/fixtures/pixels"));
    let photos = manifest.join("../../../shared/data/flowers102-fullres-sample/train");
    if photos.is_dir() {
        testkit::ran(CHECK);
        paths.extend(images(&photos));
    } else {
        testkit::skip(CHECK, &format!("{} is absent: the committed fixture images only", photos.display()));
    }
    let samples: Vec<Sample> = paths.iter().map(|p| Sample { path: p.clone(), label: 0 }).collect();
    let cfg = TransformConfig::default();
    for mode in [Mode::Eval, Mode::Train] {
        let lcfg = LoaderConfig { batch_size: 16, mode, seed: 3, epoch: 1, ..Default::default() };
        let per = 3 * 224 * 224;
        for batch in loader(samples.clone().into(), ImageSource::Files, &cfg, &lcfg).unwrap() {
            let batch = batch.unwrap();
            for (k, &i) in batch.indices.iter().enumerate() {
                let whole = transform(&decode_rgb(&paths[i]).unwrap(), mode, &cfg, 3, 1, i as u64);
                assert!(batch.images[k * per..(k + 1) * per] == whole[..], "{mode:?} view of {}", paths[i].display());
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
