//! Train a classifier with the `train` crate alone: a frozen EfficientNet-Lite0 backbone and a new
//! head, on a folder of images (its own dependency `preprocess` reads the folder).
//!
//! `cargo run -p train --example train_head -- [DATA [WEIGHTS]]`: DATA is an ImageFolder with
//! `train/` and `valid/` (default: a tiny generated one, 3 colours × 8 images, in a temporary
//! folder); WEIGHTS the ImageNet backbone (`cargo xtask fetch-weights efficientnet_lite0`;
//! default: random, which still separates plain colours). The run goes to a temporary folder.

use std::path::{Path, PathBuf};

use train::{Recipe, TrainConfig, TrainRequest};

/// 3 classes of plain-coloured images with some noise, `train/` 8 and `valid/` 3 per class.
fn generate(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let colours = [[200u8, 40, 40], [40, 180, 60], [50, 70, 210]];
    for (split, n) in [("train", 8), ("valid", 3)] {
        for (c, rgb) in colours.iter().enumerate() {
            let dir = root.join(split).join(format!("colour{c}"));
            std::fs::create_dir_all(&dir)?;
            for i in 0..n {
                let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb(rgb.map(|v| v.wrapping_add(((x * 7 + y * 3 + i * 11) % 24) as u8))));
                img.save(dir.join(format!("{i}.png")))?;
            }
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let data = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            generate(&tmp.path().join("data"))?;
            tmp.path().join("data")
        }
    };
    let weights = std::env::args_os().nth(2).map(PathBuf::from);
    let runs_dir = tmp.path().join("runs");
    // README:begin
    let ds = preprocess::discover(&data, &preprocess::DiscoverOptions::default())?;
    let config = TrainConfig {
        name: "example".into(),
        recipe: Recipe { arch: model::Arch::EfficientNetLite0, epochs: 5, ..Recipe::default() },
        ..TrainConfig::default()
    };
    let request = TrainRequest {
        config,
        weights, // None: random backbone
        init_from: None,
        runs_dir: runs_dir.clone(),
        cache_dir: runs_dir.join(".cache"),
        resume: false,
        train_split: "train".into(),
        valid_split: "valid".into(),
        skip_bad: false,
    };
    let outcome = train::train(&request, &ds, &train::Silent)?;
    for m in &outcome.history {
        println!("epoch {}: train loss {:.3}, valid accuracy {:.1}%", m.epoch, m.train_loss, 100.0 * m.valid_acc.unwrap_or(0.0));
    }
    println!("best checkpoint (epoch {}): {}", outcome.best_epoch, outcome.best_checkpoint.display());
    // README:end
    Ok(())
}
