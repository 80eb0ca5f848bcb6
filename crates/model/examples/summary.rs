//! Build a network with the `model` crate alone: its parameter count (all, and trainable once the
//! backbone is frozen) and one forward pass of random images.
//!
//! `cargo run -p model --example summary -- [ARCH] [CLASSES]` (default `efficientnet_lite0 102`;
//! any of `densenet121|161|169|201`, `efficientnet_lite0`). Weights are random here;
//! `model::load_backbone_weights` loads ImageNet ones (`cargo xtask fetch-weights ARCH`).

use model::{freeze_backbone, Arch, Classifier, HeadConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arch: Arch = std::env::args().nth(1).as_deref().unwrap_or("efficientnet_lite0").parse()?;
    let classes: i64 = std::env::args().nth(2).as_deref().unwrap_or("102").parse()?;
    // README:begin
    let vs = VarStore::new(Device::Cpu);
    let net = Classifier::new(&vs.root(), &arch, &HeadConfig::default(), classes)?;
    let count =
        |trainable_only: bool| -> i64 { vs.variables().values().filter(|t| !trainable_only || t.requires_grad()).map(|t| t.numel() as i64).sum() };
    let all = count(false);
    freeze_backbone(&vs, &arch, 0); // only the head trains
    println!("{arch}: {all} parameters and buffers, {} trainable with the backbone frozen", count(true));
    let images = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| net.forward_t(&images, false));
    println!("features {} → logits {:?}", net.feature_dim(), logits.size());
    // README:end
    Ok(())
}
