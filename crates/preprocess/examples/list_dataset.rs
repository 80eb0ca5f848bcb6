//! List a dataset with the `preprocess` crate alone: layout, classes and their display names,
//! images per split, and the first training batch's shape.
//!
//! `cargo run -p preprocess --example list_dataset -- DIR` (an ImageFolder with `train/ valid/
//! [test/]`, or the official Oxford 102 layout), e.g. `../shared/data/flowers102-mini`.

use std::path::PathBuf;
use std::sync::Arc;

use preprocess::{ImageSource, LoaderConfig, TransformConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::args_os().nth(1).ok_or("usage: list_dataset DIR")?);
    // README:begin
    let ds = preprocess::discover(&root, &preprocess::DiscoverOptions::default())?; // checks every image's header
    println!("{} ({:?} layout), {} classes", ds.root.display(), ds.layout, ds.classes.len());
    for split in &ds.splits {
        println!("  {:<6} {} images", split.name, split.samples.len());
    }
    for (label, folder) in ds.classes.iter().enumerate().take(5) {
        println!("  class {label}: folder {folder:?}, name {:?}", ds.display_name(label).unwrap_or("?"));
    }
    let train = ds.split("train").ok_or("no train split")?;
    let config = LoaderConfig { batch_size: 8, ..LoaderConfig::default() };
    let mut batches = preprocess::loader(Arc::from(train.samples.clone()), ImageSource::Files, &TransformConfig::default(), &config)?;
    if let Some(batch) = batches.next() {
        let batch = batch?; // images: Vec<f32> in [N, 3, 224, 224], normalised like torchvision
        println!("first batch: {} images, shape {:?}, labels {:?}", batch.labels.len(), batch.shape, batch.labels);
    }
    // README:end
    Ok(())
}
