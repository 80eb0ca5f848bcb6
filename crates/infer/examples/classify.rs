//! Classify images with the `infer` crate alone: the checkpoint carries the network, the classes
//! and the preprocessing, so nothing else is needed.
//!
//! `cargo run -p infer --example classify -- CHECKPOINT IMAGE...` (a checkpoint from `petal train`,
//! e.g. `runs/lite0/best.safetensors`) prints the top 3 classes of each image.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(checkpoint), images) = (args.next(), args.collect::<Vec<_>>()) else {
        return Err("usage: classify CHECKPOINT IMAGE...".into());
    };
    if images.is_empty() {
        return Err("usage: classify CHECKPOINT IMAGE...".into());
    }
    classify(&checkpoint, &images)
}

fn classify(checkpoint: &Path, images: &[PathBuf]) -> Result<(), Box<dyn std::error::Error>> {
    // README:begin
    let predictor = infer::Predictor::load(checkpoint, tch::Device::Cpu)?;
    for prediction in predictor.predict_paths(images, 3, 16, |_done| {})? {
        println!("{}", prediction.path.display());
        for class in &prediction.top {
            println!("  {:5.1}%  {}", 100.0 * class.prob, class.name);
        }
    }
    // README:end
    Ok(())
}
