//! Draws every report figure with plausible numbers, to look at them, using the `report` crate
//! alone: `cargo run -p report --example demo -- <out-dir>`. Uses a real flower image from
//! `../shared/data/flowers102-mini` when present, else a synthetic one.

use report::{EpochPoint, PredictionPanel};
use std::path::{Path, PathBuf};

fn flower(class: &str) -> image::RgbImage {
    let dir = Path::new("../shared/data/flowers102-mini/valid").join(class);
    let first = std::fs::read_dir(&dir).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).map(|e| e.path());
    if let Some(img) = first.and_then(|p| image::open(p).ok()) {
        return img.to_rgb8();
    }
    image::RgbImage::from_fn(300, 220, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 160]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "report-demo".into()));
    std::fs::create_dir_all(&out)?;

    let points: Vec<EpochPoint> = (1..=20)
        .map(|e| {
            let t = e as f64;
            EpochPoint {
                epoch: e,
                train_loss: 3.8 * (-t / 4.0).exp() + 0.25,
                train_acc: 0.95 - 0.8 * (-t / 3.5).exp(),
                valid_loss: if e == 7 { Some(f64::NAN) } else { Some(3.2 * (-t / 4.5).exp() + 0.35) },
                valid_acc: Some(0.92 - 0.7 * (-t / 4.0).exp()),
                lr: 1e-3,
            }
        })
        .collect();
    report::plot_curves(&points, "DenseNet-121, Oxford 102 flowers: training", &out.join("curves.png"))?;

    let n = 102;
    let mut m = vec![vec![0u64; n]; n];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 6 + (i as u64 % 4);
        row[(i * 7 + 3) % n] += (i % 3) as u64;
        row[(i + 1) % n] += (i % 5 == 0) as u64 * 3;
    }
    let names: Vec<String> = (1..=n).map(|i| format!("class {i}")).collect();
    report::plot_confusion(&m, &names, "Confusion matrix, validation set", &out.join("confusion.png"))?;
    let small: Vec<Vec<u64>> = (0..6).map(|i| (0..6).map(|j| if i == j { 20 } else { ((i * j) % 4) as u64 }).collect()).collect();
    let small_names: Vec<String> = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold", "tiger lily"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    report::plot_confusion(&small, &small_names, "Confusion matrix (6 classes)", &out.join("confusion_small.png"))?;

    // README:begin
    let photo: image::RgbImage = flower("1");
    let topk: Vec<(String, f32)> = vec![
        ("pink primrose".into(), 0.81),
        ("hard-leaved pocket orchid".into(), 0.09),
        ("mexican aster".into(), 0.05),
        ("moon orchid".into(), 0.03),
        ("sweet pea".into(), 0.02),
    ];
    report::plot_prediction(&photo, "pink primrose", &topk, &out.join("prediction.png"))?; // image + top-k bars
    let rows: Vec<Vec<String>> = topk.iter().map(|(name, p)| vec![name.clone(), format!("{p:.2}")]).collect();
    report::write_csv(&out.join("prediction.csv"), &["class", "probability"], &rows)?; // atomic write
                                                                                       // README:end

    let panels: Vec<PredictionPanel> = (0..6)
        .map(|i| PredictionPanel {
            image: flower(&(i + 1).to_string()),
            truth: Some(if i == 3 { "sweet pea".into() } else { "pink primrose".into() }),
            topk: topk.clone(),
        })
        .collect();
    report::plot_prediction_grid(&panels, &out.join("grid.png"))?;
    println!("wrote figures to {}", out.display());
    Ok(())
}
