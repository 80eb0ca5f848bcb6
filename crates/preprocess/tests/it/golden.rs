//! Golden tests against torchvision + PIL (expected values made by
//! `tests/fixtures/make_fixtures.py`, committed next to them).

use preprocess::{center_crop, decode_rgb, resize_shorter, rotate_nearest, transform, Mode, RgbImage, TransformConfig};
use serde_json::Value;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(golden_dir().join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(name: &str) -> RgbImage {
    decode_rgb(&golden_dir().join(name)).unwrap()
}

/// (max abs difference, number of differing values) between two equally sized images.
fn diff(a: &RgbImage, b: &RgbImage) -> (u8, usize) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).fold((0, 0), |(m, n), (&x, &y)| {
        let d = x.abs_diff(y);
        (m.max(d), n + (d > 0) as usize)
    })
}

/// Tolerance on lossless inputs: ±1 per uint8 value (fixed-point rounding
/// of the two resampling passes), on at most 2% of the values. Then the normalised floats
/// are bit-identical wherever the uint8 values agree.
#[test]
fn eval_transform_matches_torchvision() {
    let g = golden();
    let cfg = TransformConfig::default();
    for case in g["eval"].as_array().unwrap() {
        let input = case["input"].as_str().unwrap();
        let img = load(input);
        let expected = load(case["expected_u8"].as_str().unwrap());
        let ours = center_crop(&resize_shorter(&img, 256), 224);
        let (max, count) = diff(&ours, &expected);
        let is_jpeg = input.ends_with(".jpg");
        // libjpeg-turbo decode + Pillow's resample: byte-identical.
        let tol = 0;
        assert_eq!((max, count), (0, 0), "{input}: max diff {max}, {count} values differ");

        // Normalised tensor: values where our uint8 equals torchvision's must be bit-equal.
        let t = transform(&img, Mode::Eval, &cfg, 0, 0, 0);
        assert_eq!(t.len(), 3 * 224 * 224);
        for s in case["samples"].as_array().unwrap() {
            let i = s[0].as_u64().unwrap() as usize;
            let want = s[1].as_f64().unwrap() as f32;
            let (c, p) = (i / (224 * 224), i % (224 * 224));
            let (y, x) = ((p / 224) as u32, (p % 224) as u32);
            if ours.get_pixel(x, y)[c] == expected.get_pixel(x, y)[c] {
                assert_eq!(t[i], want, "{input}: value {i}");
            } else {
                assert!((t[i] - want).abs() <= tol as f32 / 255.0 / 0.224 + 1e-6, "{input}: value {i}");
            }
        }
        let sum: f64 = t.iter().map(|&v| v as f64).sum();
        let want = case["tensor_sum"].as_f64().unwrap();
        let per_value = (sum - want).abs() / t.len() as f64;
        assert!(per_value < if is_jpeg { 0.05 } else { 1e-3 }, "{input}: mean deviation {per_value}");
    }
}

/// The CMYK JPEG (Adobe, inverted) decodes to the RGB PIL produces, within JPEG decoder
/// differences, bounded everywhere, not just on average. Measured (zune-jpeg vs PIL 13 /
/// libjpeg-turbo): max 1 level, 537 of 156,000 values differ, mean 0.003.
#[test]
fn cmyk_jpeg_decodes_like_pil() {
    let ours = load("cmyk_200x260.jpg");
    let pil = load("cmyk_200x260.decoded.png");
    let (max, count) = diff(&ours, &pil);
    let mean: f64 = ours.as_raw().iter().zip(pil.as_raw()).map(|(&a, &b)| a.abs_diff(b) as f64).sum::<f64>() / ours.as_raw().len() as f64;
    eprintln!("CMYK: max {max}, {count} differ, mean {mean:.3}");
    assert_eq!((max, count), (0, 0), "mean abs diff {mean}");
}

/// RandomRotation's rotation: bit-exact with PIL's NEAREST affine.
#[test]
fn rotation_matches_pil() {
    let g = golden();
    for r in g["rotations"].as_array().unwrap() {
        let img = load(r["input"].as_str().unwrap());
        let angle = r["angle"].as_f64().unwrap();
        let expected = load(r["expected"].as_str().unwrap());
        let ours = rotate_nearest(&img, angle);
        let (max, count) = diff(&ours, &expected);
        assert_eq!(count, 0, "angle {angle}: {count} values differ (max {max})");
    }
}

/// RandomResizedCrop's crop + bilinear antialias resize to 224.
#[test]
fn resized_crop_matches_torchvision() {
    let g = golden();
    for c in g["crops"].as_array().unwrap() {
        let img = load(c["input"].as_str().unwrap());
        let (t, l, h, w) = ["top", "left", "height", "width"].map(|k| c[k].as_u64().unwrap() as u32).into();
        let expected = load(c["expected"].as_str().unwrap());

        let ours = preprocess::transform::resized_crop(&img, t, l, h, w, 224);
        let (max, count) = diff(&ours, &expected);
        eprintln!("crop {t},{l},{h},{w}: max {max}, {count} differ");
        assert!(max <= 1 && (count as f64) < 0.05 * (224.0 * 224.0 * 3.0), "max {max}, {count} differ");
    }
}

/// ColorJitter components: Pillow's ImageEnhance / HSV arithmetic.
#[test]
fn color_jitter_matches_pil() {
    let g = golden();
    let src = load("jitter_src.png");
    for j in g["jitter"].as_array().unwrap() {
        let kind = j["kind"].as_str().unwrap();
        let f = j["factor"].as_f64().unwrap() as f32;
        let expected = load(j["expected"].as_str().unwrap());
        let mut px = src.as_raw().clone();
        let none = preprocess::JitterParams { order: [0, 1, 2, 3], brightness: None, contrast: None, saturation: None, hue: None };
        let p = match kind {
            "brightness" => preprocess::JitterParams { brightness: Some(f), ..none },
            "contrast" => preprocess::JitterParams { contrast: Some(f), ..none },
            "saturation" => preprocess::JitterParams { saturation: Some(f), ..none },
            _ => preprocess::JitterParams { hue: Some(f), ..none },
        };
        preprocess::transform::apply_jitter(&mut px, &p);
        let ours = RgbImage::from_raw(src.width(), src.height(), px).unwrap();
        let (max, count) = diff(&ours, &expected);
        assert!(max <= 1 && count * 100 < ours.as_raw().len(), "{kind} {f}: max {max}, {count} differ");
    }
}
