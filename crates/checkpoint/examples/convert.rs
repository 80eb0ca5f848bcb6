//! Convert a checkpoint with the `checkpoint` crate alone (pure Rust, no libtorch, no pickle code
//! executed): a PyTorch `.pth` (zip or legacy format, e.g. the Udacity seed's `checkpoint.pth`) or
//! an older petal file becomes a petal checkpoint (safetensors) in the current format version.
//!
//! `cargo run -p checkpoint --example convert -- INPUT OUTPUT.safetensors`

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: convert INPUT OUTPUT.safetensors".into());
    };
    // README:begin
    let summary = checkpoint::convert(input, output)?; // atomic write
    println!("{summary}"); // format, tensors and shapes, classes
    let back = checkpoint::load(output)?;
    println!("{} tensors, architecture {:?}, {} classes", back.tensors.len(), back.meta.arch, back.meta.classes.len());
    // README:end
    Ok(())
}
