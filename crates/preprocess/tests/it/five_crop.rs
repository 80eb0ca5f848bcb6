//! `Resize` + torchvision's `FiveCrop`: the five crops of `preprocess::five_crop` (the geometry of
//! `--tta five-crop`) equal torchvision's byte for byte, on generated images whose sides make the
//! centre crop's rounding matter. The expected crops come from `tests/fixtures/gen_five_crop.py`,
//! run with the reference Python ($PETAL_PYTHON); without it the check is skipped loudly.

use std::path::{Path, PathBuf};

use preprocess::{decode_rgb, five_crop, resize_shorter, RgbImage};
use sha2::{Digest, Sha256};

const CHECK: &str = "preprocess/five_crop/torchvision";
const PAIRS: &str = "256:224,40:32,36:36";

/// Deterministic noise with structure (so that every crop offset changes the bytes).
fn image(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(2_654_435_761).wrapping_add(y.wrapping_mul(40_503)).wrapping_add(seed.wrapping_mul(97));
        image::Rgb([(v >> 3) as u8, (x * 3 + y) as u8, (v >> 11) as u8 ^ (y as u8)])
    })
}

fn write_cases(dir: &Path) {
    for (i, (w, h)) in [(300, 257), (257, 300), (256, 256), (333, 461), (41, 40), (40, 53), (37, 36)].into_iter().enumerate() {
        image(w, h, i as u32).save(dir.join(format!("case{i}-{w}x{h}.png"))).expect("write png");
    }
}

#[test]
fn five_crop_equals_torchvision() {
    let Some(reference) = testkit::Reference::find(CHECK, &["torch", "torchvision", "PIL", "numpy"]) else { return };
    testkit::ran(CHECK);
    let dir = tempfile::tempdir().expect("tempdir");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).expect("mkdir");
    write_cases(&images);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_five_crop.py");
    let out = reference.generate(&script, &["cases", images.to_str().expect("utf-8 path"), PAIRS], dir.path(), "json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).expect("read")).expect("json");
    let records = doc["records"].as_array().expect("records");
    assert_eq!(records.len(), 7 * 3, "every case and pair has a record");
    let mut bad = Vec::new();
    for rec in records {
        let file = rec["file"].as_str().expect("file");
        let (resize, size) = (rec["resize"].as_u64().expect("resize") as u32, rec["size"].as_u64().expect("size") as u32);
        let resized = resize_shorter(&decode_rgb(&images.join(file)).expect("decode"), resize);
        let crops = five_crop(&resized, size).expect("the crop fits the resized image");
        for (i, (crop, want)) in crops.iter().zip(rec["crops"].as_array().expect("crops")).enumerate() {
            let got = format!("{:x}", Sha256::digest(crop.as_raw()));
            let dims = (want["w"].as_u64().unwrap_or(0) as u32, want["h"].as_u64().unwrap_or(0) as u32);
            if crop.dimensions() != dims || want["sha256"].as_str() != Some(got.as_str()) {
                bad.push(format!("{file} Resize({resize}) FiveCrop({size}) crop {i}"));
            }
        }
    }
    assert!(bad.is_empty(), "crops that differ from torchvision {}: {bad:#?}", doc["torchvision"]);
}

#[test]
fn five_crop_refuses_a_crop_larger_than_the_image() {
    assert!(five_crop(&image(30, 40, 0), 31).is_none());
    assert!(five_crop(&image(30, 40, 0), 30).is_some());
}
