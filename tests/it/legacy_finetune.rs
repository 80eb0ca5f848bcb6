//! An old PyTorch checkpoint, converted (or given as it is), continues training with
//! `petal train --init-from`, and the result predicts: the real `petal` binary on the seed-style
//! DenseNet-121 fixture of `crates/infer/tests/fixtures/legacy` (written by torch 2.13) and a
//! learnable synthetic dataset whose class folders are the fixture's (`1`, `10`, `102`, `21`, `3`).

use crate::common;

use common::{metrics, ok, petal};
use std::path::{Path, PathBuf};

const FOLDERS: [&str; 5] = ["1", "10", "102", "21", "3"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/infer/tests/fixtures/legacy").join(name)
}

/// A square of the class colour on a noisy grey background; `i` varies position and noise.
fn draw(class: usize, i: u32) -> image::RgbImage {
    const COLOURS: [[u8; 3]; 5] = [[230, 40, 40], [40, 200, 60], [50, 60, 230], [230, 220, 40], [200, 40, 220]];
    let mut img = image::RgbImage::new(48, 48);
    let mut state = (class as u32 + 1) * 7919 + i * 104_729;
    let (cx, cy) = (14 + (i * 5) % 20, 14 + (i * 3) % 20);
    for (x, y, p) in img.enumerate_pixels_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (state >> 24) as u8 / 4;
        let inside = (x as i32 - cx as i32).abs() <= 10 && (y as i32 - cy as i32).abs() <= 10;
        *p = if inside { image::Rgb(COLOURS[class]) } else { image::Rgb([100 + noise, 100 + noise, 100 + noise]) };
    }
    img
}

fn make_dataset(root: &Path) {
    for (split, n, offset) in [("train", 8, 0), ("valid", 3, 1000)] {
        for (c, folder) in FOLDERS.iter().enumerate() {
            let dir = root.join(split).join(folder);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..n {
                draw(c, offset + i).save(dir.join(format!("{i:03}.png"))).expect("save png");
            }
        }
    }
}

/// A short frozen run at 64 px; `arch` and `head` are left to the default (the classifier the run
/// starts from replaces them).
fn config(dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\nmode = \"frozen\"\nviews = 0\noptimizer = \"adam\"\nlr = 0.01\nschedule = \"constant\"\nepochs = 6\n\
         batch_size = 8\nseed = 3\nimage_size = 64\nresize_size = 72\nchannels_last = false\neval_batch_size = 16\nthreads = 1\n"
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("config");
    p
}

fn train(data: &Path, tmp: &Path, name: &str, init: &Path) -> PathBuf {
    let out = petal()
        .args(["train", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config(tmp, name))
        .arg("--runs-dir")
        .arg(tmp.join("runs"))
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .arg("--init-from")
        .arg(init)
        .output()
        .expect("run petal train");
    ok(out, "petal train --init-from");
    tmp.join("runs").join(name)
}

#[test]
fn a_converted_seed_checkpoint_fine_tunes_and_predicts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data);
    let converted = tmp.path().join("seed.safetensors");
    let out = petal().args(["checkpoint", "convert"]).arg(fixture("seed_densenet121_legacy.pth")).arg(&converted).output().expect("convert");
    ok(out, "petal checkpoint convert");

    let run = train(&data, tmp.path(), "from-converted", &converted);
    let m = metrics(&run);
    assert_eq!(m.len(), 6);
    let (first, last) = (m[0]["train_loss"].as_f64().expect("loss"), m[5]["train_loss"].as_f64().expect("loss"));
    assert!(last < first * 0.7, "the head did not train: loss {first} -> {last}");
    let best_valid = m.iter().filter_map(|e| e["valid_acc"].as_f64()).fold(0.0, f64::max);
    // Five colours, one per class, on grey noise: a task built to be learnt. The run reaches 15 of
    // 15 here; at least 12 of 15 (chance: 3) says the converted network learns, with room for
    // another CPU's rounding.
    assert!(best_valid >= 0.8, "validation accuracy {best_valid}: at least 0.8 on a task built so (chance is 0.2)");

    // The run kept the file's network: DenseNet-121, the seed's 32-unit head, its backbone
    // weights untouched by frozen training, its head weights trained from the file's.
    let (start, trained) = (checkpoint::load(&converted).expect("converted"), checkpoint::load(&run.join("last.safetensors")).expect("last"));
    assert_eq!(trained.meta.arch, "densenet121");
    assert_eq!(trained.meta.head["hidden"], serde_json::json!([32]));
    assert_eq!(trained.meta.classes.iter().map(|c| c.folder.as_str()).collect::<Vec<_>>(), FOLDERS);
    for (k, t) in start.model_tensors() {
        let after = &trained.tensors[k];
        if k.starts_with("classifier.") {
            assert_ne!(after.bytes, t.bytes, "{k}: the head did not train");
        } else if !k.ends_with("num_batches_tracked") {
            assert_eq!(after.bytes, t.bytes, "{k}: the frozen backbone changed");
        }
    }

    // The result predicts: the held-out image of class `21` is ranked first.
    let img = tmp.path().join("held-out.png");
    draw(3, 5000).save(&img).expect("save");
    let out =
        petal().args(["predict", "--json", "--top-k", "5", "--checkpoint"]).arg(run.join("best.safetensors")).arg(&img).output().expect("predict");
    let preds: serde_json::Value = serde_json::from_str(&ok(out, "petal predict")).expect("json");
    let top = preds[0]["top"].as_array().expect("top");
    assert_eq!(top.len(), 5);
    assert_eq!(top[0]["folder"], "21", "{preds}");
    let total: f64 = top.iter().map(|c| c["prob"].as_f64().expect("prob")).sum();
    assert!((total - 1.0).abs() < 1e-4, "{preds}");
}

#[test]
fn an_old_pth_starts_a_run_directly_and_wrong_classes_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data);
    let run = train(&data, tmp.path(), "from-pth", &fixture("lite0_fc_zip.pth"));
    let trained = checkpoint::load(&run.join("best.safetensors")).expect("best");
    assert_eq!(trained.meta.arch, "efficientnet_lite0");
    let m = metrics(&run);
    assert!(m[5]["train_loss"].as_f64() < m[0]["train_loss"].as_f64(), "{m:?}");

    // A dataset with other classes cannot continue the file's head.
    std::fs::rename(data.join("train/3"), data.join("train/4")).expect("rename");
    std::fs::rename(data.join("valid/3"), data.join("valid/4")).expect("rename");
    let out = petal()
        .args(["train", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(config(tmp.path(), "wrong"))
        .arg("--runs-dir")
        .arg(tmp.path().join("runs"))
        .arg("--init-from")
        .arg(fixture("lite0_fc_zip.pth"))
        .output()
        .expect("run petal train");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("lite0_fc_zip.pth") && err.contains("differ from the dataset"), "{err}");
}
