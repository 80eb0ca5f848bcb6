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

/// The eval transform: resize + centre crop byte-identical to torchvision's (libjpeg-turbo decode,
/// Pillow's resample), then ToTensor + Normalize bit-identical at every sampled index, and the whole
/// tensor's sum equal to torchvision's up to the order of a float32 sum.
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
        assert_eq!((max, count), (0, 0), "{input}: max diff {max}, {count} values differ");

        let t = transform(&img, Mode::Eval, &cfg, 0, 0, 0);
        assert_eq!(t.len(), 3 * 224 * 224);
        for s in case["samples"].as_array().unwrap() {
            let i = s[0].as_u64().unwrap() as usize;
            let want = s[1].as_f64().unwrap() as f32;
            assert_eq!(t[i], want, "{input}: value {i}");
        }
        let sum: f64 = t.iter().map(|&v| v as f64).sum();
        let want = case["tensor_sum"].as_f64().unwrap();
        let per_value = (sum - want).abs() / t.len() as f64;
        assert!(per_value < 1e-5, "{input}: mean deviation {per_value}");
    }
}

/// The CMYK JPEG (Adobe, inverted) decodes to exactly the RGB Pillow produces (the same
/// libjpeg-turbo and the same inversion).
#[test]
fn cmyk_jpeg_decodes_like_pil() {
    let ours = load("cmyk_200x260.jpg");
    let pil = load("cmyk_200x260.decoded.png");
    let (max, count) = diff(&ours, &pil);
    assert_eq!((max, count), (0, 0), "CMYK: max diff {max}, {count} values differ");
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

/// RandomResizedCrop's crop + bilinear antialias resize to 224: byte-identical to torchvision's.
#[test]
fn resized_crop_matches_torchvision() {
    let g = golden();
    for c in g["crops"].as_array().unwrap() {
        let img = load(c["input"].as_str().unwrap());
        let (t, l, h, w) = ["top", "left", "height", "width"].map(|k| c[k].as_u64().unwrap() as u32).into();
        let expected = load(c["expected"].as_str().unwrap());

        let ours = preprocess::transform::resized_crop(&img, t, l, h, w, 224);
        let (max, count) = diff(&ours, &expected);
        assert_eq!((max, count), (0, 0), "crop {t},{l},{h},{w}: max {max}, {count} values differ");
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
