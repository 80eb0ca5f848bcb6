//! Same pixels as PIL + torchvision, byte for byte: decode (`Image.open(p).convert("RGB")`),
//! `Resize(256)`, the eval tensor, the resize step of `RandomResizedCrop` and a bicubic resize.
//!
//! Expected values come from `tests/fixtures/gen_pixels.py`:
//! * always: the committed fixture `tests/fixtures/pixels/` (generated edge cases and their
//!   expected hashes, with the Pillow/torchvision versions that made them);
//! * with the reference Python (`$PETAL_PYTHON`, set by `cargo xtask test`): the script is run at
//!   test time on freshly generated edge cases plus every image of
//!   `../shared/data/flowers102-fullres-sample` when present (a required check: a generator that
//!   fails fails the test).

use preprocess::resample::Filter;
use preprocess::transform::{resize, resized_crop};
use preprocess::{decode_rgb, predict_tensor, resize_shorter, transform, Mode, RgbImage, TransformConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Compares one expected record with our pipeline; returns the stages that differ.
fn check(base: &Path, rec: &Value) -> Vec<String> {
    let file = base.join(rec["file"].as_str().expect("file"));
    let mut bad = Vec::new();
    let img = match decode_rgb(&file) {
        Ok(i) => i,
        Err(e) => return vec![format!("decode failed: {e}")],
    };
    let want = |k: &str, f: &str| rec[k][f].as_str().unwrap_or("").to_string();
    let dims = |k: &str| (rec[k]["w"].as_u64().unwrap_or(0) as u32, rec[k]["h"].as_u64().unwrap_or(0) as u32);
    if img.dimensions() != dims("decoded") || sha(img.as_raw()) != want("decoded", "sha256") {
        bad.push(format!("decoded {:?} vs {:?}", img.dimensions(), dims("decoded")));
        return bad; // later stages cannot agree either
    }
    let resized = resize_shorter(&img, 256);
    if resized.dimensions() != dims("resized") || sha(resized.as_raw()) != want("resized", "sha256") {
        bad.push(format!("Resize(256) {:?}", resized.dimensions()));
    }
    let t = transform(&img, Mode::Eval, &TransformConfig::default(), 0, 0, 0);
    if sha(&f32_bytes(&t)) != want("tensor", "sha256") {
        let sum: f64 = t.iter().map(|&v| v as f64).sum();
        bad.push(format!("tensor: sum {sum} vs {}", rec["tensor"]["sum"]));
    }
    // The loader's and predict's eval path decodes only the window the crop reads.
    match predict_tensor(&file, &TransformConfig::default()) {
        Ok(p) if sha(&f32_bytes(&p)) == want("tensor", "sha256") => {}
        Ok(p) => bad.push(format!("predict_tensor (windowed decode): {} values differ", p.iter().zip(&t).filter(|(a, b)| a != b).count())),
        Err(e) => bad.push(format!("predict_tensor failed: {e}")),
    }
    let b: Vec<u32> = rec["rrc"]["box"].as_array().expect("box").iter().map(|v| v.as_u64().unwrap_or(0) as u32).collect();
    let rrc = resized_crop(&img, b[0], b[1], b[2], b[3], 224);
    if sha(rrc.as_raw()) != want("rrc", "sha256") {
        bad.push(format!("resized_crop {b:?}"));
    }
    let (bw, bh) = dims("bicubic");
    let bicubic: RgbImage = resize(&img, bw, bh, Filter::Bicubic);
    if sha(bicubic.as_raw()) != want("bicubic", "sha256") {
        bad.push("Resize(256, BICUBIC)".into());
    }
    bad
}

/// Checks every record of an `expected.json`; panics listing all mismatches.
fn check_all(json: &Path) -> usize {
    let text = std::fs::read_to_string(json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
    let v: Value = serde_json::from_str(&text).expect("expected.json");
    eprintln!("expected values made with {}", v["versions"]);
    let base = json.parent().expect("dir");
    let images = v["images"].as_array().expect("images");
    let failures: Vec<String> = images
        .iter()
        .filter_map(|rec| {
            let bad = check(base, rec);
            (!bad.is_empty()).then(|| format!("{}: {}", rec["file"], bad.join("; ")))
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} images differ from PIL/torchvision:\n{}", failures.len(), images.len(), failures.join("\n"));
    images.len()
}

#[test]
fn committed_fixture_matches_pil_and_torchvision() {
    let n = check_all(&manifest().join("tests/fixtures/pixels/expected.json"));
    assert!(n >= 25, "fixture has only {n} images");
}

/// The corpus check: every generated edge case (and the full-resolution sample of `../shared`
/// when present) decoded, resized, cropped and normalised by petal equals Pillow and torchvision.
/// Run once at the widest kernel level the CPU has, and (by `cargo xtask test`) once more with
/// `PETAL_SIMD=scalar`, the reference kernels: each run is its own check.
const CORPUS: &str = "preprocess/pixels/corpus";
const CORPUS_SCALAR: &str = "preprocess/pixels/corpus_scalar";

#[test]
fn corpus_matches_pil_and_torchvision() {
    let forced_scalar = std::env::var("PETAL_SIMD").is_ok_and(|v| v.trim() == "scalar");
    let check = if forced_scalar { CORPUS_SCALAR } else { CORPUS };
    let level = preprocess::simd_level();
    if forced_scalar {
        assert_eq!(level, preprocess::SimdLevel::Scalar, "PETAL_SIMD=scalar must select the scalar kernels");
    } else if std::env::var_os("PETAL_SIMD").is_none() {
        assert_eq!(level, preprocess::simd::detected(), "without PETAL_SIMD the widest level the CPU has must run");
    }
    let Some(reference) = testkit::Reference::find(check, &["torch", "torchvision", "PIL", "numpy"]) else { return };
    testkit::ran(check);
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("expected.json");
    let sample = manifest().join("../../../shared/data/flowers102-fullres-sample");
    let mut cmd = Command::new(&reference.python);
    cmd.arg(manifest().join("tests/fixtures/gen_pixels.py")).arg("--cases-out").arg(dir.path().join("cases")).arg("--json").arg(&json);
    if sample.is_dir() {
        cmd.arg("--sample").arg(&sample);
    } else {
        eprintln!("NOTE: {} absent: generated edge cases only", sample.display());
    }
    // The reference is there: a generator that fails is a failure, not a skip.
    let out = cmd.output().unwrap_or_else(|e| panic!("running {}: {e}", reference.python.display()));
    assert!(out.status.success(), "gen_pixels.py failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    let n = check_all(&json);
    assert!(n >= 25, "the corpus has only {n} images");
    eprintln!("{n} images identical to PIL/torchvision with the {level} kernels");
}
