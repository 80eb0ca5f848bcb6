//! Helpers shared by the workspace-level end-to-end tests: the real `petal` binary and a learnable
//! synthetic dataset (coloured shapes, one colour/shape per class) generated into temp folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const CLASSES: [(&str, [u8; 3]); 3] = [("daisy", [230, 40, 40]), ("iris", [40, 200, 60]), ("tulip", [50, 60, 230])];

pub fn petal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_petal"))
}

pub fn ok(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Draws a shape of the class colour on a noisy background; `i` varies position and size.
pub fn draw(class: usize, i: u32) -> image::RgbImage {
    let [r, g, b] = CLASSES[class].1;
    let mut img = image::RgbImage::new(40, 40);
    let mut state = (class as u32 + 1) * 7919 + i * 104_729;
    let (cx, cy, rad) = (12 + (i * 5) % 16, 12 + (i * 3) % 16, 8 + (i % 4) as i32);
    for (x, y, p) in img.enumerate_pixels_mut() {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = (state >> 24) as u8 / 4;
        let (dx, dy) = (x as i32 - cx as i32, y as i32 - cy as i32);
        let inside = match class {
            0 => dx * dx + dy * dy <= rad * rad,
            1 => dx.abs() <= rad && dy.abs() <= rad,
            _ => dy >= -rad && dy <= rad && dx.abs() <= (dy + rad) / 2,
        };
        *p = if inside { image::Rgb([r, g, b]) } else { image::Rgb([100 + noise, 100 + noise, 100 + noise]) };
    }
    img
}

pub fn make_dataset(root: &Path, train: u32, valid: u32, test: u32) {
    make_images(root, train, valid, test);
    write_names(root);
}

/// The split/class folders of the synthetic dataset, without a names file.
pub fn make_images(root: &Path, train: u32, valid: u32, test: u32) {
    for (split, n, offset) in [("train", train, 0), ("valid", valid, 1000), ("test", test, 2000)] {
        if n == 0 {
            continue;
        }
        for (c, (name, _)) in CLASSES.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).expect("mkdir");
            for i in 0..n {
                draw(c, offset + i).save(dir.join(format!("{i:03}.png"))).expect("save png");
            }
        }
    }
}

/// Writes `dir/cat_to_name.json` for the synthetic classes.
pub fn write_names(dir: &Path) {
    let names = r#"{"daisy": "oxeye daisy", "iris": "bearded iris", "tulip": "garden tulip"}"#;
    std::fs::write(dir.join("cat_to_name.json"), names).expect("names");
}

/// Top-level keys of the test training config, in file order: a frozen tiny DenseNet trained for
/// 12 epochs on 32-pixel images.
const TOP: [(&str, &str); 14] = [
    ("mode", "\"frozen\""),
    ("views", "2"),
    ("optimizer", "\"adam\""),
    ("lr", "0.01"),
    ("schedule", "\"constant\""),
    ("label_smoothing", "0.0"),
    ("epochs", "12"),
    ("batch_size", "16"),
    ("seed", "7"),
    ("image_size", "32"),
    ("resize_size", "36"),
    ("channels_last", "false"),
    ("eval_batch_size", "32"),
    ("threads", "1"),
];
/// The `[head]` table of the test config.
const HEAD: [(&str, &str); 2] = [("hidden", "[32]"), ("dropout", "0.1")];
/// The `[arch.densenet]` table: two dense blocks of two layers, 8 initial features.
const DENSENET: &str = "growth_rate = 4\nblock_config = [2, 2]\nnum_init_features = 8\nbn_size = 2\n";

/// `key = value` lines of `base` with the values of `set` (raw TOML) replacing theirs, then the keys
/// of `set` that `base` lacks.
fn table(base: &[(&str, &str)], set: &[(&str, &str)]) -> String {
    let known = |k: &str| base.iter().any(|(b, _)| *b == k);
    let lines = base.iter().map(|(k, v)| (*k, set.iter().find(|(s, _)| s == k).map_or(*v, |(_, v)| *v)));
    lines.chain(set.iter().copied().filter(|(k, _)| !known(k))).map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// Writes the test training config `dir/<name>.toml` (run name `name`; see [`TOP`], [`HEAD`],
/// [`DENSENET`]) and returns its path. `set` overrides or adds keys, values as raw TOML:
/// `("epochs", "2")`, `("mode", "\"finetune\"")`; keys of the head table are written `head.<key>`.
pub fn config(dir: &Path, name: &str, set: &[(&str, &str)]) -> PathBuf {
    let top: Vec<(&str, &str)> = set.iter().copied().filter(|(k, _)| !k.starts_with("head.")).collect();
    let head: Vec<(&str, &str)> = set.iter().filter_map(|(k, v)| Some((k.strip_prefix("head.")?, *v))).collect();
    let text = format!("name = {name:?}\n{}\n[arch.densenet]\n{DENSENET}\n[head]\n{}", table(&TOP, &top), table(&HEAD, &head));
    std::fs::create_dir_all(dir).expect("config dir");
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("config");
    p
}

/// `petal train --data <data> --runs-dir <work>/runs --cache-dir <work>/cache`, plus
/// `--config <cfg>` when given: the training command the end-to-end tests start from.
pub fn train_cmd(data: &Path, cfg: Option<&Path>, work: &Path) -> Command {
    let mut c = petal();
    c.args(["train", "--data"]).arg(data).arg("--runs-dir").arg(work.join("runs")).arg("--cache-dir").arg(work.join("cache"));
    if let Some(cfg) = cfg {
        c.arg("--config").arg(cfg);
    }
    c
}

pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

/// Every file under `dir`, recursively, in no particular order.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
